"""The runnable examples a user copies work against a real server."""

import os
import subprocess
import sys
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def test_chat_example(endpoint):
    r = subprocess.run([sys.executable, str(EXAMPLES / "chat.py")], capture_output=True,
                       text=True, timeout=180,
                       env=dict(os.environ, XINFERENCE_ENDPOINT=endpoint))
    assert r.returncode == 0, r.stderr
    assert "OpenAI SDK:" in r.stdout and "RESTfulClient (stream):" in r.stdout
    answer = r.stdout.split("OpenAI SDK:", 1)[1].splitlines()[0].strip()
    assert answer

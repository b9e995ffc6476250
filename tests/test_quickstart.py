"""Smoke test of the README's first command, ``bash scripts/quickstart.sh``: set-up
(idempotent), a server on a free port (``XINFERENCE_PORT``), the bundled SmolLM2 launched
and ``examples/chat.py`` answering through the OpenAI SDK and RESTfulClient. The script
then keeps the server running; the test stops it the way a user does (SIGTERM / Ctrl-C)
once the answers are printed, and checks that no process is left behind."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
import pytest

from .conftest import free_port, wait_gone

ROOT = Path(__file__).resolve().parent.parent
READY = "Server running at"


@pytest.mark.skipif(
    Path(sys.prefix).resolve() != (ROOT / ".venv").resolve(),
    reason="quickstart.sh installs into the repository's .venv; run the tests from it "
           "(scripts/test.sh) to include this smoke test",
)
def test_quickstart_answers_and_stops(tmp_path):
    port = free_port()
    env = dict(os.environ, XINFERENCE_PORT=str(port), XINFERENCE_HOME=str(tmp_path / "home"),
               HF_HUB_OFFLINE="1")
    env.pop("XINFERENCE_ENDPOINT", None)
    proc = subprocess.Popen(["bash", "scripts/quickstart.sh"], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    lines, ready = [], threading.Event()

    def read():
        for line in proc.stdout:
            lines.append(line)
            if line.startswith(READY):
                ready.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    descendants = []
    try:
        deadline = time.monotonic() + 900  # set-up may install on a fresh machine
        while not ready.wait(1):
            assert proc.poll() is None, "quickstart.sh exited early:\n" + "".join(lines)
            assert time.monotonic() < deadline, "no answer in time:\n" + "".join(lines)
        out = "".join(lines)
        assert f"{READY} http://127.0.0.1:{port}" in out, out
        answer = next(ln for ln in lines if ln.startswith("OpenAI SDK:"))
        assert len(answer.split(":", 1)[1].strip()) > 3, out
        assert "RESTfulClient (stream): " in out
        descendants = [p.pid for p in psutil.Process(proc.pid).children(recursive=True)]
        assert len(descendants) >= 2  # the server and the model's process
        proc.send_signal(signal.SIGTERM)  # what Ctrl-C / a service manager does
        proc.wait(60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    alive = wait_gone(descendants, timeout=30)
    for pid in alive:  # leave nothing running, then report
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    assert alive == [], "the server or a model outlived the script"

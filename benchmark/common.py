"""Shared by the benchmarks: a server on a free port and the results file.

Each benchmark owns the text between ``<!-- NAME:start -->`` and ``<!-- NAME:end -->``;
other sections are kept as they are.
"""

from __future__ import annotations

import os
import platform
import re
from pathlib import Path

DOC = Path(__file__).resolve().parent.parent / "doc" / "benchmarks.md"
HEADER = "# Benchmarks\n\nRatios are measured against a baseline in the same run.\n"


def machine() -> str:
    import os

    return f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"


def write_section(name: str, markdown: str) -> None:
    """Replace (or append) the section ``name`` of doc/benchmarks.md with ``markdown``;
    a quick smoke run (``BENCH_QUICK=1``) writes nothing."""
    if os.environ.get("BENCH_QUICK") == "1":
        return
    DOC.parent.mkdir(parents=True, exist_ok=True)
    text = DOC.read_text(encoding="utf-8") if DOC.exists() else HEADER
    block = f"<!-- {name}:start -->\n{markdown.rstrip()}\n<!-- {name}:end -->"
    pattern = re.compile(rf"<!-- {re.escape(name)}:start -->.*?<!-- {re.escape(name)}:end -->",
                         re.S)
    if pattern.search(text):
        text = pattern.sub(lambda _: block, text)
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    DOC.write_text(text, encoding="utf-8")


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(home: str, timeout: float = 60.0):
    """Start ``xinference-local`` on a free port with ``XINFERENCE_HOME=home``.

    Returns ``(process, base_url, seconds from the command to /status answering)``.

    Raises:
        RuntimeError: no answer within ``timeout`` seconds (the process is killed).
    """
    import os
    import subprocess
    import sys
    import time

    import requests

    port = free_port()
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        [str(Path(sys.executable).with_name("xinference-local")), "--host", "127.0.0.1",
         "--port", str(port), "--log-level", "WARNING"],
        env=dict(os.environ, XINFERENCE_HOME=home), stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    while time.perf_counter() - t0 < timeout:
        try:
            if requests.get(url + "/status", timeout=0.5).ok:
                return proc, url, time.perf_counter() - t0
        except requests.RequestException:
            time.sleep(0.02)
    proc.kill()
    raise RuntimeError("server did not start")


def stop_server(proc, timeout: float = 30.0) -> None:
    """SIGTERM the server (it terminates its model processes), SIGKILL after ``timeout``."""
    import subprocess

    proc.terminate()
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()


def stream_chat_tokens(url: str, body: dict, timeout: float = 600.0) -> int:
    """One streamed ``POST /v1/chat/completions`` of ``body`` (``stream`` and
    ``stream_options.include_usage`` are set here), read to the end.

    Returns:
        the stream's ``usage.completion_tokens``.

    Raises:
        requests.HTTPError: a non-2xx answer; AssertionError: no usage chunk came.
    """
    import json

    import requests

    body = dict(body, stream=True, stream_options={"include_usage": True})
    tokens = None
    with requests.post(url + "/v1/chat/completions", json=body, stream=True,
                       timeout=timeout) as r:
        r.raise_for_status()
        for line in r.iter_lines(decode_unicode=True):
            if line.startswith("data:") and not line.endswith("[DONE]"):
                chunk = json.loads(line[5:])
                if chunk.get("usage"):
                    tokens = chunk["usage"]["completion_tokens"]
    assert tokens is not None, "the stream carried no usage"
    return tokens


def timed_clients(client, clients: int) -> dict:
    """Run ``client(i)`` (returns the tokens it got) in ``clients`` threads at once.

    Returns:
        ``{"tokens": sum over clients, "wall": seconds from the first start to the last
        end, "rate": tokens / wall}``.
    """
    import threading
    import time

    counts = [0] * clients

    def run(i: int) -> None:
        counts[i] = client(i)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(clients)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    return {"tokens": sum(counts), "wall": wall, "rate": sum(counts) / wall}

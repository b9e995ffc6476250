"""How a worker finds its supervisor (``xinference.core.discovery``), against a small real
HTTP server standing in for the supervisor's ``GET /v1/address``."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from xinference.core.discovery import auth_headers, fetch_supervisor_address


class _Handler(BaseHTTPRequestHandler):
    answer = (200, "127.0.0.1:34567")
    seen: list = []

    def do_GET(self):  # noqa: N802 (http.server's name)
        type(self).seen.append((self.path, self.headers.get("Authorization")))
        code, body = self.answer
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    _Handler.seen = []
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield srv, f"http://127.0.0.1:{srv.server_address[1]}/"
    srv.shutdown()
    srv.server_close()


def test_address_with_the_api_key(server, monkeypatch):
    monkeypatch.delenv("XINFERENCE_API_KEY", raising=False)
    _, endpoint = server
    _Handler.answer = (200, "10.0.0.5:4000")
    assert fetch_supervisor_address(endpoint, 5, api_key="sk-abc") == "10.0.0.5:4000"
    assert _Handler.seen == [("/v1/address", "Bearer sk-abc")]
    monkeypatch.setenv("XINFERENCE_API_KEY", "sk-env")
    assert auth_headers(None) == {"Authorization": "Bearer sk-env"}
    assert auth_headers("sk-given") == {"Authorization": "Bearer sk-given"}
    monkeypatch.delenv("XINFERENCE_API_KEY")
    assert auth_headers(None) == {}


def test_refused_credential_fails_at_once(server):
    _, endpoint = server
    _Handler.answer = (401, {"detail": "Missing API key"})
    start = time.monotonic()
    with pytest.raises(RuntimeError) as e:
        fetch_supervisor_address(endpoint, 30)
    assert time.monotonic() - start < 5
    assert "refused this worker (401: Missing API key)" in str(e.value)
    assert "--api-key" in str(e.value)


def test_retries_until_the_timeout_then_names_the_endpoint(server):
    _, endpoint = server
    _Handler.answer = (503, {"detail": "starting"})
    with pytest.raises(RuntimeError) as e:
        fetch_supervisor_address(endpoint, 1.2)
    assert len(_Handler.seen) >= 2  # retried every 0.5 s
    assert endpoint in str(e.value) and "did not answer" in str(e.value)
    # timeout=0: one attempt (the worker's re-resolve after failed heartbeats)
    _Handler.seen = []
    with pytest.raises(RuntimeError):
        fetch_supervisor_address(endpoint, 0)
    assert len(_Handler.seen) == 1


def test_an_answer_that_is_no_address_is_an_error(server):
    _, endpoint = server
    _Handler.answer = (200, {"not": "an address"})
    with pytest.raises(RuntimeError) as e:
        fetch_supervisor_address(endpoint, 0)
    assert "not an actor pool address" in str(e.value)

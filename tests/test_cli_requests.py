"""What the ``xinference`` CLI sends: its options reach the request body, and ``chat`` sends
the whole history on every turn.

The CLI runs in this process (click's ``CliRunner``) against a small recording HTTP server
that answers like the real API and keeps every request body, so the checks are exact and
fast; ``tests/test_cli.py`` runs the same commands against a real server and model.
"""

from __future__ import annotations

import http.server
import json
import threading

import pytest
from click.testing import CliRunner

from xinference.deploy.cmdline import cli


class _Recorder(http.server.BaseHTTPRequestHandler):
    """Answers ``/v1/models`` (launch, describe) and ``/v1/chat/completions`` the way the
    API does; the reply's text is ``answer N`` for the N-th chat request."""

    requests: list = []

    def log_message(self, *args):  # keep pytest's output clean
        pass

    def _send(self, status: int, body, content_type="application/json"):
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        self.requests.append(("GET", self.path, None))
        if self.path.startswith("/v1/models/"):
            uid = self.path.rsplit("/", 1)[1]
            self._send(200, {"model_uid": uid, "model_type": "LLM",
                             "model_ability": ["generate", "chat"]})
        else:
            self._send(404, {"detail": "not here"})

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.requests.append(("POST", self.path, body))
        if self.path == "/v1/models":
            self._send(200, {"model_uid": body.get("model_uid") or body["model_name"]})
            return
        n = sum(1 for m, p, _ in self.requests if p == "/v1/chat/completions")
        text = f"answer {n}"
        if body.get("stream"):
            chunk = {"object": "chat.completion.chunk",
                     "choices": [{"index": 0, "delta": {"role": "assistant", "content": text},
                                  "finish_reason": "stop"}]}
            self._send(200, f"data: {json.dumps(chunk)}\n\ndata: [DONE]\n\n".encode(),
                       "text/event-stream")
        else:
            self._send(200, {"object": "chat.completion", "choices": [{
                "index": 0, "message": {"role": "assistant", "content": text},
                "finish_reason": "stop"}]})


@pytest.fixture
def recorder():
    _Recorder.requests = []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Recorder)
    t = threading.Thread(target=server.serve_forever, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", _Recorder.requests
    server.shutdown()
    server.server_close()


def posts(requests, path):
    return [b for m, p, b in requests if m == "POST" and p == path]


def test_launch_options_reach_the_launch_request(recorder):
    endpoint, seen = recorder
    r = CliRunner().invoke(cli, [
        "launch", "-e", endpoint, "--model-name", "m", "--model-uid", "u",
        "--n-gpu", "2", "--gpu-idx", "1,3", "--replica", "3", "--request-limits", "5",
        "--enable-thinking", "--n_ctx", "1024"])
    assert r.exit_code == 0, r.output
    (body,) = posts(seen, "/v1/models")
    assert body["n_gpu"] == 2 and body["gpu_idx"] == [1, 3]
    assert body["replica"] == 3 and body["request_limits"] == 5
    assert body["enable_thinking"] is True and body["n_ctx"] == 1024
    assert body["model_name"] == "m" and body["model_uid"] == "u"


@pytest.mark.parametrize("args, expected", [
    (["--disable-thinking"], {"enable_thinking": False}),
    (["--n-gpu", "none"], {"n_gpu": "none"}),  # CPU (a missing n_gpu would be "auto")
    (["--n-gpu", "0"], {"n_gpu": 0}),
    (["--n-gpu", "auto"], {"n_gpu": "auto"}),
    ([], {"n_gpu": "auto", "replica": 1}),
])
def test_launch_option_values(recorder, args, expected):
    endpoint, seen = recorder
    r = CliRunner().invoke(cli, ["launch", "-e", endpoint, "-n", "m", *args])
    assert r.exit_code == 0, r.output
    (body,) = posts(seen, "/v1/models")
    for k, v in expected.items():
        assert body[k] == v, body
    if not any(a.endswith("thinking") for a in args):
        assert "enable_thinking" not in body  # the model's own default stays


@pytest.mark.parametrize("stream", ["--stream", "--no-stream"])
def test_chat_sends_the_whole_history(recorder, stream):
    endpoint, seen = recorder
    r = CliRunner().invoke(cli, ["chat", "-e", endpoint, "-u", "u", stream,
                                 "--system-prompt", "Be brief.", "--max-tokens", "7"],
                           input="first question\nsecond question\n\n")
    assert r.exit_code == 0, r.output
    assert "answer 1" in r.output and "answer 2" in r.output
    first, second = posts(seen, "/v1/chat/completions")
    assert first["messages"] == [{"role": "system", "content": "Be brief."},
                                 {"role": "user", "content": "first question"}]
    assert second["messages"] == first["messages"] + [
        {"role": "assistant", "content": "answer 1"},
        {"role": "user", "content": "second question"}]
    assert first["max_tokens"] == second["max_tokens"] == 7
    assert bool(first.get("stream")) is (stream == "--stream")

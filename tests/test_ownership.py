"""Request ownership and the model-path allow-list, on a real ``--auth-config`` server.

Two users with ``models:read`` (alice, bob), one launcher (``models:*``, no admin) and an
admin. A request id belongs to the user that sent it: another user's abort and progress
answer 404 as for an unknown id (admins may act on any), and a body cannot claim another
owner. ``model_path``, ``trust_remote_code`` and a registration's ``model_uri`` need admin
unless the path lies in ``XINFERENCE_ALLOWED_MODEL_DIRS``; the refusal reads the same
whether the path exists or not.
"""

from __future__ import annotations

import io
import json
import os
import threading

import pytest
import requests

from .conftest import SMOLLM, minilm_dir, start_server

pytestmark = pytest.mark.e2e

SECRET = "0123456789abcdef0123456789abcdef"
KEYS = {"alice": "sk-aliceAliceAlice1", "bob": "sk-bobBobBobBobBob1",
        "launcher": "sk-launcherLauncher1", "admin": "sk-adminAdminAdmin1"}
PERMS = {"alice": ["models:read"], "bob": ["models:read"],
         "launcher": ["models:*"], "admin": ["admin"]}
OCR = "PP-OCRv4"


def h(user: str) -> dict:
    return {"Authorization": f"Bearer {KEYS[user]}"}


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    home = tmp_path_factory.mktemp("owner-home")
    cfg = home / "auth.json"
    cfg.write_text(json.dumps({
        "auth_config": {"algorithm": "HS256", "secret_key": SECRET,
                        "token_expire_in_minutes": 30},
        "user_config": [{"username": u, "password": f"pw-{u}", "permissions": PERMS[u],
                         "api_keys": [KEYS[u]]} for u in KEYS]}))
    allowed = os.path.dirname(minilm_dir())  # the package holding the MiniLM weights
    server = start_server(home, args=["--auth-config", str(cfg)],
                          env={"XINFERENCE_ALLOWED_MODEL_DIRS": allowed})
    try:
        for body in ({"model_name": SMOLLM, "model_engine": "llama.cpp"},
                     {"model_name": OCR, "model_type": "image"}):
            r = requests.post(server.endpoint + "/v1/models", json=body, headers=h("admin"),
                              timeout=180)
            assert r.status_code == 200, r.text
        yield server
    finally:
        server.stop()


class Stream:
    """A long streamed completion of ``user`` with ``request_id``, read in a thread."""

    def __init__(self, endpoint: str, user: str, request_id: str, **extra):
        self.chunks = []
        self.started = threading.Event()
        self.resp = requests.post(
            endpoint + "/v1/completions", headers=h(user), stream=True, timeout=300,
            json=dict({"model": SMOLLM, "prompt": "Count slowly:", "max_tokens": 3000,
                       "ignore_eos": True, "stream": True, "request_id": request_id},
                      **extra))
        assert self.resp.status_code == 200, self.resp.text
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()
        assert self.started.wait(60), "no first chunk"

    def _read(self):
        for line in self.resp.iter_lines():
            if line.startswith(b"data: ") and line != b"data: [DONE]":
                self.chunks.append(json.loads(line[6:]))
                self.started.set()

    def finish_reason(self, timeout: float = 60):
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "the stream did not end"
        return self.chunks[-1]["choices"][0]["finish_reason"]


def abort(srv, user: str, rid: str) -> requests.Response:
    return requests.post(f"{srv.endpoint}/v1/models/{SMOLLM}/requests/{rid}/abort",
                         headers=h(user), timeout=30)


def test_only_the_owner_or_an_admin_aborts_a_request(srv):
    a = Stream(srv.endpoint, "alice", "job-1")
    # bob: 404 as for an unknown id, and alice's stream goes on
    r = abort(srv, "bob", "job-1")
    assert r.status_code == 404, r.text
    assert r.json()["detail"] == abort(srv, "bob", "no-such-id").json()["detail"].replace(
        "no-such-id", "job-1")
    n = len(a.chunks)
    # the same id is bob's own namespace: no 409, and his abort stops his stream only
    b = Stream(srv.endpoint, "bob", "job-1")
    assert abort(srv, "bob", "job-1").status_code == 200
    assert b.finish_reason() == "abort"
    assert a.thread.is_alive() and len(a.chunks) > n
    assert abort(srv, "alice", "job-1").status_code == 200
    assert a.finish_reason() == "abort"
    # a body cannot claim another owner
    c = Stream(srv.endpoint, "bob", "job-2", request_owner="alice")
    assert abort(srv, "alice", "job-2").status_code == 404
    assert c.thread.is_alive()
    # an admin aborts anyone's request
    assert abort(srv, "admin", "job-2").status_code == 200
    assert c.finish_reason() == "abort"


def _png() -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (64, 32), "white").save(buf, format="PNG")
    return buf.getvalue()


def test_progress_of_another_users_request_is_not_found(srv):
    r = requests.post(srv.endpoint + "/v1/images/ocr", headers=h("alice"), timeout=120,
                      data={"model": OCR, "request_id": "ocr-1"},
                      files={"image": ("a.png", _png(), "image/png")})
    assert r.status_code == 200, r.text
    url = srv.endpoint + "/v1/requests/ocr-1/progress"
    mine = requests.get(url, headers=h("alice"), timeout=30)
    assert mine.status_code == 200 and mine.json()["status"] == "done", mine.text
    assert requests.get(url, headers=h("bob"), timeout=30).status_code == 404
    assert requests.get(url, headers=h("admin"), timeout=30).json()["status"] == "done"


def launch(srv, user: str, **body) -> requests.Response:
    return requests.post(srv.endpoint + "/v1/models", headers=h(user), timeout=180,
                         json=dict({"model_name": "all-MiniLM-L6-v2",
                                    "model_type": "embedding"}, **body))


def test_model_path_and_remote_code_need_admin_outside_allowed_dirs(srv, tmp_path):
    outside = [str(tmp_path), "/etc", "/no/such/dir", f"{minilm_dir()}/../../../etc"]
    details = set()
    for path in outside:
        r = launch(srv, "launcher", model_uid="x", model_path=path)
        assert r.status_code == 403, (path, r.text)
        details.add(r.json()["detail"])
    assert len(details) == 1  # nothing tells an existing path from a missing one
    assert "admin" in details.pop()
    r = launch(srv, "launcher", model_uid="x", trust_remote_code=True)
    assert r.status_code == 403 and "trust_remote_code" in r.json()["detail"]
    # inside the allow-list: the launcher may
    r = launch(srv, "launcher", model_uid="emb-allowed", model_path=minilm_dir())
    assert r.status_code == 200, r.text
    assert requests.delete(srv.endpoint + "/v1/models/emb-allowed", headers=h("launcher"),
                           timeout=60).status_code == 200
    # an admin is not stopped by the allow-list (the loader answers about the path)
    r = launch(srv, "admin", model_uid="y", model_path="/no/such/dir")
    assert r.status_code != 403 and "does not exist" in r.json()["detail"], r.text
    # custom registrations: model_uri outside the allowed directories needs admin
    reg = {"model_name": "my-emb", "dimensions": 384, "max_tokens": 256,
           "language": ["en"], "model_uri": f"file://{tmp_path}"}
    url = srv.endpoint + "/v1/model_registrations/embedding"
    r = requests.post(url, headers=h("launcher"), json={"model": json.dumps(reg)}, timeout=30)
    assert r.status_code == 403 and "model_uri" in r.json()["detail"], r.text
    reg["model_uri"] = f"file://{minilm_dir()}"
    r = requests.post(url, headers=h("launcher"), json={"model": json.dumps(reg)}, timeout=30)
    assert r.status_code == 200, r.text
    reg.update(model_name="my-emb2", model_uri=str(tmp_path))
    r = requests.post(url, headers=h("admin"), json={"model": reg}, timeout=30)
    assert r.status_code == 200, r.text

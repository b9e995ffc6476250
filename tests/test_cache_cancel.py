"""Cache management (``/v1/cache/models``, ``xinference cached`` / ``remove-cache``), launch
cancel (``POST /v1/models/{uid}/cancel``) and ``/v1/models/instances``, against a real
server whose hub is the local hub-protocol test server of the hub tests (real
huggingface_hub client, paced downloads)."""

from __future__ import annotations

import hashlib
import http.server
import json
import subprocess
import sys
import threading
from pathlib import Path

import psutil
import pytest
import requests

from xinference.client import RESTfulClient

from . import test_custom_models_hub as hubmod
from .conftest import minilm_dir, start_server, wait_gone, wait_until

pytestmark = pytest.mark.e2e

REPO = "test-org/all-MiniLM-L6-v2"
COMMIT = hubmod.COMMIT
EMB_VERSION = "hub-emb-pytorch-0b"


class _TreeHubHandler(hubmod._HubHandler):
    """The hub tests' file server plus the two listing calls ``snapshot_download`` makes
    (``/api/models/{repo}/revision/{rev}`` and ``/api/models/{repo}/tree/{commit}``), over
    the files of a directory (the packaged all-MiniLM-L6-v2)."""

    def _lookup(self):
        prefix = f"/{REPO}/resolve/"
        if not self.path.startswith(prefix):
            return None
        _, _, name = self.path[len(prefix):].partition("/")
        return self.files.get(name.split("?")[0])

    def _json(self, obj):
        body = json.dumps(obj).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        api = f"/api/models/{REPO}/"
        if self.path.startswith(api + "revision/"):
            return self._json({"id": REPO, "sha": COMMIT, "siblings": [
                {"rfilename": n} for n in sorted(self.files)]})
        if self.path.startswith(api + "tree/"):
            return self._json([
                {"type": "file", "path": n, "size": p.stat().st_size,
                 "oid": hashlib.sha1(n.encode()).hexdigest()}
                for n, p in sorted(self.files.items())])
        return super().do_GET()


@pytest.fixture
def hub():
    root = Path(minilm_dir())
    _TreeHubHandler.files = {str(p.relative_to(root)): p for p in root.rglob("*")
                             if p.is_file()}
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _TreeHubHandler)
    t = threading.Thread(target=server.serve_forever, daemon=True)
    t.start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture
def srv(tmp_path, hub):
    server = start_server(tmp_path, env={
        "HF_ENDPOINT": f"http://127.0.0.1:{hub.server_address[1]}"})
    yield server
    server.stop()


def emb_family(name: str) -> dict:
    """A custom embedding model known only by its hub id."""
    return {"model_name": name, "dimensions": 384, "max_tokens": 256, "language": ["en"],
            "model_id": REPO}


def xi(endpoint, *args, stdin=None):
    return subprocess.run([sys.executable, "-m", "xinference.deploy.cmdline", *args, "-e",
                           endpoint], input=stdin, capture_output=True, text=True,
                          timeout=120)


def test_cached_and_remove_cache(tmp_path, srv):
    client = RESTfulClient(srv.endpoint)
    assert client.list_cached_models() == []
    # A real download into the cache through huggingface_hub.
    client.register_model("embedding", json.dumps(emb_family("hub-emb")))
    client.launch_model(model_name="hub-emb", model_type="embedding")
    assert "Downloading" in srv.log()
    rows = client.list_cached_models()
    assert [r["model_version"] for r in rows] == [EMB_VERSION]
    row = rows[0]
    src = Path(minilm_dir())
    assert row["model_name"] == "hub-emb" and row["model_format"] == "pytorch"
    assert row["model_size_in_billions"] == "0"
    assert row["files"] == sorted(str(p.relative_to(src)) for p in src.rglob("*")
                                  if p.is_file())
    assert row["size_bytes"] >= sum(p.stat().st_size for p in src.rglob("*") if p.is_file())
    assert row["path"] == str(tmp_path / "cache" / EMB_VERSION)
    assert row["actor_ip_address"]
    assert client.list_cached_models("hub-emb") == rows
    assert client.list_cached_models("other") == []

    out = xi(srv.endpoint, "cached")
    assert out.returncode == 0 and EMB_VERSION in out.stdout, out.stderr

    # In use: refused with 409, nothing deleted.
    out = xi(srv.endpoint, "remove-cache", "--model-version", EMB_VERSION, "--check")
    assert out.returncode == 1 and "409" in out.stderr and "hub-emb" in out.stderr
    assert (tmp_path / "cache" / EMB_VERSION).is_dir()
    client.terminate_model("hub-emb")

    # Without --check the files are listed and a "no" keeps them.
    out = xi(srv.endpoint, "remove-cache", "--model-version", EMB_VERSION, stdin="n\n")
    assert out.returncode != 0 and str(tmp_path / "cache" / EMB_VERSION) in out.stdout
    assert (tmp_path / "cache" / EMB_VERSION).is_dir()
    out = xi(srv.endpoint, "remove-cache", "--model_version", EMB_VERSION, stdin="y\n")
    assert out.returncode == 0, out.stderr
    assert not (tmp_path / "cache" / EMB_VERSION).exists()
    assert client.list_cached_models() == []
    r = requests.delete(f"{srv.endpoint}/v1/cache/models", timeout=30,
                        params={"model_version": EMB_VERSION})
    assert r.status_code == 404
    r = requests.delete(f"{srv.endpoint}/v1/cache/models", timeout=30,
                        params={"model_version": "../model"})
    assert r.status_code == 400


def test_cancel_a_launch_during_download(tmp_path, srv, monkeypatch):
    monkeypatch.setattr(hubmod, "PACE", 0.3)  # ~26 s for the weights: time to cancel
    client = RESTfulClient(srv.endpoint)
    client.register_model("embedding", json.dumps(emb_family("hub-slow")))
    r = requests.post(f"{srv.endpoint}/v1/models/hub-slow/cancel", timeout=30)
    assert r.status_code == 400 and "not launching" in r.json()["detail"]

    server_proc = psutil.Process(srv.pid)
    before = {p.pid for p in server_proc.children(recursive=True)}
    result = {}

    def launch():
        result["resp"] = requests.post(f"{srv.endpoint}/v1/models", timeout=300, json={
            "model_name": "hub-slow", "model_type": "embedding"})

    t = threading.Thread(target=launch)
    t.start()
    cache = tmp_path / "cache" / "hub-slow-pytorch-0b"

    def downloading():
        r = requests.get(f"{srv.endpoint}/v1/models/hub-slow/progress", timeout=10)
        return r.status_code == 200 and r.json()["progress"] > 0

    wait_until(downloading, 60, "the download to start")
    instances = client.get_instance_info(model_uid="hub-slow")
    assert [i["status"] for i in instances] == ["CREATING"]
    assert cache.exists()
    # The cache of a launching model is in use: refused with 409, nothing deleted.
    r = requests.delete(f"{srv.endpoint}/v1/cache/models", timeout=30,
                        params={"model_version": "hub-slow-pytorch-0b"})
    assert r.status_code == 409 and "hub-slow" in r.json()["detail"], r.text
    assert cache.exists()
    launched = {p.pid for p in server_proc.children(recursive=True)} | before
    r = requests.post(f"{srv.endpoint}/v1/models/hub-slow/cancel", timeout=120)
    assert r.status_code == 200, r.text
    assert r.json() == {"model_uid": "hub-slow", "cancelled": True}
    t.join(60)
    resp = result["resp"]
    assert resp.status_code == 499, resp.text
    assert resp.json()["error"]["type"] == "request_aborted"
    # No process of the launch and no partial file is left.
    assert not cache.exists(), list(cache.rglob("*"))
    assert requests.get(f"{srv.endpoint}/v1/models/hub-slow/progress",
                        timeout=10).status_code == 404
    assert "hub-slow" not in client.list_models()
    assert client.get_instance_info(model_uid="hub-slow") == []
    # Only the spare model process remains, as before the launch.
    wait_until(lambda: len([c for c in server_proc.children(recursive=True)
                            if c.status() != psutil.STATUS_ZOMBIE]) <= len(before),
               30, "the launch's process to go")
    now = {p.pid for p in server_proc.children(recursive=True)}
    assert not wait_gone(list(launched - now), 20)
    # The model launches after all once asked again (the download starts afresh).
    monkeypatch.setattr(hubmod, "PACE", 0.0)
    assert client.launch_model(model_name="hub-slow", model_type="embedding") == "hub-slow"
    client.terminate_model("hub-slow")

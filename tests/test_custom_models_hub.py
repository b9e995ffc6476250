"""Hub downloads, launch progress and cache reuse, with no internet.

No machine here reaches huggingface.co, so the test serves the hub's file-download
protocol itself: a local HTTP server answers ``HEAD``/``GET /{repo}/resolve/{revision}/
{file}`` (with the ``X-Repo-Commit``, ``ETag`` and ``Content-Length`` headers the real hub
sends) from a directory holding the real SmolLM2 GGUF, paced so the download takes a few
seconds. The Xinference server under test is started with ``HF_ENDPOINT`` pointing there and
uses the real huggingface_hub client; what is checked is ours: progress reported while
launching, the file landing in ``XINFERENCE_HOME/cache``, and a relaunch reusing it with the
"hub" gone. The hub server is a test fixture, not a stub of our code.
"""

from __future__ import annotations

import hashlib
import http.server
import json
import threading
import time
from pathlib import Path

import pytest
import requests

from xinference.client import RESTfulClient

from .conftest import start_server
from .test_custom_models import SMOL_DIR, SMOL_FILE, smol_family

REPO = "test-org/SmolLM2-135M-Instruct-GGUF"
COMMIT = "0123456789abcdef0123456789abcdef01234567"
CHUNK = 1 << 20  # bytes per paced write
PACE = 0.03  # seconds between chunks: ~100 chunks -> ~3 s for the 98 MB file


class _HubHandler(http.server.BaseHTTPRequestHandler):
    files: dict = {}  # repo file name -> local path

    def log_message(self, *args):  # keep pytest output quiet
        pass

    def _lookup(self):
        prefix = f"/{REPO}/resolve/"
        if not self.path.startswith(prefix):
            return None
        _, _, name = self.path[len(prefix):].partition("/")
        return self.files.get(name.split("?")[0])

    def _headers(self, path: Path, status=200, start=0):
        size = path.stat().st_size
        self.send_response(status)
        self.send_header("X-Repo-Commit", COMMIT)
        self.send_header("ETag", '"%s"' % hashlib.sha1(path.name.encode()).hexdigest())
        self.send_header("Content-Length", str(size - start))
        self.send_header("Accept-Ranges", "bytes")
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{size - 1}/{size}")
        self.end_headers()

    def _missing(self):
        self.send_response(404)
        self.send_header("X-Error-Code", "EntryNotFound")
        self.send_header("X-Repo-Commit", COMMIT)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def do_HEAD(self):
        path = self._lookup()
        if path is None:
            return self._missing()
        self._headers(path)

    def do_GET(self):
        path = self._lookup()
        if path is None:
            return self._missing()
        start = 0
        rng = self.headers.get("Range")
        if rng and rng.startswith("bytes="):
            start = int(rng[6:].split("-")[0] or 0)
        self._headers(path, 206 if start else 200, start)
        with open(path, "rb") as f:
            f.seek(start)
            while True:
                block = f.read(CHUNK)
                if not block:
                    break
                try:
                    self.wfile.write(block)
                except (BrokenPipeError, ConnectionResetError):
                    return
                time.sleep(PACE)


@pytest.fixture
def hub():
    _HubHandler.files = {SMOL_FILE: SMOL_DIR / SMOL_FILE}
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _HubHandler)
    t = threading.Thread(target=server.serve_forever, daemon=True)
    t.start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture
def srv(tmp_path, hub):
    """A server whose hub (``HF_ENDPOINT``) is the local test hub."""
    hub_url = f"http://127.0.0.1:{hub.server_address[1]}"
    server = start_server(tmp_path, env={"HF_ENDPOINT": hub_url})
    yield server
    server.stop()


def test_download_progress_and_cache_reuse(tmp_path, hub, srv):
    client = RESTfulClient(srv.endpoint)
    # A custom model with only a hub id: no model_uri, no package.
    client.register_model("LLM", json.dumps(
        smol_family("hub-smol", model_id=REPO, model_uri=None)))

    result = {}

    def launch():
        try:
            result["uid"] = client.launch_model(model_name="hub-smol")
        except Exception as e:  # reported by the assertions below
            result["error"] = e

    t = threading.Thread(target=launch)
    t.start()
    seen = []
    while t.is_alive():
        r = requests.get(f"{srv.endpoint}/v1/models/hub-smol/progress", timeout=10)
        if r.status_code == 200:
            seen.append(r.json()["progress"])
        time.sleep(0.05)
    t.join()
    assert "error" not in result, result
    assert result["uid"] == "hub-smol"
    assert seen, "no progress answer while launching"
    assert all(0.0 <= p <= 1.0 for p in seen)
    assert seen == sorted(seen), "progress went backwards"
    # Download fractions were reported between "started" and "files ready" (0.8).
    assert any(0.0 < p < 0.8 for p in seen), seen
    assert client.get_launch_model_progress("hub-smol") == {"progress": 1.0}
    assert "Downloading" in srv.log()

    cached = tmp_path / "cache" / "hub-smol-ggufv2-0_135b" / SMOL_FILE
    assert cached.stat().st_size == (SMOL_DIR / SMOL_FILE).stat().st_size
    out = client.get_model("hub-smol").generate("Hi", generate_config={"max_tokens": 4})
    assert out["usage"]["completion_tokens"] <= 4
    client.terminate_model("hub-smol")

    # The hub goes away: the relaunch is served from the cache.
    hub.shutdown()
    hub.server_close()
    assert client.launch_model(model_name="hub-smol") == "hub-smol"
    client.terminate_model("hub-smol")


def test_file_missing_on_the_hub(tmp_path, srv):
    client = RESTfulClient(srv.endpoint)
    client.register_model("LLM", json.dumps(
        smol_family("hub-q8", model_id=REPO, model_uri=None, quantizations=["Q8_0"])))
    r = requests.post(f"{srv.endpoint}/v1/models", json={"model_name": "hub-q8"},
                      timeout=120)
    assert r.status_code == 400
    msg = r.json()["detail"]
    assert REPO in msg and "SmolLM2-135M-Instruct.Q8_0.gguf" in msg
    assert "hub-q8" not in client.list_models()
    assert not (tmp_path / "cache" / "hub-q8-ggufv2-0_135b").exists()

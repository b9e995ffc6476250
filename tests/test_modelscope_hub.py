"""Downloads from ModelScope (``model_hub: modelscope`` / ``download_hub`` /
``XINFERENCE_MODEL_SRC``) through the real ``modelscope`` library against a local fake hub
(:mod:`tests.fake_modelscope`): progress, cancellation, resume after a dropped connection,
the shared cache layout with list/remove, hub errors naming the repository, spec choice by
hub; and, through a real server, a launch with ``download_hub=modelscope`` and 400s."""

from __future__ import annotations

import hashlib
import os
import threading
import time
from pathlib import Path

import pytest
import requests

from xinference.errors import InvalidRequestError, ModelLoadError, RequestAbortedError
from xinference.model.cache_manager import (list_cached_models, remove_cached_model,
                                            resolve_model_path)
from xinference.model.llm.engines import match_spec
from xinference.model.llm.launch import plan_llm_launch
from xinference.model.llm.llm_family import builtin_llm_families
from xinference.model.progress import (DOWNLOAD_SHARE, cancel_launch, current_progress,
                                       reset_progress)

from .conftest import minilm_dir, start_server
from .fake_modelscope import FakeModelScope

REPO = "test-org/tiny-gguf"
BLOB = bytes(range(256)) * 2048  # 512 KiB
FILE = "tiny-model.Q4_K_M.gguf"


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("XINFERENCE_HOME", str(tmp_path))
    reset_progress()
    yield tmp_path
    reset_progress()


def _hub(monkeypatch, **kw) -> FakeModelScope:
    hub = FakeModelScope({REPO: {FILE: BLOB, "README.md": b"# tiny\n"}}, **kw).start()
    monkeypatch.setenv("MODELSCOPE_ENDPOINT", hub.endpoint)
    monkeypatch.setenv("MODELSCOPE_CACHE", str(Path(os.environ["XINFERENCE_HOME"]) / "ms"))
    return hub


def _resolve(**kw):
    return resolve_model_path(model_name="tiny", model_format="ggufv2", size="1",
                              model_id=REPO, model_hub="modelscope", **kw)


def test_download_with_progress_then_cache_list_and_remove(home, monkeypatch):
    hub = _hub(monkeypatch, chunk_delay=0.002)
    seen = []
    stop = threading.Event()

    def watch():
        while not stop.is_set():
            seen.append(current_progress())
            time.sleep(0.005)
    t = threading.Thread(target=watch)
    t.start()
    try:
        path = _resolve(file_name=FILE)
    finally:
        stop.set()
        t.join()
        hub.stop()
    assert Path(path).read_bytes() == BLOB and Path(path).parent.name == "tiny-ggufv2-1b"
    assert any(0 < p < DOWNLOAD_SHARE for p in seen), "progress moved during the download"
    assert current_progress() == pytest.approx(DOWNLOAD_SHARE)
    rows = list_cached_models("tiny")
    assert [r["model_version"] for r in rows] == ["tiny-ggufv2-1b"]
    assert FILE in rows[0]["files"] and rows[0]["size_bytes"] >= len(BLOB)
    # found in the cache next time: no hub needed
    assert _resolve(file_name=FILE) == path
    assert remove_cached_model("tiny-ggufv2-1b") and list_cached_models("tiny") == []


def test_whole_repository_download(home, monkeypatch):
    hub = _hub(monkeypatch)
    try:
        path = Path(_resolve())
    finally:
        hub.stop()
    assert (path / FILE).read_bytes() == BLOB and (path / "README.md").is_file()


def test_resume_after_a_dropped_connection(home, monkeypatch):
    hub = _hub(monkeypatch, drop_first=True)
    try:
        path = _resolve(file_name=FILE)
    finally:
        hub.stop()
    assert hashlib.sha256(Path(path).read_bytes()).digest() == hashlib.sha256(BLOB).digest()
    assert hub.transfers[f"{REPO}/{FILE}"] == 2
    assert hub.ranges and int(hub.ranges[0].split("=")[1].split("-")[0]) > 0  # resumed


def test_cancel_stops_the_download_and_removes_partial_files(home, monkeypatch):
    hub = _hub(monkeypatch, chunk_delay=0.02, chunk=4096)

    def cancel_when_started():
        while current_progress() <= 0:
            time.sleep(0.01)
        cancel_launch()
    t = threading.Thread(target=cancel_when_started)
    t.start()
    t0 = time.monotonic()
    try:
        with pytest.raises(RequestAbortedError, match="cancelled"):
            _resolve(file_name=FILE)
    finally:
        t.join()
        hub.stop()
    assert time.monotonic() - t0 < 2.5  # the whole file takes 128 chunks x 20 ms
    cache = home / "cache" / "tiny-ggufv2-1b"
    assert not cache.exists() or not list(cache.rglob("*.incomplete"))


def test_hub_error_names_repository_and_message(home, monkeypatch):
    hub = _hub(monkeypatch)
    try:
        with pytest.raises(ModelLoadError) as e:
            resolve_model_path(model_name="nope", model_format="pytorch", size="1",
                               model_id="test-org/missing", model_hub="modelscope")
    finally:
        hub.stop()
    msg = str(e.value)
    assert "test-org/missing" in msg and "modelscope" in msg and "404" in msg
    assert not (home / "cache" / "nope-pytorch-1b").exists()
    with pytest.raises(InvalidRequestError, match="hub"):
        resolve_model_path(model_name="x", model_format="pytorch", size="1",
                           model_id="a/b", model_hub="gitee")


def test_specs_are_chosen_by_hub(monkeypatch):
    fam = builtin_llm_families()["qwen3"]
    _, spec, _ = match_spec(fam, model_format="pytorch", model_size_in_billions=8,
                            download_hub="modelscope")
    assert spec.model_hub == "modelscope" and spec.model_id == "Qwen/Qwen3-8B"
    monkeypatch.setenv("XINFERENCE_MODEL_SRC", "modelscope")
    _, desc = plan_llm_launch(fam, "u", model_engine="Transformers", model_format="pytorch",
                              model_size_in_billions=8)
    assert desc["model_hub"] == "modelscope"
    # a family without ModelScope specs still launches from Hugging Face by default...
    smol = builtin_llm_families()["smollm2-instruct"]
    _, desc = plan_llm_launch(smol, "u", model_engine="llama.cpp")
    assert desc["model_hub"] == "huggingface"
    # ...but not when the launch asks for ModelScope
    with pytest.raises(InvalidRequestError, match="modelscope"):
        plan_llm_launch(smol, "u", model_engine="llama.cpp", download_hub="modelscope")
    with pytest.raises(InvalidRequestError, match="hub"):
        plan_llm_launch(smol, "u", download_hub="gitee")
    monkeypatch.setenv("XINFERENCE_MODEL_SRC", "gitee")
    with pytest.raises(InvalidRequestError, match="XINFERENCE_MODEL_SRC"):
        plan_llm_launch(smol, "u")


@pytest.mark.e2e
def test_launch_with_download_hub_through_the_server(tmp_path):
    root = Path(minilm_dir())
    files = {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}
    hub = FakeModelScope({"test-org/minilm": files}).start()
    srv = start_server(tmp_path, env={"MODELSCOPE_ENDPOINT": hub.endpoint,
                                      "MODELSCOPE_CACHE": str(tmp_path / "ms")})
    try:
        url = srv.endpoint
        fam = {"model_name": "ms-emb", "dimensions": 384, "max_tokens": 256,
               "language": ["en"], "model_id": "test-org/minilm"}
        import json
        r = requests.post(f"{url}/v1/model_registrations/embedding",
                          json={"model": json.dumps(fam)})
        assert r.status_code == 200, r.text
        bad = requests.post(f"{url}/v1/models", json={
            "model_name": "ms-emb", "model_type": "embedding", "download_hub": "gitee"})
        assert bad.status_code == 400 and "hub" in bad.json()["error"]["message"]
        r = requests.post(f"{url}/v1/models", json={
            "model_name": "ms-emb", "model_type": "embedding", "download_hub": "modelscope"},
            timeout=300)
        assert r.status_code == 200, r.text
        e = requests.post(f"{url}/v1/embeddings", json={"model": "ms-emb", "input": "hi"})
        assert len(e.json()["data"][0]["embedding"]) == 384
        cached = requests.get(f"{url}/v1/cache/models").json()
        assert any(c["model_name"] == "ms-emb" for c in cached["list"]), cached
        requests.delete(f"{url}/v1/models/ms-emb")
        # a hub error reaches the client as a launch error naming the repo
        fam2 = dict(fam, model_name="ms-missing", model_id="test-org/missing")
        requests.post(f"{url}/v1/model_registrations/embedding",
                      json={"model": json.dumps(fam2)})
        r = requests.post(f"{url}/v1/models", json={
            "model_name": "ms-missing", "model_type": "embedding",
            "download_hub": "modelscope"}, timeout=300)
        assert r.status_code >= 400 and "test-org/missing" in r.json()["error"]["message"]
    finally:
        srv.stop()
        hub.stop()

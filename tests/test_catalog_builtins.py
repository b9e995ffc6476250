"""Every builtin family of every model type loads; every LLM chat template renders a full
tool conversation (system, user, assistant with tool calls, tool result; ``enable_thinking``
on and off for hybrid families); every parser name and reasoning tag is one the code knows;
bad entries are refused with the field named; registrations filter by ability and hub.
Issue 24's "Done when" list, without a server (the CLI/REST path is in test_cli_registry)."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
from pydantic import ValidationError

from xinference.errors import InvalidRequestError
from xinference.model import model_type_handlers
from xinference.model.llm.chat_template import (generic_tool_messages, normalize_messages,
                                                render_chat_template, template_knows_tools)
from xinference.model.llm.llm_family import (LLMFamily, builtin_llm_families,
                                             shipped_chat_templates)
from xinference.model.llm.reasoning import reasoning_parser_for
from xinference.model.llm.tool_parsers import get_tool_parser
from xinference.model.registry import ModelRegistry

RAW = json.loads((Path(__file__).parents[1] / "xinference/model/llm/llm_family.json")
                 .read_text(encoding="utf-8"))
TOOLS = [{"type": "function", "function": {
    "name": "get_weather", "description": "Weather of a city",
    "parameters": {"type": "object", "properties": {"location": {"type": "string"}},
                   "required": ["location"]}}}]
CONVERSATION = [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "Weather in Paris?"},
    {"role": "assistant", "content": None, "tool_calls": [{
        "id": "call_1", "type": "function",
        "function": {"name": "get_weather", "arguments": '{"location": "Paris"}'}}]},
    {"role": "tool", "tool_call_id": "call_1", "name": "get_weather",
     "content": "SUNNY-21C"},
]


def test_every_builtin_of_every_type_loads():
    counts = {t: len(h.builtins()) for t, h in model_type_handlers().items()}
    assert counts["LLM"] >= 60, counts
    assert counts["embedding"] >= 26 and all(n > 0 for n in counts.values()), counts


@pytest.mark.parametrize("fam", list(builtin_llm_families().values()),
                         ids=list(builtin_llm_families()))
def test_family_template_parsers_and_tags(fam):
    if fam.tool_parser:
        assert get_tool_parser(fam.tool_parser).markers
    if "tools" in fam.model_ability:
        assert fam.tool_parser
    parser = reasoning_parser_for(fam, True)
    if "reasoning" in fam.model_ability:
        assert parser is not None
    assert getattr(fam, "source", None), "each family says where its facts come from"
    for spec in fam.model_specs:
        assert spec.model_hub in ("huggingface", "modelscope") and "/" in spec.model_id
    if not fam.chat_template:
        assert "chat" not in fam.model_ability or RAW_BY_NAME[fam.model_name][
            "chat_template"] == "@model"
        return
    msgs, tools = normalize_messages(copy.deepcopy(CONVERSATION)), TOOLS
    if not template_knows_tools(fam.chat_template):  # as LLM.render_chat does
        msgs, tools = generic_tool_messages(msgs, tools), None
    thinking = [True, False] if "hybrid" in fam.model_ability else [None]
    for flag in thinking:
        kw = {} if flag is None else {"enable_thinking": flag}
        text = render_chat_template(fam.chat_template, msgs, bos_token="<s>",
                                    eos_token="</s>", tools=tools, chat_template_kwargs=kw)
        # every turn made it into the prompt, the call as the family's format writes it
        for needle in ("You are terse.", "Weather in Paris?", "get_weather", "SUNNY-21C"):
            assert needle in text, (fam.model_name, needle)
        assert '"Paris"' in text or ">Paris<" in text or "\nParis\n" in text
        assert '"{\\"location' not in text, "arguments encoded twice"
        if flag is False and fam.reasoning_start_tag:
            assert parser.initial_state(text) == "after" or "/nothink" in text


RAW_BY_NAME = {f["model_name"]: f for f in RAW}


def test_every_shipped_template_is_used():
    used = {f.get("chat_template") for f in RAW}
    assert {"@" + n for n in shipped_chat_templates()} <= used


@pytest.mark.parametrize("change,field", [
    ({"model_ability": ["chat", "telepathy"]}, "model_ability"),
    ({"chat_template": None}, "chat_template"),
    ({"chat_template": "@nope"}, "chat_template"),
    ({"tool_parser": "nope"}, "tool_parser"),
    ({"reasoning_parser": "nope"}, "reasoning_parser"),
    ({"model_specs": [{"model_format": "ggufv2", "model_size_in_billions": 1,
                       "quantizations": ["Q4_K_M"], "model_id": "a/b"}]},
     "model_file_name_template"),
    ({"model_specs": [{"model_format": "pytorch", "model_size_in_billions": 1,
                       "model_id": "a/b", "model_hub": "nohub"}]}, "model_hub"),
])
def test_bad_builtin_entries_are_refused_naming_the_field(change, field):
    raw = dict(RAW_BY_NAME["qwen3"], **change)
    with pytest.raises(ValidationError) as e:
        LLMFamily.model_validate(raw, context={"builtin": True})
    assert field in str(e.value)


def test_custom_registration_refuses_bad_fields():
    h = model_type_handlers()
    reg = ModelRegistry({t: x.schema for t, x in h.items()},
                        {t: x.builtins for t, x in h.items()})
    base = {"model_name": "my-llm", "model_ability": ["chat"], "model_specs": [{
        "model_format": "pytorch", "model_size_in_billions": 1, "model_id": "a/b"}]}
    for change, field in (({"tool_parser": "nope"}, "tool_parser"),
                          ({"model_ability": ["chat", "x"]}, "model_ability"),
                          ({"chat_template": "@nope"}, "chat_template")):
        with pytest.raises(InvalidRequestError, match=field):
            reg.parse("LLM", dict(base, **change))
    assert reg.parse("LLM", dict(base, chat_template="@qwen")).chat_template.startswith("{#")


def test_registrations_filter_by_ability_and_hub():
    h = model_type_handlers()
    reg = ModelRegistry({t: x.schema for t, x in h.items()},
                        {t: x.builtins for t, x in h.items()})
    everything = reg.list("LLM")
    ms = {r["model_name"] for r in reg.list("LLM", hub="modelscope")}
    assert "qwen3" in ms and "glm-4.5" in ms and "smollm2-instruct" not in ms
    assert len(ms) < len(everything)
    tools_reasoning = {r["model_name"] for r in reg.list("LLM", abilities=["tools", "reasoning"])}
    assert {"qwen3", "glm-4.6", "gpt-oss", "deepseek-r1"} <= tools_reasoning
    assert "qwen2.5-instruct" not in tools_reasoning
    with pytest.raises(InvalidRequestError, match="hub"):
        reg.list("LLM", hub="github")


# ---- non-LLM catalogs: sources, hub ids, and which id a hub downloads ---------------------

NON_LLM = [t for t in model_type_handlers() if t != "LLM"]


@pytest.mark.parametrize("model_type", NON_LLM)
def test_every_builtin_says_where_its_facts_come_from(model_type):
    minimum = {"embedding": 35, "rerank": 14, "image": 16, "audio": 32, "video": 7}
    fams = model_type_handlers()[model_type].builtins()
    assert len(fams) >= minimum[model_type]
    for name, fam in fams.items():
        assert fam.source, f"{model_type} {name} has no source"
        assert "checked" in fam.source, f"{model_type} {name}: say whether its ids were checked"
        for spec in getattr(fam, "model_specs", None) or [fam]:
            if spec.model_id:
                assert spec.model_id.count("/") == 1, (name, spec.model_id)
        for hub, copy in getattr(fam, "model_src", {}).items():
            assert copy.model_id.count("/") == 1, (name, hub, copy.model_id)


def test_the_launch_hub_picks_the_id_listed_for_it(monkeypatch):
    from xinference.model.embedding.family import builtin_embedding_families
    from xinference.model.image.family import builtin_image_families
    from xinference.model.loader import preferred_hub, spec_on_hub, weights_on_hub

    flux = builtin_image_families()["FLUX.1-schnell"]
    assert weights_on_hub(flux)[:2] == ("huggingface", "black-forest-labs/FLUX.1-schnell")
    assert weights_on_hub(flux, "modelscope")[:2] == ("modelscope",
                                                      "AI-ModelScope/FLUX.1-schnell")
    monkeypatch.delenv("XINFERENCE_MODEL_SRC", raising=False)
    assert preferred_hub(flux, None) == "huggingface"  # the server's default hub
    monkeypatch.setenv("XINFERENCE_MODEL_SRC", "modelscope")
    assert preferred_hub(flux, None) == "modelscope"
    assert preferred_hub(flux, "huggingface") == "huggingface"  # the launch option wins
    inpaint = builtin_image_families()["stable-diffusion-inpainting"]  # no ModelScope copy
    assert preferred_hub(inpaint, None) is None
    # a custom family with one id: a download from another hub tries that same id
    reg = ModelRegistry({t: x.schema for t, x in model_type_handlers().items()},
                        {t: x.builtins for t, x in model_type_handlers().items()})
    mine = reg.parse("image", {"model_name": "my-sd", "model_id": "me/my-sd"})
    assert weights_on_hub(mine, "modelscope")[:2] == ("modelscope", "me/my-sd")
    # upstream's form: model_src alone
    theirs = reg.parse("image", {"model_name": "their-sd", "model_src": {
        "huggingface": {"model_id": "a/b", "model_revision": "abc"},
        "modelscope": {"model_id": "c/d"}}})
    assert (theirs.model_id, theirs.model_revision, theirs.hubs()) == (
        "a/b", "abc", ["huggingface", "modelscope"])
    with pytest.raises(InvalidRequestError, match="model_src"):
        reg.parse("image", {"model_name": "x", "model_src": {"gitee": {"model_id": "a/b"}}})
    qwen = builtin_embedding_families()["Qwen3-Embedding-0.6B"]
    hf = qwen.model_specs[0]
    assert spec_on_hub(qwen.model_specs, hf, "modelscope").model_hub == "modelscope"
    assert spec_on_hub(qwen.model_specs, hf, None) is hf
    assert {r["model_name"] for r in reg.list("image", hub="modelscope")} >= {
        "FLUX.1-schnell", "stable-diffusion-3.5-large"}


def test_audio_ids_are_the_engines_own():
    fw = pytest.importorskip("faster_whisper.utils")
    fams = model_type_handlers()["audio"].builtins().values()
    for fam in fams:
        if fam.model_family == "whisper":
            assert fam.model_id in fw._MODELS.values(), fam.model_name
        else:  # piper-tts's URL pattern: lang/locale/name/quality/locale-name-quality.onnx
            lang, locale, name, quality, file = fam.model_file.split("/")
            assert file == f"{locale}-{name}-{quality}.onnx" and locale.startswith(lang)
            assert fam.model_name == f"piper-{locale}-{name}-{quality}"
            assert fam.voices == [name]

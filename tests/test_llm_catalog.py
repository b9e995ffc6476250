"""The builtin LLM catalog (``llm_family.json``): every family validates, every GGUF spec
names its file for each quantization, every ``tool_parser`` and reasoning tag is one the
code knows, and the families people run are there."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from xinference.model.llm.llm_family import LLMFamily, builtin_llm_families
from xinference.model.llm.reasoning import ReasoningParser, reasoning_parser_for
from xinference.model.llm.tool_parsers import get_tool_parser

RAW = json.loads((Path(__file__).parents[1] / "xinference/model/llm/llm_family.json")
                 .read_text(encoding="utf-8"))


def test_every_family_validates_and_names_are_unique():
    names = [f["model_name"] for f in RAW]
    assert len(names) == len(set(names))
    fams = builtin_llm_families()
    assert set(fams) == set(names)
    for raw in RAW:
        LLMFamily.model_validate(raw, context={"builtin": True})


def test_catalog_covers_the_open_families():
    fams = builtin_llm_families()
    for name in ("qwen3", "qwen2.5-instruct", "qwen2.5-coder-instruct", "QwQ-32B",
                 "deepseek-r1-distill-qwen", "deepseek-r1-distill-llama",
                 "llama-3.1-instruct", "llama-3.2-instruct", "llama-3.3-instruct",
                 "gemma-3-it", "mistral-instruct-v0.3", "mistral-small-instruct", "phi-4",
                 "phi-4-mini-instruct", "glm4-0414", "smollm2-instruct", "smollm3",
                 "gpt-oss"):
        assert name in fams, name
    sizes = {s.model_size_in_billions for s in fams["qwen3"].model_specs}
    assert {"0_6", "235"} <= sizes


@pytest.mark.parametrize("raw", RAW, ids=[f["model_name"] for f in RAW])
def test_specs_resolve_file_names_and_parsers_are_known(raw):
    fam = LLMFamily.model_validate(raw, context={"builtin": True})
    for spec in fam.model_specs:
        assert spec.model_id and "/" in spec.model_id
        if spec.model_format == "ggufv2":
            for q in spec.quantizations:
                name = spec.model_file_name_template.format(quantization=q)
                assert name.endswith(".gguf") and q in name and "{" not in name
    if fam.tool_parser:
        assert get_tool_parser(fam.tool_parser).markers
    if "tools" in fam.model_ability:
        assert fam.tool_parser, "a family with the tools ability declares its format"
    if "reasoning" in fam.model_ability and fam.reasoning_parser:  # gpt-oss channels
        assert reasoning_parser_for(fam, True) is not None
    elif "reasoning" in fam.model_ability:
        assert fam.reasoning_start_tag and fam.reasoning_end_tag
        p = ReasoningParser(fam.reasoning_start_tag, fam.reasoning_end_tag)
        assert p.initial_state("x" + fam.reasoning_start_tag) == "in"
    if "hybrid" in fam.model_ability:
        assert "reasoning" in fam.model_ability
    assert fam.context_length >= 1024 and (fam.stop or fam.stop_token_ids or
                                           fam.model_name == "gpt-2")

"""Kimi K2 tool calls (``kimi_k2``), as moonshotai/Kimi-K2-Instruct's tool-call guide
(``docs/tool_call_guidance.md``) and chat template write them::

    <|tool_calls_section_begin|><|tool_call_begin|>functions.get_weather:0
    <|tool_call_argument_begin|>{"location": "Paris, France"}<|tool_call_end|>
    <|tool_calls_section_end|>

The id the model writes (``functions.NAME:IDX``) is the call's id, as the guide asks (the
template writes it back into the next prompt); the function name is the part between
``functions.`` and ``:``. All markers are special tokens that detokenizers must render.
"""

from __future__ import annotations

import re
from typing import Optional

from ..constraints import Alternative
from .base import Call, TaggedBlockStream, ToolParser, loads_object

SECTION_BEGIN = "<|tool_calls_section_begin|>"
SECTION_END = "<|tool_calls_section_end|>"
CALL_BEGIN = "<|tool_call_begin|>"
CALL_END = "<|tool_call_end|>"
ARG_BEGIN = "<|tool_call_argument_begin|>"
_ID = re.compile(r"\s*((?:functions\.)?([A-Za-z0-9_.\-]+?)(?::(\d+))?)\s*$")


def parse_kimi_block(text: str) -> Optional[Call]:
    """``functions.NAME:IDX<|tool_call_argument_begin|>{...}`` -> (name, args, id)."""
    head, sep, rest = text.partition(ARG_BEGIN)
    m = _ID.match(head) if sep else None
    args = loads_object(rest) if m else None
    if args is None:
        return None
    return m.group(2), args, m.group(1)


class KimiK2ToolParser(ToolParser):
    name = "kimi_k2"
    markers = (SECTION_BEGIN, CALL_BEGIN)
    visible_tokens = (SECTION_BEGIN, SECTION_END, CALL_BEGIN, CALL_END, ARG_BEGIN)

    def new_stream(self, tools):
        return TaggedBlockStream(tools, CALL_BEGIN, CALL_END, parse_kimi_block,
                                 wrappers=[SECTION_BEGIN, SECTION_END])

    def call_format(self, name, parameters):
        return Alternative(parameters, f"{SECTION_BEGIN}{CALL_BEGIN}functions.{name}:0"
                           f"{ARG_BEGIN}", f"{CALL_END}{SECTION_END}")

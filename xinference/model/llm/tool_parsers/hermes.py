"""Hermes / Qwen format (Qwen2.5, Qwen3, QwQ, Hermes 2/3, and our generic tool prompt)::

    <tool_call>
    {"name": "get_weather", "arguments": {"city": "Paris"}}
    </tool_call>

One block per call; several blocks for parallel calls.
"""

from __future__ import annotations

from typing import Optional

from ..constraints import Alternative
from .base import Call, TaggedBlockStream, ToolParser, loads_object, name_args_schema

OPEN, CLOSE = "<tool_call>", "</tool_call>"


def parse_block(text: str) -> Optional[Call]:
    obj = loads_object(text)
    if obj is None or "name" not in obj:
        return None
    return obj["name"], obj.get("arguments", obj.get("parameters"))


class HermesToolParser(ToolParser):
    name = "hermes"
    markers = (OPEN,)

    def new_stream(self, tools):
        return TaggedBlockStream(tools, OPEN, CLOSE, parse_block, json_body=True)

    def call_format(self, name, parameters):
        return Alternative(name_args_schema(name, parameters), f"{OPEN}\n", f"\n{CLOSE}")

"""Qwen3-Coder tool calls (``qwen3_coder``), as the chat template of Qwen/Qwen3-Coder-30B-A3B-
Instruct (Hugging Face, ``chat_template.jinja``) writes an assistant call and the model
answers::

    <tool_call>
    <function=get_weather>
    <parameter=location>
    Paris, France
    </parameter>
    </function>
    </tool_call>

The template puts one newline after ``<parameter=...>`` and before ``</parameter>``; those
two are dropped, everything else in the value is kept. Strings are written bare, other
values with ``tojson`` (objects, arrays) or as Python prints them (numbers, booleans), so a
value is read back by the parameter's schema (:func:`~.base.coerce_argument`; ``True`` /
``False`` are read as booleans where the schema says ``boolean``).

Forced calls are constrained to the Hermes JSON form of the block, which this parser also
reads (see ``glm4``).
"""

from __future__ import annotations

import re
from typing import Any, Dict, Optional

from ..constraints import Alternative
from .base import (Call, TaggedBlockStream, ToolParser, coerce_argument, name_args_schema,
                   tool_schemas)
from .hermes import parse_block as parse_json_block

OPEN, CLOSE = "<tool_call>", "</tool_call>"
_FUNC = re.compile(r"\s*<function=([^>\s]+)>(.*)</function>\s*$", re.S)
_PARAM = re.compile(r"\s*<parameter=([^>]+)>(.*?)</parameter>\s*", re.S)


def _value(text: str, schema: Optional[Dict[str, Any]]) -> Any:
    if text.startswith("\n"):
        text = text[1:]
    if text.endswith("\n"):
        text = text[:-1]
    if (schema or {}).get("type") == "boolean" and text.strip() in ("True", "False"):
        return text.strip() == "True"
    return coerce_argument(text, schema)


def parse_coder_block(text: str, schemas: Dict[str, Dict[str, Any]]) -> Optional[Call]:
    """``<function=NAME>`` with ``<parameter=KEY>`` blocks (nothing else) -> a call, or
    None. A block that is a JSON object is read as Hermes' form."""
    if text.lstrip().startswith("{"):
        return parse_json_block(text)
    m = _FUNC.match(text)
    if not m:
        return None
    name, body, pos, args = m.group(1), m.group(2), 0, {}
    props = schemas.get(name, {})
    while pos < len(body):
        p = _PARAM.match(body, pos)
        if not p:
            if body[pos:].strip():
                return None
            break
        key = p.group(1).strip()
        if key in args:
            return None
        args[key] = _value(p.group(2), props.get(key))
        pos = p.end()
    return name, args


class Qwen3CoderToolParser(ToolParser):
    name = "qwen3_coder"
    markers = (OPEN,)

    def new_stream(self, tools):
        schemas = tool_schemas(tools)
        return TaggedBlockStream(tools, OPEN, CLOSE,
                                 lambda block: parse_coder_block(block, schemas))

    def call_format(self, name, parameters):
        return Alternative(name_args_schema(name, parameters), f"{OPEN}\n", f"\n{CLOSE}")

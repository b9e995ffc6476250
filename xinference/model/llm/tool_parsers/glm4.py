"""GLM-4.5 / GLM-4.6 tool calls (``glm4``, ``glm45``), as their chat template
(``chat_template.jinja`` of zai-org/GLM-4.5 and GLM-4.6 on Hugging Face) writes an assistant
call and the models answer::

    <tool_call>get_weather
    <arg_key>location</arg_key>
    <arg_value>Paris, France</arg_value>
    </tool_call>

The template writes a string value bare and any other value with ``tojson``, so a value is
read back by the parameter's schema (:func:`~.base.coerce_argument`). GLM-4.7 drops the
newlines (``<tool_call>name<arg_key>k</arg_key><arg_value>v</arg_value></tool_call>``);
whitespace between the parts is ignored.

Forced calls (``tool_choice``) are constrained to the Hermes JSON form of the block
(``<tool_call>{"name": ..., "arguments": {...}}</tool_call>``), which this parser also reads:
a JSON-schema constraint cannot describe the key/value markup.
"""

from __future__ import annotations

import re
from typing import Any, Dict, Optional

from ..constraints import Alternative
from .base import (Call, TaggedBlockStream, ToolParser, coerce_argument, name_args_schema,
                   tool_schemas)
from .hermes import parse_block as parse_json_block

OPEN, CLOSE = "<tool_call>", "</tool_call>"
_PAIR = re.compile(r"\s*<arg_key>(.*?)</arg_key>\s*<arg_value>(.*?)</arg_value>\s*", re.S)
_NAME = re.compile(r"\s*([^\s<>{}]+)\s*")


def parse_glm_block(text: str, schemas: Dict[str, Dict[str, Any]]) -> Optional[Call]:
    """``name`` then ``<arg_key>``/``<arg_value>`` pairs (nothing else) -> a call, or None.
    A block that is a JSON object is read as Hermes' form."""
    if text.lstrip().startswith("{"):
        return parse_json_block(text)
    m = _NAME.match(text)
    if not m:
        return None
    name, pos, args = m.group(1), m.end(), {}
    props = schemas.get(name, {})
    while pos < len(text):
        p = _PAIR.match(text, pos)
        if not p:
            return None
        key = p.group(1).strip()
        if not key or key in args:
            return None
        args[key] = coerce_argument(p.group(2), props.get(key))
        pos = p.end()
    return name, args


class Glm45ToolParser(ToolParser):
    name = "glm4"
    markers = (OPEN,)

    def new_stream(self, tools):
        schemas = tool_schemas(tools)
        return TaggedBlockStream(tools, OPEN, CLOSE,
                                 lambda block: parse_glm_block(block, schemas))

    def call_format(self, name, parameters):
        return Alternative(name_args_schema(name, parameters), OPEN, CLOSE)

"""Mistral tool calls after the ``[TOOL_CALLS]`` control token, to the end of the output:

* older tokenizers (Mistral-7B-Instruct-v0.3): ``[TOOL_CALLS][{"name": "f", "arguments":
  {...}}, ...]``
* v11+ tokenizers (Mistral-Small 3.2 and later): ``[TOOL_CALLS]f{"a": 1}`` with one
  ``[TOOL_CALLS]`` per call.

Call ids are exactly 9 alphanumeric characters, as Mistral's templates require.
"""

from __future__ import annotations

import json
import random
import string
from typing import List, Optional

from ..constraints import Alternative
from .base import Call, TailStream, ToolParser, name_args_schema

MARKER = "[TOOL_CALLS]"
_ALNUM = string.ascii_letters + string.digits


def mistral_call_id() -> str:
    return "".join(random.choices(_ALNUM, k=9))


def parse_calls(marker: str, text: str) -> Optional[List[Call]]:
    calls: List[Call] = []
    for part in text.split(MARKER):
        part = part.strip()
        if not part:
            continue
        if part.startswith("["):  # a JSON list of {"name", "arguments"}
            try:
                items = json.loads(part)
            except ValueError:
                return None
            if not isinstance(items, list):
                return None
            for obj in items:
                if not isinstance(obj, dict) or "name" not in obj:
                    return None
                calls.append((obj["name"], obj.get("arguments", obj.get("parameters"))))
            continue
        brace = part.find("{")
        if brace <= 0:
            return None
        try:
            args, end = json.JSONDecoder().raw_decode(part, brace)
        except ValueError:
            return None
        if part[end:].strip():
            return None
        calls.append((part[:brace].strip(), args))
    return calls or None


class MistralToolParser(ToolParser):
    name = "mistral"
    markers = (MARKER,)
    visible_tokens = (MARKER,)

    def new_stream(self, tools):
        return TailStream(tools, [MARKER], parse_calls, new_id=mistral_call_id)

    def call_format(self, name, parameters):
        return Alternative(name_args_schema(name, parameters), MARKER + "[", "]")

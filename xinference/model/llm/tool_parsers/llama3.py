"""Llama 3.1 / 3.2 / 3.3 JSON tool calls, as the official templates ask for them: the whole
answer is ``{"name": "get_weather", "parameters": {"city": "Paris"}}`` (``"arguments"`` is
accepted too), optionally after the ``<|python_tag|>`` token, several calls separated by
``;``. Only an answer that *starts* with ``{`` is read as calls, and only when the request
has tools; an answer that is not a valid call stays content word for word.
"""

from __future__ import annotations

import json
from typing import List, Optional

from ..constraints import Alternative
from .base import Call, TailStream, ToolParser, name_args_schema

PYTHON_TAG = "<|python_tag|>"


def parse_calls(marker: str, text: str) -> Optional[List[Call]]:
    text = ("{" + text) if marker == "{" else text
    dec = json.JSONDecoder()
    calls, i, n = [], 0, len(text)
    while True:
        while i < n and text[i] in " \t\r\n;":
            i += 1
        if i >= n:
            break
        try:
            obj, i = dec.raw_decode(text, i)
        except ValueError:
            return None
        if not isinstance(obj, dict) or "name" not in obj:
            return None
        calls.append((obj["name"], obj.get("parameters", obj.get("arguments"))))
    return calls or None


class Llama3ToolParser(ToolParser):
    name = "llama3"
    markers = (PYTHON_TAG,)
    visible_tokens = (PYTHON_TAG,)

    def new_stream(self, tools):
        return TailStream(tools, [PYTHON_TAG], parse_calls, at_start=["{"])

    def call_format(self, name, parameters):
        return Alternative(name_args_schema(name, parameters, "parameters"))

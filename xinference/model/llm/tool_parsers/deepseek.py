"""DeepSeek tool calls, between the special tokens of their templates.

* V3 / R1 (``deepseek_v3``, ``deepseek-r1``)::

    <｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function<｜tool▁sep｜>get_weather
    ```json
    {"city": "Paris"}
    ```<｜tool▁call▁end｜><｜tool▁calls▁end｜>

* V3.1 (``deepseek-v3.1``)::

    <｜tool▁calls▁begin｜><｜tool▁call▁begin｜>get_weather<｜tool▁sep｜>{"city": "Paris"}
    <｜tool▁call▁end｜><｜tool▁calls▁end｜>
"""

from __future__ import annotations

import re
from typing import Optional

from ..constraints import Alternative
from .base import Call, TaggedBlockStream, ToolParser, loads_object

CALLS_BEGIN = "<｜tool▁calls▁begin｜>"
CALLS_END = "<｜tool▁calls▁end｜>"
CALL_BEGIN = "<｜tool▁call▁begin｜>"
CALL_END = "<｜tool▁call▁end｜>"
SEP = "<｜tool▁sep｜>"
_V3_BLOCK = re.compile(r"^\s*function\s*" + re.escape(SEP) +
                       r"\s*([^\n]+?)\s*\n```(?:json)?\s*\n(.*?)\n?```\s*$", re.S)


def parse_v3(text: str) -> Optional[Call]:
    m = _V3_BLOCK.match(text)
    if not m:
        return None
    args = loads_object(m.group(2))
    return None if args is None else (m.group(1), args)


def parse_v31(text: str) -> Optional[Call]:
    name, sep, rest = text.partition(SEP)
    if not sep:
        return None
    args = loads_object(rest)
    return None if args is None else (name.strip(), args)


class DeepSeekV3ToolParser(ToolParser):
    name = "deepseek_v3"
    markers = (CALLS_BEGIN, CALL_BEGIN)
    visible_tokens = (CALLS_BEGIN, CALLS_END, CALL_BEGIN, CALL_END, SEP)
    _parse = staticmethod(parse_v3)

    def new_stream(self, tools):
        return TaggedBlockStream(tools, CALL_BEGIN, CALL_END, self._parse,
                                 wrappers=[CALLS_BEGIN, CALLS_END])

    def call_format(self, name, parameters):
        return Alternative(parameters, f"{CALLS_BEGIN}{CALL_BEGIN}function{SEP}{name}\n```json\n",
                           f"\n```{CALL_END}{CALLS_END}")


class DeepSeekV31ToolParser(DeepSeekV3ToolParser):
    name = "deepseek-v3.1"
    _parse = staticmethod(parse_v31)

    def call_format(self, name, parameters):
        return Alternative(parameters, f"{CALLS_BEGIN}{CALL_BEGIN}{name}{SEP}",
                           f"{CALL_END}{CALLS_END}")

"""The shared parts of every tool-call parser.

A :class:`ToolParser` is built once per model (stateless); :meth:`ToolParser.new_stream`
gives a :class:`ToolCallStream` per request and choice, which holds all the state. A stream
is pushed the *new* text only and returns a :class:`ParsedDelta`: content that is safe to
show and the calls that completed. Non-streaming is ``push(whole_text)`` then ``finish()``,
so both paths give the same message.

Rules every format follows (OpenAI Chat Completions ``tool_calls``):

* a call is emitted once, complete, when its markup closes: ``{"index", "id", "type":
  "function", "function": {"name", "arguments"}}`` with ``arguments`` a JSON string;
* a call must parse and name one of the request's tools, else its markup goes to
  ``content`` word for word (that block only); no half-built call is ever emitted;
* text before, between and after calls is content; a possible partial marker at the end of
  a push is held back (:func:`~xinference.model.llm.text.split_at_first`) so no markup leaks.
"""

from __future__ import annotations

import json
import uuid
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from ..constraints import Alternative, Constraint
from ..text import ParsedDelta, split_at_first

# (function name, arguments as a dict / JSON value), or with a third item: the call id the
# model wrote (Kimi K2's ``functions.NAME:IDX``), used instead of a random one.
Call = Tuple[Any, ...]


def tool_names(tools: Optional[Sequence[Dict[str, Any]]]) -> List[str]:
    """Function names of an OpenAI ``tools`` list (already validated)."""
    return [t["function"]["name"] for t in tools or []]


def tool_parameters(tool: Dict[str, Any]) -> Dict[str, Any]:
    """The ``parameters`` JSON schema of a tool (an empty object schema when absent)."""
    return tool["function"].get("parameters") or {"type": "object", "properties": {}}


def random_call_id() -> str:
    return f"call_{uuid.uuid4().hex[:24]}"


class ToolCallStream:
    """Per-request state of one parser; subclasses implement :meth:`push` / :meth:`finish`
    and call :meth:`_emit` for each parsed call.

    Args:
        tools: the request's validated ``tools``.
        new_id: makes a call id (``call_<hex>`` by default; Mistral needs 9 alphanumerics).
    """

    def __init__(self, tools: Sequence[Dict[str, Any]],
                 new_id: Callable[[], str] = random_call_id):
        self._names = set(tool_names(tools))
        self._new_id = new_id
        self.num_calls = 0
        # parallel_tool_calls=false: at most one call; later call markup stays content
        self.max_calls: Optional[int] = None

    def _call(self, name: Any, args: Any, call_id: Optional[str] = None
              ) -> Optional[Dict[str, Any]]:
        """The stream entry of a parsed call, or None when it is not a valid call."""
        if not isinstance(name, str) or name not in self._names:
            return None
        if isinstance(args, str):  # some models write the arguments as a JSON string
            try:
                args = json.loads(args)
            except ValueError:
                return None
        if args is None:
            args = {}
        if not isinstance(args, dict):
            return None
        entry = {"index": self.num_calls, "id": call_id or self._new_id(), "type": "function",
                 "function": {"name": name,
                              "arguments": json.dumps(args, ensure_ascii=False)}}
        self.num_calls += 1
        return entry

    def _emit(self, calls: Optional[List[Call]], raw: str, out: ParsedDelta) -> None:
        """Add ``calls`` parsed from markup ``raw`` to ``out``; all or nothing: one invalid
        call sends the whole markup to content."""
        if calls and self.max_calls is not None:
            calls = calls[:max(0, self.max_calls - self.num_calls)]
        if calls:
            entries, start = [], self.num_calls
            for call in calls:
                e = self._call(*call)
                if e is None:
                    self.num_calls = start
                    entries = None
                    break
                entries.append(e)
            if entries:
                out.tool_calls.extend(entries)
                return
        out.content += raw

    def push(self, text: str) -> ParsedDelta:  # pragma: no cover - abstract
        raise NotImplementedError

    def finish(self) -> ParsedDelta:  # pragma: no cover - abstract
        raise NotImplementedError


class TaggedBlockStream(ToolCallStream):
    """Formats where each call sits between an open and a close tag (Hermes/Qwen
    ``<tool_call>`` ... ``</tool_call>``, DeepSeek's call begin/end tokens).

    Args:
        open_tag / close_tag: the tags around one call.
        parse_block: the text between the tags -> ``(name, arguments)`` or None.
        wrappers: extra markup outside the blocks that is dropped (DeepSeek's
            ``<｜tool▁calls▁begin｜>`` / ``<｜tool▁calls▁end｜>``).
        json_body: the block is one JSON object: a close tag inside one of its strings
            (``{"city": "</tool_call>"}``, which a sampled constrained call can write) does
            not close the block.
    """

    def __init__(self, tools, open_tag: str, close_tag: str,
                 parse_block: Callable[[str], Optional[Call]],
                 wrappers: Sequence[str] = (), json_body: bool = False, **kw):
        super().__init__(tools, **kw)
        self._open, self._close = open_tag, close_tag
        self._parse = parse_block
        self._json_body = json_body
        self._wrappers = [w for w in wrappers if w]
        self._buf = ""
        self._inside = False
        self._scanned = 0  # inside a block: where the close-tag search resumes

    def push(self, text: str) -> ParsedDelta:
        out = ParsedDelta()
        self._buf += text
        while self._buf:
            if not self._inside:
                text, self._buf, which = split_at_first(
                    self._buf, [self._open] + self._wrappers)
                out.content += text
                if which is None:
                    break
                self._buf = self._buf[len(which):]
                if which == self._open:
                    self._inside, self._scanned = True, 0
            else:
                j = self._buf.find(self._close, self._scanned)
                if j == -1:
                    self._scanned = max(0, len(self._buf) - len(self._close) + 1)
                    break
                if self._json_body and ends_in_json_string(self._buf[:j]):
                    self._scanned = j + len(self._close)  # part of a string: go on
                    continue
                block = self._buf[:j]
                self._buf = self._buf[j + len(self._close):]
                self._inside = False
                call = self._parse(block)
                self._emit([call] if call else None,
                           self._open + block + self._close, out)
        return out

    def finish(self) -> ParsedDelta:
        out = ParsedDelta()
        # an unclosed block is not a call: its text is content, word for word
        out.content = (self._open if self._inside else "") + self._buf
        self._buf, self._inside = "", False
        return out


def ends_in_json_string(text: str) -> bool:
    """Whether ``text`` (the start of a JSON document) ends inside a string literal:
    quotes counted left to right, a backslash escaping the next character."""
    inside = escaped = False
    for ch in text:
        if escaped:
            escaped = False
        elif ch == "\\":
            escaped = inside
        elif ch == '"':
            inside = not inside
    return inside


class TailStream(ToolCallStream):
    """Formats where, once a marker appears, everything to the end of the output is calls
    (Mistral ``[TOOL_CALLS]``, Llama 3 ``<|python_tag|>`` or a bare JSON answer). The calls
    are parsed at :meth:`finish`; text before the marker streams as content.

    Args:
        markers: the openings; ``at_start`` markers count only at the start of the output
            (after whitespace), others anywhere.
        parse_tail: (marker, text after it) -> list of calls, or None when it is no call.
    """

    def __init__(self, tools, markers: Sequence[str],
                 parse_tail: Callable[[str, str], Optional[List[Call]]],
                 at_start: Sequence[str] = (), **kw):
        super().__init__(tools, **kw)
        self._markers = [m for m in markers if m]
        self._at_start = [m for m in at_start if m]
        self._parse = parse_tail
        self._buf = ""
        self._marker: Optional[str] = None
        self._started = False  # non-whitespace content was released

    def push(self, text: str) -> ParsedDelta:
        out = ParsedDelta()
        self._buf += text
        if self._marker is not None:
            return out
        if not self._started and self._at_start:
            stripped = self._buf.lstrip()
            if not stripped:
                return out
            for m in self._at_start:
                if stripped.startswith(m):
                    out.content += self._buf[:len(self._buf) - len(stripped)]
                    self._marker, self._buf = m, stripped[len(m):]
                    return out
            if any(m.startswith(stripped) for m in self._at_start):
                return out
        text, self._buf, which = split_at_first(self._buf, self._markers)
        out.content += text
        if which is not None:
            self._marker, self._buf = which, self._buf[len(which):]
            self._started = True
            return out
        if out.content.strip():
            self._started = True
        return out

    def finish(self) -> ParsedDelta:
        out = ParsedDelta()
        if self._marker is None:
            out.content, self._buf = self._buf, ""
            return out
        calls = self._parse(self._marker, self._buf)
        self._emit(calls, self._marker + self._buf, out)
        self._buf, self._marker = "", None
        return out


class ToolParser:
    """Per model: one tool-call format. Subclasses set :attr:`name`, :attr:`markers`
    (text that opens a call), :attr:`visible_tokens` (special tokens among the markers that
    detokenizers must render) and implement :meth:`new_stream` and :meth:`call_format`."""

    name = ""
    markers: Tuple[str, ...] = ()
    visible_tokens: Tuple[str, ...] = ()

    def new_stream(self, tools: Sequence[Dict[str, Any]]) -> ToolCallStream:
        """A fresh per-request stream."""
        raise NotImplementedError

    def call_format(self, name: str, parameters: Dict[str, Any]) -> Alternative:
        """How the model writes one call of ``name``: literal text around a JSON value
        whose schema is given (used to constrain decoding)."""
        raise NotImplementedError

    def constraint(self, tools: Sequence[Dict[str, Any]]) -> Constraint:
        """The decoding constraint of ``tool_choice: "required"`` (or a named function, with
        ``tools`` narrowed to it): exactly one well-formed call of one of ``tools`` whose
        arguments validate against its ``parameters``."""
        return Constraint([self.call_format(t["function"]["name"], tool_parameters(t))
                           for t in tools])


def name_args_schema(name: str, parameters: Dict[str, Any], args_key: str = "arguments"
                     ) -> Dict[str, Any]:
    """The JSON schema of ``{"name": name, args_key: <parameters>}``."""
    return {"type": "object",
            "properties": {"name": {"const": name}, args_key: parameters},
            "required": ["name", args_key], "additionalProperties": False}


def loads_object(text: str) -> Optional[Dict[str, Any]]:
    """``json.loads`` of a stripped JSON object, or None."""
    try:
        v = json.loads(text.strip())
    except ValueError:
        return None
    return v if isinstance(v, dict) else None


def tool_schemas(tools: Optional[Sequence[Dict[str, Any]]]) -> Dict[str, Dict[str, Any]]:
    """``{function name: {parameter name: its JSON schema}}`` of an OpenAI ``tools`` list."""
    return {t["function"]["name"]: tool_parameters(t).get("properties") or {}
            for t in tools or []}


def coerce_argument(text: str, schema: Optional[Dict[str, Any]]) -> Any:
    """The value of one argument that an XML-style format (GLM-4.5, Qwen3-Coder) wrote as
    text: kept as a string when the parameter's schema says ``string`` (or there is no
    schema and the text is no JSON), else read as JSON (numbers, booleans, objects, arrays,
    ``null``), falling back to the text itself. Those templates write strings bare and
    every other value with ``tojson``, so this inverts them."""
    types = (schema or {}).get("type")
    types = types if isinstance(types, list) else [types]
    if "string" in types and len(types) == 1:
        return text
    try:
        return json.loads(text)
    except ValueError:
        return text

"""Anthropic Messages API as a translation onto the chat pipeline.

``POST /v1/messages`` is answered by the same ModelActor ``chat`` call as
``/v1/chat/completions``: :func:`to_chat_request` turns a Messages request into OpenAI chat
``messages`` plus a ``generate_config``; :func:`to_message` turns the chat completion into
a Messages response, and :class:`MessageStream` turns the chat stream into Anthropic's event
sequence. One pipeline, two wire formats (as vLLM's ``entrypoints/anthropic``).

Sources of the shapes: Anthropic's API reference, "Messages" and "Streaming Messages"
(https://docs.anthropic.com/en/api/messages, .../messages-streaming) and "Errors".

Mapping (request):
    * ``system`` (a string or text blocks) -> one ``system`` message;
    * ``text`` blocks -> text; ``image`` blocks (``source`` ``base64`` or ``url``) ->
      ``image_url`` parts (a ``data:`` URI or the URL; a model without vision answers 400);
    * assistant ``tool_use`` -> ``tool_calls`` (``arguments`` = ``json.dumps(input)``);
      assistant ``thinking`` -> ``reasoning_content``; ``redacted_thinking`` is dropped
      (its content is encrypted by another provider and means nothing to this model);
    * user ``tool_result`` -> a ``tool`` message with ``tool_call_id``; it must answer a
      ``tool_use`` of the assistant message just before (400 otherwise); images inside it
      follow as a user message; ``is_error: true`` prefixes the text with ``"Error: "``;
    * ``tools`` (custom tools: ``name``, ``description``, ``input_schema``) -> function tools;
      ``tool_choice`` ``auto`` / ``any`` / ``tool`` / ``none`` -> ``auto`` / ``required`` /
      the named function / ``none``; ``disable_parallel_tool_use`` ->
      ``parallel_tool_calls: false``;
    * ``max_tokens``, ``temperature``, ``top_p``, ``top_k``, ``stop_sequences`` (-> ``stop``);
    * ``thinking`` ``{"type": "enabled", "budget_tokens": n}`` / ``{"type": "disabled"}`` ->
      ``enable_thinking`` on a model with the ``reasoning`` ability (400 on others when
      enabled). ``budget_tokens`` must be >= 1 and below ``max_tokens``; as Anthropic's docs
      say of it, it is a target: only ``max_tokens`` bounds the output;
    * ``metadata.user_id`` is checked (a string) and, like OpenAI's ``user``, only
      identifies the caller: nothing is generated differently.

Mapping (response): ``reasoning_content`` -> a ``thinking`` block, ``content`` -> a
``text`` block, ``tool_calls`` -> ``tool_use`` blocks (``input`` parsed from the JSON
arguments); ``finish_reason`` ``stop`` -> ``end_turn`` (or ``stop_sequence`` when one of the
request's ``stop_sequences`` ended it), ``length`` -> ``max_tokens``, ``tool_calls`` ->
``tool_use``; ``usage`` -> ``input_tokens`` / ``output_tokens``.

Errors: ``{"type": "error", "error": {"type", "message"}}`` with Anthropic's type names.
With auth on, the API key is also taken from ``x-api-key`` (``api/auth.py``).
"""

from __future__ import annotations

import json
import uuid
from typing import Any, Dict, List, Optional, Tuple

import orjson

from ..errors import InvalidRequestError

#: top-level fields of a Messages request this layer implements
MESSAGE_FIELDS = {"model", "messages", "max_tokens", "system", "tools", "tool_choice",
                  "stop_sequences", "temperature", "top_p", "top_k", "metadata",
                  "thinking", "stream"}
#: fields of ``/v1/messages/count_tokens``
COUNT_FIELDS = {"model", "messages", "system", "tools", "tool_choice", "thinking"}

_BLOCKS = {"user": {"text", "image", "tool_result"},
           "assistant": {"text", "tool_use", "thinking", "redacted_thinking"}}

#: HTTP status -> Anthropic error type ("Errors" page of the API reference)
_ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error",
                403: "permission_error", 404: "not_found_error", 413: "request_too_large",
                422: "invalid_request_error", 429: "rate_limit_error",
                503: "overloaded_error", 529: "overloaded_error"}

_STOP_REASONS = {"stop": "end_turn", "length": "max_tokens", "tool_calls": "tool_use",
                 "abort": "end_turn"}


def error_body(status: int, message: str) -> Dict[str, Any]:
    """Anthropic's error object for an HTTP ``status`` (plus Xinference's ``detail``, which
    Anthropic clients ignore and Xinference clients read)."""
    return {"type": "error", "error": {"type": _ERROR_TYPES.get(status, "api_error"),
                                       "message": message}, "detail": message}


def _bad(msg: str) -> InvalidRequestError:
    return InvalidRequestError(msg)


def _text_of(blocks: Any, where: str) -> str:
    """The joined text of a string or a list of ``text`` blocks."""
    if isinstance(blocks, str):
        return blocks
    if not isinstance(blocks, list):
        raise _bad(f"{where}: must be a string or a list of text blocks")
    out = []
    for j, b in enumerate(blocks):
        if not isinstance(b, dict) or b.get("type") != "text" or not isinstance(
                b.get("text"), str):
            raise _bad(f"{where}.{j}: expected a text block with a string 'text'")
        out.append(b["text"])
    return "".join(out)


def _image_part(b: Dict[str, Any], where: str) -> Dict[str, Any]:
    src = b.get("source")
    if not isinstance(src, dict):
        raise _bad(f"{where}.source: required object")
    if src.get("type") == "base64":
        if not isinstance(src.get("media_type"), str) or not isinstance(src.get("data"), str):
            raise _bad(f"{where}.source: base64 images need 'media_type' and 'data'")
        url = f"data:{src['media_type']};base64,{src['data']}"
    elif src.get("type") == "url" and isinstance(src.get("url"), str):
        url = src["url"]
    else:
        raise _bad(f"{where}.source.type: expected 'base64' or 'url'")
    return {"type": "image_url", "image_url": {"url": url}}


def _tool_result(b: Dict[str, Any], where: str, open_ids: set
                 ) -> Tuple[Dict[str, Any], List[Dict[str, Any]]]:
    """``(tool message, image parts)`` of a ``tool_result`` block."""
    tid = b.get("tool_use_id")
    if not isinstance(tid, str) or tid not in open_ids:
        raise _bad(f"{where}: tool_result for tool_use_id {tid!r} has no matching tool_use "
                   "block in the assistant message before it")
    content = b.get("content", "")
    texts, images = [], []
    if isinstance(content, str):
        texts.append(content)
    elif isinstance(content, list):
        for j, c in enumerate(content):
            kind = c.get("type") if isinstance(c, dict) else None
            if kind == "text" and isinstance(c.get("text"), str):
                texts.append(c["text"])
            elif kind == "image":
                images.append(_image_part(c, f"{where}.content.{j}"))
            else:
                raise _bad(f"{where}.content.{j}: unknown block type {kind!r} in a "
                           "tool_result (text or image)")
    else:
        raise _bad(f"{where}.content: must be a string or a list of blocks")
    text = "".join(texts)
    if b.get("is_error"):
        text = "Error: " + text
    return {"role": "tool", "tool_call_id": tid, "content": text}, images


def _convert_messages(messages: Any) -> List[Dict[str, Any]]:
    if not isinstance(messages, list) or not messages:
        raise _bad("messages: must be a non-empty list")
    out: List[Dict[str, Any]] = []
    open_ids: set = set()  # tool_use ids of the last assistant message
    for i, m in enumerate(messages):
        where = f"messages.{i}"
        role = m.get("role") if isinstance(m, dict) else None
        if role not in _BLOCKS:
            raise _bad(f"{where}.role: expected 'user' or 'assistant', got {role!r}")
        content = m.get("content")
        if isinstance(content, str):
            out.append({"role": role, "content": content})
            open_ids = set()
            continue
        if not isinstance(content, list):
            raise _bad(f"{where}.content: must be a string or a list of content blocks")
        parts: List[Dict[str, Any]] = []
        calls: List[Dict[str, Any]] = []
        reasoning: List[str] = []
        tool_msgs: List[Dict[str, Any]] = []
        for j, b in enumerate(content):
            bw = f"{where}.content.{j}"
            kind = b.get("type") if isinstance(b, dict) else None
            if kind not in _BLOCKS[role]:
                raise _bad(f"{bw}.type: unknown or unsupported block type {kind!r} in a "
                           f"{role} message (expected one of {sorted(_BLOCKS[role])})")
            if kind == "text":
                if not isinstance(b.get("text"), str):
                    raise _bad(f"{bw}.text: required string")
                parts.append({"type": "text", "text": b["text"]})
            elif kind == "image":
                parts.append(_image_part(b, bw))
            elif kind == "tool_use":
                if not isinstance(b.get("id"), str) or not isinstance(b.get("name"), str):
                    raise _bad(f"{bw}: tool_use needs string 'id' and 'name'")
                inp = b.get("input", {})
                if not isinstance(inp, dict):
                    raise _bad(f"{bw}.input: must be an object")
                calls.append({"id": b["id"], "type": "function", "function": {
                    "name": b["name"], "arguments": json.dumps(inp, ensure_ascii=False)}})
            elif kind == "thinking":
                if not isinstance(b.get("thinking"), str):
                    raise _bad(f"{bw}.thinking: required string")
                reasoning.append(b["thinking"])
            elif kind == "tool_result":
                msg, images = _tool_result(b, bw, open_ids)
                tool_msgs.append(msg)
                parts.extend(images)
        if role == "assistant":
            msg: Dict[str, Any] = {"role": "assistant",
                                   "content": "".join(p["text"] for p in parts)}
            if calls:
                msg["tool_calls"] = calls
            if reasoning:
                msg["reasoning_content"] = "".join(reasoning)
            out.append(msg)
            open_ids = {c["id"] for c in calls}
        else:
            out.extend(tool_msgs)  # tool results first, as the tool_use they answer
            if parts or not tool_msgs:
                only_text = all(p["type"] == "text" for p in parts)
                out.append({"role": "user", "content": "".join(p["text"] for p in parts)
                            if only_text else parts})
            open_ids = set()
    return out


def _convert_tools(tools: Any) -> List[Dict[str, Any]]:
    if not isinstance(tools, list):
        raise _bad("tools: must be a list")
    out = []
    for i, t in enumerate(tools):
        if not isinstance(t, dict) or t.get("type", "custom") != "custom":
            kind = t.get("type") if isinstance(t, dict) else None
            raise _bad(f"tools.{i}: tool type {kind!r} is not supported (custom tools with "
                       "'name' and 'input_schema' only)")
        if not isinstance(t.get("name"), str) or not isinstance(t.get("input_schema"), dict):
            raise _bad(f"tools.{i}: needs a string 'name' and an object 'input_schema'")
        fn = {"name": t["name"], "parameters": t["input_schema"]}
        if t.get("description") is not None:
            fn["description"] = t["description"]
        out.append({"type": "function", "function": fn})
    return out


def _convert_tool_choice(choice: Any, cfg: Dict[str, Any]) -> None:
    kind = choice.get("type") if isinstance(choice, dict) else None
    if kind == "auto":
        cfg["tool_choice"] = "auto"
    elif kind == "any":
        cfg["tool_choice"] = "required"
    elif kind == "none":
        cfg["tool_choice"] = "none"
    elif kind == "tool":
        if not isinstance(choice.get("name"), str):
            raise _bad("tool_choice.name: required for type 'tool'")
        cfg["tool_choice"] = {"type": "function", "function": {"name": choice["name"]}}
    else:
        raise _bad(f"tool_choice.type: expected auto, any, tool or none, got {kind!r}")
    if choice.get("disable_parallel_tool_use") is not None:
        if not isinstance(choice["disable_parallel_tool_use"], bool):
            raise _bad("tool_choice.disable_parallel_tool_use: must be a boolean")
        if kind != "none":
            cfg["parallel_tool_calls"] = not choice["disable_parallel_tool_use"]


def _thinking(th: Any, max_tokens: Optional[int]) -> bool:
    kind = th.get("type") if isinstance(th, dict) else None
    if kind == "disabled":
        return False
    if kind != "enabled":
        raise _bad(f"thinking.type: expected 'enabled' or 'disabled', got {kind!r}")
    budget = th.get("budget_tokens")
    if not isinstance(budget, int) or isinstance(budget, bool) or budget < 1:
        raise _bad("thinking.budget_tokens: required integer >= 1")
    if max_tokens is not None and budget >= max_tokens:
        raise _bad("thinking.budget_tokens: must be less than max_tokens")
    return True


def to_chat_request(body: Any, count_only: bool = False
                    ) -> Tuple[str, List[Dict[str, Any]], Dict[str, Any], Optional[bool]]:
    """``(model uid, chat messages, generate_config, enable_thinking or None)`` of a
    Messages request (``count_only``: a ``count_tokens`` request, without ``max_tokens``).

    Raises:
        InvalidRequestError: a missing or malformed field, an unknown block type, a
            ``tool_result`` without its ``tool_use``, an unsupported tool type or field.
    """
    if not isinstance(body, dict):
        raise _bad("the request body must be a JSON object")
    allowed = COUNT_FIELDS if count_only else MESSAGE_FIELDS
    unknown = sorted(set(body) - allowed)
    if unknown:
        raise _bad(f"unsupported field(s): {', '.join(unknown)}")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise _bad("model: required string")
    cfg: Dict[str, Any] = {}
    max_tokens = body.get("max_tokens")
    if not count_only:
        if max_tokens is None:
            raise _bad("max_tokens: Field required")
        if not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1:
            raise _bad("max_tokens: must be an integer >= 1")
        cfg["max_tokens"] = max_tokens
    messages = _convert_messages(body.get("messages"))
    system = body.get("system")
    if system is not None:
        messages.insert(0, {"role": "system", "content": _text_of(system, "system")})
    if body.get("tools") is not None:
        cfg["tools"] = _convert_tools(body["tools"])
    if body.get("tool_choice") is not None:
        _convert_tool_choice(body["tool_choice"], cfg)
    for name in ("temperature", "top_p"):
        v = body.get(name)
        if v is not None:
            if not isinstance(v, (int, float)) or isinstance(v, bool):
                raise _bad(f"{name}: must be a number")
            cfg[name] = float(v)
    if body.get("top_k") is not None:
        if not isinstance(body["top_k"], int) or body["top_k"] < 0:
            raise _bad("top_k: must be an integer >= 0")
        cfg["top_k"] = body["top_k"]
    stops = body.get("stop_sequences")
    if stops is not None:
        if not isinstance(stops, list) or not all(isinstance(s, str) and s for s in stops):
            raise _bad("stop_sequences: must be a list of non-empty strings")
        cfg["stop"] = stops
    meta = body.get("metadata")
    if meta is not None:
        if not isinstance(meta, dict) or set(meta) - {"user_id"} or not isinstance(
                meta.get("user_id", ""), (str, type(None))):
            raise _bad("metadata: only a string 'user_id' is accepted")
    thinking = _thinking(body["thinking"], max_tokens) if body.get("thinking") is not None \
        else None
    if thinking is not None:
        cfg["enable_thinking"] = thinking
    if body.get("stream"):
        cfg["stream"] = True
        cfg["stream_options"] = {"include_usage": True}  # usage goes in message_delta
    return model, messages, cfg, thinking


def _stop(finish: Optional[str], matched: Optional[str], stops: List[str]
          ) -> Tuple[str, Optional[str]]:
    if finish == "stop" and matched is not None and matched in stops:
        return "stop_sequence", matched
    return _STOP_REASONS.get(finish or "stop", "end_turn"), None


def _tool_use(call: Dict[str, Any]) -> Dict[str, Any]:
    fn = call.get("function") or {}
    try:
        inp = json.loads(fn.get("arguments") or "{}")
    except ValueError:  # the parsers emit valid JSON only; keep the text if not
        inp = {"_raw": fn.get("arguments")}
    return {"type": "tool_use", "id": call.get("id"), "name": fn.get("name"), "input": inp}


def new_message_id() -> str:
    return "msg_" + uuid.uuid4().hex


def to_message(completion: Dict[str, Any], stops: List[str]) -> Dict[str, Any]:
    """The Messages response of a ``chat.completion`` (first choice); ``stops``: the
    request's ``stop_sequences``."""
    choice = completion["choices"][0]
    msg = choice.get("message") or {}
    content: List[Dict[str, Any]] = []
    if msg.get("reasoning_content"):
        content.append({"type": "thinking", "thinking": msg["reasoning_content"],
                        "signature": ""})
    if msg.get("content"):
        content.append({"type": "text", "text": msg["content"]})
    content.extend(_tool_use(c) for c in msg.get("tool_calls") or [])
    reason, seq = _stop(choice.get("finish_reason"), choice.get("stop_reason"), stops)
    usage = completion.get("usage") or {}
    return {"id": new_message_id(), "type": "message", "role": "assistant",
            "model": completion.get("model"), "content": content, "stop_reason": reason,
            "stop_sequence": seq,
            "usage": {"input_tokens": usage.get("prompt_tokens", 0),
                      "output_tokens": usage.get("completion_tokens", 0)}}


def sse_event(name: str, data: Dict[str, Any]) -> bytes:
    """One server-sent event: ``event: NAME`` and its JSON ``data``."""
    return b"event: " + name.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"


class MessageStream:
    """Turns one chat stream (``chat.completion.chunk`` dicts, usage chunk included) into
    Anthropic's events: ``message_start``, ``ping``, then per content block
    ``content_block_start`` / ``content_block_delta`` (``thinking_delta``, ``text_delta``,
    ``input_json_delta``) / ``content_block_stop``, then ``message_delta`` (``stop_reason``,
    ``stop_sequence``, ``usage``) and ``message_stop``. Blocks follow the order of the
    deltas: reasoning, text, and the tool calls of the final chunk.

    ``message_start`` reports ``input_tokens`` 0: the prompt is counted while the model
    runs, and ``message_delta.usage`` carries the real ``input_tokens``.
    """

    def __init__(self, model: str, stops: List[str]):
        self.model = model
        self.stops = stops
        self._index = -1
        self._open: Optional[str] = None
        self._stop: Tuple[str, Optional[str]] = ("end_turn", None)
        self._done = False

    def start(self) -> bytes:
        msg = {"id": new_message_id(), "type": "message", "role": "assistant",
               "model": self.model, "content": [], "stop_reason": None,
               "stop_sequence": None, "usage": {"input_tokens": 0, "output_tokens": 0}}
        return (sse_event("message_start", {"type": "message_start", "message": msg})
                + sse_event("ping", {"type": "ping"}))

    def _close(self) -> bytes:
        if self._open is None:
            return b""
        self._open = None
        return sse_event("content_block_stop", {"type": "content_block_stop",
                                                "index": self._index})

    def _block(self, kind: str, block: Dict[str, Any]) -> bytes:
        out = self._close()
        self._index += 1
        self._open = kind
        return out + sse_event("content_block_start", {"type": "content_block_start",
                                                       "index": self._index,
                                                       "content_block": block})

    def _delta(self, delta: Dict[str, Any]) -> bytes:
        return sse_event("content_block_delta", {"type": "content_block_delta",
                                                 "index": self._index, "delta": delta})

    def feed(self, chunk: Dict[str, Any]) -> bytes:
        """The events of one chat chunk (possibly none)."""
        out = b""
        for choice in chunk.get("choices") or []:
            delta = choice.get("delta") or {}
            if delta.get("reasoning_content"):
                if self._open != "thinking":
                    out += self._block("thinking", {"type": "thinking", "thinking": "",
                                                    "signature": ""})
                out += self._delta({"type": "thinking_delta",
                                    "thinking": delta["reasoning_content"]})
            if delta.get("content"):
                if self._open != "text":
                    out += self._block("text", {"type": "text", "text": ""})
                out += self._delta({"type": "text_delta", "text": delta["content"]})
            for call in delta.get("tool_calls") or []:
                fn = call.get("function") or {}
                out += self._block("tool_use", {"type": "tool_use", "id": call.get("id"),
                                                "name": fn.get("name"), "input": {}})
                out += self._delta({"type": "input_json_delta",
                                    "partial_json": fn.get("arguments") or "{}"})
            if choice.get("finish_reason") is not None:
                out += self._close()
                self._stop = _stop(choice["finish_reason"], choice.get("stop_reason"),
                                   self.stops)
        usage = chunk.get("usage")
        if usage and not self._done:
            self._done = True
            reason, seq = self._stop
            out += sse_event("message_delta", {
                "type": "message_delta",
                "delta": {"stop_reason": reason, "stop_sequence": seq},
                "usage": {"input_tokens": usage.get("prompt_tokens", 0),
                          "output_tokens": usage.get("completion_tokens", 0)}})
            out += sse_event("message_stop", {"type": "message_stop"})
        return out

    def end(self) -> bytes:
        """Closing events when the chat stream ended without its usage chunk (an aborted
        request): whatever block is open, then ``message_delta`` and ``message_stop``."""
        if self._done:
            return b""
        return self.feed({"choices": [], "usage": {"prompt_tokens": 0,
                                                   "completion_tokens": 0}}) \
            if self._open is None else self._close() + self.end()

    def error(self, status: int, message: str) -> bytes:
        """An ``error`` event (the stream failed after it started)."""
        return sse_event("error", error_body(status, message))

"""gpt-oss output in OpenAI's harmony format: messages on channels, each with a header.

As OpenAI documents it ("OpenAI Harmony Response Format", the openai/harmony README and
gpt-oss model card), a completion after a prompt ending ``<|start|>assistant`` reads::

    <|channel|>analysis<|message|>User asks for weather. Call the tool.<|end|>
    <|start|>assistant<|channel|>commentary to=functions.get_weather <|constrain|>json
    <|message|>{"location": "Paris, France"}<|call|>

or, without a call, ``...<|end|><|start|>assistant<|channel|>final<|message|>It is
sunny.<|return|>``. The recipient (``to=functions.NAME``) may also sit in the role part of
the header (``<|start|>assistant to=functions.NAME<|channel|>commentary json<|message|>``).

Mapping (as OpenAI's chat API does for gpt-oss): ``analysis`` -> ``reasoning_content``;
``final`` and ``commentary`` without a recipient (preambles) -> ``content``; a message with
a ``functions.*`` recipient -> one tool call (its body is the JSON arguments). ``<|call|>``
and ``<|return|>`` end generation, so engines may not render them: the end of the output
closes the open message.

Two registered parts share :class:`HarmonyStream` (one code path):

* :class:`HarmonyReasoningParser` (reasoning parser ``harmony``) splits channels. Text of a
  tool message is passed on, complete, as ``<|channel|>commentary to=functions.NAME
  <|message|>ARGS<|call|>``;
* :class:`HarmonyToolParser` (tool parser ``gpt-oss``) reads those blocks into calls.
"""

from __future__ import annotations

import re
from typing import Optional, Sequence

from .constraints import Alternative
from .text import ParsedDelta, find_first, partial_suffix
from .tool_parsers.base import Call, TaggedBlockStream, ToolParser, loads_object

START, CHANNEL, MESSAGE = "<|start|>", "<|channel|>", "<|message|>"
END, RETURN, CALL, CONSTRAIN = "<|end|>", "<|return|>", "<|call|>", "<|constrain|>"
SPECIAL_TOKENS = (START, CHANNEL, MESSAGE, END, RETURN, CALL, CONSTRAIN)
ENDS = (END, RETURN, CALL)
TOOL_OPEN = f"{CHANNEL}commentary to="
_CHANNEL = re.compile(re.escape(CHANNEL) + r"\s*(\w+)")
_RECIPIENT = re.compile(r"\bto=([^\s<]+)")

HEADER, BODY, BETWEEN = "header", "body", "between"


def _looks_like_header(text: str) -> bool:
    """Could ``text`` (stripped) be, or start, a harmony header?"""
    for opening in (CHANNEL, START, "assistant", "to="):
        if text.startswith(opening) or opening.startswith(text):
            return True
    return False


class HarmonyStream:
    """Per request: harmony text in, :class:`ParsedDelta` out (see the module doc).

    Args:
        split: analysis text goes to ``reasoning`` (True) or to ``content`` (False, the
            ``reasoning_content=false`` launch option).
        state / channel / recipient: where the output starts (from the prompt's tail).
    """

    def __init__(self, split: bool = True, state: str = HEADER, channel: str = "",
                 recipient: str = ""):
        self.split = split
        self.state = state
        self.channel, self.recipient = channel, recipient
        self._buf = ""
        self._call_body = ""  # a tool message's body, passed on when it closes
        self.saw_reasoning = False

    def _body_text(self, text: str, out: ParsedDelta) -> None:
        if self.recipient:
            self._call_body += text
        elif self.channel == "analysis" and self.split:
            out.reasoning += text
            self.saw_reasoning = True
        else:
            out.content += text

    def _close(self, out: ParsedDelta) -> None:
        if self.recipient:
            out.content += (f"{TOOL_OPEN}{self.recipient}{MESSAGE}{self._call_body}{CALL}")
        self._call_body, self.recipient, self.channel = "", "", ""

    def _header(self, header: str) -> None:
        m = _CHANNEL.search(header)
        self.channel = m.group(1) if m else "final"
        r = _RECIPIENT.search(header)
        self.recipient = r.group(1) if r else ""

    def push(self, text: str) -> ParsedDelta:
        """Add generated text; return what can be released now."""
        out = ParsedDelta()
        self._buf += text
        while self._buf:
            if self.state == BODY:
                i, which = find_first(self._buf, ENDS)
                if i == -1:
                    cut = len(self._buf) - partial_suffix(self._buf, ENDS)
                    self._body_text(self._buf[:cut], out)
                    self._buf = self._buf[cut:]
                    break
                self._body_text(self._buf[:i], out)
                self._buf = self._buf[i + len(which):]
                self._close(out)
                self.state = BETWEEN
            elif self.state == BETWEEN:
                i = self._buf.find(START)
                if i == -1:
                    cut = len(self._buf) - partial_suffix(self._buf, [START])
                    out.content += self._buf[:cut]  # stray text between messages
                    self._buf = self._buf[cut:]
                    break
                out.content += self._buf[:i]
                self._buf = self._buf[i + len(START):]
                self.state = HEADER
            else:  # HEADER
                i = self._buf.find(MESSAGE)
                if i == -1:
                    if not _looks_like_header(self._buf.lstrip()) and self._buf.strip():
                        self.state, self.channel = BODY, "final"  # plain text, no markup
                        continue
                    break
                self._header(self._buf[:i])
                self._buf = self._buf[i + len(MESSAGE):]
                self.state = BODY
        return out

    def finish(self) -> ParsedDelta:
        """End of generation: the open message closes (``<|call|>`` / ``<|return|>`` are
        end-of-generation tokens an engine may not render); a header that never reached
        ``<|message|>`` is content word for word."""
        out = ParsedDelta()
        if self.state == BODY:
            self._body_text(self._buf, out)
            self._close(out)
        elif self._buf:
            out.content += self._buf
        self._buf, self.state = "", BETWEEN
        return out


class HarmonyReasoningParser:
    """Reasoning parser ``harmony`` (per model). ``split=False`` keeps analysis text in
    ``content``."""

    start_tag, end_tag = f"{CHANNEL}analysis{MESSAGE}", END

    def __init__(self, split: bool = True):
        self.split = split

    def new_stream(self, prompt: str = "", tool_markers: Sequence[str] = ()) -> HarmonyStream:
        """A fresh per-request stream. A prompt that ends inside a header or with an open
        message (``...<|channel|>final<|message|>``) sets where the output starts."""
        tail_start = prompt.rfind(START)
        tail = prompt[tail_start:] if tail_start != -1 else ""
        if tail.endswith(MESSAGE) and END not in tail:
            s = HarmonyStream(self.split, BODY)
            s._header(tail[:-len(MESSAGE)])
            return s
        return HarmonyStream(self.split)


def parse_harmony_call(text: str) -> Optional[Call]:
    """``functions.NAME[ <|constrain|>json]<|message|>{...}`` -> (name, args)."""
    head, sep, body = text.partition(MESSAGE)
    recipient = head.split(CONSTRAIN)[0].split()[0] if sep and head.split() else ""
    if not recipient.startswith("functions."):
        return None
    args = loads_object(body)
    return None if args is None else (recipient[len("functions."):], args)


class HarmonyToolParser(ToolParser):
    """Tool parser ``gpt-oss``: the tool blocks :class:`HarmonyStream` passes on."""

    name = "gpt-oss"
    markers = (TOOL_OPEN,)
    visible_tokens = SPECIAL_TOKENS

    def new_stream(self, tools):
        return TaggedBlockStream(tools, TOOL_OPEN, CALL, parse_harmony_call)

    def call_format(self, name, parameters):
        return Alternative(parameters, f"{TOOL_OPEN}functions.{name} {CONSTRAIN}json{MESSAGE}",
                           CALL)

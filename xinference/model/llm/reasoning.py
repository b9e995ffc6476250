"""Reasoning content: the text a reasoning model writes between its reasoning tags
(``<think>`` ... ``</think>``) is returned as ``reasoning_content`` apart from ``content``
(the field of the DeepSeek API and of Xinference).

:class:`ReasoningParser` is built once per model from the family's ``reasoning_start_tag``
/ ``reasoning_end_tag``; :meth:`ReasoningParser.new_stream` gives a :class:`ReasoningStream`
per request (and per choice). The stream is fed the generated text piece by piece and never
rescans what it has seen; a possible partial tag at the end of a piece is held back
(:func:`~xinference.model.llm.text.split_at_first`). Non-streaming is the same code:
``push(whole_text)`` then ``finish()``.

States: BEFORE (nothing seen yet: text before a start tag is content), IN (reasoning), AFTER
(content). The state at the start comes from the prompt we rendered: a prompt that ends with
an open start tag starts IN; a prompt that ends with an empty closed block (what templates
render for ``enable_thinking=False``) starts AFTER. A missing end tag means the output was
truncated while reasoning: everything is reasoning and ``content`` stays empty. When the
request has tools, a tool-call marker met while reasoning ends the reasoning.
"""

from __future__ import annotations

import re
from typing import Optional, Sequence

from .text import ParsedDelta, split_at_first

DEFAULT_START_TAG = "<think>"
DEFAULT_END_TAG = "</think>"

BEFORE, IN, AFTER = "before", "in", "after"


class ReasoningParser:
    """Per model: the family's reasoning tags.

    Args:
        start_tag: opens the reasoning block (default ``<think>``).
        end_tag: closes it (default ``</think>``).
    """

    def __init__(self, start_tag: Optional[str] = None, end_tag: Optional[str] = None):
        self.start_tag = start_tag or DEFAULT_START_TAG
        self.end_tag = end_tag or DEFAULT_END_TAG
        self._closed_re = re.compile(
            re.escape(self.start_tag) + r"\s*" + re.escape(self.end_tag) + r"\s*$")

    def initial_state(self, prompt: str) -> str:
        """The state a generation after ``prompt`` starts in (see the module doc)."""
        tail = prompt.rstrip()
        if tail.endswith(self.start_tag):
            return IN
        if self._closed_re.search(prompt):
            return AFTER
        return BEFORE

    def new_stream(self, prompt: str = "", tool_markers: Sequence[str] = ()
                   ) -> "ReasoningStream":
        """A fresh per-request stream; ``tool_markers`` (the request's tool-call openings)
        end the reasoning when met before the end tag."""
        return ReasoningStream(self, self.initial_state(prompt), tool_markers)


class ReasoningStream:
    """Splits one generation into reasoning and content; see the module doc."""

    def __init__(self, parser: ReasoningParser, state: str, tool_markers: Sequence[str] = ()):
        self.parser = parser
        self.state = state
        self._tool_markers = [m for m in tool_markers if m]
        self._buf = ""  # held back: a possible partial tag (or leading whitespace)
        self.saw_reasoning = state == IN

    def push(self, text: str) -> ParsedDelta:
        """Add generated text; return what can be released now."""
        out = ParsedDelta()
        self._buf += text
        while self._buf:
            if self.state == AFTER:
                out.content += self._buf
                self._buf = ""
            elif self.state == BEFORE:
                stripped = self._buf.lstrip()
                tag = self.parser.start_tag
                if stripped.startswith(tag):
                    lead = self._buf[:len(self._buf) - len(stripped)]
                    out.content += lead
                    self._buf = stripped[len(tag):]
                    self.state, self.saw_reasoning = IN, True
                elif not stripped or tag.startswith(stripped):
                    break  # whitespace or a partial start tag: wait
                else:
                    self.state = AFTER  # the output does not open with a reasoning block
            else:  # IN
                text, self._buf, which = split_at_first(
                    self._buf, [self.parser.end_tag] + self._tool_markers)
                out.reasoning += text
                if which is None:
                    break
                # the end tag is dropped; a tool marker stays (the tool parser reads it)
                if which == self.parser.end_tag:
                    self._buf = self._buf[len(which):]
                self.state = AFTER
        return out

    def finish(self) -> ParsedDelta:
        """End of generation: release what is held back (a partial tag is text after all)."""
        out = ParsedDelta()
        if self.state == IN:
            out.reasoning = self._buf
        else:
            out.content = self._buf
        self._buf = ""
        return out

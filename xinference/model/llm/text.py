"""Text utilities of LLM generation, a leaf module (it imports nothing of the project).

* incremental detokenisers (token ids -> text deltas without splitting UTF-8 characters);
* string matching with hold-back (:func:`split_at_first`, :class:`StopStringMatcher`): text that could still become a ``stop`` string, a reasoning
  tag or a tool-call marker is held back until it is known not to be one;
* :class:`ParsedDelta`, the one delta type of the streaming text parsers (reasoning split,
  tool-call parsing, the chat text pipeline that chains them).

:mod:`.reasoning`, :mod:`.tool_parsers` and the request state import from here.
"""

from __future__ import annotations

import abc
import codecs
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Tuple


class IncrementalDetokenizer(abc.ABC):
    """Turns a stream of token ids into text deltas without splitting UTF-8 characters."""

    @abc.abstractmethod
    def push(self, token_id: int) -> str:
        """Add one token; return the text that is now complete (possibly empty)."""

    def flush(self) -> str:
        """Text still held back at the end of generation."""
        return ""


class BytesDetokenizer(IncrementalDetokenizer):
    """For engines that give the bytes of each token (llama.cpp): an incremental UTF-8
    decoder holds back a partial multi-byte character until its last byte arrives."""

    def __init__(self, token_bytes):
        self._token_bytes = token_bytes
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def push(self, token_id: int) -> str:
        return self._decoder.decode(self._token_bytes(token_id))

    def flush(self) -> str:
        return self._decoder.decode(b"", final=True)


def find_first(buffer: str, needles: Sequence[str], start: int = 0
               ) -> Tuple[int, Optional[str]]:
    """The earliest occurrence of any of ``needles`` in ``buffer[start:]``: ``(index,
    needle)``, or ``(-1, None)``. At equal positions the longest needle wins."""
    best, which = -1, None
    for s in needles:
        i = buffer.find(s, start)
        if i != -1 and (best == -1 or i < best or (i == best and len(s) > len(which))):
            best, which = i, s
    return best, which


def partial_suffix(buffer: str, needles: Sequence[str]) -> int:
    """Length of the longest end of ``buffer`` that is a proper prefix of one of
    ``needles``: the text to hold back because it could still become a needle."""
    hold = 0
    for s in needles:
        for k in range(min(len(s) - 1, len(buffer)), hold, -1):
            if buffer.endswith(s[:k]):
                hold = k
                break
    return hold


def split_at_first(buffer: str, needles: Sequence[str]
                   ) -> Tuple[str, str, Optional[str]]:
    """One step of every hold-back scan: split ``buffer`` at the earliest of ``needles``.

    Returns:
        ``(text before the needle, the rest from the needle on, the needle)``; when no
        needle occurs, ``(text safe to release, the end held back because it could still
        become a needle, None)``. A buffer holding no needle's first character is
        released whole without searching (the per-token case of most text).
    """
    for s in needles:  # the common case, one cheap scan: no needle can start here
        if not s or s[0] in buffer:
            break
    else:
        return buffer, "", None
    i, which = find_first(buffer, needles)
    if i == -1:
        i = len(buffer) - partial_suffix(buffer, needles)
    return buffer[:i], buffer[i:], which


class StopStringMatcher:
    """Cuts generated text at the first ``stop`` string and holds back any suffix that could
    still become one, so no part of a stop string is ever streamed. The same hold-back
    (:func:`split_at_first`) keeps tool-call markers and reasoning tags from leaking
    (``tool_parsers``, ``reasoning``)."""

    def __init__(self, stop: Sequence[str]):
        self._stop = [s for s in stop if s]
        self._buffer = ""
        self.matched: Optional[str] = None  # the stop string that ended the text

    def push(self, text: str) -> Tuple[str, bool]:
        """Add text; return ``(text safe to emit, stopped)``."""
        self._buffer += text
        if not self._stop:
            out, self._buffer = self._buffer, ""
            return out, False
        out, rest, stop = split_at_first(self._buffer, self._stop)
        self._buffer = "" if stop is not None else rest
        if stop is not None:
            self.matched = stop
        return out, stop is not None

    def flush(self) -> str:
        out, self._buffer = self._buffer, ""
        return out


@dataclass
class ParsedDelta:
    """What one push into a streaming text parser released: ``reasoning`` text, ``content``
    text and completed ``tool_calls`` (OpenAI stream delta entries, each with its
    ``index``). Any of them may be empty; a parser fills only what it produces (the
    reasoning stream ``reasoning`` and ``content``, a tool-call stream ``content`` and
    ``tool_calls``)."""

    reasoning: str = ""
    content: str = ""
    tool_calls: List[Dict[str, Any]] = field(default_factory=list)

    def extend(self, other: "ParsedDelta") -> "ParsedDelta":
        """Append ``other`` to this delta (in place); returns ``self``."""
        self.reasoning += other.reasoning
        self.content += other.content
        self.tool_calls.extend(other.tool_calls)
        return self

"""OpenAI response shapes of LLM requests, built from their :class:`~.request.Delta` s.

* :class:`ResponseBuilder` and its two kinds, :class:`CompletionBuilder` (Completions:
  ``text_completion`` objects and chunks) and :class:`ChatBuilder` (Chat Completions:
  ``chat.completion`` and ``chat.completion.chunk``), including ``usage``, ``logprobs`` and
  the ``stream_interval`` merging of deltas (:class:`DeltaCoalescer`);
* :class:`ChatTextPipeline`, the per-choice chat text pipeline (reasoning split, then
  tool-call parsing) that :class:`ChatBuilder` runs each choice's text through;
* :class:`OpenAIStreams`, what the model actor asks of a model whose streams are OpenAI
  chunks (the closing chunk of an aborted stream, usage for the token metrics, when the
  first output came), so the actor itself knows no chunk shape.

The shapes follow the OpenAI API reference ("Create completion", "Create chat
completion", "The chat completion chunk object").
"""

from __future__ import annotations

import abc
import collections
import time
import uuid
from typing import Any, AsyncIterator, Callable, Dict, Iterator, List, Optional, Tuple

from .request import Delta
from .text import ParsedDelta


def _usage(prompt_tokens: int, completion_tokens: int) -> Dict[str, int]:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


class DeltaCoalescer:
    """Merges text deltas so that one stream chunk carries up to ``interval`` of them
    (``stream_interval``, as vLLM's server option: fewer, larger chunks cost the serving
    path less CPU per token). The first text delta of each choice passes at once, so the
    time to the first token is unchanged; the final delta (with ``finish_reason``) flushes
    what is held. Choices (``index``) are merged separately.

    Args:
        interval: deltas per chunk (one delta per generated token, except while a partial
            UTF-8 character or a possible stop string is held back); 1 passes all through.
    """

    def __init__(self, interval: int):
        self.interval = interval
        self._held: Dict[int, List[Delta]] = {}
        self._sent_first: set = set()

    @staticmethod
    def _merge(ds: List[Delta]) -> Delta:
        last = ds[-1]
        lps = [e for d in ds for e in (d.logprobs or [])]
        return Delta("".join(d.text for d in ds), last.finish_reason, last.prompt_tokens,
                     last.completion_tokens, last.index,
                     lps if any(d.logprobs is not None for d in ds) else None,
                     last.stop_sequence)

    def push(self, d: Delta) -> Optional[Delta]:
        """Add one delta; return the delta to send now, if any."""
        if self.interval <= 1:  # the default: every delta passes as it is
            return d
        held = self._held.setdefault(d.index, [])
        if d.finish_reason is not None:
            held.append(d)
            self._held[d.index] = []
            return self._merge(held)
        if d.index not in self._sent_first or self.interval <= 1:
            self._sent_first.add(d.index)
            return d
        held.append(d)
        if len(held) >= self.interval:
            self._held[d.index] = []
            return self._merge(held)
        return None


class ResponseBuilder(abc.ABC):
    """OpenAI response shapes of one request (``n`` choices), built from its
    :class:`Delta` s.

    Streams: :meth:`start` (opening chunks), then :meth:`chunks` for each delta. Whole
    responses: :meth:`add` each delta, then :meth:`response`. :meth:`stream`/:meth:`collect`
    (iterators) and :meth:`astream`/:meth:`acollect` (async iterators) wrap those.
    ``usage`` counts the prompt once and the completion tokens of every choice.

    Args:
        model_uid: reported as ``model``.
        include_usage: ``stream_options.include_usage``.
        stream_interval: see :class:`DeltaCoalescer`.
        n: number of choices; the stream ends after each has its final delta.
        logprobs: the request asked for logprobs (``logprobs`` is null otherwise).
    """

    object_name = ""
    id_prefix = ""

    def __init__(self, model_uid: str, include_usage: bool, stream_interval: int = 1,
                 n: int = 1, logprobs: bool = False):
        self.model_uid = model_uid
        self.include_usage = include_usage
        self.stream_interval = stream_interval
        self.n = n
        self.want_logprobs = logprobs
        self.id = f"{self.id_prefix}-{uuid.uuid4()}"
        self.created = int(time.time())
        self._parts: List[List[str]] = [[] for _ in range(n)]
        self._lps: List[List[Dict[str, Any]]] = [[] for _ in range(n)]
        self._finish: List[Optional[str]] = [None] * n
        self._stop_seq: List[Optional[str]] = [None] * n
        self._prompt_tokens = 0
        self._completion_tokens = 0
        self._done = 0

    def _chunk(self, choices: Optional[List[Dict[str, Any]]], usage=None) -> Dict[str, Any]:
        c = {"id": self.id, "object": self.object_name, "created": self.created,
             "model": self.model_uid, "choices": choices or []}
        if usage is not None:
            c["usage"] = usage
        return c

    def _count(self, d: Delta) -> bool:
        """Account a final delta; True when it was the last choice to finish."""
        self._prompt_tokens = d.prompt_tokens
        self._completion_tokens += d.completion_tokens
        self._done += 1
        return self._done == self.n

    def _usage(self) -> Dict[str, int]:
        return _usage(self._prompt_tokens, self._completion_tokens)

    def start(self) -> List[Dict[str, Any]]:
        """Chunks sent before any text."""
        return []

    @abc.abstractmethod
    def _choice_chunk(self, d: Delta) -> Optional[Dict[str, Any]]:
        """The stream chunk of one delta (None: nothing to send yet)."""

    def chunks(self, d: Delta) -> List[Dict[str, Any]]:
        """Stream chunks of one delta; after the last choice's final delta, a usage-only
        chunk when ``stream_options.include_usage``."""
        c = self._choice_chunk(d)
        out = [c] if c is not None else []
        if d.finish_reason is not None and self._count(d) and self.include_usage:
            out.append(self._chunk(None, self._usage()))
        return out

    def add(self, d: Delta) -> None:
        self._parts[d.index].append(d.text)
        if d.logprobs:
            self._lps[d.index].extend(d.logprobs)
        if d.finish_reason is not None:
            self._finish[d.index] = d.finish_reason
            self._stop_seq[d.index] = d.stop_sequence
            self._count(d)

    @abc.abstractmethod
    def response(self) -> Dict[str, Any]:
        """The whole (non-stream) response, once every final delta was added."""

    def stream(self, deltas: Iterator[Delta]) -> Iterator[Dict[str, Any]]:
        yield from self.start()
        merge = DeltaCoalescer(self.stream_interval)
        for d in deltas:
            d = merge.push(d)
            if d is not None:
                yield from self.chunks(d)

    def collect(self, deltas: Iterator[Delta]) -> Dict[str, Any]:
        for d in deltas:
            self.add(d)
        return self.response()

    def astream(self, deltas: AsyncIterator[Delta],
                on_close: Optional[Callable[[], None]] = None) -> "ChunkStream":
        """The stream's chunks as an async iterator (see :class:`ChunkStream`)."""
        return ChunkStream(self, deltas, on_close)

    async def acollect(self, deltas: AsyncIterator[Delta]) -> Dict[str, Any]:
        async for d in deltas:
            self.add(d)
        return self.response()


class ChunkStream:
    """The chunks of a streamed request, as an async iterator: the builder's opening
    chunks (:meth:`ResponseBuilder.start`), then those of each delta (merged per
    ``stream_interval``, :class:`DeltaCoalescer`) as the deltas arrive.

    :meth:`direct` switches it to push mode: from then on each chunk is handed to a
    function in the thread that produced its delta (an engine thread), so that the event
    loop is not woken per token; iterating then only ends (or raises an engine error).
    ``on_close()`` runs once when the stream ends, fails or is closed (it stops the
    engine's requests; a no-op when they finished).

    Args:
        builder: the request's :class:`ResponseBuilder`.
        deltas: its :class:`~.request.AsyncDeltaStream` (push mode needs its
            ``go_direct``; any async iterator of deltas otherwise).
    """

    def __init__(self, builder: ResponseBuilder, deltas: AsyncIterator[Delta],
                 on_close: Optional[Callable[[], None]] = None):
        self._builder = builder
        self._deltas = deltas
        self._merge = DeltaCoalescer(builder.stream_interval)
        self._pending = collections.deque(builder.start())
        self._on_close = on_close

    def _chunks(self, d: Delta) -> List[Dict[str, Any]]:
        d = self._merge.push(d)
        return self._builder.chunks(d) if d is not None else []

    def __aiter__(self):
        return self

    async def __anext__(self) -> Dict[str, Any]:
        pending = self._pending
        while not pending:
            try:
                d = await self._deltas.__anext__()
            except BaseException:  # the end, an engine error, or cancelled
                self._close()
                raise
            pending.extend(self._chunks(d))
        return pending.popleft()

    def direct(self, write: Callable[[Dict[str, Any]], None]) -> bool:
        """Hand every chunk not yet read, and each later one, to ``write(chunk)``: the
        ones waiting now at once (in this thread: call it on the loop, between reads),
        later ones in the thread that emits their delta, in order. Returns False when
        push mode is not possible (the deltas cannot go direct, or already ended or
        failed); the iterator then goes on as before."""
        go = getattr(self._deltas, "go_direct", None)
        if go is None:
            return False

        def backlog() -> None:
            while self._pending:
                write(self._pending.popleft())

        def consume(d: Delta) -> None:
            for c in self._chunks(d):
                write(c)

        return go(consume, backlog)

    def _close(self) -> None:
        close, self._on_close = self._on_close, None
        if close is not None:
            close()

    async def aclose(self) -> None:
        """Stop the stream (its engine requests)."""
        self._close()


class CompletionBuilder(ResponseBuilder):
    """OpenAI Completions: ``text_completion`` objects and chunks. ``logprobs`` in the
    Completions shape: ``tokens``, ``token_logprobs``, ``top_logprobs`` (``{token:
    logprob}`` per token) and ``text_offset`` (character offset of each token in the
    choice's text)."""

    object_name = "text_completion"
    id_prefix = "cmpl"

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self._offset = [0] * self.n

    def _logprobs(self, index: int, entries: Optional[List[Dict[str, Any]]]):
        if not self.want_logprobs:
            return None
        out = {"tokens": [], "token_logprobs": [], "top_logprobs": [], "text_offset": []}
        for e in entries or []:
            out["tokens"].append(e["token"])
            out["token_logprobs"].append(e["logprob"])
            out["top_logprobs"].append({t["token"]: t["logprob"] for t in e["top_logprobs"]})
            out["text_offset"].append(self._offset[index])
            self._offset[index] += len(e["token"])
        return out

    def _text_choice(self, index: int, text: str, finish: Optional[str], lps) -> Dict:
        return {"text": text, "index": index, "logprobs": self._logprobs(index, lps),
                "finish_reason": finish}

    def _choice_chunk(self, d: Delta) -> Dict[str, Any]:
        return self._chunk([self._text_choice(d.index, d.text, d.finish_reason,
                                              d.logprobs)])

    def response(self) -> Dict[str, Any]:
        choices = [self._text_choice(i, "".join(self._parts[i]), self._finish[i],
                                     self._lps[i]) for i in range(self.n)]
        return self._chunk(choices, self._usage())


class ChatBuilder(ResponseBuilder):
    """OpenAI Chat Completions: ``chat.completion`` and ``chat.completion.chunk`` objects
    (the first chunk of each choice carries the role, the last ``finish_reason``).

    The text of each choice goes through a :class:`ChatTextPipeline` made by
    ``new_pipeline`` (reasoning split, then tool-call parsing); streams push each delta's
    text, whole responses push the whole text once: one code path, the same message.
    ``finish_reason`` becomes ``"tool_calls"`` when the pipeline reports calls. A choice
    ended by a ``stop`` string names it in ``stop_reason`` (vLLM's field; the Anthropic
    layer reports it as ``stop_sequence``).
    """

    object_name = "chat.completion.chunk"
    id_prefix = "chatcmpl"

    def __init__(self, *a, new_pipeline=None, **kw):
        super().__init__(*a, **kw)
        make = new_pipeline or ChatTextPipeline
        self._pipes = [make() for _ in range(self.n)]
        self._held_calls: List[List[Dict[str, Any]]] = [[] for _ in range(self.n)]

    def _delta_choice(self, index: int, delta: Dict[str, Any], finish: Optional[str],
                      lps) -> Dict[str, Any]:
        return {"index": index, "delta": delta,
                "logprobs": {"content": lps or []} if self.want_logprobs else None,
                "finish_reason": finish}

    def start(self) -> List[Dict[str, Any]]:
        return [self._chunk([self._delta_choice(i, {"role": "assistant", "content": ""},
                                                None, None)]) for i in range(self.n)]

    def _finish_reason(self, index: int, reason: str) -> str:
        return "tool_calls" if self._pipes[index].num_calls and reason == "stop" else reason

    def _choice_chunk(self, d: Delta) -> Optional[Dict[str, Any]]:
        """Every delta carries ``content`` (the text, ``""``, or null beside reasoning or
        tool calls), as upstream Xinference sends it: clients written against upstream
        read ``delta["content"]`` in every chunk. Completed tool calls wait for the
        choice's final chunk (the one with ``finish_reason: "tool_calls"``), where both the
        OpenAI SDK's accumulators and ``langchain-xinference`` (which reads calls only in
        that chunk) find them."""
        pipe = self._pipes[d.index]
        out = pipe.push(d.text)
        if d.finish_reason is not None:
            out.extend(pipe.finish())
        self._held_calls[d.index].extend(out.tool_calls)
        final = d.finish_reason is not None
        calls = self._held_calls[d.index] if final else []
        if not final and not out.reasoning and not out.content and not d.logprobs:
            return None
        delta: Dict[str, Any] = {
            "content": out.content or (None if out.reasoning or calls else "")}
        if out.reasoning:
            delta["reasoning_content"] = out.reasoning
        if calls:
            delta["tool_calls"] = calls
        finish = self._finish_reason(d.index, d.finish_reason) if final else None
        choice = self._delta_choice(d.index, delta, finish, d.logprobs)
        if final and d.stop_sequence is not None:
            choice["stop_reason"] = d.stop_sequence
        return self._chunk([choice])

    def _message(self, index: int) -> Dict[str, Any]:
        pipe = self._pipes[index]
        out = pipe.push("".join(self._parts[index]))
        out.extend(pipe.finish())
        calls = [{k: v for k, v in c.items() if k != "index"} for c in out.tool_calls]
        msg: Dict[str, Any] = {"role": "assistant",
                               "content": out.content or (None if calls or out.reasoning
                                                          else "")}
        if pipe.reasoning is not None:
            msg["reasoning_content"] = out.reasoning or None
        if calls:
            msg["tool_calls"] = calls
        return msg

    def response(self) -> Dict[str, Any]:
        choices = []
        for i in range(self.n):
            msg = self._message(i)
            choice = {"index": i, "message": msg,
                      "logprobs": {"content": self._lps[i]} if self.want_logprobs else None,
                      "finish_reason": self._finish_reason(i, self._finish[i])}
            if self._stop_seq[i] is not None:
                choice["stop_reason"] = self._stop_seq[i]  # as vLLM: the stop string hit
            choices.append(choice)
        return {
            "id": self.id, "object": "chat.completion", "created": self.created,
            "model": self.model_uid, "choices": choices, "usage": self._usage(),
        }


class ChatTextPipeline:
    """Per choice: generated text -> reasoning stream -> tool-call stream. The content out
    of the reasoning stream feeds the tool stream (reasoning first, then tools), so calls
    after ``</think>`` parse and markup inside reasoning is not read as a call.

    Args:
        reasoning: a :class:`~xinference.model.llm.reasoning.ReasoningStream`, or None
            (no reasoning split: all text is content).
        tools: a :class:`~xinference.model.llm.tool_parsers.ToolCallStream`, or None (the
            request has no tools, or ``tool_choice`` is ``"none"``).
    """

    def __init__(self, reasoning=None, tools=None):
        self.reasoning = reasoning
        self.tools = tools

    @property
    def num_calls(self) -> int:
        return self.tools.num_calls if self.tools is not None else 0

    def _content(self, text: str, final: bool, out: ParsedDelta) -> ParsedDelta:
        if self.tools is None:
            out.content += text
            return out
        if text:
            out.extend(self.tools.push(text))
        if final:
            out.extend(self.tools.finish())
        return out

    def push(self, text: str) -> ParsedDelta:
        """Add generated text; return what can be released."""
        out = ParsedDelta()
        if self.reasoning is not None:
            r = self.reasoning.push(text)
            out.reasoning, text = r.reasoning, r.content
        return self._content(text, False, out)

    def finish(self) -> ParsedDelta:
        """End of generation: release everything held back."""
        out = ParsedDelta()
        text = ""
        if self.reasoning is not None:
            r = self.reasoning.finish()
            out.reasoning, text = r.reasoning, r.content
        return self._content(text, True, out)


class OpenAIStreams:
    """What the model actor (:class:`~xinference.core.model.ModelActor`) asks of a model
    whose ``generate`` / ``chat`` streams are OpenAI chunks; :class:`~.core.LLM` inherits
    it. The actor calls these hooks when the model has them and knows no chunk shape
    itself; a model without them gets no abort chunk, no usage asked for its metrics and
    no time to first token."""

    @staticmethod
    def abort_chunk(method: str, last: Optional[Dict[str, Any]]) -> Optional[Dict[str, Any]]:
        """The closing chunk of an aborted stream of ``method``: the shape of the stream's
        previous chunk ``last`` (or, when none came yet, of an OpenAI chat / completion
        chunk) with ``finish_reason`` ``"abort"``; None for a method whose stream is not
        OpenAI chunks."""
        if method not in ("chat", "generate"):
            return None
        last = last or {}
        obj = last.get("object") or ("chat.completion.chunk" if method == "chat"
                                     else "text_completion")
        out = {k: last[k] for k in ("id", "created", "model") if k in last}
        out["object"] = obj
        if obj.startswith("chat"):
            choice = {"index": 0, "delta": {"content": ""}, "logprobs": None,
                      "finish_reason": "abort"}
        else:
            choice = {"index": 0, "text": "", "logprobs": None, "finish_reason": "abort"}
        out["choices"] = [choice]
        return out

    @staticmethod
    def stream_usage(config: Dict[str, Any]) -> Tuple[Dict[str, Any], bool]:
        """``(config, forced)``: a stream request's ``generate_config`` asking for usage
        (``stream_options.include_usage``, which the token metrics need) and whether that
        was forced (the client did not ask: its usage-only chunk, see
        :meth:`is_usage_chunk`, is to be dropped). ``config`` itself is not changed."""
        if not config.get("stream"):
            return config, False
        so = config.get("stream_options")
        if so is None or (isinstance(so, dict) and not so.get("include_usage")):
            return dict(config, stream_options=dict(so or {}, include_usage=True)), True
        return config, False

    @staticmethod
    def is_usage_chunk(chunk: Dict[str, Any]) -> bool:
        """A usage-only chunk (``usage`` and no choices): the last of a stream that asked
        for usage."""
        return chunk.get("usage") is not None and not chunk.get("choices")

    @staticmethod
    def chunk_has_output(chunk: Dict[str, Any]) -> bool:
        """A stream chunk carrying generated output (text, reasoning or tool calls), not
        only the role or the usage: the first one marks the time to first token."""
        for c in chunk.get("choices") or ():
            if not isinstance(c, dict):
                continue
            d = c.get("delta") or {}
            if c.get("text") or d.get("content") or d.get("reasoning_content") \
                    or d.get("tool_calls"):
                return True
        return False

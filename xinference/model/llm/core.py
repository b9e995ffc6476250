"""Engine-independent LLM logic shared by every engine.

An engine subclass only knows how to load weights, tokenize, detokenize one token at a time
and run requests concurrently (:meth:`LLM.submit`: the engine's own scheduler, continuous
batching in the Transformers engine, llama.cpp's slots) feeding each request's sampled token
ids into its :class:`RequestState`. Everything the OpenAI API defines on top of that lives
here, once: parameter validation, chat template rendering, ``max_tokens`` and
context checks, ``stop`` strings and ``stop_token_ids``, incremental detokenisation,
``finish_reason``, ``usage`` (the per-request :class:`RequestState`) and the response / chunk
shapes (:class:`ResponseBuilder`: OpenAI Completions and Chat Completions API, including the
streaming chunk format).
"""

from __future__ import annotations

import abc
import asyncio
import codecs
import random
import time
import uuid
from dataclasses import dataclass, field
from typing import (
    Any, AsyncIterator, Callable, Dict, Iterator, List, Optional, Sequence, Tuple, Union,
)

from ...errors import InvalidRequestError
from ..options import flag, positive_int
from . import chat_params
from .constraints import Constraint
from .chat_template import (
    CHATML_TEMPLATE, generic_tool_messages, normalize_messages, render_chat_template,
    template_knows_tools,
)
from .llm_family import LLMFamily, LLMSpec


@dataclass
class GenerationParams:
    """Sampling and stopping parameters of one request, validated.

    Field names are OpenAI's (``max_tokens``, ``stop``, ``seed`` ...) and llama.cpp's
    (``top_k``, ``repeat_penalty``). ``temperature == 0`` means greedy decoding.
    ``ignore_eos`` (vLLM's and llama.cpp's extension) keeps generating past the model's
    end-of-generation tokens until ``max_tokens``, a ``stop`` string or a
    ``stop_token_ids`` id: fixed-length outputs for benchmarks and tests.
    """

    max_tokens: Optional[int] = None
    temperature: float = 0.8
    top_p: float = 0.95
    top_k: int = 40
    min_p: float = 0.05
    repeat_penalty: float = 1.1
    frequency_penalty: float = 0.0
    presence_penalty: float = 0.0
    stop: List[str] = field(default_factory=list)
    stop_token_ids: List[int] = field(default_factory=list)
    seed: Optional[int] = None
    ignore_eos: bool = False
    stream: bool = False
    include_usage: bool = False
    chat_template_kwargs: Dict[str, Any] = field(default_factory=dict)
    # OpenAI fields beyond sampling (validated in chat_params)
    n: int = 1
    logprobs: bool = False
    top_logprobs: int = 0
    tools: Optional[List[Dict[str, Any]]] = None
    tool_choice: str = "none"  # "none" | "auto" | "required" | a function name
    parallel_tool_calls: bool = True
    response_format: Optional[Dict[str, Any]] = None
    # what decoding must produce (tool_choice required/named, response_format), set by
    # LLM.prepare_chat / prepare_generate; engines lower it (constraints.py)
    constraint: Optional[Constraint] = None

    @classmethod
    def from_config(cls, config: Optional[Dict[str, Any]], chat: bool = False
                    ) -> "GenerationParams":
        """Build from a ``generate_config`` dict (the request body minus model/prompt).
        ``chat``: the Chat Completions fields (``tools``, ``logprobs: bool`` +
        ``top_logprobs``) rather than the Completions ones (``logprobs: N``).

        Raises:
            InvalidRequestError: a value has the wrong type or range, or a field we do not
            implement is set (see :mod:`.chat_params`).
        """
        config = dict(config or {})
        p = cls()
        chat_params.check_unsupported(config)
        p.n = chat_params.check_n(config.get("n"))
        p.logprobs, p.top_logprobs = chat_params.check_logprobs(config, chat)
        p.response_format = chat_params.check_response_format(config.get("response_format"))
        if chat:
            p.tools = chat_params.check_tools(config.get("tools"))
            p.tool_choice = chat_params.check_tool_choice(config.get("tool_choice"), p.tools)
            ptc = config.get("parallel_tool_calls")
            if ptc is not None and not isinstance(ptc, bool):
                raise InvalidRequestError("'parallel_tool_calls' must be a boolean")
            p.parallel_tool_calls = True if ptc is None else ptc
            if p.response_format and p.tool_choice not in ("none", "auto"):
                raise InvalidRequestError(
                    "'response_format' and a forced 'tool_choice' cannot be combined: the "
                    "output cannot be both a tool call and the requested JSON")
        else:
            for name in ("tools", "tool_choice"):
                if config.get(name) is not None:
                    raise InvalidRequestError(f"'{name}' is a Chat Completions field")
            if config.get("echo"):
                raise InvalidRequestError("'echo' is not supported")
            if config.get("suffix"):
                raise InvalidRequestError("'suffix' is not supported")
            if config.get("best_of") not in (None, 1) and config.get("best_of") != p.n:
                raise InvalidRequestError("'best_of' other than n is not supported")

        def num(name, lo=None, hi=None, integer=False):
            v = config.get(name)
            if v is None:
                return None
            if isinstance(v, bool) or not isinstance(v, (int, float)) or (
                integer and not float(v).is_integer()
            ):
                kind = "an integer" if integer else "a number"
                raise InvalidRequestError(f"'{name}' must be {kind}, got {v!r}")
            if (lo is not None and v < lo) or (hi is not None and v > hi):
                raise InvalidRequestError(f"'{name}' must be in [{lo}, {hi}], got {v!r}")
            return int(v) if integer else float(v)

        mt = config.get("max_tokens")
        if mt is None:
            mt = config.get("max_completion_tokens")
            config["max_tokens"] = mt
        p.max_tokens = num("max_tokens", 1, None, integer=True)
        for name, lo, hi in (
            ("temperature", 0, 2), ("top_p", 0, 1), ("min_p", 0, 1),
            ("repeat_penalty", 0, None), ("frequency_penalty", -2, 2),
            ("presence_penalty", -2, 2),
        ):
            v = num(name, lo, hi)
            if v is not None:
                setattr(p, name, v)
        top_k = num("top_k", -1, None, integer=True)
        if top_k is not None:
            p.top_k = top_k
        p.seed = num("seed", None, None, integer=True)

        stop = config.get("stop")
        if isinstance(stop, str):
            stop = [stop]
        if stop is not None and not (
            isinstance(stop, list) and all(isinstance(s, str) for s in stop)
        ):
            raise InvalidRequestError("'stop' must be a string or a list of strings")
        p.stop = [s for s in (stop or []) if s]
        ids = config.get("stop_token_ids") or []
        if not isinstance(ids, list) or not all(isinstance(i, int) for i in ids):
            raise InvalidRequestError("'stop_token_ids' must be a list of integers")
        p.stop_token_ids = list(ids)
        ignore_eos = config.get("ignore_eos", False)
        if not isinstance(ignore_eos, bool):
            raise InvalidRequestError(f"'ignore_eos' must be true or false, got {ignore_eos!r}")
        p.ignore_eos = ignore_eos
        p.stream = bool(config.get("stream", False))
        so = config.get("stream_options") or {}
        p.include_usage = bool(isinstance(so, dict) and so.get("include_usage"))
        ctk = config.get("chat_template_kwargs")
        ctk = {} if ctk is None else ctk
        if not isinstance(ctk, dict):
            raise InvalidRequestError("'chat_template_kwargs' must be an object")
        p.chat_template_kwargs = dict(ctk)
        if config.get("enable_thinking") is not None:
            p.chat_template_kwargs["enable_thinking"] = bool(config["enable_thinking"])
        return p


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


class StopStringMatcher:
    """Cuts generated text at the first ``stop`` string and holds back any suffix that could
    still become one, so no part of a stop string is ever streamed. The same hold-back
    (:func:`find_first`, :func:`partial_suffix`) keeps tool-call markers and reasoning tags
    from leaking (``tool_parsers``, ``reasoning``)."""

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
        first, which = find_first(self._buffer, self._stop)
        if first != -1:
            self.matched = which
            out, self._buffer = self._buffer[:first], ""
            return out, True
        cut = len(self._buffer) - partial_suffix(self._buffer, self._stop)
        out, self._buffer = self._buffer[:cut], self._buffer[cut:]
        return out, False

    def flush(self) -> str:
        out, self._buffer = self._buffer, ""
        return out


@dataclass
class Delta:
    """One step of a generation: new text of choice ``index``, the logprobs of the tokens
    it releases (OpenAI chat entries, when asked for) and, on the last step, the finish
    reason and token counts, and ``stop_sequence``: the ``stop`` string that ended it, if
    one did."""

    text: str
    finish_reason: Optional[str] = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    index: int = 0
    logprobs: Optional[List[Dict[str, Any]]] = None
    stop_sequence: Optional[str] = None


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


def stream_interval_option(value: Any) -> int:
    """The ``stream_interval`` launch option as a positive int (default 1).

    Raises:
        InvalidRequestError: not a positive integer.
    """
    return positive_int("stream_interval", value, 1)


class RequestState:
    """Per-request bookkeeping of one generation, independent of how tokens are produced.

    An engine feeds it the sampled token ids one by one (:meth:`push`); it applies the stop
    token ids, the ``stop`` strings, the ``max_tokens`` / context budget and incremental
    detokenisation, and turns them into :class:`Delta` s. The one-at-a-time path
    (:meth:`LLM.run`) and batching schedulers drive the same object, so both behave alike.

    Args:
        prompt_ids: the prompt's token ids (``len`` < ``context_length``).
        params: the request's validated parameters.
        context_length: tokens the model attends to; the completion gets what the prompt
            leaves, capped by ``params.max_tokens``.
        stop_ids: token ids that end the generation (EOS, ``stop_token_ids``); not counted
            in ``usage`` and never emitted.
        stop: ``stop`` strings; the text is cut before the first one.
        detokenizer: a fresh :class:`IncrementalDetokenizer` for this request.
    """

    def __init__(self, prompt_ids: List[int], params: GenerationParams, *,
                 context_length: int, stop_ids: Sequence[int], stop: Sequence[str],
                 detokenizer: IncrementalDetokenizer, index: int = 0,
                 token_bytes: Optional[Any] = None):
        self.prompt_ids = prompt_ids
        self.params = params
        self.index = index
        # choice i of a seeded request samples with seed + i: repeatable, yet n differ
        self.seed = params.seed + index if params.seed is not None else random_seed()
        budget = context_length - len(prompt_ids)
        self.max_tokens = min(params.max_tokens or budget, budget)
        self.stop_ids = set(stop_ids)
        self.output_ids: List[int] = []
        self.finish_reason: Optional[str] = None
        self._detok = detokenizer
        self._matcher = StopStringMatcher(list(stop))
        self._token_bytes = token_bytes
        self._lps: Optional[List[Dict[str, Any]]] = [] if params.logprobs else None
        # the engine's lowering of params.constraint (LLM.prepare_constraint)
        self.grammar: Any = None

    @property
    def completion_tokens(self) -> int:
        return len(self.output_ids)

    @property
    def finished(self) -> bool:
        return self.finish_reason is not None

    def _final(self, reason: str) -> Delta:
        self.finish_reason = reason
        return Delta("", reason, len(self.prompt_ids), len(self.output_ids), self.index,
                     self._take_logprobs(), self._matcher.matched)

    def _delta(self, text: str) -> Delta:
        return Delta(text, index=self.index, logprobs=self._take_logprobs())

    def _take_logprobs(self) -> Optional[List[Dict[str, Any]]]:
        if self._lps is None:
            return None
        out, self._lps = self._lps, []
        return out

    def _entry(self, token_id: int, logprob: float) -> Dict[str, Any]:
        b = self._token_bytes(token_id) if self._token_bytes else b""
        return {"token": b.decode("utf-8", errors="replace"), "logprob": logprob,
                "bytes": list(b)}

    def push(self, token_id: int,
             logprobs: Optional[Tuple[float, List[Tuple[int, float]]]] = None) -> List[Delta]:
        """Add one sampled token; return the deltas it releases (possibly none). The last
        delta of the request carries ``finish_reason`` and the token counts; after it,
        :attr:`finished` is true and further tokens are ignored.

        ``logprobs``: when the request asked for them, ``(logprob of the token, [(id,
        logprob)] of the most likely tokens)``; they travel with the next delta released
        (a token whose text is held back gives its logprobs to a later delta)."""
        if self.finished:
            return []
        if token_id in self.stop_ids:
            return self.finish("stop")
        self.output_ids.append(token_id)
        if self._lps is not None and logprobs is not None:
            e = self._entry(token_id, logprobs[0])
            e["top_logprobs"] = [self._entry(i, lp) for i, lp in logprobs[1]]
            self._lps.append(e)
        text, stopped = self._matcher.push(self._detok.push(token_id))
        out = [self._delta(text)] if text else []
        if stopped:
            out.append(self._final("stop"))
        elif len(self.output_ids) >= self.max_tokens:
            out.extend(self.finish("length"))
        return out

    def finish(self, reason: str) -> List[Delta]:
        """End the request now (a stop token, cancellation, the engine ran out, the budget
        is spent): flush the text held back and return the closing deltas. A stop string
        found while flushing turns ``reason`` into ``"stop"``."""
        if self.finished:
            return []
        text, stopped = self._matcher.push(self._detok.flush())
        if stopped:
            reason = "stop"
        else:
            text += self._matcher.flush()
        out = [self._delta(text)] if text else []
        out.append(self._final(reason))
        return out


class AsyncDeltaStream:
    """The asyncio side of a running request: an async iterator of the deltas of its ``n``
    choices that ends after each has sent the delta carrying ``finish_reason`` and re-raises
    an engine error.

    Create it on the event loop that will consume it; :meth:`emit` may be called from any
    thread (an engine's scheduler thread, a llama.cpp callback).
    """

    def __init__(self, n: int = 1):
        self._loop = asyncio.get_running_loop()
        self._queue: asyncio.Queue = asyncio.Queue()
        self._done = False
        self._left = n  # choices that have not sent their final delta

    def emit(self, item: Any) -> None:
        """A list of deltas or an exception, from any thread."""
        try:
            self._loop.call_soon_threadsafe(self._put, item)
        except RuntimeError:  # the consumer's loop is closed: nobody is listening
            pass

    def _put(self, item: Any) -> None:
        if isinstance(item, list):
            for d in item:
                self._queue.put_nowait(d)
        else:
            self._queue.put_nowait(item)

    def __aiter__(self):
        return self

    async def __anext__(self) -> Delta:
        if self._done:
            raise StopAsyncIteration
        item = await self._queue.get()
        if isinstance(item, BaseException):
            self._done = True
            raise item
        if item.finish_reason is not None:
            self._left -= 1
            self._done = self._left <= 0
        return item


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

    async def astream(self, deltas: AsyncIterator[Delta]) -> AsyncIterator[Dict[str, Any]]:
        for c in self.start():
            yield c
        merge = DeltaCoalescer(self.stream_interval)
        async for d in deltas:
            d = merge.push(d)
            if d is not None:
                for c in self.chunks(d):
                    yield c

    async def acollect(self, deltas: AsyncIterator[Delta]) -> Dict[str, Any]:
        async for d in deltas:
            self.add(d)
        return self.response()


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


@dataclass
class PipelineDelta:
    """What the chat text pipeline released: ``reasoning`` text, ``content`` text and
    completed ``tool_calls`` (OpenAI stream entries)."""

    reasoning: str = ""
    content: str = ""
    tool_calls: List[Dict[str, Any]] = field(default_factory=list)

    def extend(self, other: "PipelineDelta") -> "PipelineDelta":
        self.reasoning += other.reasoning
        self.content += other.content
        self.tool_calls.extend(other.tool_calls)
        return self


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

    def _content(self, text: str, final: bool, out: PipelineDelta) -> PipelineDelta:
        if self.tools is None:
            out.content += text
            return out
        p = self.tools.push(text) if text else None
        if p is not None:
            out.content += p.content
            out.tool_calls.extend(p.tool_calls)
        if final:
            f = self.tools.finish()
            out.content += f.content
            out.tool_calls.extend(f.tool_calls)
        return out

    def push(self, text: str) -> PipelineDelta:
        """Add generated text; return what can be released."""
        out = PipelineDelta()
        if self.reasoning is not None:
            r = self.reasoning.push(text)
            out.reasoning, text = r.reasoning, r.content
        return self._content(text, False, out)

    def finish(self) -> PipelineDelta:
        """End of generation: release everything held back."""
        out = PipelineDelta()
        text = ""
        if self.reasoning is not None:
            r = self.reasoning.finish()
            out.reasoning, text = r.reasoning, r.content
        return self._content(text, True, out)


@dataclass
class PreparedRequest:
    """A validated request, ready for an engine: prompt ids, parameters and the builder of
    its response."""

    prompt_ids: List[int]
    params: GenerationParams
    builder: ResponseBuilder


class LLM(abc.ABC):
    """Base class of every LLM engine.

    An engine implements loading, tokenization, detokenization and :meth:`submit` (start
    one request in the engine's own scheduler, which runs requests concurrently); the
    ``async def`` :meth:`generate` / :meth:`chat` here validate the request, render and
    tokenize the prompt, and turn the request's deltas into OpenAI responses or streams.
    The ModelActor awaits them concurrently (no engine lock).

    Args:
        model_uid: the running model's uid, reported as ``model`` in responses.
        family: the registered family (context length, chat template, stop words).
        spec: the chosen spec; ``quantization`` one of its quantizations.
        model_path: a local file (GGUF) or directory (Hugging Face) holding the weights.
        kwargs: extra engine options from the launch request (``n_ctx``, ``n_gpu``,
            ``enable_thinking`` (the model's default for ``chat_template_kwargs``),
            ``stream_interval`` (text deltas per stream chunk, default 1: see
            :class:`DeltaCoalescer`), ``reasoning_content`` (default true: families with
            reasoning tags return ``reasoning_content`` apart from ``content``; false gives
            the raw text) ...).

    Tool calls are parsed with the family's ``tool_parser`` (the Hermes format when it has
    none, which our generic tool prompt asks for: see
    :func:`~xinference.model.llm.chat_template.generic_tool_messages`).

    Logprobs (``logprobs`` / ``top_logprobs``) are those of the model's own distribution:
    the log-softmax of the raw logits, before repetition/frequency/presence penalties,
    temperature, top-k/top-p/min-p and any grammar mask (vLLM's default, "raw
    logprobs"). A token forced by constrained decoding can therefore have a low logprob.

    Raises:
        InvalidRequestError: a bad ``stream_interval`` or ``reasoning_content``.
    """

    engine_name = ""

    def __init__(
        self,
        model_uid: str,
        family: LLMFamily,
        spec: LLMSpec,
        quantization: str,
        model_path: str,
        kwargs: Optional[Dict[str, Any]] = None,
    ):
        self.model_uid = model_uid
        self.family = family
        self.spec = spec
        self.quantization = quantization
        self.model_path = model_path
        self.kwargs = dict(kwargs or {})
        self.stream_interval = stream_interval_option(self.kwargs.get("stream_interval"))
        from .reasoning import ReasoningParser
        from .tool_parsers import DEFAULT_TOOL_PARSER, get_tool_parser

        self.tool_parser = get_tool_parser(family.tool_parser or DEFAULT_TOOL_PARSER)
        split = flag("reasoning_content", self.kwargs.get("reasoning_content"), True)
        has_tags = "reasoning" in family.model_ability or family.reasoning_start_tag
        self.reasoning_parser = (
            ReasoningParser(family.reasoning_start_tag, family.reasoning_end_tag)
            if split and has_tags else None)

    @classmethod
    def check_options(cls, kwargs: Dict[str, Any]) -> None:
        """Validate the engine's launch options before any process starts (the supervisor
        calls it while planning a launch, so a bad value is a 400 at once). An engine adds
        its own options.

        Raises:
            InvalidRequestError: a bad option, naming it.
        """
        stream_interval_option(kwargs.get("stream_interval"))
        flag("reasoning_content", kwargs.get("reasoning_content"), True)

    def stats(self) -> Dict[str, Any]:
        """Engine counters for monitoring and tests (e.g. busy slots, cancelled requests);
        engines add theirs."""
        return {}

    # ---- what an engine provides -------------------------------------------------------
    @abc.abstractmethod
    def load(self) -> None:
        """Load the weights. Raises ModelLoadError when they cannot be loaded."""

    @property
    @abc.abstractmethod
    def context_length(self) -> int:
        """Tokens the model attends to: prompt plus completion."""

    @abc.abstractmethod
    def tokenize(self, text: str, add_special: bool) -> List[int]:
        """Token ids of ``text``; ``add_special`` adds the BOS token where the model uses
        one. Special-token text in ``text`` (``<|im_start|>``) maps to special ids."""

    @abc.abstractmethod
    def new_detokenizer(self) -> IncrementalDetokenizer:
        """A fresh incremental detokenizer for one request."""

    @abc.abstractmethod
    def submit(self, state: RequestState, emit: Callable[[Any], None]
               ) -> Callable[[], None]:
        """Start generating for ``state`` (its prompt ids and parameters) in the engine's
        scheduler and return at once.

        The engine feeds each sampled token id to ``state.push`` and passes every non-empty
        list of deltas it returns to ``emit``, from any thread; when the engine itself ends
        the request (it ran out of budget or hit an end-of-generation token it handles), it
        emits ``state.finish(reason)``; on an engine error it emits the exception. After the
        delta carrying ``finish_reason`` (or an exception) nothing more is emitted.

        Returns:
            ``cancel()``: stop the request at its next token and free what it holds (its
            consumer went away); a no-op once it has finished.
        """

    @property
    @abc.abstractmethod
    def eos_token_ids(self) -> List[int]:
        """Token ids that end a generation (EOS / end-of-turn)."""

    def model_chat_template(self) -> Optional[str]:
        """The chat template the weights ship with (GGUF metadata / tokenizer), if any."""
        return None

    def special_token_text(self) -> Tuple[str, str]:
        """``(bos_token, eos_token)`` as text, for chat templates."""
        return "", ""

    def token_bytes(self, token_id: int) -> bytes:
        """The bytes of one token (logprobs' ``token`` / ``bytes``)."""
        return b""

    # ---- shared logic -------------------------------------------------------------------
    @property
    def abilities(self) -> List[str]:
        return self.family.model_ability

    def chat_template(self) -> str:
        """The family's template wins over the one in the weights; ChatML is the fallback."""
        return self.family.chat_template or self.model_chat_template() or CHATML_TEMPLATE

    def render_chat(self, messages: List[Dict[str, Any]], params: GenerationParams,
                    tools: Optional[list] = None) -> str:
        """The prompt string that ``messages`` turn into (what the model will read).
        ``tools`` reach the template as Hugging Face's ``apply_chat_template(tools=...)``
        passes them; a template that knows no tools gets the generic tool prompt instead.

        Raises:
            InvalidRequestError: bad messages, or parts the model cannot take.
        """
        msgs = normalize_messages(messages, self.abilities, self.model_uid)
        if tools and not template_knows_tools(self.chat_template()):
            msgs, tools = generic_tool_messages(msgs, tools), None
        return self._render(msgs, params, tools)

    def _render(self, messages: List[Dict[str, Any]], params: GenerationParams,
                tools: Optional[list]) -> str:
        """Render normalized messages with :meth:`chat_template`."""
        bos, eos = self.special_token_text()
        return render_chat_template(
            self.chat_template(), messages, bos_token=bos,
            eos_token=eos, tools=tools, chat_template_kwargs=params.chat_template_kwargs,
        )

    def _prompt_ids(self, prompt: str, add_special: bool) -> List[int]:
        ids = self.tokenize(prompt, add_special)
        if len(ids) >= self.context_length:
            raise InvalidRequestError(
                f"This model's maximum context length is {self.context_length} tokens, "
                f"but the prompt has {len(ids)} tokens. Shorten the prompt."
            )
        return ids

    def params_from_config(self, config: Optional[Dict[str, Any]], chat: bool = False
                           ) -> GenerationParams:
        """:meth:`GenerationParams.from_config` plus the model's launch-time defaults: the
        ``enable_thinking`` launch kwarg (``xinference launch --enable-thinking``) is the
        default of ``chat_template_kwargs["enable_thinking"]``; the request wins."""
        params = GenerationParams.from_config(config, chat=chat)
        default = self.kwargs.get("enable_thinking")
        if default is not None:
            if isinstance(default, str):
                default = default.strip().lower() not in ("false", "0", "no", "off", "")
            params.chat_template_kwargs.setdefault("enable_thinking", bool(default))
        return params

    def new_request_state(self, prompt_ids: List[int], params: GenerationParams,
                          index: int = 0) -> RequestState:
        """The :class:`RequestState` of choice ``index`` of one request on this model (EOS
        ids and the family's stop ids unless ``ignore_eos``, the request's stop ids, the
        family's and the request's stop strings, a fresh detokenizer)."""
        stop_ids = set(params.stop_token_ids)
        if not params.ignore_eos:
            stop_ids |= set(self.eos_token_ids) | set(self.family.stop_token_ids)
        return RequestState(
            prompt_ids, params, context_length=self.context_length, stop_ids=stop_ids,
            stop=list(params.stop) + list(self.family.stop),
            detokenizer=self.new_detokenizer(), index=index, token_bytes=self.token_bytes,
        )

    def new_request_states(self, prompt_ids: List[int], params: GenerationParams
                           ) -> List[RequestState]:
        """One :class:`RequestState` per choice (``n``)."""
        return [self.new_request_state(prompt_ids, params, i) for i in range(params.n)]

    def _builder_kw(self, params: GenerationParams) -> Dict[str, Any]:
        return dict(stream_interval=self.stream_interval, n=params.n,
                    logprobs=params.logprobs)

    def prepare_generate(self, prompt: str, generate_config: Optional[Dict[str, Any]] = None
                         ) -> PreparedRequest:
        """Validate a Completions request and tokenize its prompt (with BOS).
        ``response_format`` constrains the output as in chat.

        Raises:
            InvalidRequestError: bad parameters or a prompt longer than the context.
        """
        if not isinstance(prompt, str):
            raise InvalidRequestError("'prompt' must be a string")
        params = self.params_from_config(generate_config)
        params.constraint = self._constraint(params)
        ids = self._prompt_ids(prompt, add_special=True)
        return PreparedRequest(ids, params, CompletionBuilder(
            self.model_uid, params.include_usage, **self._builder_kw(params)))

    def _constraint(self, params: GenerationParams) -> Optional[Constraint]:
        """What decoding must produce: a call of the forced tool(s) in the family's format
        (``tool_choice`` ``"required"`` or a named function), or the ``response_format``
        JSON."""
        if params.tool_choice not in ("none", "auto"):
            tools = params.tools if params.tool_choice == "required" else [
                t for t in params.tools if t["function"]["name"] == params.tool_choice]
            return self.tool_parser.constraint(tools)
        rf = params.response_format
        if rf is None:
            return None
        return Constraint.json(rf.get("schema") if rf["type"] == "json_schema" else None)

    def _pipeline_factory(self, params: GenerationParams, prompt: str):
        """A maker of per-choice :class:`ChatTextPipeline` s for this request."""
        parse_tools = params.tools and params.tool_choice != "none"
        markers = self.tool_parser.markers if parse_tools else ()

        def make() -> ChatTextPipeline:
            reasoning = (self.reasoning_parser.new_stream(prompt, markers)
                         if self.reasoning_parser is not None else None)
            tools = self.tool_parser.new_stream(params.tools) if parse_tools else None
            if tools is not None and not params.parallel_tool_calls:
                tools.max_calls = 1
            return ChatTextPipeline(reasoning, tools)

        return make

    def prepare_chat(self, messages: List[Dict[str, Any]],
                     generate_config: Optional[Dict[str, Any]] = None) -> PreparedRequest:
        """Validate a Chat Completions request, render the chat template and tokenize.

        Raises:
            InvalidRequestError: bad messages or parameters, the model lacks the ``chat``
            ability, or the prompt is longer than the context.
        """
        if "chat" not in self.abilities:
            raise InvalidRequestError(
                f"Model '{self.model_uid}' does not support chat (abilities: "
                f"{self.abilities}); use /v1/completions"
            )
        params = self.params_from_config(generate_config, chat=True)
        params.constraint = self._constraint(params)
        prompt = self.render_chat(messages, params, tools=params.tools)
        ids = self._prompt_ids(prompt, add_special=False)
        return PreparedRequest(ids, params, ChatBuilder(
            self.model_uid, params.include_usage, **self._builder_kw(params),
            new_pipeline=self._pipeline_factory(params, prompt)))

    async def count_chat_tokens(self, messages: List[Dict[str, Any]],
                                generate_config: Optional[Dict[str, Any]] = None) -> int:
        """Tokens of the prompt :meth:`prepare_chat` renders for this request (chat template,
        tools and ``enable_thinking`` included), without generating: Anthropic's
        ``count_tokens``. Raises as :meth:`prepare_chat`."""
        req = await asyncio.to_thread(self.prepare_chat, messages, generate_config)
        return len(req.prompt_ids)

    def prepare_constraint(self, states: List[RequestState]) -> None:
        """Lower ``params.constraint`` for this engine and attach it to each state
        (``state.grammar``); runs in a worker thread (compiling may take a while). Engines
        that constrain decoding override it.

        Raises:
            InvalidRequestError: the engine cannot constrain decoding, or the schema cannot
            be turned into a grammar.
        """
        raise InvalidRequestError(
            f"The {self.engine_name} engine cannot constrain decoding (tool_choice required /"
            " a named function, response_format)")

    async def _serve(self, req: PreparedRequest
                     ) -> Union[Dict[str, Any], AsyncIterator[Dict[str, Any]]]:
        states = self.new_request_states(req.prompt_ids, req.params)
        if req.params.constraint is not None:
            await asyncio.to_thread(self.prepare_constraint, states)
        stream = AsyncDeltaStream(len(states))
        cancels = [self.submit(state, stream.emit) for state in states]

        def cancel():  # no-op when finished; frees the engine when the caller left
            for c in cancels:
                c()

        if not req.params.stream:
            try:
                return await req.builder.acollect(stream)
            finally:
                cancel()

        async def chunks():
            try:
                async for c in req.builder.astream(stream):
                    yield c
            finally:
                cancel()

        return chunks()

    # ---- OpenAI-shaped entry points -------------------------------------------------------
    async def generate(self, prompt: str, generate_config: Optional[Dict[str, Any]] = None
                       ) -> Union[Dict[str, Any], AsyncIterator[Dict[str, Any]]]:
        """OpenAI Completions, run concurrently with other requests: a ``text_completion``
        dict, or with ``stream`` an async iterator of ``text_completion`` chunks (the last
        carries ``finish_reason``; a usage-only chunk follows when
        ``stream_options.include_usage``).

        Raises:
            InvalidRequestError: bad parameters or a prompt longer than the context.
        """
        req = await asyncio.to_thread(self.prepare_generate, prompt, generate_config)
        return await self._serve(req)

    async def chat(self, messages: List[Dict[str, Any]],
                   generate_config: Optional[Dict[str, Any]] = None
                   ) -> Union[Dict[str, Any], AsyncIterator[Dict[str, Any]]]:
        """OpenAI Chat Completions, run concurrently with other requests: a
        ``chat.completion`` dict, or with ``stream`` an async iterator of
        ``chat.completion.chunk`` dicts (first delta carries the role, the last
        ``finish_reason``; a usage-only chunk follows when ``stream_options.include_usage``).

        Raises:
            InvalidRequestError: bad messages or parameters, the model lacks the ``chat``
            ability, or the prompt is longer than the context.
        """
        req = await asyncio.to_thread(self.prepare_chat, messages, generate_config)
        return await self._serve(req)


def random_seed() -> int:
    """A fresh seed for requests that do not set one (OpenAI: sampling is not repeatable
    unless ``seed`` is given)."""
    return random.randint(0, 2**31 - 1)

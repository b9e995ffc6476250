"""The per-request state of one generation, independent of how tokens are produced.

An engine feeds the sampled token ids of a request into its :class:`RequestState` (one per
choice), which applies stop token ids, ``stop`` strings, the ``max_tokens`` / context budget
and incremental detokenisation, and turns them into :class:`Delta` s; the engine hands those
to the request's :class:`AsyncDeltaStream`, from any thread. The response builders
(:mod:`.responses`) turn the deltas into OpenAI responses and chunks.
"""

from __future__ import annotations

import asyncio
import collections
import random
import threading
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from .params import GenerationParams
from .text import IncrementalDetokenizer, StopStringMatcher


def random_seed() -> int:
    """A fresh seed for requests that do not set one (OpenAI: sampling is not repeatable
    unless ``seed`` is given)."""
    return random.randint(0, 2**31 - 1)


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


class RequestState:
    """Per-request bookkeeping of one generation, independent of how tokens are produced.

    An engine feeds it the sampled token ids one by one (:meth:`push`); it applies the stop
    token ids, the ``stop`` strings, the ``max_tokens`` / context budget and incremental
    detokenisation, and turns them into :class:`Delta` s. Every engine's scheduler
    (llama.cpp's slots, the Transformers batch) drives the same object, so all behave alike.

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
        # the engine's image inputs of the prompt (LLM.encode_images), shared by choices
        self.mm_inputs: Any = None
        #: ``usage.prompt_tokens``: the prompt ids, unless the engine counts image tokens
        #: itself (llama.cpp) and sets it
        self.prompt_tokens = len(prompt_ids)

    @property
    def completion_tokens(self) -> int:
        return len(self.output_ids)

    @property
    def finished(self) -> bool:
        return self.finish_reason is not None

    def _final(self, reason: str) -> Delta:
        self.finish_reason = reason
        return Delta("", reason, self.prompt_tokens, len(self.output_ids), self.index,
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


_END = object()  # the loop's marker: every choice finished while the deltas went direct


class AsyncDeltaStream:
    """The asyncio side of a running request: an async iterator of the deltas of its ``n``
    choices that ends after each has sent the delta carrying ``finish_reason`` and re-raises
    an engine error.

    Create it on the event loop that will consume it; :meth:`emit` may be called from any
    thread (an engine's scheduler thread, a llama.cpp callback). Emitted items go into a
    deque; the loop is woken (``call_soon_threadsafe``: a write to its self-pipe and a
    callback) only when no wake-up is pending already, so items emitted while the loop is
    busy cost it one wake-up together, not one each.

    :meth:`go_direct` hands the deltas to a function instead, called in the emitting
    thread: the loop is then woken once, at the end (or for an error), not per token.
    """

    def __init__(self, n: int = 1):
        self._loop = asyncio.get_running_loop()
        self._items: collections.deque = collections.deque()  # emitted, not yet taken
        self._ready: collections.deque = collections.deque()  # deltas taken, not yet read
        self._waiter: Optional[asyncio.Future] = None
        self._wake_pending = False
        self._done = False
        self._left = n  # choices that have not sent their final delta
        self._lock = threading.Lock()  # emit against go_direct
        self._direct: Optional[Callable[[Delta], None]] = None

    def emit(self, item: Any) -> None:
        """A list of deltas or an exception, from any thread."""
        with self._lock:
            if self._direct is not None and not isinstance(item, BaseException):
                item = self._consume(item if isinstance(item, list) else [item])
                if item is None:
                    return
            self._items.append(item)
        if self._wake_pending:  # the loop will see this item on the pending wake-up
            return
        self._wake_pending = True
        try:
            self._loop.call_soon_threadsafe(self._wake)
        except RuntimeError:  # the consumer's loop is closed: nobody is listening
            pass

    def _consume(self, deltas: List["Delta"]) -> Any:
        """Direct mode (lock held): each delta to the consumer; ``_END`` once the last
        choice has finished (for the loop), else None."""
        for d in deltas:
            self._direct(d)
            if d.finish_reason is not None:
                self._left -= 1
        return _END if self._left <= 0 else None

    def go_direct(self, consume: Callable[["Delta"], None],
                  before: Callable[[], None]) -> bool:
        """From now on, call ``consume(delta)`` in the thread that emits each delta (under
        this stream's lock, so in order) instead of queueing it for the loop; the async
        iterator then only ends (after the last final delta) or raises (an engine error).
        Under the lock, first ``before()`` runs (the consumer's own backlog), then the
        deltas queued and not yet read are consumed. Call it on the loop, between reads.
        Returns False (nothing changed) when the stream has already ended or holds an
        error."""
        with self._lock:
            self._move_items()
            queued = list(self._ready)
            if self._done or any(isinstance(i, BaseException) for i in queued):
                return False
            before()
            self._ready.clear()
            self._direct = consume
            end = self._consume(queued)
            if end is not None:
                self._items.append(end)
        if self._items:
            self._wake()
        return True

    def _move_items(self) -> None:
        """Emitted items (lists of deltas, errors, ``_END``) into the read queue, one by
        one."""
        items, ready = self._items, self._ready
        while items:
            item = items.popleft()
            if isinstance(item, list):
                ready.extend(item)
            else:
                ready.append(item)

    def _wake(self) -> None:
        self._wake_pending = False  # before the consumer drains: later items wake again
        w = self._waiter
        if w is not None and not w.done():
            w.set_result(None)

    def __aiter__(self):
        return self

    async def __anext__(self) -> Delta:
        if self._done:
            raise StopAsyncIteration
        ready = self._ready
        while not ready:
            if self._items:
                self._move_items()
                continue
            self._waiter = self._loop.create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        item = ready.popleft()
        if item is _END:
            self._done = True
            raise StopAsyncIteration
        if isinstance(item, BaseException):
            self._done = True
            raise item
        if item.finish_reason is not None:
            self._left -= 1
            self._done = self._left <= 0
        return item

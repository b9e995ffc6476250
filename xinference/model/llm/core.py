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

from ...core.errors import InvalidRequestError
from ..options import positive_int
from .chat_template import CHATML_TEMPLATE, normalize_messages, render_chat_template
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

    @classmethod
    def from_config(cls, config: Optional[Dict[str, Any]]) -> "GenerationParams":
        """Build from a ``generate_config`` dict (the request body minus model/prompt).

        Raises:
            InvalidRequestError: a value has the wrong type or range.
        """
        config = dict(config or {})
        p = cls()

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


class StopStringMatcher:
    """Cuts generated text at the first ``stop`` string and holds back any suffix that could
    still become one, so no part of a stop string is ever streamed."""

    def __init__(self, stop: Sequence[str]):
        self._stop = [s for s in stop if s]
        self._buffer = ""

    def push(self, text: str) -> Tuple[str, bool]:
        """Add text; return ``(text safe to emit, stopped)``."""
        self._buffer += text
        if not self._stop:
            out, self._buffer = self._buffer, ""
            return out, False
        first = -1
        for s in self._stop:
            i = self._buffer.find(s)
            if i != -1 and (first == -1 or i < first):
                first = i
        if first != -1:
            out, self._buffer = self._buffer[:first], ""
            return out, True
        hold = 0
        for s in self._stop:
            for k in range(min(len(s) - 1, len(self._buffer)), 0, -1):
                if self._buffer.endswith(s[:k]):
                    hold = max(hold, k)
                    break
        cut = len(self._buffer) - hold
        out, self._buffer = self._buffer[:cut], self._buffer[cut:]
        return out, False

    def flush(self) -> str:
        out, self._buffer = self._buffer, ""
        return out


@dataclass
class Delta:
    """One step of a generation: new text and, on the last step, the finish reason and
    token counts."""

    text: str
    finish_reason: Optional[str] = None
    prompt_tokens: int = 0
    completion_tokens: int = 0


def _usage(prompt_tokens: int, completion_tokens: int) -> Dict[str, int]:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


class DeltaCoalescer:
    """Merges text deltas so that one stream chunk carries up to ``interval`` of them
    (``stream_interval``, as vLLM's server option: fewer, larger chunks cost the serving
    path less CPU per token). The first text delta passes at once, so the time to the first
    token is unchanged; the final delta (with ``finish_reason``) flushes what is held.

    Args:
        interval: deltas per chunk (one delta per generated token, except while a partial
            UTF-8 character or a possible stop string is held back); 1 passes all through.
    """

    def __init__(self, interval: int):
        self.interval = interval
        self._held: List[str] = []
        self._sent_first = False

    def push(self, d: Delta) -> Optional[Delta]:
        """Add one delta; return the delta to send now, if any."""
        if d.finish_reason is not None:
            text = "".join(self._held) + d.text
            self._held = []
            return Delta(text, d.finish_reason, d.prompt_tokens, d.completion_tokens)
        if not self._sent_first or self.interval <= 1:
            self._sent_first = True
            return d
        self._held.append(d.text)
        if len(self._held) >= self.interval:
            text, self._held = "".join(self._held), []
            return Delta(text)
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
                 detokenizer: IncrementalDetokenizer):
        self.prompt_ids = prompt_ids
        self.params = params
        budget = context_length - len(prompt_ids)
        self.max_tokens = min(params.max_tokens or budget, budget)
        self.stop_ids = set(stop_ids)
        self.output_ids: List[int] = []
        self.finish_reason: Optional[str] = None
        self._detok = detokenizer
        self._matcher = StopStringMatcher(list(stop))

    @property
    def completion_tokens(self) -> int:
        return len(self.output_ids)

    @property
    def finished(self) -> bool:
        return self.finish_reason is not None

    def _final(self, reason: str) -> Delta:
        self.finish_reason = reason
        return Delta("", reason, len(self.prompt_ids), len(self.output_ids))

    def push(self, token_id: int) -> List[Delta]:
        """Add one sampled token; return the deltas it releases (possibly none). The last
        delta of the request carries ``finish_reason`` and the token counts; after it,
        :attr:`finished` is true and further tokens are ignored."""
        if self.finished:
            return []
        if token_id in self.stop_ids:
            return self.finish("stop")
        self.output_ids.append(token_id)
        text, stopped = self._matcher.push(self._detok.push(token_id))
        out = [Delta(text)] if text else []
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
        out = [Delta(text)] if text else []
        out.append(self._final(reason))
        return out


class AsyncDeltaStream:
    """The asyncio side of a running request: an async iterator of its deltas that ends
    after the delta carrying ``finish_reason`` and re-raises an engine error.

    Create it on the event loop that will consume it; :meth:`emit` may be called from any
    thread (an engine's scheduler thread, a llama.cpp callback).
    """

    def __init__(self):
        self._loop = asyncio.get_running_loop()
        self._queue: asyncio.Queue = asyncio.Queue()
        self._done = False

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
            self._done = True
        return item


class ResponseBuilder(abc.ABC):
    """OpenAI response shapes of one request, built from its :class:`Delta` s.

    Streams: :meth:`start` (opening chunks), then :meth:`chunks` for each delta. Whole
    responses: :meth:`add` each delta, then :meth:`response`. :meth:`stream`/:meth:`collect`
    (iterators) and :meth:`astream`/:meth:`acollect` (async iterators) wrap those.
    """

    object_name = ""
    id_prefix = ""

    def __init__(self, model_uid: str, include_usage: bool, stream_interval: int = 1):
        self.model_uid = model_uid
        self.include_usage = include_usage
        self.stream_interval = stream_interval
        self.id = f"{self.id_prefix}-{uuid.uuid4()}"
        self.created = int(time.time())
        self._parts: List[str] = []
        self._last: Optional[Delta] = None

    def _chunk(self, choice: Optional[Dict[str, Any]], usage=None) -> Dict[str, Any]:
        c = {"id": self.id, "object": self.object_name, "created": self.created,
             "model": self.model_uid, "choices": [choice] if choice is not None else []}
        if usage is not None:
            c["usage"] = usage
        return c

    def start(self) -> List[Dict[str, Any]]:
        """Chunks sent before any text."""
        return []

    @abc.abstractmethod
    def _choice_chunk(self, d: Delta) -> Dict[str, Any]:
        """The stream chunk of one delta."""

    def chunks(self, d: Delta) -> List[Dict[str, Any]]:
        """Stream chunks of one delta; the final delta adds a usage-only chunk when
        ``stream_options.include_usage``."""
        out = [self._choice_chunk(d)]
        if d.finish_reason is not None and self.include_usage:
            out.append(self._chunk(None, _usage(d.prompt_tokens, d.completion_tokens)))
        return out

    def add(self, d: Delta) -> None:
        self._parts.append(d.text)
        if d.finish_reason is not None:
            self._last = d

    @abc.abstractmethod
    def response(self) -> Dict[str, Any]:
        """The whole (non-stream) response, once the final delta was added."""

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
    """OpenAI Completions: ``text_completion`` objects and chunks."""

    object_name = "text_completion"
    id_prefix = "cmpl"

    def _text_choice(self, text: str, finish: Optional[str]) -> Dict[str, Any]:
        return {"text": text, "index": 0, "logprobs": None, "finish_reason": finish}

    def _choice_chunk(self, d: Delta) -> Dict[str, Any]:
        return self._chunk(self._text_choice(d.text, d.finish_reason))

    def response(self) -> Dict[str, Any]:
        last = self._last
        return self._chunk(self._text_choice("".join(self._parts), last.finish_reason),
                           _usage(last.prompt_tokens, last.completion_tokens))


class ChatBuilder(ResponseBuilder):
    """OpenAI Chat Completions: ``chat.completion`` and ``chat.completion.chunk`` objects
    (the first chunk carries the role, the last ``finish_reason``)."""

    object_name = "chat.completion.chunk"
    id_prefix = "chatcmpl"

    def _delta_choice(self, delta: Dict[str, Any], finish: Optional[str]) -> Dict[str, Any]:
        return {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}

    def start(self) -> List[Dict[str, Any]]:
        return [self._chunk(self._delta_choice({"role": "assistant", "content": ""}, None))]

    def _choice_chunk(self, d: Delta) -> Dict[str, Any]:
        if d.finish_reason is None:
            return self._chunk(self._delta_choice({"content": d.text}, None))
        return self._chunk(self._delta_choice({"content": d.text} if d.text else {},
                                              d.finish_reason))

    def response(self) -> Dict[str, Any]:
        last = self._last
        return {
            "id": self.id, "object": "chat.completion", "created": self.created,
            "model": self.model_uid,
            "choices": [{"index": 0, "message": {"role": "assistant",
                                                 "content": "".join(self._parts)},
                         "logprobs": None, "finish_reason": last.finish_reason}],
            "usage": _usage(last.prompt_tokens, last.completion_tokens),
        }


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
            :class:`DeltaCoalescer`) ...).

    Raises:
        InvalidRequestError: a bad ``stream_interval``.
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

    @classmethod
    def check_options(cls, kwargs: Dict[str, Any]) -> None:
        """Validate the engine's launch options before any process starts (the supervisor
        calls it while planning a launch, so a bad value is a 400 at once). An engine adds
        its own options.

        Raises:
            InvalidRequestError: a bad option, naming it.
        """
        stream_interval_option(kwargs.get("stream_interval"))

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

    # ---- shared logic -------------------------------------------------------------------
    @property
    def abilities(self) -> List[str]:
        return self.family.model_ability

    def chat_template(self) -> str:
        """The family's template wins over the one in the weights; ChatML is the fallback."""
        return self.family.chat_template or self.model_chat_template() or CHATML_TEMPLATE

    def render_chat(self, messages: List[Dict[str, Any]], params: GenerationParams,
                    tools: Optional[list] = None) -> str:
        """The prompt string that ``messages`` turn into (what the model will read)."""
        bos, eos = self.special_token_text()
        return render_chat_template(
            self.chat_template(), normalize_messages(messages), bos_token=bos,
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

    def params_from_config(self, config: Optional[Dict[str, Any]]) -> GenerationParams:
        """:meth:`GenerationParams.from_config` plus the model's launch-time defaults: the
        ``enable_thinking`` launch kwarg (``xinference launch --enable-thinking``) is the
        default of ``chat_template_kwargs["enable_thinking"]``; the request wins."""
        params = GenerationParams.from_config(config)
        default = self.kwargs.get("enable_thinking")
        if default is not None:
            if isinstance(default, str):
                default = default.strip().lower() not in ("false", "0", "no", "off", "")
            params.chat_template_kwargs.setdefault("enable_thinking", bool(default))
        return params

    def new_request_state(self, prompt_ids: List[int], params: GenerationParams
                          ) -> RequestState:
        """The :class:`RequestState` of one request on this model (EOS ids and the family's
        stop ids unless ``ignore_eos``, the request's stop ids, the family's and the
        request's stop strings, a fresh detokenizer)."""
        stop_ids = set(params.stop_token_ids)
        if not params.ignore_eos:
            stop_ids |= set(self.eos_token_ids) | set(self.family.stop_token_ids)
        return RequestState(
            prompt_ids, params, context_length=self.context_length, stop_ids=stop_ids,
            stop=list(params.stop) + list(self.family.stop),
            detokenizer=self.new_detokenizer(),
        )

    def prepare_generate(self, prompt: str, generate_config: Optional[Dict[str, Any]] = None
                         ) -> PreparedRequest:
        """Validate a Completions request and tokenize its prompt (with BOS).

        Raises:
            InvalidRequestError: bad parameters or a prompt longer than the context.
        """
        if not isinstance(prompt, str):
            raise InvalidRequestError("'prompt' must be a string")
        params = self.params_from_config(generate_config)
        ids = self._prompt_ids(prompt, add_special=True)
        return PreparedRequest(ids, params, CompletionBuilder(
            self.model_uid, params.include_usage, self.stream_interval))

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
        config = dict(generate_config or {})
        params = self.params_from_config(config)
        prompt = self.render_chat(messages, params, tools=config.get("tools"))
        ids = self._prompt_ids(prompt, add_special=False)
        return PreparedRequest(ids, params, ChatBuilder(self.model_uid, params.include_usage,
                                                        self.stream_interval))

    async def _serve(self, req: PreparedRequest
                     ) -> Union[Dict[str, Any], AsyncIterator[Dict[str, Any]]]:
        stream = AsyncDeltaStream()
        cancel = self.submit(self.new_request_state(req.prompt_ids, req.params), stream.emit)
        if not req.params.stream:
            try:
                return await req.builder.acollect(stream)
            finally:
                cancel()  # no-op when finished; frees the engine when the caller left

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

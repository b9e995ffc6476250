"""Engine-independent LLM logic shared by every engine.

An engine subclass only knows how to load weights, tokenize, detokenize one token at a time
and produce the next token ids for a prompt (:meth:`LLM.iter_token_ids`). Everything the
OpenAI API defines on top of that lives here, once: parameter validation, chat template
rendering, ``max_tokens`` and context checks, ``stop`` strings and ``stop_token_ids``,
incremental detokenisation, ``finish_reason``, ``usage`` and the response / chunk shapes
(OpenAI Completions and Chat Completions API, including the streaming chunk format).
"""

from __future__ import annotations

import abc
import codecs
import random
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple, Union

from ...core.errors import InvalidRequestError
from .chat_template import CHATML_TEMPLATE, normalize_messages, render_chat_template
from .llm_family import LLMFamily, LLMSpec


@dataclass
class GenerationParams:
    """Sampling and stopping parameters of one request, validated.

    Field names are OpenAI's (``max_tokens``, ``stop``, ``seed`` ...) and llama.cpp's
    (``top_k``, ``repeat_penalty``). ``temperature == 0`` means greedy decoding.
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


class LLM(abc.ABC):
    """Base class of every LLM engine.

    Args:
        model_uid: the running model's uid, reported as ``model`` in responses.
        family: the registered family (context length, chat template, stop words).
        spec: the chosen spec; ``quantization`` one of its quantizations.
        model_path: a local file (GGUF) or directory (Hugging Face) holding the weights.
        kwargs: extra engine options from the launch request (``n_ctx``, ``n_gpu`` ...).
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
    def iter_token_ids(self, prompt_ids: List[int], params: GenerationParams) -> Iterator[int]:
        """Yield sampled token ids one by one, forever; the caller stops the iteration."""

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

    def run(self, prompt_ids: List[int], params: GenerationParams,
            cancel: Optional[threading.Event] = None) -> Iterator[Delta]:
        """Generate from ``prompt_ids``; yield text deltas, the last one carrying
        ``finish_reason`` (``"stop"`` on EOS, a stop token or a stop string; ``"length"`` on
        ``max_tokens`` or a full context) and the token counts for ``usage``."""
        budget = self.context_length - len(prompt_ids)
        max_tokens = min(params.max_tokens or budget, budget)
        stop_ids = set(self.eos_token_ids) | set(params.stop_token_ids)
        stop_ids |= set(self.family.stop_token_ids)
        detok = self.new_detokenizer()
        matcher = StopStringMatcher(list(params.stop) + list(self.family.stop))
        n, finish = 0, "length"
        gen = self.iter_token_ids(prompt_ids, params)
        try:
            for token_id in gen:
                if (cancel is not None and cancel.is_set()) or token_id in stop_ids:
                    finish = "stop"
                    break
                n += 1
                text, stopped = matcher.push(detok.push(token_id))
                if text:
                    yield Delta(text)
                if stopped:
                    yield Delta("", "stop", len(prompt_ids), n)
                    return
                if n >= max_tokens:
                    break
        finally:
            gen.close()
        text, stopped = matcher.push(detok.flush())
        if stopped:
            finish = "stop"
        else:
            text += matcher.flush()
        if text:
            yield Delta(text)
        yield Delta("", finish, len(prompt_ids), n)

    # ---- OpenAI-shaped entry points -------------------------------------------------------
    def generate(self, prompt: str, generate_config: Optional[Dict[str, Any]] = None,
                 cancel: Optional[threading.Event] = None
                 ) -> Union[Dict[str, Any], Iterator[Dict[str, Any]]]:
        """OpenAI Completions: a ``text_completion`` dict, or with ``stream`` an iterator of
        ``text_completion`` chunks (the last carries ``finish_reason``; a usage-only chunk
        follows when ``stream_options.include_usage``).

        Raises:
            InvalidRequestError: bad parameters or a prompt longer than the context.
        """
        if not isinstance(prompt, str):
            raise InvalidRequestError("'prompt' must be a string")
        params = GenerationParams.from_config(generate_config)
        ids = self._prompt_ids(prompt, add_special=True)
        cid, created = f"cmpl-{uuid.uuid4()}", int(time.time())

        def chunk(text, finish, usage=None, choices=True):
            c = {"id": cid, "object": "text_completion", "created": created,
                 "model": self.model_uid,
                 "choices": [{"text": text, "index": 0, "logprobs": None,
                              "finish_reason": finish}] if choices else []}
            if usage is not None:
                c["usage"] = usage
            return c

        if params.stream:
            def stream():
                for d in self.run(ids, params, cancel):
                    if d.finish_reason is None:
                        yield chunk(d.text, None)
                    else:
                        yield chunk(d.text, d.finish_reason)
                        if params.include_usage:
                            yield chunk("", None, _usage(d.prompt_tokens, d.completion_tokens),
                                        choices=False)
            return stream()
        parts, last = [], None
        for d in self.run(ids, params, cancel):
            parts.append(d.text)
            last = d
        return chunk("".join(parts), last.finish_reason,
                     _usage(last.prompt_tokens, last.completion_tokens))

    def chat(self, messages: List[Dict[str, Any]],
             generate_config: Optional[Dict[str, Any]] = None,
             cancel: Optional[threading.Event] = None
             ) -> Union[Dict[str, Any], Iterator[Dict[str, Any]]]:
        """OpenAI Chat Completions: a ``chat.completion`` dict, or with ``stream`` an
        iterator of ``chat.completion.chunk`` dicts (first delta carries the role, the last
        ``finish_reason``; a usage-only chunk follows when ``stream_options.include_usage``).

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
        params = GenerationParams.from_config(config)
        prompt = self.render_chat(messages, params, tools=config.get("tools"))
        ids = self._prompt_ids(prompt, add_special=False)
        cid, created = f"chatcmpl-{uuid.uuid4()}", int(time.time())

        def chunk(delta, finish, usage=None, choices=True):
            c = {"id": cid, "object": "chat.completion.chunk", "created": created,
                 "model": self.model_uid,
                 "choices": [{"index": 0, "delta": delta, "logprobs": None,
                              "finish_reason": finish}] if choices else []}
            if usage is not None:
                c["usage"] = usage
            return c

        if params.stream:
            def stream():
                yield chunk({"role": "assistant", "content": ""}, None)
                for d in self.run(ids, params, cancel):
                    if d.finish_reason is None:
                        yield chunk({"content": d.text}, None)
                    else:
                        yield chunk({"content": d.text} if d.text else {}, d.finish_reason)
                        if params.include_usage:
                            yield chunk({}, None, _usage(d.prompt_tokens, d.completion_tokens),
                                        choices=False)
            return stream()
        parts, last = [], None
        for d in self.run(ids, params, cancel):
            parts.append(d.text)
            last = d
        return {
            "id": cid, "object": "chat.completion", "created": created,
            "model": self.model_uid,
            "choices": [{"index": 0, "message": {"role": "assistant",
                                                 "content": "".join(parts)},
                         "logprobs": None, "finish_reason": last.finish_reason}],
            "usage": _usage(last.prompt_tokens, last.completion_tokens),
        }


def random_seed() -> int:
    """A fresh seed for requests that do not set one (OpenAI: sampling is not repeatable
    unless ``seed`` is given)."""
    return random.randint(0, 2**31 - 1)

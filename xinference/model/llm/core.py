"""The base class of every LLM engine, :class:`LLM`.

An engine subclass only knows how to load weights, tokenize, detokenize one token at a time
and run requests concurrently (:meth:`LLM.submit`: the engine's own scheduler, continuous
batching in the Transformers engine, llama.cpp's slots) feeding each request's sampled token
ids into its :class:`~.request.RequestState`. Everything the OpenAI API defines on top of
that is shared, once, by the modules :class:`LLM` ties together:

* :mod:`.params`: request parameters, validated (:class:`~.params.GenerationParams`);
* :mod:`.chat_template`: chat template rendering;
* :mod:`.request`: ``max_tokens`` and context budget, ``stop`` strings and
  ``stop_token_ids``, incremental detokenisation (:mod:`.text`), ``finish_reason`` and token
  counts, per request (:class:`~.request.RequestState`);
* :mod:`.responses`: the response and chunk shapes of the OpenAI Completions and Chat
  Completions APIs (:class:`~.responses.ResponseBuilder`), with the chat text pipeline
  (reasoning split: :mod:`.reasoning`, tool calls: :mod:`.tool_parsers`).
"""

from __future__ import annotations

import abc
import asyncio
import functools
from dataclasses import dataclass
from typing import Any, AsyncIterator, Callable, Dict, List, Optional, Tuple, Union

from ...errors import InvalidRequestError
from ..options import flag, positive_int
from .chat_template import (
    CHATML_TEMPLATE, generic_tool_messages, normalize_messages, render_chat_template,
    template_knows_tools,
)
from .constraints import Constraint
from .images import DEFAULT_MAX_IMAGES, ImageInput, check_image_count, fetch_url
from .llm_family import LLMFamily, LLMSpec
from .params import GenerationParams
from .reasoning import reasoning_parser_for
from .request import AsyncDeltaStream, RequestState
from .responses import (
    ChatBuilder, ChatTextPipeline, CompletionBuilder, OpenAIStreams, ResponseBuilder,
)
from .text import IncrementalDetokenizer
from .tool_parsers import DEFAULT_TOOL_PARSER, get_tool_parser


def max_images_option(value: Any) -> int:
    """The ``max_images`` launch option: most images one chat request may carry (default
    :data:`~.images.DEFAULT_MAX_IMAGES`).

    Raises:
        InvalidRequestError: not a positive integer.
    """
    return positive_int("max_images", value, DEFAULT_MAX_IMAGES)


def stream_interval_option(value: Any) -> int:
    """The ``stream_interval`` launch option as a positive int (default 1).

    Raises:
        InvalidRequestError: not a positive integer.
    """
    return positive_int("stream_interval", value, 1)


@dataclass
class PreparedRequest:
    """A validated request, ready for an engine: prompt ids, parameters and the builder of
    its response."""

    prompt_ids: List[int]
    params: GenerationParams
    builder: ResponseBuilder
    #: the engine's image inputs of the prompt (:meth:`LLM.encode_images`), or None
    mm_inputs: Any = None


class LLM(OpenAIStreams, abc.ABC):
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
            :class:`~.responses.DeltaCoalescer`), ``reasoning_content`` (default true:
            families with reasoning tags return ``reasoning_content`` apart from
            ``content``; false gives the raw text) ...).

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
    #: True for engines that take images (:meth:`encode_images`) for ``vision`` families
    supports_images = False

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
        self.tool_parser = get_tool_parser(family.tool_parser or DEFAULT_TOOL_PARSER)
        split = flag("reasoning_content", self.kwargs.get("reasoning_content"), True)
        self.reasoning_parser = reasoning_parser_for(family, split)
        self.max_images = max_images_option(self.kwargs.get("max_images"))
        self._fetch_image = functools.partial(fetch_url, allow_private_addresses=flag(
            "allow_private_image_urls", self.kwargs.get("allow_private_image_urls"), False))

    @classmethod
    def check_options(cls, kwargs: Dict[str, Any]) -> None:
        """Validate the engine's launch options before any process starts (the supervisor
        calls it while planning a launch, so a bad value is a 400 at once). An engine adds
        its own options.

        Raises:
            InvalidRequestError: a bad option, naming it.
        """
        stream_interval_option(kwargs.get("stream_interval"))
        max_images_option(kwargs.get("max_images"))
        flag("allow_private_image_urls", kwargs.get("allow_private_image_urls"), False)
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

    def encode_images(self, messages: List[Dict[str, Any]], images: List[ImageInput],
                      params: GenerationParams, tools: Optional[list]
                      ) -> Tuple[str, List[int], Any]:
        """For engines with :attr:`supports_images`: render ``messages`` (content lists
        with ``{"type": "image"}`` parts, one per entry of ``images``, in order) and encode
        the prompt with its images. Returns ``(prompt text, prompt ids, the engine's image
        inputs)``: the ids hold every image token (Transformers; their length is what usage
        reports as ``prompt_tokens``) or one placeholder per image for engines that expand
        the images themselves (llama.cpp, vLLM), which set the request state's
        ``prompt_tokens`` from the engine's own count.

        Raises:
            InvalidRequestError: the processor rejects the images.
        """
        raise NotImplementedError

    def lora_names(self) -> List[str]:
        """Names of the LoRA adapters loaded at launch (a request's ``lora_name``)."""
        return []

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

    @property
    def sees_images(self) -> bool:
        """True when this model takes image parts: a ``vision`` family on an engine that
        supports images."""
        return self.supports_images and "vision" in self.abilities

    def _chat_prompt(self, messages: List[Dict[str, Any]], params: GenerationParams
                     ) -> Tuple[str, List[int], Any]:
        """``(prompt text, prompt ids, image inputs or None)`` of a chat request. Images
        are decoded here, in a worker thread of the model's process, before anything
        reaches the engine, so a bad image is a 400 and never an engine error.

        Raises:
            InvalidRequestError: bad messages or images, more images than ``max_images``,
            a prompt longer than the context.
        """
        if not self.sees_images:
            prompt = self.render_chat(messages, params, tools=params.tools)
            return prompt, self._prompt_ids(prompt, add_special=False), None
        check_image_count(messages, self.max_images)
        images: List[ImageInput] = []
        msgs = normalize_messages(messages, self.abilities, self.model_uid, images,
                                  self._fetch_image)
        tools = params.tools
        if not images:
            if tools and not template_knows_tools(self.chat_template()):
                msgs, tools = generic_tool_messages(msgs, tools), None
            prompt = self._render(msgs, params, tools)
            return prompt, self._prompt_ids(prompt, add_special=False), None
        prompt, ids, mm = self.encode_images(msgs, images, params, tools)
        self._check_context(ids)
        return prompt, ids, mm

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
        self._check_context(ids)
        return ids

    def _check_context(self, ids: List[int]) -> None:
        if len(ids) >= self.context_length:
            raise InvalidRequestError(
                f"This model's maximum context length is {self.context_length} tokens, "
                f"but the prompt has {len(ids)} tokens. Shorten the prompt."
            )

    def params_from_config(self, config: Optional[Dict[str, Any]], chat: bool = False
                           ) -> GenerationParams:
        """:meth:`GenerationParams.from_config` plus the model's launch-time defaults: the
        ``enable_thinking`` launch kwarg (``xinference launch --enable-thinking``) is the
        default of ``chat_template_kwargs["enable_thinking"]``; the request wins."""
        params = GenerationParams.from_config(config, chat=chat)
        if params.lora_name is not None and params.lora_name not in self.lora_names():
            raise InvalidRequestError(
                f"LoRA adapter {params.lora_name!r} is not loaded on model "
                f"{self.model_uid!r}; its adapters: {self.lora_names()}")
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
        prompt, ids, mm = self._chat_prompt(messages, params)
        return PreparedRequest(ids, params, ChatBuilder(
            self.model_uid, params.include_usage, **self._builder_kw(params),
            new_pipeline=self._pipeline_factory(params, prompt)), mm)

    async def count_chat_tokens(self, messages: List[Dict[str, Any]],
                                generate_config: Optional[Dict[str, Any]] = None) -> int:
        """Tokens of the prompt :meth:`prepare_chat` renders for this request (chat template,
        tools and ``enable_thinking`` included), without generating: Anthropic's
        ``count_tokens``. Image tokens are counted where the prompt ids hold them
        (Transformers); llama.cpp and vLLM count theirs only while they run. Raises as
        :meth:`prepare_chat`."""
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
        for state in states:
            state.mm_inputs = req.mm_inputs
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

        return req.builder.astream(stream, on_close=cancel)

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

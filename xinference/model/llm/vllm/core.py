"""vLLM engine for ``pytorch``, ``awq``, ``gptq`` and ``fp8`` specs: vLLM's ``AsyncLLM``
inside the model process.

vLLM (paged KV cache, continuous batching, tensor parallelism) runs in-process: no second
HTTP server. ``AsyncLLM`` keeps its scheduler and model in its own EngineCore process
(spawned by vLLM) and streams each request's new token ids back to an asyncio task of
this process. Everything the OpenAI API defines on top (chat templates, tool calls,
reasoning content, stop strings, ``n``, logprobs, usage, chunk shapes) stays the shared
code of :class:`~xinference.model.llm.core.LLM`: each choice is one vLLM request given
the prompt as token ids, with ``detokenize=False``; its sampled ids (and their logprobs)
are fed to the choice's :class:`RequestState`, and the request is aborted in vLLM as soon
as that state finishes (a stop string), or when the consumer goes away.

Images (``vision`` families whose checkpoint vLLM runs as a multimodal model): the shared
code (:mod:`..images`) parses, fetches, decodes and limits the ``image_url`` parts; the
prompt is rendered with the model's processor template (one image placeholder per image,
:class:`~..hf_processor.HFVisionMixin`) and tokenized here, and vLLM gets
``{"prompt_token_ids", "multi_modal_data": {"image": [PIL images]}}``: its multimodal
processor expands each placeholder into the image's tokens and its model encodes the
pixels. ``usage.prompt_tokens`` is the length of vLLM's expanded prompt
(``RequestOutput.prompt_token_ids``).
vLLM pins its own transformers and fastapi, so it runs in its own virtual environment
(:data:`VLLM_PACKAGES`, see :mod:`xinference.model.virtualenv`); ``vllm`` is imported in
:meth:`VLLMModel.load` only, inside the model's process. Sources: vLLM's ``AsyncLLM``,
``AsyncEngineArgs``, ``SamplingParams`` and ``StructuredOutputsParams``
(docs.vllm.ai, version 0.32).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import uuid
from typing import Any, Callable, Dict, List

from ....errors import InvalidRequestError, ModelLoadError
from ..core import LLM
from ..request import RequestState
from ..hf_processor import HFVisionMixin, is_vision_checkpoint, load_processor
from ..hf_tokenizer import HFTokenizerMixin, generation_config
from .common import import_vllm, shutdown_engine, start_engine, vllm_error
from .options import VLLMOptions, parse_options

logger = logging.getLogger(__name__)

#: vLLM's quantization method of each format (``pytorch``: whatever the checkpoint's
#: ``quantization_config`` says, vLLM reads it itself)
FORMAT_QUANTIZATION = {"pytorch": None, "awq": "awq", "gptq": "gptq", "fp8": "fp8"}


class VLLMModel(HFVisionMixin, HFTokenizerMixin, LLM):
    """A model served by vLLM's ``AsyncLLM`` (continuous batching, paged KV cache).

    Launch options (checked at plan time by the engine table's schema and
    :func:`~.options.validate_options`, see :mod:`xinference.model.llm.vllm.options`): ``gpu_memory_utilization``,
    ``max_model_len``, ``max_num_seqs``, ``tensor_parallel_size`` (default: the GPUs the
    worker gave the process, ``n_gpu``), ``dtype`` (default ``float32`` on CPU, vLLM's
    ``auto`` on GPU), ``quantization`` of vLLM is the format's (:data:`FORMAT_QUANTIZATION`;
    the launch request's ``quantization`` picks the spec as for every engine),
    ``enforce_eager``, ``enable_prefix_caching``, ``enable_lora`` with ``lora_modules``
    (``{name: path}``; a request selects one with ``model: "<uid>:<name>"`` or
    ``lora_name``), ``max_lora_rank``, ``cpu_kvcache_space`` (GiB of KV cache on CPU),
    ``trust_remote_code``; ``max_images`` (shared with the other engines) is vLLM's
    ``limit_mm_per_prompt`` for images.

    Raises (from :meth:`load`):
        ModelLoadError: vLLM is missing or cannot load the weights / options.
    """

    engine_name = "vLLM"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.options: VLLMOptions = parse_options(self.kwargs)
        self._engine = None
        self._loras: Dict[str, Any] = {}  # name -> vllm LoRARequest
        self._sched = {"running": 0, "waiting": 0}  # from vLLM's scheduler stats
        self._aborted = 0
        self._inflight = 0

    # ---- loading -------------------------------------------------------------------------
    def _engine_args(self) -> Dict[str, Any]:
        """The LLM engine's own ``AsyncEngineArgs`` fields, on top of the shared ones
        (:func:`~.common.engine_args`): the format's quantization, xgrammar structured
        outputs, sampling defaults from our requests, LoRA."""
        from vllm.config import StructuredOutputsConfig

        o = self.options
        args: Dict[str, Any] = dict(
            quantization=FORMAT_QUANTIZATION.get(self.spec.model_format),
            # our own structured-output grammar is EBNF from xgrammar (constraints.py)
            structured_outputs_config=StructuredOutputsConfig(backend="xgrammar"),
            generation_config="vllm",  # defaults come from our request, not the weights
        )
        if o.max_lora_rank is not None:
            args["max_lora_rank"] = o.max_lora_rank
        if o.lora_modules:
            args.update(enable_lora=True, max_loras=max(1, len(o.lora_modules)))
        if self._processor is not None:
            # the launch's max_images (checked by the shared code before any image is
            # decoded) is vLLM's own per-prompt limit; no video input is offered
            args["limit_mm_per_prompt"] = {"image": self.max_images}
        else:  # a text-only family on weights with a vision part: no vision tower
            args["language_model_only"] = True
        return args

    def load(self) -> None:
        import_vllm()
        from vllm.lora.request import LoRARequest

        for name, path in self.options.lora_modules.items():
            if not os.path.exists(path):
                raise ModelLoadError(f"lora_modules: the adapter {name!r} at {path} "
                                     "does not exist")
        import transformers

        trust = self.options.trust_remote_code
        try:
            if "vision" in self.abilities and is_vision_checkpoint(self.model_path, trust):
                # its template writes the image placeholders that vLLM's processor expands;
                # vLLM builds the processor again with from_pretrained, so it must build
                self._processor = load_processor(self.model_path, trust, image_only=False)
                self._tokenizer = self._processor.tokenizer
            else:
                self._tokenizer = transformers.AutoTokenizer.from_pretrained(
                    self.model_path, trust_remote_code=trust)
        except Exception as e:
            raise ModelLoadError(
                f"vLLM could not load {self.model_path}: {type(e).__name__}: {e}"
                f"{_torchvision_hint(e)}") from e
        try:
            self._engine = start_engine(
                self.model_path, self.options, self.family.context_length,
                stat_loggers=[_stats_logger_factory(self._sched)], **self._engine_args())
        except ModelLoadError as e:
            hint = _torchvision_hint(e)
            if not hint:
                raise
            raise ModelLoadError(f"{e.message}{hint}") from e
        if self._processor is not None and not self._engine.model_config.is_multimodal_model:
            logger.warning("%s: vLLM runs %s as a text-only model; image parts get 400",
                           self.model_uid, self.model_path)
            self._processor = None
        self._init_tokenizer_tables(self._engine.model_config.max_model_len,
                                    generation_config(self.model_path),
                                    self._engine.model_config.hf_config)
        self._loras = {name: LoRARequest(name, i + 1, path)
                       for i, (name, path) in enumerate(self.options.lora_modules.items())}

    def close(self) -> None:
        """Shut vLLM's EngineCore process down (the model process is going away)."""
        shutdown_engine(self._engine)
        self._engine = None

    # ---- what the shared base needs ------------------------------------------------------
    def lora_names(self) -> List[str]:
        return list(self.options.lora_modules)

    def stats(self) -> Dict[str, Any]:
        """``requests_running`` / ``requests_waiting``: vLLM scheduler's counts at its last
        step (requests being decoded / queued for KV-cache room or a batch slot);
        ``requests_inflight``: choices handed to vLLM and not yet returned;
        ``requests_cancelled``: aborted in vLLM because their consumer went away;
        ``max_num_seqs``."""
        sched = self._engine.vllm_config.scheduler_config if self._engine else None
        return {"requests_running": self._sched["running"],
                "requests_waiting": self._sched["waiting"],
                "requests_inflight": self._inflight,
                "requests_cancelled": self._aborted,
                "max_num_seqs": getattr(sched, "max_num_seqs", None)}

    # ---- serving -------------------------------------------------------------------------
    def prepare_constraint(self, states: List[RequestState]) -> None:
        """The request's constraint as xgrammar EBNF text (cached per constraint), handed
        to vLLM's structured outputs (``StructuredOutputsParams(grammar=...)``, backend
        xgrammar) with each choice.

        Raises:
            InvalidRequestError: the schema cannot be turned into a grammar.
        """
        grammar = _ebnf(states[0].params.constraint.key())
        for state in states:
            state.grammar = grammar

    def sampling_params(self, state: RequestState):
        """vLLM's ``SamplingParams`` of one choice: the request's sampling, penalties, seed
        (``state.seed``: seed + choice index), token budget and stop ids, ``logprobs``
        (``top_logprobs``; vLLM's default mode, raw logprobs, is this project's), the
        grammar; new token ids only (``DELTA``), no detokenisation (ours is shared)."""
        from vllm.sampling_params import (RequestOutputKind, SamplingParams,
                                          StructuredOutputsParams)

        p = state.params
        return SamplingParams(
            n=1, temperature=p.temperature, top_p=p.top_p,
            top_k=p.top_k if p.top_k > 0 else 0, min_p=p.min_p,
            repetition_penalty=p.repeat_penalty, frequency_penalty=p.frequency_penalty,
            presence_penalty=p.presence_penalty, seed=state.seed, ignore_eos=p.ignore_eos,
            max_tokens=state.max_tokens, stop_token_ids=sorted(state.stop_ids),
            logprobs=p.top_logprobs if p.logprobs else None,
            detokenize=False, skip_special_tokens=False,
            output_kind=RequestOutputKind.DELTA,
            structured_outputs=(StructuredOutputsParams(grammar=state.grammar)
                                if state.grammar is not None else None),
        )

    def encode_images(self, messages, images, params, tools):
        """The prompt with one image placeholder per image (:meth:`render_images`: the
        family's template, else the processor's), tokenized; the images themselves
        (:class:`~..images.ImageInput` s, already decoded and limited) go to vLLM as
        ``multi_modal_data`` (:meth:`vllm_prompt`), whose processor expands each placeholder
        into the image's tokens. The ids returned hold one placeholder per image: the
        request's ``prompt_tokens`` becomes vLLM's expanded count when its first output
        arrives.

        Raises:
            InvalidRequestError: the template cannot be rendered.
        """
        prompt = self.render_images(messages, params, tools)
        return prompt, self.tokenize(prompt, add_special=False), list(images)

    @staticmethod
    def vllm_prompt(state: RequestState) -> Dict[str, Any]:
        """vLLM's prompt of one choice: ``{"prompt_token_ids": [...]}``, with
        ``"multi_modal_data": {"image": [PIL.Image, ...]}`` (in the order of the image
        parts) when the request has images."""
        prompt: Dict[str, Any] = {"prompt_token_ids": list(state.prompt_ids)}
        if state.mm_inputs:
            prompt["multi_modal_data"] = {"image": [i.image for i in state.mm_inputs]}
        return prompt

    def _lora_request(self, state: RequestState):
        name = state.params.lora_name
        return self._loras[name] if name else None

    def _feed(self, state: RequestState, output, emit: Callable[[Any], None]) -> bool:
        """Push the new tokens of one vLLM ``CompletionOutput`` into ``state``; True once
        the state has finished."""
        k = state.params.top_logprobs
        lps = output.logprobs if state.params.logprobs else None
        for i, tid in enumerate(output.token_ids):
            lp = None
            if lps is not None and i < len(lps):
                ranked = lps[i]
                own = ranked.get(tid)
                top = sorted(((t, v) for t, v in ranked.items() if v.rank is not None
                              and v.rank <= k), key=lambda tv: tv[1].rank)
                lp = (own.logprob if own is not None else float("-inf"),
                      [(t, v.logprob) for t, v in top[:k]])
            deltas = state.push(tid, lp)
            if deltas:
                emit(deltas)
            if state.finished:
                return True
        return False

    async def _run(self, state: RequestState, emit: Callable[[Any], None],
                   request_id: str) -> None:
        engine = self._engine
        self._inflight += 1
        gen = None
        try:
            gen = engine.generate(self.vllm_prompt(state), self.sampling_params(state),
                                  request_id, lora_request=self._lora_request(state))
            async for out in gen:
                if state.mm_inputs and out.prompt_token_ids:
                    # the prompt as vLLM runs it: each image placeholder expanded
                    state.prompt_tokens = len(out.prompt_token_ids)
                output = out.outputs[0]
                if self._feed(state, output, emit):
                    break  # our own stop (a stop string): vLLM is aborted below
                if out.finished:
                    reason = "length" if output.finish_reason == "length" else "stop"
                    emit(state.finish(reason))
                    return
            if not state.finished:  # the stream ended without a finished output
                emit(state.finish("stop"))
        except asyncio.CancelledError:
            self._aborted += 1
            raise  # vLLM's generate() aborts the request on cancellation
        except Exception as e:  # noqa: BLE001 - relayed to the request's consumer
            if not state.finished:
                emit(vllm_error(e, state.mm_inputs))
        finally:
            self._inflight -= 1
            if gen is not None:
                await gen.aclose()  # a generator left early aborts its vLLM request

    def submit(self, state: RequestState, emit: Callable[[Any], None]) -> Callable[[], None]:
        """Start the choice as one vLLM request (an asyncio task on the model process's
        loop); ``cancel`` cancels the task, which aborts the request in vLLM."""
        request_id = f"{self.model_uid}-{uuid.uuid4().hex}"
        task = asyncio.get_running_loop().create_task(self._run(state, emit, request_id))
        loop = task.get_loop()

        def cancel() -> None:
            if task.done():
                return
            try:
                running = asyncio.get_running_loop()
            except RuntimeError:
                running = None
            if running is loop:
                task.cancel()
            else:
                loop.call_soon_threadsafe(task.cancel)

        return cancel


@functools.lru_cache(maxsize=64)
def _ebnf(key: str) -> str:
    """EBNF text of the constraint with :meth:`Constraint.key` ``key``."""
    import json

    from ..constraints import Alternative, Constraint, to_xgrammar

    alts = [Alternative(json.loads(schema), prefix, suffix)
            for prefix, schema, suffix in json.loads(key)]
    try:
        return str(to_xgrammar(Constraint(alts)))
    except Exception as e:  # xgrammar rejects schemas it cannot express
        raise InvalidRequestError(
            f"the JSON schema cannot be used for constrained decoding: {e}") from e


def _stats_logger_factory(sink: Dict[str, int]):
    """A vLLM stat-logger class that copies the scheduler's running / waiting counts into
    ``sink`` at every engine step (vLLM calls ``record`` from its output handler)."""
    from vllm.v1.metrics.loggers import StatLoggerBase

    class _SchedulerCounts(StatLoggerBase):
        def __init__(self, vllm_config, engine_index: int = 0):
            pass

        def record(self, scheduler_stats, iteration_stats, mm_cache_stats=None,
                   engine_idx: int = 0):
            if scheduler_stats is not None:
                sink["running"] = scheduler_stats.num_running_reqs
                sink["waiting"] = (scheduler_stats.num_waiting_reqs
                                   + scheduler_stats.num_skipped_waiting_reqs)

        def log_engine_initialized(self):
            pass

    return _SchedulerCounts


def _torchvision_hint(e: BaseException) -> str:
    """A hint for a load failure that comes from torchvision missing: vLLM 0.32's modules of
    LLaVA, Qwen-VL, Gemma 3, InternVL, GLM-4.1V, Pixtral / Mistral 3 and Llama 4 import
    transformers' torchvision-backed image processors (vLLM reports that only as "failed
    to be inspected"), and processors with a video processor (SmolVLM2, Qwen-VL) need it;
    the CPU environment has no torchvision (its PyPI wheels are CUDA builds)."""
    import importlib.util

    text = str(e)
    if importlib.util.find_spec("torchvision") or not (
            "failed to be inspected" in text or "torchvision" in text.lower()):
        return ""
    return (". On vLLM this model needs torchvision (vLLM's module for the architecture "
            "or the model's processor imports it), which this environment does not have "
            "(vLLM's CPU build: torchvision has no CPU wheel); on a CPU run it on the "
            "Transformers engine, or pick an architecture vLLM runs without torchvision "
            "(Idefics3, SmolVLM v1: see doc/vllm.md)")

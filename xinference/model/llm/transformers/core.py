"""Transformers engine for ``pytorch`` specs, with continuous batching.

Loads a Hugging Face model directory with ``AutoModelForCausalLM`` / ``AutoTokenizer`` and
serves it through :class:`~xinference.model.llm.transformers.scheduler.BatchScheduler`:
requests that arrive while others generate join the running batch between decoding steps.
Request validation, stop conditions, detokenisation bookkeeping and the OpenAI response
shapes are the shared ones of :class:`xinference.model.llm.core.LLM`.

torch and transformers
are imported in :meth:`TransformersModel.load`, inside the model's own process.
"""

from __future__ import annotations

import logging
import os
from typing import Any, Callable, Dict, List

from ....errors import InvalidRequestError, ModelLoadError
from ...options import positive_int
from ..core import LLM
from ..hf_processor import HFVisionMixin
from ..hf_tokenizer import HFTokenizerMixin
from ..request import RequestState

logger = logging.getLogger(__name__)

DEFAULT_MAX_NUM_SEQS = 16
_QUANTIZATIONS = {"none": None, "4-bit": "load_in_4bit", "8-bit": "load_in_8bit"}


class TransformersModel(HFVisionMixin, HFTokenizerMixin, LLM):
    """A Hugging Face causal LM served with continuous batching.

    Launch kwargs: ``n_gpu`` (absent/``"auto"``: a CUDA GPU when present, else CPU; ``0``:
    CPU; ``>= 1``: GPU, an error without CUDA), ``max_num_seqs`` (most requests decoded
    together, default 16; more wait), ``dtype`` (default float32 on CPU, for exact and
    repeatable results; bfloat16/float16 on GPU), ``n_threads`` (CPU threads of torch,
    default half the cores), ``trust_remote_code`` (default False),
    ``enable_thinking`` (the chat template default, see :meth:`LLM.params_from_config`).
    Quantization ``none`` runs everywhere; ``4-bit`` / ``8-bit`` use bitsandbytes and need
    it installed and a CUDA GPU.
    """

    engine_name = "Transformers"

    # ---- loading -------------------------------------------------------------------------
    def _device(self, torch) -> str:
        n_gpu = self.kwargs.get("n_gpu", "auto")
        if n_gpu in (None, 0, "0", "none", "None"):
            return "cpu"
        if n_gpu == "auto":
            return "cuda" if torch.cuda.is_available() else "cpu"
        if not torch.cuda.is_available():
            raise ModelLoadError(
                f"n_gpu={n_gpu!r} asks for a GPU, but CUDA is not available here; "
                "launch with n_gpu 'auto' or 0 (CPU)."
            )
        return "cuda"

    def _quantization_config(self, device: str):
        q = str(self.quantization).lower()
        if q not in _QUANTIZATIONS:
            raise ModelLoadError(
                f"The Transformers engine does not support quantization {self.quantization!r}; "
                f"it runs {list(_QUANTIZATIONS)}."
            )
        flag = _QUANTIZATIONS[q]
        if flag is None:
            return None
        import importlib.util

        if importlib.util.find_spec("bitsandbytes") is None or device != "cuda":
            why = ("bitsandbytes is not installed" if importlib.util.find_spec("bitsandbytes")
                   is None else "no CUDA GPU is in use")
            raise ModelLoadError(
                f"quantization {self.quantization!r} needs bitsandbytes and a CUDA GPU, but "
                f"{why}; launch with quantization 'none', or install bitsandbytes "
                "(pip install bitsandbytes) on a machine with a CUDA GPU."
            )
        from transformers import BitsAndBytesConfig

        return BitsAndBytesConfig(**{flag: True})

    def _dtype(self, torch, device: str):
        name = self.kwargs.get("dtype") or self.kwargs.get("torch_dtype")
        if name:
            dtype = getattr(torch, str(name).replace("torch.", ""), None)
            if not isinstance(dtype, torch.dtype):
                raise ModelLoadError(f"Unknown dtype {name!r}; use float32, bfloat16 or float16")
            return dtype
        if device == "cpu":
            return torch.float32
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16

    def _n_threads(self) -> int:
        # Half the cores by default: torch's OpenMP workers spin-wait, and when the cores are
        # shared (the API, tokenizers, other models) a full-width pool slows every step
        # several-fold; measured here, 1 thread beat 2 on a 2-core machine under load.
        return positive_int("n_threads", self.kwargs.get("n_threads"),
                            max(1, (os.cpu_count() or 2) // 2))

    def load(self) -> None:
        from ...embedding.engine_utils import prepare_torch_env

        prepare_torch_env()  # OMP_WAIT_POLICY=PASSIVE before torch loads
        try:
            import torch
            import transformers
        except ImportError as e:
            raise ModelLoadError(
                "The Transformers engine needs torch and transformers: "
                "pip install 'xinference[transformers]'"
            ) from e
        from .scheduler import BatchScheduler

        max_num_seqs = positive_int("max_num_seqs", self.kwargs.get("max_num_seqs"),
                                    DEFAULT_MAX_NUM_SEQS)
        device = self._device(torch)
        if device == "cpu":
            torch.set_num_threads(self._n_threads())
        quant = self._quantization_config(device)
        dtype = self._dtype(torch, device)
        trust = bool(self.kwargs.get("trust_remote_code", False))
        self._processor = None
        try:
            kw: Dict[str, Any] = {"dtype": dtype, "trust_remote_code": trust}
            if quant is not None:
                kw.update(quantization_config=quant, device_map={"": 0})
            from ..hf_processor import is_vision_checkpoint, load_processor
            from .vision import load_vision_model

            if "vision" in self.abilities and is_vision_checkpoint(self.model_path, trust):
                self._processor = load_processor(self.model_path, trust)
                self._tokenizer = self._processor.tokenizer
                model = load_vision_model(self.model_path, kw)
            else:
                self._tokenizer = transformers.AutoTokenizer.from_pretrained(
                    self.model_path, trust_remote_code=trust
                )
                model = transformers.AutoModelForCausalLM.from_pretrained(
                    self.model_path, **kw)
        except ModelLoadError:
            raise
        except Exception as e:
            raise ModelLoadError(
                f"transformers could not load {self.model_path}: {type(e).__name__}: {e}"
            ) from e
        if quant is None:
            model = model.to(device)
        self._model = model.eval()
        self._device_name = device
        config = model.config
        text_config = getattr(config, "text_config", None) or config
        max_pos = getattr(text_config, "max_position_embeddings", None)
        batchable = _plain_kv_cache(text_config)
        if not batchable:
            logger.warning("%s: the model's cache cannot be batched; one request at a time",
                           self.model_uid)
        self._scheduler = BatchScheduler(model, device, max_num_seqs, batchable)
        self._vocab_size = int(model.get_output_embeddings().weight.shape[0])
        self._grammars = None  # grammar.GrammarCache, made at the first constraint
        self._init_tokenizer_tables(min(self.family.context_length, max_pos or 1 << 30),
                                    getattr(model, "generation_config", None), config)

    # ---- what the shared base needs ------------------------------------------------------
    def encode_images(self, messages, images, params, tools):
        """Render with the processor's chat template (the family's ``chat_template`` wins,
        as for text: :meth:`render_images`) and run the processor on the prompt and the
        images: the ids come back with each image placeholder expanded to the model's image
        tokens, the rest (``pixel_values``, ``image_grid_thw`` / ``image_sizes`` ...) goes
        to the prefill.

        Raises:
            InvalidRequestError: the template or the processor rejects the conversation.
        """
        from .vision import encode_with_processor

        prompt = self.render_images(messages, params, tools)
        ids, mm = encode_with_processor(self._processor, prompt, images)
        return prompt, ids, mm

    def stats(self) -> Dict[str, int]:
        """Scheduler counters: ``requests_running`` (rows in the batch) and
        ``requests_waiting`` now, ``requests_cancelled`` (dropped before their end because
        their consumer went away), ``max_num_seqs``."""
        sched = self._scheduler
        return {"max_num_seqs": sched.max_num_seqs, "requests_running": sched.num_running,
                "requests_waiting": sched.num_waiting,
                "requests_cancelled": sched.cancelled_requests}

    # ---- serving ---------------------------------------------------------------------------
    def submit(self, state: RequestState, emit: Callable[[Any], None]) -> Callable[[], None]:
        """Queue the request in the batch scheduler: it joins the running batch between two
        decoding steps; ``cancel`` drops its row at the next step."""
        from .scheduler import Sequence

        seq = Sequence(state, emit, state.grammar)
        self._scheduler.submit(seq)
        return seq.cancel

    def prepare_constraint(self, states: List[RequestState]) -> None:
        """Compile the request's constraint with xgrammar (cached per constraint) and give
        each choice its own matcher (``grammar.RowGrammar``), applied per row by the batch
        scheduler.

        Raises:
            InvalidRequestError: xgrammar is missing or cannot compile the schema.
        """
        if self._grammars is None:
            try:
                from .grammar import GrammarCache
            except ImportError as e:
                raise InvalidRequestError(
                    "constrained decoding (tool_choice required, response_format) needs "
                    "xgrammar: pip install xgrammar") from e
            self._grammars = GrammarCache(self._tokenizer, self._vocab_size)
        rows = self._grammars.rows(states[0].params.constraint, sorted(states[0].stop_ids),
                                   len(states))
        for state, row in zip(states, rows):
            state.grammar = row


def _plain_kv_cache(config) -> bool:
    """True when every layer keeps a plain, growing key/value cache that can be left-padded
    and merged across requests (no sliding-window or linear-attention layers)."""
    layer_types = getattr(config, "layer_types", None)
    if layer_types and any(t != "full_attention" for t in layer_types):
        return False
    if getattr(config, "sliding_window", None) and getattr(config, "use_sliding_window", True):
        return False
    return True

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
from typing import Any, Callable, Dict, List, Optional, Tuple

from ....errors import InvalidRequestError, ModelLoadError
from ...options import positive_int
from ..core import LLM
from ..params import GenerationParams
from ..request import RequestState
from ..text import IncrementalDetokenizer

logger = logging.getLogger(__name__)

DEFAULT_MAX_NUM_SEQS = 16
_QUANTIZATIONS = {"none": None, "4-bit": "load_in_4bit", "8-bit": "load_in_8bit"}


class HFIncrementalDetokenizer(IncrementalDetokenizer):
    """Incremental detokenisation with a Hugging Face tokenizer.

    Decodes a small window of recent tokens twice (without and with the new ones) and emits
    the difference, holding text back while it ends in an incomplete UTF-8 sequence
    (``"\\ufffd"``, byte-level BPE splits characters across tokens). Decoding a window rather
    than single tokens keeps the spaces of SentencePiece tokenizers right. The concatenation
    of all pushes plus :meth:`flush` equals ``tokenizer.decode(ids, skip_special_tokens=True)``.
    """

    def __init__(self, tokenizer, keep_ids: Optional[set] = None):
        self._tok = tokenizer
        self._ids: List[int] = []
        self._prefix = 0  # start of the decode window
        self._read = 0  # tokens already turned into emitted text
        # special tokens to render anyway (tool-call markers such as [TOOL_CALLS])
        self._skip = (set(tokenizer.all_special_ids) - keep_ids) if keep_ids else None

    def _decode(self, ids: List[int]) -> str:
        if self._skip is not None:
            return self._tok.decode([i for i in ids if i not in self._skip],
                                    skip_special_tokens=False,
                                    clean_up_tokenization_spaces=False)
        return self._tok.decode(ids, skip_special_tokens=True,
                                clean_up_tokenization_spaces=False)

    def _delta(self, final: bool) -> str:
        before = self._decode(self._ids[self._prefix:self._read])
        after = self._decode(self._ids[self._prefix:])
        if len(after) > len(before) and (final or not after.endswith("\ufffd")):
            self._prefix, self._read = self._read, len(self._ids)
            return after[len(before):]
        return ""

    def push(self, token_id: int) -> str:
        self._ids.append(token_id)
        return self._delta(final=False)

    def flush(self) -> str:
        return self._delta(final=True)


class TransformersModel(LLM):
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
        try:
            self._tokenizer = transformers.AutoTokenizer.from_pretrained(
                self.model_path, trust_remote_code=trust
            )
            kw: Dict[str, Any] = {"dtype": dtype, "trust_remote_code": trust}
            if quant is not None:
                kw.update(quantization_config=quant, device_map={"": 0})
            model = transformers.AutoModelForCausalLM.from_pretrained(self.model_path, **kw)
        except Exception as e:
            raise ModelLoadError(
                f"transformers could not load {self.model_path}: {type(e).__name__}: {e}"
            ) from e
        if quant is None:
            model = model.to(device)
        self._model = model.eval()
        self._device_name = device
        config = model.config
        max_pos = getattr(config, "max_position_embeddings", None)
        self._context_length = min(self.family.context_length, max_pos or 1 << 30)
        eos = set()
        for src in (getattr(model, "generation_config", None), config):
            ids = getattr(src, "eos_token_id", None)
            eos.update(ids if isinstance(ids, (list, tuple)) else [ids])
        eos.add(self._tokenizer.eos_token_id)
        self._eos_ids = sorted(i for i in eos if isinstance(i, int) and i >= 0)
        batchable = _plain_kv_cache(config)
        if not batchable:
            logger.warning("%s: the model's cache cannot be batched; one request at a time",
                           self.model_uid)
        self._scheduler = BatchScheduler(model, device, max_num_seqs, batchable)
        self._vocab_size = int(model.get_output_embeddings().weight.shape[0])
        self._grammars = None  # grammar.GrammarCache, made at the first constraint
        vocab = self._tokenizer.get_vocab()
        self._keep_ids = {vocab[t] for t in self.tool_parser.visible_tokens if t in vocab}
        self._byte_decoder = _byte_decoder(self._tokenizer)

    # ---- what the shared base needs ------------------------------------------------------
    @property
    def context_length(self) -> int:
        return self._context_length

    @property
    def eos_token_ids(self) -> List[int]:
        return self._eos_ids

    def tokenize(self, text: str, add_special: bool) -> List[int]:
        return list(self._tokenizer(text, add_special_tokens=add_special)["input_ids"])

    def new_detokenizer(self) -> IncrementalDetokenizer:
        return HFIncrementalDetokenizer(self._tokenizer, self._keep_ids)

    def token_bytes(self, token_id: int) -> bytes:
        """The token's own bytes: byte-level BPE pieces mapped back through the GPT-2 byte
        table; other tokenizers decode the single token."""
        piece = self._tokenizer.convert_ids_to_tokens(token_id)
        table = self._byte_decoder
        if table and isinstance(piece, str) and all(c in table for c in piece):
            return bytes(table[c] for c in piece)
        return self._tokenizer.decode([token_id], skip_special_tokens=False,
                                      clean_up_tokenization_spaces=False).encode("utf-8")

    def model_chat_template(self) -> Optional[str]:
        t = getattr(self._tokenizer, "chat_template", None)
        return t if isinstance(t, str) else None

    def special_token_text(self) -> Tuple[str, str]:
        return self._tokenizer.bos_token or "", self._tokenizer.eos_token or ""

    def _render(self, messages: List[Dict[str, Any]], params: GenerationParams,
                tools: Optional[list]) -> str:
        """The family's ``chat_template`` when it has one (shared renderer), else the
        tokenizer's own through ``apply_chat_template``; ``chat_template_kwargs`` reach
        either as template variables."""
        if self.family.chat_template or not self.model_chat_template():
            return super()._render(messages, params, tools)
        try:
            return self._tokenizer.apply_chat_template(
                messages, tools=tools, tokenize=False,
                add_generation_prompt=True, **params.chat_template_kwargs,
            )
        except InvalidRequestError:
            raise
        except Exception as e:  # jinja2 errors, raise_exception() in the template
            raise InvalidRequestError(f"chat template could not be rendered: {e}") from e

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


def _byte_decoder(tokenizer) -> Optional[Dict[str, int]]:
    """GPT-2's unicode-to-byte table when ``tokenizer`` is byte-level BPE (its vocabulary
    spells bytes with printable stand-ins, ``Ġ`` for a space), else None."""
    vocab = tokenizer.get_vocab()
    if "\u0120" not in vocab and "\u0120the" not in vocab:
        return None
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    return {c: b for b, c in bytes_to_unicode().items()}


def _plain_kv_cache(config) -> bool:
    """True when every layer keeps a plain, growing key/value cache that can be left-padded
    and merged across requests (no sliding-window or linear-attention layers)."""
    layer_types = getattr(config, "layer_types", None)
    if layer_types and any(t != "full_attention" for t in layer_types):
        return False
    if getattr(config, "sliding_window", None) and getattr(config, "use_sliding_window", True):
        return False
    return True

"""Helpers shared by the sentence-transformers embedding engine and the cross-encoder rerank
engine. Imported only inside model processes (these functions import torch lazily)."""

from __future__ import annotations

import os
import sys
import threading
from typing import Any, Dict, Optional

from ...errors import InvalidRequestError
from ..options import positive_int

# Tokenizers without a real limit report a huge model_max_length (1e30).
_NO_LIMIT = 10**9


def prepare_torch_env() -> None:
    """Call before the first ``import torch`` of a model process: OpenMP threads wait
    passively (``OMP_WAIT_POLICY=PASSIVE``) instead of spinning. A model process shares the
    cores with the API process and its clients; spinning threads then steal the time the
    others need (measured here: 3-5x slower encoding on a busy 2-core machine). A value
    already set in the environment is kept; without effect once torch is loaded."""
    if "torch" not in sys.modules:
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def pick_device(device: Optional[str] = None, n_gpu: Any = None) -> str:
    """``"cuda"`` when a GPU is visible and not refused (``n_gpu=0`` or ``device="cpu"``),
    else ``"cpu"``; an explicit ``device`` wins."""
    if device:
        return str(device)
    if n_gpu in (0, "0"):
        return "cpu"
    import torch

    if torch.cuda.is_available():
        return "cuda"
    return "cpu"


def effective_max_length(current: Optional[int], tokenizer, config,
                         family_max: Optional[int]) -> int:
    """The longest input in tokens the model can take: the smallest of the engine's own
    limit, the tokenizer's, the model's position embeddings and the family's ``max_tokens``.
    Always positive (512 when nothing says anything)."""
    limits = [current, getattr(tokenizer, "model_max_length", None), family_max]
    pos = getattr(config, "max_position_embeddings", None)
    if pos:
        # RoBERTa-style models offset positions by padding_idx + 1.
        if getattr(config, "model_type", "") in ("roberta", "xlm-roberta", "camembert"):
            pos -= (getattr(config, "pad_token_id", 1) or 1) + 1
        limits.append(pos)
    real = [int(x) for x in limits if x and 0 < int(x) < _NO_LIMIT]
    return min(real) if real else 512


def special_token_frame(tokenizer):
    """``(prefix_ids, suffix_ids)`` the tokenizer wraps a single sequence in (``[CLS]`` …
    ``[SEP]`` for BERT, ``<s>`` … ``</s>`` for XLM-R), found by encoding a probe text with
    and without special tokens."""
    plain = tokenizer("a", add_special_tokens=False)["input_ids"]
    full = tokenizer("a")["input_ids"]
    for i in range(len(full) - len(plain) + 1):
        if full[i:i + len(plain)] == plain:
            return list(full[:i]), list(full[i + len(plain):])
    return [], []


def check_token_ids(ids, vocab_size: int, where: str) -> None:
    """Raises InvalidRequestError for an empty token array or an id outside the vocabulary."""
    if not ids:
        raise InvalidRequestError(f"{where}: a token array must not be empty")
    bad = [t for t in ids if not 0 <= t < vocab_size]
    if bad:
        raise InvalidRequestError(
            f"{where}: token id {bad[0]} is outside this model's vocabulary (0..{vocab_size - 1})"
        )


class BatchedSentenceEngine:
    """What the sentence-transformers engines (embedding, cross-encoder rerank) share: their
    launch options, device choice and the :class:`DynamicBatcher` around ``_run_batch``.

    Args:
        model_uid: the running model's uid.
        family: the model's family (``max_tokens``, ``trust_remote_code`` ...).
        model_path: local directory of the weights.
        max_batch_size: most items handled in one engine call (dynamic batching bound).
        batch_wait_ms: longest time, in milliseconds, spent gathering one batch; the batch
            starts earlier when no request arrived for a quarter of it (see
            :class:`~xinference.model.embedding.batching.DynamicBatcher`).
        device: ``"cpu"``, ``"cuda"``, ``"cuda:1"``...; default: a GPU when there is one.
        n_gpu: ``0`` forces the CPU.
        trust_remote_code: run the model repository's own code (default: the family's).
        concurrent_batches: batches run side by side, each in its own engine thread.
            Default: 2 on a CPU with 2 cores or more for engines whose batch function is
            thread-safe (``concurrent_safe``), else 1. Forced to 1 for the others.
        torch_threads: torch's intra-op threads on the CPU; default: the cores divided by
            ``concurrent_batches``. On this project's 2-core machines two single-threaded
            batches encode about 1.4x the sentences per second of one two-threaded batch
            (all-MiniLM-L6-v2, batches of 8 to 32): small models spend much of a batch in
            operators too short to split well across threads.
    """

    #: whether ``_run_batch`` may run in several threads at once (it then must guard the
    #: tokenizer, which is not safe to share between threads).
    concurrent_safe = False

    def __init__(self, model_uid: str, family, model_path: str, *,
                 max_batch_size: int = 32, batch_wait_ms: float = 8.0,
                 device: Optional[str] = None, n_gpu: Any = None,
                 trust_remote_code: Optional[bool] = None,
                 concurrent_batches: Optional[int] = None,
                 torch_threads: Optional[int] = None):
        self._model_uid = model_uid
        self._family = family
        self._model_path = model_path
        self._max_batch_size = int(max_batch_size)
        self._batch_wait_s = float(batch_wait_ms) / 1000.0
        self._device_arg, self._n_gpu = device, n_gpu
        self._trust_remote_code = (family.trust_remote_code if trust_remote_code is None
                                   else bool(trust_remote_code))
        self._concurrent_batches = positive_int("concurrent_batches", concurrent_batches)
        self._torch_threads = positive_int("torch_threads", torch_threads)
        self._tokenizer_lock = threading.Lock()
        self._model = None
        self._batcher = None

    def _load_device(self) -> str:
        """The torch device to load on (imports torch: call from ``load``). On the CPU it
        also settles ``concurrent_batches`` and torch's thread count."""
        prepare_torch_env()
        device = pick_device(self._device_arg, self._n_gpu)
        cores = os.cpu_count() or 1
        if not self.concurrent_safe:
            self._concurrent_batches = 1
        elif self._concurrent_batches is None:
            self._concurrent_batches = 2 if device == "cpu" and cores >= 2 else 1
        if device == "cpu":
            import torch

            torch.set_num_threads(self._torch_threads
                                  or max(1, cores // self._concurrent_batches))
        return device

    def _start_batcher(self, model) -> None:
        from .batching import DynamicBatcher

        self._model = model
        self._batcher = DynamicBatcher(self._run_batch, self._max_batch_size,
                                       self._batch_wait_s,
                                       concurrency=self._concurrent_batches or 1)

    def _run_batch(self, key, items):  # pragma: no cover - defined by each engine
        raise NotImplementedError

    def batch_stats(self) -> Dict[str, int]:
        """How many engine calls and items the dynamic batcher made so far."""
        return dict(self._batcher.stats) if self._batcher else {}

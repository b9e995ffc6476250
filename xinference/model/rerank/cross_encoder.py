"""Rerank engine on sentence-transformers' ``CrossEncoder``, with dynamic batching.

Loaded inside the model's own process. :meth:`CrossEncoderRerank.rerank` is ``async``: the
(query, document) pairs of concurrent requests meet in a
:class:`~xinference.model.embedding.batching.DynamicBatcher` and are scored together, one
``CrossEncoder.predict`` call per batch.

Scores are ``CrossEncoder.predict``'s (with the model's default activation: a sigmoid for
one-label models), so ``relevance_score`` equals what the model gives in-process.
"""

from __future__ import annotations

import logging
from typing import List, Optional, Tuple

from ..embedding.engine_utils import BatchedSentenceEngine, effective_max_length
from .engine_base import RerankEngine

logger = logging.getLogger(__name__)


class CrossEncoderRerank(RerankEngine, BatchedSentenceEngine):
    """A cross-encoder rerank model (``type: normal``).

    Launch options: those of
    :class:`~xinference.model.embedding.engine_utils.BatchedSentenceEngine`;
    ``max_batch_size`` counts (query, document) pairs, ``family`` is a
    :class:`RerankModelFamily` and the weights a sequence-classification model.
    """

    def load(self) -> None:
        """Load the cross-encoder (blocking; runs in the engine thread)."""
        device = self._load_device()
        from sentence_transformers import CrossEncoder

        model = CrossEncoder(self._model_path, device=device,
                             trust_remote_code=self._trust_remote_code)
        config = getattr(getattr(model, "model", None), "config", None)
        self.max_tokens = effective_max_length(model.max_length, model.tokenizer, config,
                                               self._family.max_tokens)
        model.max_length = self.max_tokens
        self._pair_specials = model.tokenizer.num_special_tokens_to_add(pair=True)
        self._start_batcher(model)

    # ---- engine thread ---------------------------------------------------------------
    def _run_batch(self, key, pairs: List[Tuple[str, str]]) -> List[Tuple[float, int]]:
        """Score one batch; returns ``(score, tokens_seen)`` per pair."""
        scores = self._model.predict(pairs, batch_size=max(self._max_batch_size, 1),
                                     show_progress_bar=False, convert_to_numpy=True)
        enc = self._model.tokenizer([q for q, _ in pairs], [d for _, d in pairs],
                                    truncation=True, max_length=self.max_tokens)
        return [(float(s), len(ids)) for s, ids in zip(scores.reshape(len(pairs), -1)[:, 0],
                                                      enc["input_ids"])]

    def _doc_budget(self, query: str, instruction: Optional[str]) -> int:
        q_len = len(self._model.tokenizer(query, add_special_tokens=False)["input_ids"])
        return self.max_tokens - q_len - self._pair_specials

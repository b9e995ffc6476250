"""Rerank engine on sentence-transformers' ``CrossEncoder``, with dynamic batching.

Loaded inside the model's own process. :meth:`CrossEncoderRerank.rerank` is ``async``: the
(query, document) pairs of concurrent requests meet in a
:class:`~xinference.model.embedding.batching.DynamicBatcher` and are scored together, one
``CrossEncoder.predict`` call per batch.

Scores are ``CrossEncoder.predict``'s (with the model's default activation: a sigmoid for
one-label models), so ``relevance_score`` equals what the model gives in-process.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from typing import Any, Dict, List, Optional, Tuple

from ...errors import InvalidRequestError
from ..embedding.engine_utils import BatchedSentenceEngine, effective_max_length

logger = logging.getLogger(__name__)

MAX_DOCUMENTS = 10000


def parse_documents(documents: Any) -> List[str]:
    """Cohere/Jina/Xinference ``documents``: a list of strings or of ``{"text": ...}``
    objects, returned as strings.

    Raises:
        InvalidRequestError: not a non-empty list of those, or too many.
    """
    if not isinstance(documents, (list, tuple)):
        raise InvalidRequestError("'documents' must be a list of strings")
    if not documents:
        raise InvalidRequestError("'documents' must not be empty")
    if len(documents) > MAX_DOCUMENTS:
        raise InvalidRequestError(f"'documents' holds {len(documents)} items; at most "
                                  f"{MAX_DOCUMENTS}")
    out = []
    for i, d in enumerate(documents):
        if isinstance(d, dict) and isinstance(d.get("text"), str):
            d = d["text"]
        if not isinstance(d, str):
            raise InvalidRequestError(f"'documents[{i}]' must be a string or {{\"text\": ...}}")
        out.append(d)
    return out


class CrossEncoderRerank(BatchedSentenceEngine):
    """A cross-encoder rerank model (``type: normal``).

    Launch options: those of :class:`BatchedSentenceEngine`; ``max_batch_size`` counts
    (query, document) pairs, ``family`` is a :class:`RerankModelFamily` and the weights a
    sequence-classification model.
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

    def _chunks(self, query: str, docs: List[str],
                max_chunks: Optional[int]) -> Tuple[List[Tuple[str, str]], List[int]]:
        """Pairs to score and the document each belongs to. Without ``max_chunks`` one pair
        per document (the cross-encoder truncates long ones); with it a document that does
        not fit next to the query is cut into up to ``max_chunks`` consecutive windows."""
        if not max_chunks:
            return [(query, d) for d in docs], list(range(len(docs)))
        tok = self._model.tokenizer
        q_len = len(tok(query, add_special_tokens=False)["input_ids"])
        budget = self.max_tokens - q_len - self._pair_specials
        if budget < 1:
            raise InvalidRequestError(
                f"The query takes {q_len} tokens; it leaves no room for documents within "
                f"the model's {self.max_tokens} tokens"
            )
        pairs, owner = [], []
        for i, d in enumerate(docs):
            enc = tok(d, add_special_tokens=False, return_offsets_mapping=True, verbose=False)
            offsets = enc["offset_mapping"]
            if len(offsets) <= budget:
                pieces = [d]
            else:
                pieces = []
                for s in range(0, len(offsets), budget)[:max_chunks]:
                    window = offsets[s:s + budget]
                    pieces.append(d[window[0][0]:window[-1][1]])
            for p in pieces:
                pairs.append((query, p))
                owner.append(i)
        return pairs, owner

    # ---- public method (event loop) ----------------------------------------------------
    async def rerank(self, documents: Any, query: Any, top_n: Optional[int] = None,
                     max_chunks_per_doc: Optional[int] = None,
                     return_documents: Optional[bool] = None,
                     return_len: Optional[bool] = None, **kwargs) -> Dict[str, Any]:
        """Score ``documents`` against ``query`` and return them best first.

        Args:
            documents: strings (or ``{"text": ...}`` objects).
            query: a non-empty string.
            top_n: how many results to return (default all; more than there are = all).
            max_chunks_per_doc: cut long documents into at most this many windows that fit
                next to the query; a document scores its best window (Cohere's meaning).
                Default: one window, truncated.
            return_documents: include ``{"text": ...}`` in each result.
            return_len: accepted for Xinference compatibility; token counts are always in
                ``meta.tokens``.

        Returns:
            ``{"id", "results": [{"index", "relevance_score", "document"}], "meta":
            {"api_version", "billed_units", "tokens": {"input_tokens", "output_tokens"},
            "warnings"}}`` with results sorted by ``relevance_score``, highest first (ties by
            index); ``input_tokens`` counts the tokens of every scored pair.

        Raises:
            InvalidRequestError: empty or non-string query, bad documents, ``top_n`` or
            ``max_chunks_per_doc`` below 1, or a query too long for chunking.
        """
        if not isinstance(query, str) or not query:
            raise InvalidRequestError("'query' must be a non-empty string")
        docs = parse_documents(documents)
        for name, v in (("top_n", top_n), ("max_chunks_per_doc", max_chunks_per_doc)):
            if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
                raise InvalidRequestError(f"'{name}' must be an integer >= 1, got {v!r}")
        if max_chunks_per_doc:
            loop = asyncio.get_running_loop()
            pairs, owner = await loop.run_in_executor(
                None, self._chunks, query, docs, max_chunks_per_doc)
        else:
            pairs, owner = self._chunks(query, docs, None)
        scored = await self._batcher.submit(pairs)
        best: List[Optional[float]] = [None] * len(docs)
        tokens = 0
        for (score, n), i in zip(scored, owner):
            tokens += n
            if best[i] is None or score > best[i]:
                best[i] = score
        order = sorted(range(len(docs)), key=lambda i: (-best[i], i))
        if top_n is not None:
            order = order[:top_n]
        results = [{"index": i, "relevance_score": best[i],
                    "document": {"text": docs[i]} if return_documents else None}
                   for i in order]
        return {"id": str(uuid.uuid4()), "results": results,
                "meta": {"api_version": None, "billed_units": None,
                         "tokens": {"input_tokens": tokens, "output_tokens": 0},
                         "warnings": None}}


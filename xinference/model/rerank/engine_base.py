"""What every rerank engine shares: reading ``documents``, cutting long documents into
windows (``max_chunks_per_doc``), batching the (query, document) pairs of concurrent
requests, and building the response (Xinference's ``/v1/rerank``, read by Cohere and Jina
clients). An engine supplies ``_score(pairs, instruction) -> [(score, tokens)]`` (the
batched engines: ``_run_batch(instruction, pairs)`` behind their dynamic batcher) and
``_doc_budget(query, instruction)``; imported only in model processes.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any, Dict, List, Optional, Tuple

from ...errors import InvalidRequestError

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


class RerankEngine:
    """``rerank`` for a rerank engine (a mixin). Over
    :class:`~xinference.model.embedding.engine_utils.BatchedSentenceEngine` the pairs go
    through its dynamic batcher (keyed by the request's ``instruction``, or None) to
    ``_run_batch``; an engine that batches by itself (vLLM) overrides :meth:`_score`.

    Subclasses set ``supports_instruction`` when their prompt takes a request's
    ``instruction`` and implement :meth:`_doc_budget`; ``max_tokens``, ``_model_uid`` and
    ``_model.tokenizer`` / ``_tokenizer()`` come from their ``load``.
    """

    #: whether a request's ``instruction`` reaches the model's prompt
    supports_instruction = False
    _model_uid: str
    max_tokens: int

    async def _score(self, pairs: List[Tuple[str, str]], instruction: Optional[str]
                     ) -> List[Tuple[float, int]]:
        """``(score, tokens_seen)`` of each (query, document) pair, in order."""
        return await self._batcher.submit(pairs, key=instruction)

    def _tokenizer(self):
        return self._model.tokenizer

    def _doc_budget(self, query: str, instruction: Optional[str]) -> int:
        """Tokens left for a document next to ``query`` within ``max_tokens``."""
        raise NotImplementedError

    def _chunks(self, query: str, docs: List[str], max_chunks: Optional[int],
                instruction: Optional[str] = None
                ) -> Tuple[List[Tuple[str, str]], List[int]]:
        """Pairs to score and the document each belongs to. Without ``max_chunks`` one pair
        per document (the engine truncates long ones); with it a document that does not fit
        next to the query is cut into up to ``max_chunks`` consecutive windows."""
        if not max_chunks:
            return [(query, d) for d in docs], list(range(len(docs)))
        tok = self._tokenizer()
        budget = self._doc_budget(query, instruction)
        if budget < 1:
            raise InvalidRequestError(
                "The query (and prompt) leaves no room for documents within the model's "
                f"{self.max_tokens} tokens"
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
                     return_len: Optional[bool] = None, instruction: Optional[str] = None,
                     **kwargs) -> Dict[str, Any]:
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
            instruction: the task description of LLM rerankers' prompts (Qwen3-Reranker's
                ``<Instruct>``, bge-reranker-v2-gemma's closing prompt); default the model
                card's.

        Returns:
            ``{"id", "results": [{"index", "relevance_score", "document"}], "meta":
            {"api_version", "billed_units", "tokens": {"input_tokens", "output_tokens"},
            "warnings"}}`` with results sorted by ``relevance_score``, highest first (ties by
            index); ``input_tokens`` counts the tokens of every scored pair.

        Raises:
            InvalidRequestError: empty or non-string query, bad documents, ``top_n`` or
            ``max_chunks_per_doc`` below 1, a query too long for chunking, or an
            ``instruction`` for a model whose prompt takes none.
        """
        if not isinstance(query, str) or not query:
            raise InvalidRequestError("'query' must be a non-empty string")
        if instruction is not None and (not self.supports_instruction
                                        or not isinstance(instruction, str)):
            raise InvalidRequestError(
                "'instruction' must be a string" if self.supports_instruction else
                f"Model {self._model_uid!r} takes no 'instruction' (a cross-encoder)")
        docs = parse_documents(documents)
        for name, v in (("top_n", top_n), ("max_chunks_per_doc", max_chunks_per_doc)):
            if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
                raise InvalidRequestError(f"'{name}' must be an integer >= 1, got {v!r}")
        if max_chunks_per_doc:
            loop = asyncio.get_running_loop()
            pairs, owner = await loop.run_in_executor(
                None, self._chunks, query, docs, max_chunks_per_doc, instruction)
        else:
            pairs, owner = self._chunks(query, docs, None)
        scored = await self._score(pairs, instruction)
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


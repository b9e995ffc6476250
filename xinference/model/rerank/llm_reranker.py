"""LLM-based rerankers on Transformers (Qwen3-Reranker, bge-reranker-v2-gemma), with
dynamic batching.

Each (query, document) pair becomes a prompt in the family's format
(:mod:`~xinference.model.rerank.llm_formats`); the causal LM reads it and the score comes
from the next-token logits after the prompt's last token. Pairs of concurrent requests
meet in the shared :class:`~xinference.model.embedding.batching.DynamicBatcher` (requests
with different ``instruction`` never share a batch). Batches are padded on the right and
the last real token of each row is gathered (the cards pad on the left and read position
-1: the same token, but right padding keeps rotary positions 0..n-1, so a score does not
depend on its batch and equals the card's unpadded computation). Only the gathered rows
go through the LM head.
"""

from __future__ import annotations

import logging
from typing import Any, List, Optional, Tuple

from ..embedding.engine_utils import BatchedSentenceEngine, effective_max_length
from ..embedding.llm_embedding import TransformersWeights, pad_right
from .engine_base import RerankEngine
from .llm_formats import apply_softcap, make_format

logger = logging.getLogger(__name__)


class LLMFormatPairs:
    """The prompt side of LLM rerankers, whatever runs the model (Transformers here,
    vLLM in :mod:`~xinference.model.rerank.vllm_rerank`): the family's format bound to the
    tokenizer (:meth:`_init_format`), the token rows of (query, document) pairs and the
    room left for documents. An engine provides ``_family``, ``max_tokens`` and
    ``_tokenizer_lock``."""

    _format: Any

    def _init_format(self, tok) -> None:
        """Bind the family's ``llm_format`` to ``tok``.

        Raises:
            ValueError: an unknown format, or a tokenizer without its score tokens.
        """
        self._tok = tok
        self._format = make_format(self._family.llm_format, tok)

    def _tokenizer(self):
        return self._tok

    def _doc_budget(self, query: str, instruction: Optional[str]) -> int:
        with self._tokenizer_lock:
            return self._format.doc_budget(query, instruction, self.max_tokens)

    def _pair_rows(self, pairs: List[Tuple[str, str]], instruction: Optional[str]
                   ) -> List[List[int]]:
        """The token ids of each pair's prompt, within ``max_tokens``."""
        with self._tokenizer_lock:
            return [self._format.pair_ids(q, d, instruction, self.max_tokens)
                    for q, d in pairs]


class LLMRerank(TransformersWeights, LLMFormatPairs, RerankEngine, BatchedSentenceEngine):
    """An ``LLM-based`` rerank model on Transformers (``AutoModelForCausalLM``).

    Launch options: those of
    :class:`~xinference.model.embedding.engine_utils.BatchedSentenceEngine`
    (``max_batch_size`` counts pairs) and ``torch_dtype``. A request's ``instruction``
    replaces the format's default task text.
    """

    concurrent_safe = True
    supports_instruction = True

    def load(self) -> None:
        """Load tokenizer and model (blocking; runs in the engine thread)."""
        tok, model = self._load_weights("AutoModelForCausalLM")
        self._init_format(tok)
        self.max_tokens = effective_max_length(None, tok, model.config, self._family.max_tokens)
        self._pad_id = tok.pad_token_id if tok.pad_token_id is not None else 0
        head = model.get_output_embeddings()
        ids = self._format.score_token_ids
        # The LM head's rows of the score tokens: logits of only those, for gathered rows.
        self._head_w = head.weight[ids].detach()
        bias = getattr(head, "bias", None)
        self._head_b = bias[ids].detach() if bias is not None else None
        self._softcap = getattr(model.config, "final_logit_softcapping", None)
        self._start_batcher(model)

    def _run_batch(self, instruction, pairs: List[Tuple[str, str]]) -> List[Tuple[float, int]]:
        """Score one batch; returns ``(score, tokens_seen)`` per pair."""
        import torch

        rows = self._pair_rows(pairs, instruction)
        ids, mask, last = pad_right(rows, self._pad_id)
        with torch.inference_mode():
            hidden = self._model.base_model(input_ids=ids.to(self._device),
                                            attention_mask=mask.to(self._device)
                                            ).last_hidden_state
            h = hidden[torch.arange(len(rows), device=hidden.device), last.to(hidden.device)]
            logits = h @ self._head_w.T
            if self._head_b is not None:
                logits = logits + self._head_b
            logits = apply_softcap(logits, self._softcap)
            scores = self._format.score(logits.float()).cpu().tolist()
        return [(float(s), len(r)) for s, r in zip(scores, rows)]

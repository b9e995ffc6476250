"""LLM-based rerankers on vLLM (Qwen3-Reranker, bge-reranker-v2-gemma): the causal LM run
as a sequence classifier made of its own LM head.

As vLLM's documentation runs the original Qwen3-Reranker (``hf_overrides``
``{"architectures": ["Qwen3ForSequenceClassification"], "classifier_from_token": ["no",
"yes"], ...}``) and bge-reranker-v2-gemma (``"classifier_from_token": ["Yes"], "method":
"no_post_processing"``): the checkpoint's ``<Arch>ForCausalLM`` is loaded as
``<Arch>ForSequenceClassification`` whose one-layer classifier is the LM head's rows of
the format's score tokens (for Qwen3 the "yes" row minus the "no" row), read at the last
token. Only those rows are computed, not the whole vocabulary. The classifier's raw
outputs (``use_activation=False``) go through the format's own score
(:mod:`~xinference.model.rerank.llm_formats`: Qwen3's softmax over no/yes, which is the
sigmoid of the difference; bge's raw "Yes" logit), so the scores are the Transformers
engine's (:mod:`~xinference.model.rerank.llm_reranker`) and the model cards'.

The prompts are the shared format's token ids, one vLLM ``classify`` request per
(query, document) pair; vLLM batches concurrent requests itself. Runs in the vLLM
engine's own virtual environment; ``vllm`` and ``torch`` are imported in methods only.
"""

from __future__ import annotations

import json
import os
from typing import List, Optional, Tuple

from ...errors import ModelLoadError
from ..embedding.vllm_embedding import VLLMPooling
from .engine_base import RerankEngine
from .llm_formats import apply_softcap
from .llm_reranker import LLMFormatPairs


def classifier_overrides(model_path: str, tok, fmt) -> Tuple[dict, Optional[float]]:
    """vLLM's ``hf_overrides`` that load the causal LM at ``model_path`` as a classifier
    of ``fmt``'s score tokens, and the checkpoint's final logit soft-cap (None: none).

    The score tokens are named by their vocabulary strings (vLLM looks them up with
    ``convert_tokens_to_ids``), taken from the ids the format reads, so both engines read
    the same rows.

    Raises:
        ModelLoadError: the checkpoint is not a ``*ForCausalLM``, a token does not map back
        to its id, or a soft-capped model with a two-token format (the cap cannot be
        applied to a difference of logits).
    """
    try:
        with open(os.path.join(model_path, "config.json")) as f:
            config = json.load(f)
    except (OSError, ValueError) as e:
        raise ModelLoadError(f"vLLM could not read {model_path}/config.json: {e}") from e
    arch = (config.get("architectures") or [""])[0]
    if not arch.endswith("ForCausalLM"):
        raise ModelLoadError(
            f"An LLM-based reranker must be a *ForCausalLM checkpoint; {model_path} is "
            f"{arch or 'of no architecture'}")
    tokens = tok.convert_ids_to_tokens(list(fmt.score_token_ids))
    if tok.convert_tokens_to_ids(tokens) != list(fmt.score_token_ids):
        raise ModelLoadError(f"The score tokens {tokens} do not map back to their ids")
    softcap = config.get("final_logit_softcapping")
    if softcap and fmt.vllm_method != "no_post_processing":
        raise ModelLoadError(
            "vLLM's two-token classifier cannot apply the model's final logit "
            "soft-capping; use the Transformers engine")
    overrides = {"architectures": [arch[:-len("ForCausalLM")] + "ForSequenceClassification"],
                 "classifier_from_token": tokens, "method": fmt.vllm_method}
    return overrides, softcap


class VLLMRerank(LLMFormatPairs, RerankEngine, VLLMPooling):
    """An ``LLM-based`` rerank model on vLLM (see the module docstring).

    Launch options: :class:`~xinference.model.embedding.vllm_embedding.VLLMPooling`'s. A
    request's ``instruction`` replaces the format's default task text; ``max_tokens``
    bounds each pair's prompt as on the Transformers engine.
    """

    supports_instruction = True

    def load(self) -> None:
        """Start vLLM with the classifier (blocking; the engine thread).

        Raises:
            ModelLoadError: see :func:`classifier_overrides`, or vLLM cannot load it.
        """
        from vllm.config import PoolerConfig

        tok = self._load_tokenizer()
        self._init_format(tok)
        overrides, self._softcap = classifier_overrides(self._model_path, tok, self._format)
        self._start(tok, runner="pooling", convert="classify", hf_overrides=overrides,
                    pooler_config=PoolerConfig(pooling_type="LAST"))

    async def _score(self, pairs: List[Tuple[str, str]], instruction: Optional[str]
                     ) -> List[Tuple[float, int]]:
        import torch
        from vllm.pooling_params import PoolingParams

        rows = await self._in_thread(self._pair_rows, pairs, instruction)
        outs = await self._encode(
            rows, lambda: PoolingParams(task="classify", use_activation=False))
        values = torch.stack([o.float().reshape(-1) for o in outs])
        logits = apply_softcap(self._format.classifier_logits(values), self._softcap)
        scores = self._format.score(logits).tolist()
        return [(float(s), len(r)) for s, r in zip(scores, rows)]

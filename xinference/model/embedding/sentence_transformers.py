"""Embedding engine on sentence-transformers, with dynamic batching.

Loaded inside the model's own process by :class:`~xinference.model.embedding.launch.
SentenceModelLoader`. :meth:`SentenceTransformerEmbedding.create_embedding` is ``async`` so
the ModelActor runs concurrent requests side by side; their inputs meet in a
:class:`~xinference.model.embedding.batching.DynamicBatcher` and are encoded together, one
forward pass per batch, with up to ``concurrent_batches`` batches in flight (each in its
own engine thread; the tokenizer is used under a lock, the forward pass is not).

Inputs longer than the model's limit (``max_tokens``, at most what the model can take) are
truncated, as sentence-transformers does; the response then says so in
``usage["truncated_inputs"]`` (the indices of the truncated inputs).
"""

from __future__ import annotations

import logging
from typing import Any, List, Optional, Sequence, Tuple

from .engine_utils import BatchedSentenceEngine, effective_max_length, special_token_frame
from .request import EmbeddingEngine

logger = logging.getLogger(__name__)

class SentenceTransformerEmbedding(EmbeddingEngine, BatchedSentenceEngine):
    """An embedding model served by sentence-transformers.

    Launch options: those of :class:`BatchedSentenceEngine`; ``max_batch_size`` counts
    inputs, ``family`` is an :class:`EmbeddingModelFamily`. Vectors are those of
    ``SentenceTransformer.encode`` (the same preprocessing and modules, no extra
    normalization unless the family sets ``normalize``; to float rounding, ~1e-7, when
    batches are packed). Multimodal models (CLIP: the weights' modalities include
    ``image``, and so does the family's ``modalities``) embed images too, each modality
    in its own batches (sentence-transformers does not mix them in one forward pass).

    Args:
        padding_free: run batches without padding (the inputs of a batch share rows, see
            :mod:`~xinference.model.embedding.packing`). Default: on where the model
            supports it and a check at load time finds the same vectors as the padded
            forward pass; ``False`` keeps the padded pass.
    """

    concurrent_safe = True

    def __init__(self, *args, padding_free: Optional[bool] = None, **kwargs):
        super().__init__(*args, **kwargs)
        self._padding_free = padding_free
        self._packer = None

    # ---- loading ----------------------------------------------------------------------
    def load(self) -> None:
        """Load the weights (blocking; runs in the model process's engine thread)."""
        device = self._load_device()
        from sentence_transformers import SentenceTransformer

        model = SentenceTransformer(self._model_path, device=device,
                                    trust_remote_code=self._trust_remote_code)
        model.eval()
        tok = model.tokenizer
        config = getattr(getattr(model[0], "auto_model", None), "config", None)
        model.max_seq_length = effective_max_length(model.max_seq_length, tok, config,
                                                    self._family.max_tokens)
        dim_fn = (getattr(model, "get_embedding_dimension", None)
                  or model.get_sentence_embedding_dimension)
        self.dimensions = int(dim_fn())
        if self.dimensions != self._family.dimensions:
            logger.warning("%s: the family says %d dimensions, the model gives %d",
                           self._model_uid, self._family.dimensions, self.dimensions)
        self.max_tokens = int(model.max_seq_length)
        self._normalized = any(type(m).__name__ == "Normalize" for m in model)
        self._model_prompts = dict(getattr(model, "prompts", None) or {})
        self._default_prompt_name = getattr(model, "default_prompt_name", None)
        weights = tuple(getattr(model, "modalities", None) or ("text",))
        self.modalities = tuple(m for m in ("text", "image")
                                if m in weights and m in self._family.modalities)
        if "image" in self._family.modalities and "image" not in weights:
            logger.warning("%s: the family lists images, the weights embed %s only",
                           self._model_uid, list(weights))
        self._frame = special_token_frame(tok)
        self._vocab_size = len(tok)
        if self._padding_free is not False:
            self._packer = self._checked_packer(model)
        self._start_batcher(model)

    def _checked_packer(self, model):
        """The model's :class:`PaddingFreeEncoder`, or ``None`` when the model is not
        supported or packed and padded vectors of a probe batch differ by more than 1e-4
        (logged; requested with ``padding_free=True``, a warning)."""
        import torch

        from .packing import PaddingFreeEncoder

        packer = PaddingFreeEncoder.for_model(model)
        why = "not supported for this model"
        if packer is not None:
            probe = model.preprocess(["a", "a short probe sentence.",
                                      "a longer probe sentence " + "with more words " * 8])
            with torch.inference_mode():
                padded = model(probe)["sentence_embedding"]
                packed = packer.forward(probe)["sentence_embedding"]
            diff = float((padded - packed).abs().max())
            if diff <= 1e-4:
                return packer
            why = f"packed and padded vectors differ by {diff:.1e}"
        log = logger.warning if self._padding_free else logger.info
        log("%s: padding-free batches off (%s)", self._model_uid, why)
        return None

    # ---- the batch function (engine thread) --------------------------------------------
    def _run_batch(self, key: Tuple, items: List[Any]) -> List[Tuple[Any, int, bool]]:
        """Encode one batch; returns ``(vector, tokens_seen, truncated)`` per item."""
        kind, pre = key
        limit = self.max_tokens
        tok = self._model.tokenizer
        if kind == "image":
            with self._tokenizer_lock:
                feats = self._model.preprocess(items)
            vecs = self._forward(feats, packed=False)
            return [(v, 0, False) for v in vecs]
        if kind == "text":
            with self._tokenizer_lock:
                # What encode() feeds the model (truncated, padded, prompt prepended).
                feats = self._model.preprocess(items, prompt=pre or None)
                lengths = feats["attention_mask"].sum(1).tolist()
                # An input that fills the limit may have been cut: count its tokens whole.
                full = [i for i, n in enumerate(lengths) if n >= limit]
                if full:
                    whole = tok([pre + items[i] for i in full], verbose=False)["input_ids"]
                    for i, ids in zip(full, whole):
                        lengths[i] = len(ids)
            vecs = self._forward(feats)
        else:
            vecs, lengths = self._encode_ids(items)
        return [(vecs[i], min(n, limit), n > limit) for i, n in enumerate(lengths)]

    async def _embed(self, kind: str, items: List[Any], prefix: str):
        return await self._batcher.submit(items, key=(kind, prefix))

    def _forward(self, feats, packed: bool = True):
        """Sentence embeddings (float32 numpy, one row per input) of preprocessed inputs."""
        import torch
        from sentence_transformers.util import batch_to_device

        run = self._packer.forward if packed and self._packer is not None else self._model
        with torch.inference_mode():
            emb = run(batch_to_device(feats, self._model.device))
        return emb["sentence_embedding"].float().cpu().numpy()

    def _encode_ids(self, arrays: Sequence[List[int]]):
        import numpy as np

        prefix, suffix = self._frame
        budget = self.max_tokens - len(prefix) - len(suffix)
        tok = self._model.tokenizer
        lengths = [len(prefix) + len(a) + len(suffix) for a in arrays]
        out = []
        for start in range(0, len(arrays), self._max_batch_size):
            rows = [{"input_ids": prefix + list(a[:budget]) + suffix}
                    for a in arrays[start:start + self._max_batch_size]]
            with self._tokenizer_lock:
                feats = tok.pad(rows, return_tensors="pt")
            out.append(self._forward(feats))
        return np.concatenate(out), lengths

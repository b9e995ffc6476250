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

import base64
import logging
from typing import Any, Dict, List, Optional, Sequence, Tuple

from ...errors import InvalidRequestError
from .engine_utils import (
    BatchedSentenceEngine,
    check_token_ids,
    effective_max_length,
    special_token_frame,
)

logger = logging.getLogger(__name__)

MAX_INPUTS = 2048  # as OpenAI: at most 2048 inputs per request
ENCODING_FORMATS = ("float", "base64")


def parse_embedding_input(input: Any) -> Tuple[str, List[Any]]:
    """Classify OpenAI's ``input``: ``("text", [str, ...])`` or ``("ids", [[int, ...], ...])``.

    Accepts a string, a list of strings, one token array (list of ints) or a list of token
    arrays.

    Raises:
        InvalidRequestError: empty input, an empty string, more than 2048 inputs, or mixed
        or wrongly typed items.
    """
    def is_int(x):
        return isinstance(x, int) and not isinstance(x, bool)

    if isinstance(input, str):
        items, kind = [input], "text"
    elif isinstance(input, (list, tuple)):
        if not input:
            raise InvalidRequestError("'input' must not be an empty list")
        if all(isinstance(x, str) for x in input):
            items, kind = list(input), "text"
        elif all(is_int(x) for x in input):
            items, kind = [list(input)], "ids"
        elif all(isinstance(x, (list, tuple)) and all(is_int(t) for t in x) for x in input):
            items, kind = [list(x) for x in input], "ids"
        else:
            raise InvalidRequestError(
                "'input' must be a string, a list of strings, a list of token ids or a list "
                "of token-id lists"
            )
    else:
        raise InvalidRequestError(f"'input' must be a string or a list, got {type(input).__name__}")
    if len(items) > MAX_INPUTS:
        raise InvalidRequestError(f"'input' holds {len(items)} items; at most {MAX_INPUTS}")
    if kind == "text":
        for i, s in enumerate(items):
            if not s:
                raise InvalidRequestError(
                    "'input' must not be an empty string" if len(items) == 1
                    else f"'input[{i}]' must not be an empty string"
                )
    return kind, items


def encode_vector(vec, encoding_format: str):
    """A float32 vector as OpenAI sends it: base64 of its little-endian float32 bytes
    (``encoding_format="base64"``), else the float32 numpy array itself, which the API
    renders as JSON numbers with orjson (each the shortest text that reads back as the
    same float32, as OpenAI's own responses print them: about half the bytes of float64
    text, and cheaper to build, send and parse than a list of Python floats)."""
    import numpy as np

    if encoding_format == "base64":
        return base64.b64encode(np.asarray(vec, dtype="<f4").tobytes()).decode("ascii")
    return np.ascontiguousarray(vec, dtype=np.float32)


class SentenceTransformerEmbedding(BatchedSentenceEngine):
    """An embedding model served by sentence-transformers.

    Launch options: those of :class:`BatchedSentenceEngine`; ``max_batch_size`` counts
    inputs, ``family`` is an :class:`EmbeddingModelFamily`. Vectors are those of
    ``SentenceTransformer.encode`` (the same preprocessing and modules, no extra
    normalization; to float rounding, ~1e-7, when batches are packed).

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
    def _prompt_text(self, prompt_name: Optional[str], prompt: Optional[str]) -> str:
        if prompt is not None:
            return prompt
        name = prompt_name or getattr(self._model, "default_prompt_name", None)
        return (getattr(self._model, "prompts", None) or {}).get(name, "") if name else ""

    def _run_batch(self, key: Tuple, items: List[Any]) -> List[Tuple[Any, int, bool]]:
        """Encode one batch; returns ``(vector, tokens_seen, truncated)`` per item."""
        kind, prompt_name, prompt = key
        limit = self.max_tokens
        tok = self._model.tokenizer
        if kind == "text":
            pre = self._prompt_text(prompt_name, prompt)
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

    def _forward(self, feats):
        """Sentence embeddings (float32 numpy, one row per input) of preprocessed inputs."""
        import torch
        from sentence_transformers.util import batch_to_device

        run = self._packer.forward if self._packer is not None else self._model
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

    # ---- the public method (event loop of the model process) ---------------------------
    async def create_embedding(self, input: Any, encoding_format: Optional[str] = None,
                               dimensions: Optional[int] = None,
                               prompt_name: Optional[str] = None,
                               prompt: Optional[str] = None,
                               **kwargs) -> Dict[str, Any]:
        """OpenAI's create-embeddings (``POST /v1/embeddings``).

        Args:
            input: a string, a list of strings, a token array or a list of token arrays
                (token ids of this model's tokenizer).
            encoding_format: ``"float"`` (default) or ``"base64"`` (little-endian float32).
            dimensions: return only the first ``dimensions`` values (re-normalized when the
                model normalizes); only the model's size or its ``matryoshka_dimensions``.
            prompt_name / prompt: sentence-transformers' query prompts (e5, bge ...).
            kwargs: other OpenAI fields (``user`` ...) are accepted and ignored.

        Returns:
            ``{"object": "list", "model", "data": [{"index", "object": "embedding",
            "embedding"}], "usage": {"prompt_tokens", "total_tokens"[, "truncated_inputs"]}}``;
            token counts are the tokens the model saw (special tokens included).

        Raises:
            InvalidRequestError: see :func:`parse_embedding_input`, an unknown encoding
            format, prompt name or unsupported ``dimensions``, or a token id outside the
            vocabulary.
        """
        kind, items = parse_embedding_input(input)
        encoding_format = encoding_format or "float"
        if encoding_format not in ENCODING_FORMATS:
            raise InvalidRequestError(
                f"'encoding_format' must be one of {list(ENCODING_FORMATS)}, "
                f"got {encoding_format!r}"
            )
        dims = self._check_dimensions(dimensions)
        if prompt_name is not None and prompt_name not in (self._model.prompts or {}):
            raise InvalidRequestError(
                f"Unknown prompt_name {prompt_name!r}; this model has "
                f"{sorted(self._model.prompts or {})}"
            )
        if kind == "ids":
            for i, ids in enumerate(items):
                check_token_ids(ids, self._vocab_size, f"input[{i}]")
            prompt_name = prompt = None  # prompts apply to text only
        results = await self._batcher.submit(items, key=(kind, prompt_name, prompt))
        data, tokens, truncated = [], 0, []
        for i, (vec, n, cut) in enumerate(results):
            if dims is not None and dims < len(vec):
                vec = vec[:dims]
                if self._normalized:
                    import numpy as np

                    norm = float(np.linalg.norm(vec))
                    vec = vec / norm if norm > 0 else vec
            data.append({"index": i, "object": "embedding",
                         "embedding": encode_vector(vec, encoding_format)})
            tokens += n
            if cut:
                truncated.append(i)
        usage: Dict[str, Any] = {"prompt_tokens": tokens, "total_tokens": tokens}
        if truncated:
            usage["truncated_inputs"] = truncated
        return {"object": "list", "model": self._model_uid, "data": data, "usage": usage}

    def _check_dimensions(self, dimensions: Any) -> Optional[int]:
        if dimensions is None:
            return None
        if isinstance(dimensions, bool) or not isinstance(dimensions, int) or dimensions < 1:
            raise InvalidRequestError(
                f"'dimensions' must be a positive integer, got {dimensions!r}")
        allowed = sorted({self.dimensions, *(self._family.matryoshka_dimensions or [])})
        if dimensions not in allowed:
            raise InvalidRequestError(
                f"Model {self._model_uid!r} gives {self.dimensions}-dimensional embeddings and "
                f"cannot be shortened to {dimensions}; supported 'dimensions': {allowed}"
            )
        return dimensions


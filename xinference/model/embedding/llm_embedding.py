"""LLM-based embedding models on Transformers (Qwen3-Embedding, gte-Qwen2), with dynamic
batching.

The model cards' method: tokenize each input (the instruction prefix of a query first),
run the decoder (``AutoModel``: the model without its LM head), take the last hidden state
of the input's last real token and L2-normalise it. The cards pad on the left and take
position -1; here batches are padded on the right and the last real token of each row is
gathered instead. Both read the same token, but right padding keeps every input's
positions 0..n-1 (the cards' left-padded batches shift rotary positions by the pad count),
so a vector does not depend on what it was batched with and equals the card's unpadded
computation.

Loaded inside the model's own process; requests meet in the
:class:`~xinference.model.embedding.batching.DynamicBatcher` of
:class:`~xinference.model.embedding.engine_utils.BatchedSentenceEngine`, and the request
side (prompts, ``dimensions``, response) is :class:`~.request.EmbeddingEngine`.
"""

from __future__ import annotations

import logging
from typing import Any, List, Optional, Tuple

from ...errors import InvalidRequestError
from .engine_utils import BatchedSentenceEngine, effective_max_length, special_token_frame
from .request import EmbeddingEngine

logger = logging.getLogger(__name__)

TORCH_DTYPES = ("auto", "float32", "bfloat16", "float16")


def torch_dtype(name: Optional[str], device: str):
    """The torch dtype to load weights in: ``name`` (one of :data:`TORCH_DTYPES`;
    ``"auto"``: the checkpoint's own), default float32 on the CPU and the checkpoint's own
    on a GPU."""
    import torch

    name = name or ("float32" if device == "cpu" else "auto")
    return "auto" if name == "auto" else getattr(torch, name)


def pad_right(rows: List[List[int]], pad_id: int):
    """``(input_ids, attention_mask, last)`` tensors of token rows padded on the right;
    ``last[i]`` is the index of row i's last real token."""
    import torch

    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, :len(r)] = torch.tensor(r, dtype=torch.long)
        mask[i, :len(r)] = 1
    last = torch.tensor([len(r) - 1 for r in rows], dtype=torch.long)
    return ids, mask, last


def bidirectional_mask(mask, dtype):
    """A ``[B, 1, T, T]`` additive attention mask that lets every token attend to every
    real token of its row (``mask``: ``[B, T]``, 1 for real tokens): what transformers
    uses as given instead of its causal mask."""
    import torch

    keep = mask[:, None, None, :].bool().expand(-1, 1, mask.shape[1], -1)
    out = torch.zeros(keep.shape, dtype=dtype)
    return out.masked_fill(~keep, torch.finfo(dtype).min)


class TransformersWeights:
    """Mixin for batched engines that load a Transformers checkpoint themselves (the LLM
    embedders here and the LLM rerankers): the ``torch_dtype`` launch option (one of
    :data:`TORCH_DTYPES`, else :class:`InvalidRequestError`) and :meth:`_load_weights`.
    Put it first among the bases: its ``__init__`` takes ``torch_dtype`` and passes the
    rest on."""

    def __init__(self, *args, torch_dtype: Optional[str] = None, **kwargs):
        super().__init__(*args, **kwargs)
        if torch_dtype is not None and torch_dtype not in TORCH_DTYPES:
            raise InvalidRequestError(f"'torch_dtype' must be one of {list(TORCH_DTYPES)}")
        self._dtype_name = torch_dtype

    def _load_weights(self, auto_class: str):
        """``(tokenizer, model)``: ``transformers.<auto_class>`` from the model path on the
        engine's device, in eval mode; sets ``_device`` and ``_tok`` (blocking)."""
        device = self._load_device()
        import transformers

        tok = transformers.AutoTokenizer.from_pretrained(
            self._model_path, trust_remote_code=self._trust_remote_code)
        model = getattr(transformers, auto_class).from_pretrained(
            self._model_path, trust_remote_code=self._trust_remote_code,
            dtype=torch_dtype(self._dtype_name, device))
        model.to(device).eval()
        self._device = device
        self._tok = tok
        return tok, model


class LastTokenInputs:
    """The input side of last-token-pooling embedders, whatever runs the model (the
    Transformers engine here, the vLLM engine in
    :mod:`~xinference.model.embedding.vllm_embedding`): the token rows the model reads,
    each ending with the family's ``end_token``, truncated to ``max_tokens``.

    An engine calls :meth:`_init_inputs` with its tokenizer once ``max_tokens`` is known;
    it provides ``_family``, ``_model_uid`` and ``_tokenizer_lock``.
    """

    _family: Any
    _model_uid: str
    max_tokens: int

    def _init_inputs(self, tok) -> None:
        """Read what the rows need from ``tok`` (a Hugging Face tokenizer).

        Raises:
            ValueError: the tokenizer lacks the family's ``end_token``.
        """
        self._tok = tok
        self._vocab_size = len(tok)
        self._pad_id = tok.pad_token_id if tok.pad_token_id is not None else 0
        self._end_id = self._end_token_id(tok)
        self._frame = special_token_frame(tok)

    def _end_token_id(self, tok) -> Optional[int]:
        """The id of the family's ``end_token`` when the tokenizer does not already end
        its encodings with it (then the engine appends it), else None."""
        name = self._family.end_token
        if not name:
            return None
        if name not in tok.get_vocab():
            raise ValueError(f"{self._model_uid}: the tokenizer has no token {name!r}")
        end = tok.convert_tokens_to_ids(name)
        probe = tok("a")["input_ids"]
        return None if probe and probe[-1] == end else end

    def _token_rows(self, kind: str, items: List[Any], prefix: str
                    ) -> Tuple[List[List[int]], List[int]]:
        """Token rows the model sees and each input's whole length (to report truncation).

        Texts are tokenized as the tokenizer does (its special tokens included); token
        arrays get the same special tokens around them. Rows longer than ``max_tokens``
        lose their end, but keep the tokenizer's closing tokens and the ``end_token``."""
        if kind == "text":
            with self._tokenizer_lock:
                rows = self._tok([prefix + t for t in items], verbose=False)["input_ids"]
            head, tail = 0, len(self._frame[1])
        else:
            rows = [self._frame[0] + list(r) + self._frame[1] for r in items]
            head, tail = len(self._frame[0]), len(self._frame[1])
        end = [self._end_id] if self._end_id is not None else []
        out, whole = [], []
        for r in rows:
            whole.append(len(r) + len(end))
            if len(r) + len(end) > self.max_tokens:
                keep = max(head, self.max_tokens - len(end) - tail)
                r = r[:keep] + (r[len(r) - tail:] if tail else [])
            out.append(list(r) + end)
        return out, whole

    def _check_dimensions_of(self, hidden_size: int) -> None:
        """Set ``dimensions`` to the model's ``hidden_size`` (warned when the family says
        otherwise)."""
        self.dimensions = int(hidden_size)
        if self.dimensions != self._family.dimensions:
            logger.warning("%s: the family says %d dimensions, the model gives %d",
                           self._model_uid, self._family.dimensions, self.dimensions)


class TransformersEmbedding(TransformersWeights, LastTokenInputs, EmbeddingEngine,
                            BatchedSentenceEngine):
    """An LLM-based embedding model (family ``pooling: "last_token"``) on Transformers.
    A family with ``bidirectional_attention`` whose weights load with transformers' own
    class is run with a bidirectional mask (:func:`bidirectional_mask`); one whose own
    repository code is loaded (gte-Qwen2) attends as that code does.

    Launch options: those of :class:`BatchedSentenceEngine` (``max_batch_size`` counts
    inputs) and ``torch_dtype`` (``float32``, ``bfloat16``, ``float16`` or ``auto``).
    ``family`` is an :class:`~xinference.model.embedding.family.EmbeddingModelFamily`:
    ``end_token`` (the token every input must end with, appended where the tokenizer does
    not), ``prompts`` / ``instruction_template`` (query prompts) and ``min_dimensions``
    (Matryoshka sizes) come from it.
    """

    concurrent_safe = True

    def load(self) -> None:
        """Load tokenizer and model (blocking; runs in the model process's engine thread)."""
        tok, model = self._load_weights("AutoModel")
        self.max_tokens = effective_max_length(None, tok, model.config, self._family.max_tokens)
        self._check_dimensions_of(model.config.hidden_size)
        self._normalized = True
        self._init_inputs(tok)
        # gte-Qwen2's own code (trust_remote_code) attends both ways itself; a checkpoint
        # loaded with transformers' own class gets a bidirectional mask from here
        self._bidirectional = (self._family.bidirectional_attention
                               and type(model).__module__.startswith("transformers."))
        self._start_batcher(model)

    # ---- engine thread ---------------------------------------------------------------
    def _run_batch(self, key: Tuple, items: List[Any]) -> List[Tuple[Any, int, bool]]:
        """Embed one batch; returns ``(vector, tokens_seen, truncated)`` per item."""
        import torch

        kind, prefix = key
        rows, whole = self._token_rows(kind, items, prefix)
        ids, mask, last = pad_right(rows, self._pad_id)
        if self._bidirectional:
            mask = bidirectional_mask(mask, self._model.dtype)
        with torch.inference_mode():
            hidden = self._model(input_ids=ids.to(self._device),
                                 attention_mask=mask.to(self._device)).last_hidden_state
            pooled = hidden[torch.arange(len(rows), device=hidden.device), last.to(hidden.device)]
            vecs = torch.nn.functional.normalize(pooled.float(), p=2, dim=-1).cpu().numpy()
        return [(vecs[i], len(rows[i]), whole[i] > len(rows[i])) for i in range(len(rows))]

    async def _embed(self, kind: str, items: List[Any], prefix: str):
        return await self._batcher.submit(items, key=(kind, prefix))

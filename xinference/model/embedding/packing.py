"""Padding-free batches for encoder models: several inputs share one row of the forward pass.

A padded batch of B inputs costs the encoder B x (longest input) token positions, however
short the others are; with short, uneven inputs (queries, chat messages) up to a third of
the work goes to padding. Here the inputs of a batch are laid end to end in a few rows of
at most ``row_tokens`` positions (first-fit decreasing), each restarting its position ids,
and a block-diagonal attention mask keeps every token inside its own input. Per token this
is the same computation as the padded batch (the vectors agree to float rounding, ~1e-7);
only the padding work is gone. The technique is the one Hugging Face's
text-embeddings-inference ("no padding") and TRL's ``padding_free`` use.

Supported: sentence-transformers models whose first module is the ``Transformer`` module
over a BERT- or RoBERTa-style encoder with absolute position embeddings (``model_type`` in
:data:`POSITION_OFFSET`) and a right-padding tokenizer, running the ``sdpa`` or ``eager``
attention, followed only by ``Pooling``, ``Normalize`` and ``Dense`` modules (they read the
re-padded token embeddings and the original attention mask). Everything else keeps the
padded forward pass.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence

#: Encoders whose position ids can be given per token: model_type -> the first position id
#: (``None``: the config's ``pad_token_id`` + 1, as RoBERTa-style embeddings number them).
POSITION_OFFSET: Dict[str, Optional[int]] = {
    "bert": 0,
    "roberta": None,
    "xlm-roberta": None,
    "camembert": None,
}
#: sentence-transformers modules that may follow the encoder (they only read
#: ``token_embeddings``/``attention_mask`` or the pooled vector).
FOLLOWING_MODULES = ("Pooling", "Normalize", "Dense")
#: Default row width, in tokens (a longer input gets a row of its own). The matrix
#: products see the same tokens however they are cut into rows; attention grows with the
#: square of the row. On a 2-core CPU with all-MiniLM-L6-v2 and sentences of 9 to 22
#: tokens, rows of 256 made batches of 8 to 32 about 6-12 % faster than padding; rows of
#: 64 or 128 lost the gain for batches of 8 (two short rows cost what padding does).
ROW_TOKENS = 256


def pack_rows(lengths: Sequence[int], row_tokens: int) -> List[List[int]]:
    """Assign inputs to rows, first-fit decreasing: the longest input first, each into the
    first row with room for it.

    Args:
        lengths: tokens of each input (positive ints).
        row_tokens: room in a row; an input longer than that gets a row of its own.

    Returns:
        rows as lists of input indices, in the order they sit in the row.
    """
    rows: List[List[int]] = []
    room: List[int] = []
    for i in sorted(range(len(lengths)), key=lambda k: -lengths[k]):
        n = lengths[i]
        for r, left in enumerate(room):
            if left >= n:
                rows[r].append(i)
                room[r] -= n
                break
        else:
            rows.append([i])
            room.append(max(row_tokens, n) - n)
    return rows


class PaddingFreeEncoder:
    """Runs a sentence-transformers model on packed rows instead of a padded batch.

    Build with :meth:`for_model`, which returns ``None`` for a model this cannot run.
    ``forward(features)`` takes the padded features of ``SentenceTransformer.preprocess``
    (``input_ids``, ``attention_mask``, optional ``token_type_ids`` ..., all ``(B, L)``)
    and returns the model's output features (``sentence_embedding`` ``(B, dim)`` ...), as
    ``model(features)`` would.
    """

    def __init__(self, model, position_offset: int, mask_kind: str, row_tokens: int):
        self._modules = list(model)
        self._offset = position_offset
        self._mask_kind = mask_kind  # "bool" (sdpa) or "additive" (eager)
        self._row_tokens = row_tokens

    @classmethod
    def for_model(cls, model, row_tokens: int = ROW_TOKENS) -> Optional["PaddingFreeEncoder"]:
        """A packer for ``model`` (a ``SentenceTransformer``), or ``None`` when its modules,
        encoder type or attention implementation are not among those supported."""
        modules = list(model)
        if not modules or type(modules[0]).__name__ != "Transformer":
            return None
        if any(type(m).__name__ not in FOLLOWING_MODULES for m in modules[1:]):
            return None
        auto = getattr(modules[0], "auto_model", None) or getattr(modules[0], "model", None)
        config = getattr(auto, "config", None)
        model_type = getattr(config, "model_type", None)
        if config is None or model_type not in POSITION_OFFSET:
            return None
        if getattr(config, "position_embedding_type", "absolute") != "absolute":
            return None
        # Left padding shifts BERT's positions in the padded pass by the padding before
        # each input; packed rows could not give the same vectors.
        if getattr(getattr(modules[0], "tokenizer", None), "padding_side", "right") != "right":
            return None
        attn = getattr(config, "_attn_implementation", None) or "eager"
        if attn not in ("sdpa", "eager"):
            return None
        offset = POSITION_OFFSET[model_type]
        if offset is None:
            offset = int(getattr(config, "pad_token_id", 1) or 1) + 1
        return cls(model, offset, "bool" if attn == "sdpa" else "additive", row_tokens)

    def forward(self, features: Dict[str, Any]) -> Dict[str, Any]:
        """The model's output features for the padded ``features``, computed on packed rows."""
        import torch

        mask = features["attention_mask"]
        real = mask.bool()
        batch, width = real.shape
        lengths = real.sum(1).tolist()
        rows = pack_rows(lengths, self._row_tokens)
        row_width = max(sum(lengths[i] for i in row) for row in rows)
        device = mask.device

        # Where each input's tokens go: row r, columns [start, start + n).
        row_of, start_of = [0] * batch, [0] * batch
        for r, row in enumerate(rows):
            col = 0
            for i in row:
                row_of[i], start_of[i] = r, col
                col += lengths[i]
        lens = torch.tensor(lengths, device=device)
        seq = torch.repeat_interleave(torch.arange(batch, device=device), lens)  # (T,)
        within = torch.arange(seq.numel(), device=device) - torch.repeat_interleave(
            torch.cumsum(lens, 0) - lens, lens)  # position of each token in its input
        src = real.reshape(-1).nonzero().squeeze(1)  # the tokens' flat indices, padded
        dst = (torch.tensor(row_of, device=device)[seq] * row_width
               + torch.tensor(start_of, device=device)[seq] + within)  # ... and packed

        def packed(values, fill):
            """(T,) per-token values laid out as (rows, row_width), ``fill`` elsewhere."""
            out = torch.full((len(rows) * row_width,), fill, dtype=values.dtype, device=device)
            out[dst] = values
            return out.view(len(rows), row_width)

        owner = packed(seq, -1)
        # Each token sees the tokens of its own input; a padding position sees only itself
        # (a row with nothing to attend to would give NaN).
        visible = (owner[:, :, None] == owner[:, None, :]) & (owner >= 0)[:, :, None]
        visible |= torch.eye(row_width, dtype=torch.bool, device=device)
        if self._mask_kind == "bool":
            attn_mask = visible[:, None]
        else:
            dtype = self._modules[0].auto_model.dtype  # the mask is added to the scores
            attn_mask = torch.zeros(visible.shape, dtype=dtype, device=device)
            attn_mask.masked_fill_(~visible, torch.finfo(dtype).min)
            attn_mask = attn_mask[:, None]
        packed_features = {
            "input_ids": packed(features["input_ids"].reshape(-1)[src], 0),
            "attention_mask": attn_mask,
            "position_ids": packed(within + self._offset, self._offset),
        }
        if "token_type_ids" in features:
            packed_features["token_type_ids"] = packed(
                features["token_type_ids"].reshape(-1)[src], 0)

        hidden = self._modules[0](packed_features)["token_embeddings"]
        size = hidden.shape[-1]
        tokens = hidden.new_zeros(batch * width, size)
        tokens[src] = hidden.reshape(-1, size)[dst]
        out = dict(features, token_embeddings=tokens.view(batch, width, size))
        for module in self._modules[1:]:
            out = module(out)
        return out

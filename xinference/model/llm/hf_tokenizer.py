"""What every engine that holds a Hugging Face tokenizer shares (Transformers, vLLM).

:class:`HFIncrementalDetokenizer` turns sampled ids into text one token at a time;
:class:`HFTokenizerMixin` gives an :class:`~xinference.model.llm.core.LLM` engine its
``tokenize`` / ``new_detokenizer`` / ``token_bytes`` / chat-template methods from a tokenizer
the engine loaded into ``self._tokenizer``. transformers is imported lazily (model process).
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Tuple

from ...errors import InvalidRequestError
from .params import GenerationParams
from .text import IncrementalDetokenizer


class HFIncrementalDetokenizer(IncrementalDetokenizer):
    """Incremental detokenisation with a Hugging Face tokenizer.

    Decodes a small window of recent tokens twice (without and with the new ones) and emits
    the difference, holding text back while it ends in an incomplete UTF-8 sequence
    (``"\\ufffd"``, byte-level BPE splits characters across tokens). Decoding a window rather
    than single tokens keeps the spaces of SentencePiece tokenizers right. The concatenation
    of all pushes plus :meth:`flush` equals ``tokenizer.decode(ids, skip_special_tokens=True)``.
    """

    def __init__(self, tokenizer, keep_ids: Optional[set] = None):
        self._tok = tokenizer
        self._ids: List[int] = []
        self._prefix = 0  # start of the decode window
        self._read = 0  # tokens already turned into emitted text
        # special tokens to render anyway (tool-call markers such as [TOOL_CALLS])
        self._skip = (set(tokenizer.all_special_ids) - keep_ids) if keep_ids else None

    def _decode(self, ids: List[int]) -> str:
        if self._skip is not None:
            return self._tok.decode([i for i in ids if i not in self._skip],
                                    skip_special_tokens=False,
                                    clean_up_tokenization_spaces=False)
        return self._tok.decode(ids, skip_special_tokens=True,
                                clean_up_tokenization_spaces=False)

    def _delta(self, final: bool) -> str:
        before = self._decode(self._ids[self._prefix:self._read])
        after = self._decode(self._ids[self._prefix:])
        if len(after) > len(before) and (final or not after.endswith("\ufffd")):
            self._prefix, self._read = self._read, len(self._ids)
            return after[len(before):]
        return ""

    def push(self, token_id: int) -> str:
        self._ids.append(token_id)
        return self._delta(final=False)

    def flush(self) -> str:
        return self._delta(final=True)


def byte_decoder(tokenizer) -> Optional[Dict[str, int]]:
    """GPT-2's unicode-to-byte table when ``tokenizer`` is byte-level BPE (its vocabulary
    spells bytes with printable stand-ins, ``Ġ`` for a space), else None."""
    vocab = tokenizer.get_vocab()
    if "\u0120" not in vocab and "\u0120the" not in vocab:
        return None
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    return {c: b for b, c in bytes_to_unicode().items()}


def hf_eos_token_ids(*sources: Any, tokenizer=None) -> List[int]:
    """Every end-of-generation id named by ``sources`` (model configs, generation configs:
    their ``eos_token_id``, an int or a list) and the tokenizer's ``eos_token_id``,
    sorted."""
    eos = set()
    for src in sources:
        ids = getattr(src, "eos_token_id", None)
        eos.update(ids if isinstance(ids, (list, tuple)) else [ids])
    if tokenizer is not None:
        eos.add(tokenizer.eos_token_id)
    return sorted(i for i in eos if isinstance(i, int) and i >= 0)


def generation_config(path: str):
    """The ``generation_config.json`` of a model directory (transformers'
    ``GenerationConfig``), or None when it has none."""
    from transformers import GenerationConfig

    try:
        return GenerationConfig.from_pretrained(path)
    except (OSError, ValueError):
        return None


class HFTokenizerMixin:
    """The tokenizer side of an ``LLM`` engine whose tokenizer is a Hugging Face one.

    The engine sets ``self._tokenizer`` in ``load()`` and then calls
    :meth:`_init_tokenizer_tables` with its context length and the configs that name its
    end-of-generation ids; the mixin then answers ``context_length`` and ``eos_token_ids``.
    Put the mixin before ``LLM`` in the bases.
    """

    _tokenizer: Any = None
    _context_length: int = 0
    _eos_ids: List[int] = []

    def _init_tokenizer_tables(self, context_length: int, *eos_sources: Any) -> None:
        """What the engine's ``load()`` learnt, and the tables derived from the tokenizer.

        Args:
            context_length: tokens the loaded model attends to (prompt plus completion).
            eos_sources: model / generation configs whose ``eos_token_id`` (an int or a
                list) ends a generation, besides the tokenizer's (see
                :func:`hf_eos_token_ids`); None entries are skipped.

        Also sets the special tokens the tool parser must see (rendered by the detokenizer
        although special) and the byte table of byte-level BPE.
        """
        self._context_length = int(context_length)
        self._eos_ids = hf_eos_token_ids(*eos_sources, tokenizer=self._tokenizer)
        vocab = self._tokenizer.get_vocab()
        self._keep_ids = {vocab[t] for t in self.tool_parser.visible_tokens if t in vocab}
        self._byte_decoder = byte_decoder(self._tokenizer)

    @property
    def context_length(self) -> int:
        """Tokens the model attends to: prompt plus completion (set at load)."""
        return self._context_length

    @property
    def eos_token_ids(self) -> List[int]:
        """Token ids that end a generation: the configs' and the tokenizer's EOS (sorted)."""
        return self._eos_ids

    def tokenize(self, text: str, add_special: bool) -> List[int]:
        return list(self._tokenizer(text, add_special_tokens=add_special)["input_ids"])

    def new_detokenizer(self) -> IncrementalDetokenizer:
        return HFIncrementalDetokenizer(self._tokenizer, self._keep_ids)

    def token_bytes(self, token_id: int) -> bytes:
        """The token's own bytes: byte-level BPE pieces mapped back through the GPT-2 byte
        table; other tokenizers decode the single token."""
        piece = self._tokenizer.convert_ids_to_tokens(token_id)
        table = self._byte_decoder
        if table and isinstance(piece, str) and all(c in table for c in piece):
            return bytes(table[c] for c in piece)
        return self._tokenizer.decode([token_id], skip_special_tokens=False,
                                      clean_up_tokenization_spaces=False).encode("utf-8")

    def model_chat_template(self) -> Optional[str]:
        t = getattr(self._tokenizer, "chat_template", None)
        return t if isinstance(t, str) else None

    def special_token_text(self) -> Tuple[str, str]:
        return self._tokenizer.bos_token or "", self._tokenizer.eos_token or ""

    def _render(self, messages: List[Dict[str, Any]], params: GenerationParams,
                tools: Optional[list]) -> str:
        """The family's ``chat_template`` when it has one (shared renderer), else the
        tokenizer's own through ``apply_chat_template``; ``chat_template_kwargs`` reach
        either as template variables."""
        if self.family.chat_template or not self.model_chat_template():
            return super()._render(messages, params, tools)
        try:
            return self._tokenizer.apply_chat_template(
                messages, tools=tools, tokenize=False,
                add_generation_prompt=True, **params.chat_template_kwargs,
            )
        except InvalidRequestError:
            raise
        except Exception as e:  # jinja2 errors, raise_exception() in the template
            raise InvalidRequestError(f"chat template could not be rendered: {e}") from e

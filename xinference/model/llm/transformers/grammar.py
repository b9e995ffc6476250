"""Constrained decoding for the Transformers engine, with xgrammar.

A :class:`~xinference.model.llm.constraints.Constraint` is compiled once per distinct
constraint (an LRU cache keyed by :meth:`Constraint.key`) into an xgrammar
``CompiledGrammar`` over the model's vocabulary; each request (and each of its ``n``
choices) gets its own :class:`RowGrammar`: a ``GrammarMatcher`` and a one-row token bitmask.
The batch scheduler masks that row's logits before sampling and advances the matcher with
the sampled token. Once the grammar is complete only the request's stop tokens are allowed,
so the output is exactly the constrained text.

JSON is generated without free whitespace (``any_whitespace=False``: xgrammar's compact
separators); small models otherwise tend to loop on newlines inside a JSON value.
xgrammar and torch are imported here, in the model process only.
"""

from __future__ import annotations

import collections
import threading
from typing import List, Sequence

from ....errors import InvalidRequestError
from ..constraints import Constraint, to_xgrammar

_CACHE_SIZE = 64


class RowGrammar:
    """One sequence's matcher and bitmask."""

    def __init__(self, compiled, stop_ids: Sequence[int], vocab_size: int):
        import xgrammar as xgr

        self.matcher = xgr.GrammarMatcher(compiled, override_stop_tokens=sorted(stop_ids))
        self.bitmask = xgr.allocate_token_bitmask(1, vocab_size)
        self.vocab_size = vocab_size

    def mask(self, row):
        """Apply the allowed-token mask to a 1-D logits row (in place) and return it."""
        import xgrammar as xgr

        self.matcher.fill_next_token_bitmask(self.bitmask)
        view = row[: self.vocab_size].unsqueeze(0)
        xgr.apply_token_bitmask_inplace(view, self.bitmask)
        if row.shape[0] > self.vocab_size:
            row[self.vocab_size:] = float("-inf")
        return row

    def accept(self, token_id: int) -> None:
        """Advance with the sampled token (a stop token once the grammar is complete)."""
        if not self.matcher.is_terminated():
            self.matcher.accept_token(token_id)


class GrammarCache:
    """Compiles constraints for one tokenizer and vocabulary size (the logits' width).

    Args:
        tokenizer: the model's Hugging Face tokenizer.
        vocab_size: the width of the model's logits (may exceed the tokenizer's size).
    """

    def __init__(self, tokenizer, vocab_size: int):
        import xgrammar as xgr

        self.vocab_size = vocab_size
        info = xgr.TokenizerInfo.from_huggingface(tokenizer, vocab_size=vocab_size)
        self._compiler = xgr.GrammarCompiler(info)
        self._compiled: "collections.OrderedDict[str, object]" = collections.OrderedDict()
        self._lock = threading.Lock()

    def compile(self, constraint: Constraint):
        """The compiled grammar of ``constraint`` (cached).

        Raises:
            InvalidRequestError: xgrammar cannot build a grammar from the schema.
        """
        key = constraint.key()
        with self._lock:
            hit = self._compiled.get(key)
            if hit is not None:
                self._compiled.move_to_end(key)
                return hit
        try:
            compiled = self._compiler.compile_grammar(to_xgrammar(constraint))
        except Exception as e:  # xgrammar raises RuntimeError/ValueError on bad schemas
            raise InvalidRequestError(
                f"the JSON schema cannot be used for constrained decoding: {e}") from e
        with self._lock:
            self._compiled[key] = compiled
            while len(self._compiled) > _CACHE_SIZE:
                self._compiled.popitem(last=False)
        return compiled

    def rows(self, constraint: Constraint, stop_ids: Sequence[int], n: int
             ) -> List[RowGrammar]:
        """``n`` fresh :class:`RowGrammar` s for one request."""
        compiled = self.compile(constraint)
        return [RowGrammar(compiled, stop_ids, self.vocab_size) for _ in range(n)]

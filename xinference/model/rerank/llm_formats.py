"""Prompt formats of LLM-based rerankers: how a (query, document) pair becomes the token
ids a causal LM reads, and how its next-token logits at the last position become a score.

A family names its format with ``llm_format``:

* ``"qwen3"`` (Qwen3-Reranker, its model card): a ChatML conversation whose system turn
  asks for "yes" or "no", a user turn ``<Instruct>: {instruction}\\n<Query>: {query}\\n
  <Document>: {doc}`` and an empty ``<think>`` block; score = softmax over the "no"/"yes"
  logits, the "yes" probability (0..1).
* ``"bge-llm"`` (bge-reranker-v2-gemma, FlagEmbedding's ``FlagLLMReranker``, its model
  card): ``<bos>A: {query}\\nB: {passage}\\n{prompt}`` with the query cut to 3/4 of the
  limit and the passage to what is left; score = the raw "Yes" logit (unbounded, as the
  card's ``compute_score`` without ``normalize``).

A format object is built per tokenizer (:func:`make_format`); its methods use the
tokenizer, so callers hold the engine's tokenizer lock.

On vLLM the LM head's rows of the score tokens become a classifier (vLLM's
``classifier_from_token`` with the format's ``vllm_method``): ``"from_2_way_softmax"`` for
Qwen3 (one output, the "yes" logit minus the "no" logit; :meth:`LLMRerankFormat.
classifier_logits` turns it back into logits whose softmax is the card's), and
``"no_post_processing"`` for bge-llm (the raw "Yes" logit).
"""

from __future__ import annotations

from typing import List, Optional


class LLMRerankFormat:
    """A prompt format bound to a tokenizer.

    Attributes:
        score_token_ids: the vocabulary ids whose logits :meth:`score` reads, in order.
        default_instruction: the task text used when a request gives no ``instruction``.
    """

    default_instruction = ""
    score_token_ids: List[int]
    #: how vLLM makes a classifier of the LM head's ``score_token_ids`` rows (its
    #: ``hf_overrides`` ``method``): one raw logit per token
    vllm_method = "no_post_processing"

    def __init__(self, tok):
        self.tok = tok

    def pair_ids(self, query: str, doc: str, instruction: Optional[str],
                 max_len: int) -> List[int]:
        """Token ids of one pair (``max_len`` bounds the pair as the card does)."""
        raise NotImplementedError

    def doc_budget(self, query: str, instruction: Optional[str], max_len: int) -> int:
        """Tokens left for a document next to ``query`` (for chunking long documents)."""
        raise NotImplementedError

    def score(self, logits):
        """Scores (``[B]`` tensor) from ``logits`` (``[B, len(score_token_ids)]``)."""
        raise NotImplementedError

    def classifier_logits(self, values):
        """The logits :meth:`score` reads (``[B, len(score_token_ids)]``) from vLLM's
        classifier outputs (``[B, labels]``, no activation) of :attr:`vllm_method`."""
        return values

    def _ids(self, text: str) -> List[int]:
        return self.tok(text, add_special_tokens=False)["input_ids"]

    def _token_id(self, token: str) -> int:
        if token not in self.tok.get_vocab():
            raise ValueError(f"the tokenizer has no token {token!r}")
        return self.tok.convert_tokens_to_ids(token)


class Qwen3RerankFormat(LLMRerankFormat):
    """Qwen3-Reranker's yes/no format (model card of Qwen/Qwen3-Reranker-0.6B)."""

    PREFIX = ("<|im_start|>system\nJudge whether the Document meets the requirements based on "
              "the Query and the Instruct provided. Note that the answer can only be \"yes\" "
              "or \"no\".<|im_end|>\n<|im_start|>user\n")
    SUFFIX = "<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n"
    default_instruction = ("Given a web search query, retrieve relevant passages that "
                           "answer the query")
    #: one output: the "yes" row minus the "no" row of the LM head, i.e. the difference
    #: of the two logits (vLLM's conversion of the original Qwen3-Reranker)
    vllm_method = "from_2_way_softmax"

    def __init__(self, tok):
        super().__init__(tok)
        self._prefix = self._ids(self.PREFIX)
        self._suffix = self._ids(self.SUFFIX)
        self.score_token_ids = [self._token_id("no"), self._token_id("yes")]

    def _body(self, query: str, doc: str, instruction: Optional[str]) -> str:
        return (f"<Instruct>: {instruction or self.default_instruction}\n"
                f"<Query>: {query}\n<Document>: {doc}")

    def pair_ids(self, query, doc, instruction, max_len):
        room = max(1, max_len - len(self._prefix) - len(self._suffix))
        body = self.tok(self._body(query, doc, instruction), truncation=True,
                        max_length=room)["input_ids"]
        return self._prefix + list(body) + self._suffix

    def doc_budget(self, query, instruction, max_len):
        body = self.tok(self._body(query, "", instruction))["input_ids"]
        return max_len - len(self._prefix) - len(self._suffix) - len(body)

    def score(self, logits):
        import torch

        return torch.softmax(logits, dim=-1)[:, 1]

    def classifier_logits(self, values):
        """``[0, yes - no]`` per row: the same softmax as ``[no, yes]`` (it does not
        change when both logits move by the same amount)."""
        import torch

        d = values[:, :1]
        return torch.cat([torch.zeros_like(d), d], dim=-1)


class BgeLLMRerankFormat(LLMRerankFormat):
    """FlagEmbedding's LLM reranker format (model card of BAAI/bge-reranker-v2-gemma)."""

    default_instruction = ("Given a query A and a passage B, determine whether the passage "
                           "contains an answer to the query by providing a prediction of "
                           "either 'Yes' or 'No'.")

    def __init__(self, tok):
        super().__init__(tok)
        self._sep = self._ids("\n")
        self.score_token_ids = [self._ids("Yes")[0]]
        bos = tok.bos_token_id
        self._bos = [bos] if bos is not None else []

    def _first(self, query: str, max_len: int) -> List[int]:
        q = self.tok(f"A: {query}", add_special_tokens=False, truncation=True,
                     max_length=max(1, max_len * 3 // 4))["input_ids"]
        return self._bos + list(q)

    def pair_ids(self, query, doc, instruction, max_len):
        first = self._first(query, max_len)
        passage = self.tok(f"B: {doc}", add_special_tokens=False, truncation=True,
                           max_length=max_len)["input_ids"]
        second = (self._sep + list(passage))[:max(0, max_len - len(first))]
        prompt = self._ids(instruction or self.default_instruction)
        return first + second + self._sep + prompt

    def doc_budget(self, query, instruction, max_len):
        return max_len - len(self._first(query, max_len)) - len(self._sep) \
            - len(self._ids("B: "))

    def score(self, logits):
        return logits[:, 0]


def apply_softcap(logits, cap: Optional[float]):
    """Gemma 2's final logit soft-capping, ``tanh(logits / cap) * cap`` (``cap`` None or 0:
    unchanged), as its LM head applies it."""
    if not cap:
        return logits
    import torch

    return torch.tanh(logits / cap) * cap


FORMATS = {"qwen3": Qwen3RerankFormat, "bge-llm": BgeLLMRerankFormat}


def make_format(name: str, tok) -> LLMRerankFormat:
    """The format ``name`` (a key of :data:`FORMATS`) bound to ``tok``.

    Raises:
        ValueError: an unknown name, or a tokenizer without the tokens the format reads.
    """
    if name not in FORMATS:
        raise ValueError(f"Unknown llm_format {name!r}; known: {sorted(FORMATS)}")
    return FORMATS[name](tok)

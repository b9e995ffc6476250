"""Continuous batching for Hugging Face causal LMs.

One dedicated thread owns the model. It keeps a *running batch*: the key/value cache of every
admitted sequence, left-padded to a common length, with a 2-D attention mask that hides the
padding and explicit position ids per row, so each row computes what it would compute alone.
Between two decoding steps the thread

1. admits waiting requests (up to ``max_num_seqs`` in the batch): each prompt is prefilled
   on its own (batch of one, no padding) and its cache is merged into the batch;
2. runs one forward pass for the whole batch (one new token per row);
3. samples each row with that request's own parameters, generator and, for constrained
   requests, grammar mask (``grammar.py``), feeds the token (and its logprobs) to
   the request's :class:`~xinference.model.llm.request.RequestState` (stop ids, stop strings,
   ``max_tokens``, detokenisation) and sends the resulting deltas to its stream;
4. drops finished or cancelled rows from the cache and trims padding no row needs.

torch is imported lazily: this module is only imported inside a model process.
"""

from __future__ import annotations

import collections
import logging
import threading
from typing import Any, Callable, Deque, List, Optional, Tuple

from ..request import RequestState

logger = logging.getLogger(__name__)

# Tokens of recent context that repeat/frequency/presence penalties look at (llama.cpp's
# ``repeat_last_n`` default), so both engines read the parameters the same way.
PENALTY_LAST_N = 64


class Sequence:
    """One request in the scheduler: its bookkeeping, its sampler and where its deltas go.

    Args:
        state: the request's :class:`RequestState` (prompt ids, params, stop conditions).
        emit: called in the scheduler thread with each list of deltas, or with an exception
            that ends the request; must be thread-safe (see :class:`~xinference.model.llm.request.AsyncDeltaStream`).
    """

    def __init__(self, state: RequestState, emit: Callable[[Any], None], grammar=None):
        self.state = state
        self.emit = emit
        self.grammar = grammar  # a grammar.RowGrammar for constrained decoding
        self.cancelled = threading.Event()
        self.position = 0  # position id of the next token fed to the model
        self.last_token: Optional[int] = None
        self.generator = None  # torch.Generator, made in the scheduler thread

    def cancel(self) -> None:
        """Ask the scheduler to drop the request at the next step (its consumer left)."""
        self.cancelled.set()


class BatchScheduler:
    """Runs a causal LM over a continuously changing batch of requests.

    Args:
        model: a loaded ``transformers`` causal LM (``eval()`` mode) on ``device``.
        device: the torch device of the model's inputs.
        max_num_seqs: most sequences decoded together; further requests wait in order.
        batchable: ``False`` for models whose cache cannot be left-padded and merged
            (sliding-window or recurrent layers); they run one sequence at a time.
    """

    def __init__(self, model, device, max_num_seqs: int = 16, batchable: bool = True):
        self.model = model
        self.device = device
        self.max_num_seqs = max_num_seqs if batchable else 1
        self._waiting: Deque[Sequence] = collections.deque()
        self._cond = threading.Condition()
        self._running: List[Sequence] = []
        self._cache = None  # transformers DynamicCache of the running batch
        self._mask = None  # (batch, cache_len) long tensor, 0 on left padding
        self._closed = False
        #: requests dropped because their consumer left before they finished
        self.cancelled_requests = 0
        self._thread = threading.Thread(target=self._loop, name="batch-scheduler",
                                         daemon=True)
        self._thread.start()

    # ---- public ------------------------------------------------------------------------
    def submit(self, seq: Sequence) -> None:
        """Queue a request; it joins the batch between two decoding steps."""
        with self._cond:
            if self._closed:
                raise RuntimeError("the scheduler is closed")
            self._waiting.append(seq)
            self._cond.notify()

    def close(self) -> None:
        """Stop the thread after the current step; waiting requests get an error."""
        with self._cond:
            self._closed = True
            self._cond.notify()
        self._thread.join(timeout=30)

    @property
    def num_running(self) -> int:
        return len(self._running)

    @property
    def num_waiting(self) -> int:
        return len(self._waiting)

    # ---- the thread --------------------------------------------------------------------
    def _loop(self) -> None:
        import torch

        with torch.inference_mode():
            while True:
                with self._cond:
                    while not self._closed and not self._waiting and not self._running:
                        self._cond.wait()
                    if self._closed:
                        break
                    admit = []
                    while self._waiting and len(self._running) + len(admit) < self.max_num_seqs:
                        admit.append(self._waiting.popleft())
                try:
                    for seq in admit:
                        self._prefill(seq)
                    if self._running:
                        self._decode_step()
                except Exception as e:  # a failed forward ends every request in the batch
                    logger.exception("batch step failed")
                    failed = {id(s): s for s in admit + self._running if not s.state.finished}
                    for seq in failed.values():
                        seq.emit(e)
                    self._running, self._cache, self._mask = [], None, None
        err = RuntimeError("the model is shutting down")
        for seq in list(self._waiting) + self._running:
            seq.emit(err)

    def _prefill(self, seq: Sequence) -> None:
        import torch
        from transformers import DynamicCache

        if seq.cancelled.is_set():
            self.cancelled_requests += 1
            seq.emit(seq.state.finish("stop"))
            return
        seq.generator = torch.Generator(device="cpu")
        seq.generator.manual_seed(seq.state.seed)
        ids = seq.state.prompt_ids
        input_ids = torch.tensor([ids], dtype=torch.long, device=self.device)
        cache = DynamicCache(config=self.model.config)
        out = self.model(
            input_ids=input_ids,
            attention_mask=torch.ones_like(input_ids),
            position_ids=torch.arange(len(ids), device=self.device).unsqueeze(0),
            past_key_values=cache, use_cache=True, logits_to_keep=1,
        )
        seq.position = len(ids)
        token, lp = self._sample_with_logprobs(out.logits[:, -1, :].float(), [seq])[0]
        if not self._accept(seq, token, lp):
            return
        self._merge(out.past_key_values, len(ids))
        self._running.append(seq)

    def _decode_step(self) -> None:
        import torch

        seqs = self._running
        input_ids = torch.tensor([[s.last_token] for s in seqs], dtype=torch.long,
                                 device=self.device)
        self._mask = torch.cat(
            [self._mask, self._mask.new_ones((len(seqs), 1))], dim=1
        )
        position_ids = torch.tensor([[s.position] for s in seqs], dtype=torch.long,
                                    device=self.device)
        out = self.model(
            input_ids=input_ids, attention_mask=self._mask, position_ids=position_ids,
            past_key_values=self._cache, use_cache=True,
        )
        self._cache = out.past_key_values
        tokens = self._sample_with_logprobs(out.logits[:, -1, :].float(), seqs)
        keep = []
        for i, (seq, (token, lp)) in enumerate(zip(seqs, tokens)):
            seq.position += 1
            if self._accept(seq, token, lp):
                keep.append(i)
        if len(keep) < len(seqs):
            self._select(keep)

    def _accept(self, seq: Sequence, token: int, logprobs=None) -> bool:
        """Feed a sampled token to the request; False when the request has ended."""
        if seq.cancelled.is_set():
            self.cancelled_requests += 1
            deltas = seq.state.finish("stop")
        else:
            if seq.grammar is not None:
                seq.grammar.accept(token)
            deltas = seq.state.push(token, logprobs)
        if deltas:
            seq.emit(deltas)
        seq.last_token = token
        return not seq.state.finished

    # ---- the batch cache ---------------------------------------------------------------
    def _layers(self, cache):
        return cache.layers

    def _merge(self, cache, length: int) -> None:
        """Add a prefilled sequence (cache of batch 1, ``length`` tokens) to the batch."""
        import torch

        mask = torch.ones((1, length), dtype=torch.long, device=self.device)
        if self._cache is None or not self._running:
            self._cache, self._mask = cache, mask
            return
        cur = self._mask.shape[1]
        total = max(cur, length)
        for big, small in zip(self._layers(self._cache), self._layers(cache)):
            bk, bv = _left_pad(big.keys, total), _left_pad(big.values, total)
            sk, sv = _left_pad(small.keys, total), _left_pad(small.values, total)
            big.keys = torch.cat([bk, sk], dim=0)
            big.values = torch.cat([bv, sv], dim=0)
        self._mask = torch.cat(
            [_left_pad(self._mask, total, dim=1), _left_pad(mask, total, dim=1)], dim=0
        )

    def _select(self, keep: List[int]) -> None:
        """Keep only rows ``keep`` and drop left padding that no remaining row needs."""
        import torch

        self._running = [self._running[i] for i in keep]
        if not keep:
            self._cache, self._mask = None, None
            return
        idx = torch.tensor(keep, dtype=torch.long, device=self.device)
        mask = self._mask.index_select(0, idx)
        # leading columns that are padding in every remaining row
        used = mask.any(dim=0).nonzero()
        start = int(used[0]) if len(used) else 0
        self._mask = mask[:, start:]
        for layer in self._layers(self._cache):
            layer.keys = layer.keys.index_select(0, idx)[:, :, start:, :]
            layer.values = layer.values.index_select(0, idx)[:, :, start:, :]

    # ---- sampling ----------------------------------------------------------------------
    @staticmethod
    def _sample(logits, seqs: List[Sequence]) -> List[int]:
        """One token per row of ``logits`` (batch, vocab), each with its request's params,
        seeded generator and, for a constrained request, grammar mask
        (:func:`sample_token`)."""
        logits = logits.to("cpu")
        out = []
        for row, seq in zip(logits, seqs):
            recent = (seq.state.prompt_ids[-PENALTY_LAST_N:]
                      + seq.state.output_ids[-PENALTY_LAST_N:])[-PENALTY_LAST_N:]
            out.append(sample_token(row, seq.state.params, recent, seq.generator,
                                    seq.grammar))
        return out

    @staticmethod
    def _logprobs(logits, seqs: List[Sequence], tokens: List[int]) -> List[Optional[tuple]]:
        """Per row, when its request asked for logprobs: ``(logprob of the sampled token,
        [(id, logprob)] of the top_logprobs most likely)``, from the log-softmax of the raw
        logits (before penalties, grammar mask and temperature); else None."""
        import torch

        out: List[Optional[tuple]] = []
        for row, seq, token in zip(logits, seqs, tokens):
            p = seq.state.params
            if not p.logprobs:
                out.append(None)
                continue
            lsm = torch.log_softmax(row.to("cpu"), dim=-1)
            top = []
            if p.top_logprobs:
                vals, ids = torch.topk(lsm, p.top_logprobs)
                top = list(zip(ids.tolist(), vals.tolist()))
            out.append((float(lsm[token]), top))
        return out

    def _sample_with_logprobs(self, logits, seqs: List[Sequence]
                              ) -> List[Tuple[int, Optional[tuple]]]:
        tokens = self._sample(logits, seqs)
        if not any(s.state.params.logprobs for s in seqs):
            return [(t, None) for t in tokens]
        return list(zip(tokens, self._logprobs(logits, seqs, tokens)))


def sample_token(row, p, recent: List[int], generator, grammar=None) -> int:
    """Sample one token id from ``row`` (a 1-D float CPU tensor of logits over the
    vocabulary) with the request's parameters ``p`` (:class:`GenerationParams`), as
    llama.cpp's sampler chain does:

    1. repeat / frequency / presence penalties on the ids in ``recent`` (the last
       ``PENALTY_LAST_N`` tokens of context): a positive logit is divided by
       ``repeat_penalty``, a negative one multiplied; then ``count * frequency_penalty +
       presence_penalty`` is subtracted;
    2. ``temperature <= 0``: greedy (argmax);
    3. otherwise divide by ``temperature``, keep the ``top_k`` highest logits (``top_k <= 0``
       keeps all), softmax, drop tokens below ``min_p`` times the best probability, keep the
       smallest set of most likely tokens whose probability reaches ``top_p``, and draw
       from what is left with ``generator`` (a ``torch.Generator``).

    ``grammar`` (a ``grammar.RowGrammar`` of a constrained request) masks the tokens its
    grammar does not allow, after the penalties. ``row`` itself is left unchanged.
    """
    import torch

    changed = bool(recent) and bool(p.repeat_penalty != 1.0 or p.frequency_penalty
                                     or p.presence_penalty)
    if changed:
        ids, counts = torch.unique(torch.tensor(recent), return_counts=True)
        vals = row[ids]
        if p.repeat_penalty != 1.0:
            vals = torch.where(vals > 0, vals / p.repeat_penalty, vals * p.repeat_penalty)
        vals = vals - counts.to(vals.dtype) * p.frequency_penalty - p.presence_penalty
        row = row.clone()
        row[ids] = vals
    if grammar is not None:
        row = grammar.mask(row if changed else row.clone())
    if p.temperature <= 0:
        return int(torch.argmax(row))
    row = row / p.temperature
    if p.top_k and 0 < p.top_k < row.shape[0]:
        kth = torch.topk(row, p.top_k).values[-1]
        row = row.masked_fill(row < kth, float("-inf"))
    probs = torch.softmax(row, dim=-1)
    if p.min_p and p.min_p > 0:
        probs = probs.masked_fill(probs < p.min_p * probs.max(), 0.0)
    if p.top_p is not None and p.top_p < 1.0:
        # Sort only the candidates left by top-k/min-p (tens, not the vocabulary).
        cand = probs.nonzero().squeeze(1)
        sorted_p, order = torch.sort(probs[cand], descending=True)
        cum = torch.cumsum(sorted_p, dim=-1)
        drop = (cum - sorted_p) >= p.top_p  # keep the smallest set reaching top_p
        probs = torch.zeros_like(probs)
        probs[cand[order]] = sorted_p.masked_fill(drop, 0.0)
    return int(torch.multinomial(probs, 1, generator=generator))


def _left_pad(t, length: int, dim: int = 2):
    """Zero-pad tensor ``t`` on the left of ``dim`` to ``length``."""
    import torch

    missing = length - t.shape[dim]
    if missing <= 0:
        return t
    shape = list(t.shape)
    shape[dim] = missing
    return torch.cat([t.new_zeros(shape), t], dim=dim)

"""Continuous batching for Hugging Face causal LMs.

One dedicated thread owns the model. It keeps a *running batch*: the key/value cache of every
admitted sequence, left-padded to a common length, with a 2-D attention mask that hides the
padding and explicit position ids per row, so each row computes what it would compute alone.
Between two decoding steps the thread

1. admits waiting requests (up to ``max_num_seqs`` in the batch): each prompt is prefilled
   on its own (batch of one, no padding) and its cache is merged into the batch;
2. runs one forward pass for the whole batch (one new token per row);
3. samples each row with that request's own parameters and generator, feeds the token to
   the request's :class:`~xinference.model.llm.core.RequestState` (stop ids, stop strings,
   ``max_tokens``, detokenisation) and sends the resulting deltas to its stream;
4. drops finished or cancelled rows from the cache and trims padding no row needs.

torch is imported lazily: this module is only imported inside a model process.
"""

from __future__ import annotations

import collections
import logging
import threading
from typing import Any, Callable, Deque, List, Optional

from ..core import RequestState, random_seed

logger = logging.getLogger(__name__)

# Tokens of recent context that repeat/frequency/presence penalties look at (llama.cpp's
# ``repeat_last_n`` default), so both engines read the parameters the same way.
PENALTY_LAST_N = 64


class Sequence:
    """One request in the scheduler: its bookkeeping, its sampler and where its deltas go.

    Args:
        state: the request's :class:`RequestState` (prompt ids, params, stop conditions).
        emit: called in the scheduler thread with each list of deltas, or with an exception
            that ends the request; must be thread-safe (see :class:`~xinference.model.llm.core.AsyncDeltaStream`).
    """

    def __init__(self, state: RequestState, emit: Callable[[Any], None]):
        self.state = state
        self.emit = emit
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
            seq.emit(seq.state.finish("stop"))
            return
        seed = seq.state.params.seed
        seq.generator = torch.Generator(device="cpu")
        seq.generator.manual_seed(seed if seed is not None else random_seed())
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
        token = self._sample(out.logits[:, -1, :].float(), [seq])[0]
        if not self._accept(seq, token):
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
        tokens = self._sample(out.logits[:, -1, :].float(), seqs)
        keep = []
        for i, (seq, token) in enumerate(zip(seqs, tokens)):
            seq.position += 1
            if self._accept(seq, token):
                keep.append(i)
        if len(keep) < len(seqs):
            self._select(keep)

    def _accept(self, seq: Sequence, token: int) -> bool:
        """Feed a sampled token to the request; False when the request has ended."""
        if seq.cancelled.is_set():
            deltas = seq.state.finish("stop")
        else:
            deltas = seq.state.push(token)
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
    def _sample(self, logits, seqs: List[Sequence]) -> List[int]:
        """One token per row of ``logits`` (batch, vocab), each with its request's params:
        repeat/frequency/presence penalties over the last ``PENALTY_LAST_N`` tokens, then
        greedy (``temperature == 0``) or temperature, top-k, top-p, min-p sampling with the
        request's seeded generator."""
        import torch

        logits = logits.to("cpu")
        out = []
        for row, seq in zip(logits, seqs):
            p = seq.state.params
            recent = (seq.state.prompt_ids[-PENALTY_LAST_N:]
                      + seq.state.output_ids[-PENALTY_LAST_N:])[-PENALTY_LAST_N:]
            if recent and (p.repeat_penalty != 1.0 or p.frequency_penalty
                           or p.presence_penalty):
                ids, counts = torch.unique(torch.tensor(recent), return_counts=True)
                vals = row[ids]
                if p.repeat_penalty != 1.0:
                    vals = torch.where(vals > 0, vals / p.repeat_penalty,
                                       vals * p.repeat_penalty)
                vals = vals - counts.to(vals.dtype) * p.frequency_penalty - p.presence_penalty
                row = row.clone()
                row[ids] = vals
            if p.temperature <= 0:
                out.append(int(torch.argmax(row)))
                continue
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
            out.append(int(torch.multinomial(probs, 1, generator=seq.generator)))
        return out


def _left_pad(t, length: int, dim: int = 2):
    """Zero-pad tensor ``t`` on the left of ``dim`` to ``length``."""
    import torch

    missing = length - t.shape[dim]
    if missing <= 0:
        return t
    shape = list(t.shape)
    shape[dim] = missing
    return torch.cat([t.new_zeros(shape), t], dim=dim)

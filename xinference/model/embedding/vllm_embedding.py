"""LLM-based embedding models on vLLM's pooling runner (Qwen3-Embedding, gte-Qwen2), and
what the vLLM pooling engines share (:class:`VLLMPooling`; the rerank engine is
:mod:`xinference.model.rerank.vllm_rerank`).

vLLM converts the checkpoint's ``*ForCausalLM`` into an embedding model
(``runner="pooling"``, ``convert="embed"``) whose pooler takes the last token's hidden
state and L2-normalises it (``PoolerConfig(pooling_type="LAST", use_activation=True)``):
the model cards' method, as the Transformers engine computes it
(:mod:`~xinference.model.embedding.llm_embedding`). The token rows are the same ones (the
shared :class:`~xinference.model.embedding.llm_embedding.LastTokenInputs`: prompt prefix,
``end_token``, truncation to ``max_tokens`` keeping the end token), handed to vLLM as token
ids, one vLLM request per input; vLLM batches concurrent requests itself (continuous
batching), so there is no dynamic batcher here. ``dimensions`` (Matryoshka truncation and
re-normalisation) and the response are the shared request code's
(:class:`~xinference.model.embedding.request.EmbeddingEngine`).

Runs in the vLLM engine's own virtual environment (the LLM engine's, same packages);
``vllm`` and ``transformers`` are imported in ``load`` only. Sources: vLLM's pooling models
("Pooling Models", ``PoolerConfig``, ``PoolingParams``, ``AsyncLLM.encode``; docs.vllm.ai,
version 0.32).
"""

from __future__ import annotations

import asyncio
import threading
import uuid
from typing import Any, Callable, Dict, List, Tuple

from ...errors import ModelLoadError
from ..llm.vllm.common import shutdown_engine, start_engine, vllm_error
from ..llm.vllm.options import parse_options
from ..options import flag
from .engine_utils import effective_max_length
from .llm_embedding import LastTokenInputs
from .request import EmbeddingEngine


class VLLMPooling:
    """What the vLLM pooling engines (embedding, rerank) share: the launch options, vLLM's
    ``AsyncLLM`` started as a pooling model, one ``encode`` request per token row, and
    shutting it down.

    Args:
        model_uid: the running model's uid.
        family: the model's family (``max_tokens``, ``trust_remote_code``).
        model_path: local directory of the weights (a Hugging Face checkpoint).
        options: the vLLM launch options of
            :data:`~xinference.model.llm.vllm.options.POOLING_OPTIONS` (``max_model_len``:
            default the family's ``max_tokens`` capped by the checkpoint; ``dtype``:
            default float32 on a CPU; ``cpu_kvcache_space`` ...); ``trust_remote_code``
            defaults to the family's.

    Raises:
        InvalidRequestError: a bad option value or combination.
    """

    engine_name = "vLLM"

    def __init__(self, model_uid: str, family, model_path: str, **options: Any):
        self._model_uid = model_uid
        self._family = family
        self._model_path = model_path
        trust = options.get("trust_remote_code")
        self.options = parse_options(options)
        self.options.trust_remote_code = (family.trust_remote_code if trust is None
                                          else flag("trust_remote_code", trust))
        self._tokenizer_lock = threading.Lock()
        self._engine = None
        self._inflight = 0

    def _load_tokenizer(self):
        """The checkpoint's Hugging Face tokenizer (blocking).

        Raises:
            ModelLoadError: it cannot be loaded.
        """
        try:
            import transformers

            return transformers.AutoTokenizer.from_pretrained(
                self._model_path, trust_remote_code=self.options.trust_remote_code)
        except Exception as e:
            raise ModelLoadError(
                f"vLLM could not load {self._model_path}: {type(e).__name__}: {e}") from e

    def _start(self, tok, **pooling_args: Any) -> None:
        """Start vLLM with ``pooling_args`` (``runner``, ``convert``, ``pooler_config``,
        ``hf_overrides``) and set ``max_tokens``: the family's, the tokenizer's (``tok``)
        and vLLM's ``max_model_len``, whichever is smallest. Blocking (the engine thread).

        Raises:
            ModelLoadError: vLLM is missing or cannot load the weights.
        """
        self._engine = start_engine(self._model_path, self.options, self._family.max_tokens,
                                    **pooling_args)
        config = self._engine.model_config
        self.max_tokens = effective_max_length(int(config.max_model_len), tok,
                                               config.hf_config, self._family.max_tokens)

    async def _in_thread(self, fn: Callable, *args):
        """``fn(*args)`` in the default executor (tokenizing off the event loop)."""
        return await asyncio.get_running_loop().run_in_executor(None, fn, *args)

    async def _encode(self, rows: List[List[int]], make_params: Callable[[], Any]) -> List[Any]:
        """The pooled output (a float tensor) of each token row: one vLLM request per row
        with ``make_params()`` (a ``PoolingParams``), all in flight together. A request
        that fails fails the call (vLLM's client errors as
        :class:`~xinference.errors.InvalidRequestError`); a cancelled call aborts them in
        vLLM."""

        async def one(row: List[int]):
            rid = f"{self._model_uid}-{uuid.uuid4().hex}"
            final = None
            self._inflight += 1
            try:
                async for out in self._engine.encode({"prompt_token_ids": row},
                                                     make_params(), rid):
                    final = out
            finally:
                self._inflight -= 1
            return final.outputs.data

        try:
            return list(await asyncio.gather(*(one(r) for r in rows)))
        except asyncio.CancelledError:
            raise
        except Exception as e:
            raise vllm_error(e) from e

    def stats(self) -> Dict[str, Any]:
        """``requests_inflight``: rows handed to vLLM and not yet returned."""
        return {"requests_inflight": self._inflight}

    def close(self) -> None:
        """Shut vLLM's EngineCore process down (the model process is going away)."""
        shutdown_engine(self._engine)
        self._engine = None


class VLLMEmbedding(LastTokenInputs, EmbeddingEngine, VLLMPooling):
    """An LLM-based embedding model (family ``pooling: "last_token"``) on vLLM.

    Launch options: :class:`VLLMPooling`'s. The family's ``end_token``, ``prompts`` /
    ``instruction_template`` and ``min_dimensions`` work as on the Transformers engine
    (:class:`~xinference.model.embedding.llm_embedding.TransformersEmbedding`);
    ``bidirectional_attention`` becomes vLLM's ``hf_overrides={"is_causal": False}``.
    """

    def load(self) -> None:
        """Start vLLM's pooling runner (blocking; the model process's engine thread).

        Raises:
            ModelLoadError: vLLM cannot load the weights.
            ValueError: the tokenizer lacks the family's ``end_token``.
        """
        from vllm.config import PoolerConfig

        tok = self._load_tokenizer()
        extra = ({"hf_overrides": {"is_causal": False}}
                 if self._family.bidirectional_attention else {})
        self._start(tok, runner="pooling", convert="embed",
                    pooler_config=PoolerConfig(pooling_type="LAST", use_activation=True),
                    **extra)
        self._check_dimensions_of(self._engine.model_config.get_hidden_size())
        self._normalized = True
        self._init_inputs(tok)

    async def _embed(self, kind: str, items: List[Any], prefix: str
                     ) -> List[Tuple[Any, int, bool]]:
        from vllm.pooling_params import PoolingParams

        rows, whole = await self._in_thread(self._token_rows, kind, items, prefix)
        vecs = await self._encode(
            rows, lambda: PoolingParams(task="embed", use_activation=True))
        return [(v.float().cpu().numpy(), len(r), w > len(r))
                for v, r, w in zip(vecs, rows, whole)]

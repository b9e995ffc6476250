"""llama.cpp engine (llama-cpp-python) for ``ggufv2`` specs.

Only sampling and token bookkeeping live here; request handling is shared in
:class:`xinference.model.llm.core.LLM`. ``llama_cpp`` is imported in :meth:`load`, which
runs inside the model's own process.
"""

from __future__ import annotations

import os
from typing import Iterator, List, Optional, Tuple

from ....core.errors import ModelLoadError
from ..core import LLM, BytesDetokenizer, GenerationParams, IncrementalDetokenizer, random_seed


class LlamaCppModel(LLM):
    """A GGUF model served by llama.cpp.

    Launch kwargs passed to ``llama_cpp.Llama``: ``n_ctx`` (default: the family's
    ``context_length``), ``n_threads`` (default: all cores), ``n_batch``, ``n_gpu_layers``
    (default: all layers when ``n_gpu`` is set and the build has GPU support, else 0).
    """

    engine_name = "llama.cpp"

    def load(self) -> None:
        try:
            import llama_cpp
        except ImportError as e:
            raise ModelLoadError(
                "The llama.cpp engine needs llama-cpp-python: pip install 'xinference[llama_cpp]'"
            ) from e
        kw = self.kwargs
        n_gpu = kw.get("n_gpu")
        default_layers = -1 if (n_gpu not in (None, 0, "0") and
                                llama_cpp.llama_supports_gpu_offload()) else 0
        try:
            self._llm = llama_cpp.Llama(
                model_path=self.model_path,
                n_ctx=int(kw.get("n_ctx") or self.family.context_length),
                n_threads=int(kw.get("n_threads") or os.cpu_count() or 1),
                n_batch=int(kw.get("n_batch") or 512),
                n_gpu_layers=int(kw.get("n_gpu_layers", default_layers)),
                verbose=False,
            )
        except Exception as e:  # llama.cpp raises ValueError on unreadable files
            raise ModelLoadError(f"llama.cpp could not load {self.model_path}: {e}") from e
        meta = self._llm.metadata or {}
        eos = {self._llm.token_eos()}
        for key in ("tokenizer.ggml.eot_token_id", "tokenizer.ggml.eos_token_id"):
            if key in meta:
                eos.add(int(meta[key]))
        self._eos_ids = sorted(i for i in eos if i >= 0)
        self._template = meta.get("tokenizer.chat_template")
        self._add_bos = meta.get("tokenizer.ggml.add_bos_token", "true") != "false"

    @property
    def context_length(self) -> int:
        return self._llm.n_ctx()

    @property
    def eos_token_ids(self) -> List[int]:
        return self._eos_ids

    def tokenize(self, text: str, add_special: bool) -> List[int]:
        return self._llm.tokenize(
            text.encode("utf-8"), add_bos=add_special and self._add_bos, special=True
        )

    def _piece(self, token_id: int) -> bytes:
        return self._llm.detokenize([token_id], special=False)

    def new_detokenizer(self) -> IncrementalDetokenizer:
        return BytesDetokenizer(self._piece)

    def model_chat_template(self) -> Optional[str]:
        return self._template

    def special_token_text(self) -> Tuple[str, str]:
        def text(tid):
            if tid < 0:
                return ""
            return self._llm.detokenize([tid], special=True).decode("utf-8", "replace")

        return text(self._llm.token_bos()), text(self._llm.token_eos())

    def iter_token_ids(self, prompt_ids: List[int], params: GenerationParams) -> Iterator[int]:
        self._llm.set_seed(params.seed if params.seed is not None else random_seed())
        return self._llm.generate(
            prompt_ids,
            top_k=params.top_k,
            top_p=params.top_p,
            min_p=params.min_p,
            temp=params.temperature,
            repeat_penalty=params.repeat_penalty,
            frequency_penalty=params.frequency_penalty,
            presence_penalty=params.presence_penalty,
            reset=True,
        )

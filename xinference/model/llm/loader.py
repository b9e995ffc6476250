"""What a model process needs to build an LLM engine, sent from the supervisor.

A :class:`LLMLoader` is pickled into the model's sub-pool process, where :meth:`load`
resolves the weights (see :mod:`xinference.model.cache_manager`) and loads the engine.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, Optional

from ..loader import ModelLoader
from ...errors import InvalidRequestError
from .engines import find_engine
from .llm_family import LLMFamily, LLMSpec


@dataclass(init=False)
class LLMLoader(ModelLoader):
    """Launch parameters of one LLM replica (picklable): the spec and quantization the plan
    picked and the engine's name (``engine_class`` is that engine's class path)."""

    spec: LLMSpec = field(kw_only=True)
    quantization: str = field(kw_only=True)
    model_engine: str = field(kw_only=True)

    def __init__(self, model_uid: str, family: LLMFamily, spec: LLMSpec, quantization: str,
                 model_engine: str, model_path: Optional[str] = None,
                 kwargs: Optional[Dict[str, Any]] = None):
        """Positional as the LLM launch plan builds it; ``model_engine`` is a name
        (``"llama.cpp"``, ``"Transformers"``).

        Raises:
            InvalidRequestError: ``model_engine`` names no engine.
        """
        super().__init__(model_uid, family, find_engine(model_engine).class_path, model_path,
                         {} if kwargs is None else kwargs)
        self.spec = spec
        self.quantization = quantization
        self.model_engine = model_engine

    def resolve_path(self) -> str:
        """Local path of the weights: a GGUF file or a Hugging Face directory."""
        template = self.spec.model_file_name_template
        file_name = template.format(quantization=self.quantization) if template else None
        return self._resolve(self.spec, self.spec.model_format,
                             size=str(self.spec.model_size_in_billions), file_name=file_name)

    def build(self, cls, path: str):
        """An ``LLM`` engine: ``cls(model_uid, family, spec, quantization, path, kwargs)``;
        an engine that takes a multimodal projector (llama.cpp) gets its file, resolved
        (downloaded) beside the weights, as ``mmproj_path``."""
        engine = cls(self.model_uid, self.family, self.spec, self.quantization, path,
                     self.kwargs)
        if hasattr(engine, "mmproj_path"):
            name = choose_projector(self.spec, self.kwargs.get("multimodal_projector"))
            if name is not None:
                engine.mmproj_path = self._resolve(
                    self.spec, self.spec.model_format,
                    size=str(self.spec.model_size_in_billions), file_name=name)
        return engine


def choose_projector(spec: LLMSpec, wanted: Optional[str]) -> Optional[str]:
    """The projector file of ``spec`` to load: ``wanted`` (the ``multimodal_projector``
    launch option) or the first of ``spec.multimodal_projectors``; None when the spec has
    none.

    Raises:
        InvalidRequestError: ``wanted`` is not one of the spec's projectors.
    """
    names = spec.multimodal_projectors or []
    if wanted is None:
        return names[0] if names else None
    if wanted not in names:
        raise InvalidRequestError(
            f"multimodal_projector {wanted!r} is not one of this spec's "
            f"multimodal_projectors: {names}")
    return wanted

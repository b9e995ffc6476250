"""What a model process needs to build an LLM engine, sent from the supervisor.

A :class:`LLMLoader` is pickled into the model's sub-pool process, where :meth:`load`
resolves the weights (see :mod:`xinference.model.cache_manager`) and loads the engine.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, Optional

from ..cache_manager import resolve_model_path
from .engines import find_engine
from .llm_family import LLMFamily, LLMSpec


@dataclass
class LLMLoader:
    """Launch parameters of one LLM replica (picklable)."""

    model_uid: str
    family: LLMFamily
    spec: LLMSpec
    quantization: str
    model_engine: str
    model_path: Optional[str] = None
    kwargs: Dict[str, Any] = field(default_factory=dict)

    def resolve_path(self) -> str:
        """Local path of the weights: a GGUF file or a Hugging Face directory."""
        template = self.spec.model_file_name_template
        file_name = template.format(quantization=self.quantization) if template else None
        return resolve_model_path(
            model_name=self.family.model_name,
            model_format=self.spec.model_format,
            size=str(self.spec.model_size_in_billions),
            model_id=self.spec.model_id,
            file_name=file_name,
            model_uri=self.spec.model_uri,
            model_path=self.model_path,
            package=self.spec.package,
            model_revision=self.spec.model_revision,
        )

    def load(self):
        """Resolve the files and return the loaded engine (an ``LLM`` subclass)."""
        path = self.resolve_path()
        cls = find_engine(self.model_engine).load_class()
        model = cls(self.model_uid, self.family, self.spec, self.quantization, path, self.kwargs)
        model.load()
        return model

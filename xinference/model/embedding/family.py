"""Schemas of sentence-transformers style model families (embedding and rerank) and the
builtin embedding registry.

Pure pydantic: the supervisor imports this module; no engine library is imported here.

A family is written the way Xinference's "Custom Models" documentation writes it. The
current form lists specs::

    {"version": 2, "model_name": "my-bge", "dimensions": 768, "max_tokens": 512,
     "language": ["en"],
     "model_specs": [{"model_format": "pytorch", "model_id": "BAAI/bge-base-en-v1.5",
                      "model_uri": "file:///path/to/bge-base-en-v1.5"}]}

The older documented form puts ``model_id`` / ``model_uri`` / ``model_revision`` /
``model_hub`` at the top level; it is accepted and turned into one ``pytorch`` spec.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any, Dict, List, Literal, Optional

from pydantic import Field, field_validator, model_validator

from ..custom_family import NamedModel, WeightSource

# Fields of a spec that the older (v1) documented form writes at the family's top level.
_SPEC_FIELDS = ("model_id", "model_uri", "model_revision", "model_hub", "model_format",
                "quantizations", "package", "package_subdir")


class SentenceModelSpec(WeightSource):
    """One way to get a family's weights (a Hugging Face directory; where from:
    :class:`WeightSource`).

    ``package`` / ``package_subdir`` are an extension of ours: an installed Python package
    whose directory (or its sub-directory) holds the weights, for air-gapped installs.
    """

    model_format: Literal["pytorch"] = "pytorch"
    quantizations: List[str] = Field(default_factory=lambda: ["none"])
    package: Optional[str] = None
    package_subdir: Optional[str] = None

    @model_validator(mode="after")
    def _check_source(self) -> "SentenceModelSpec":
        if not (self.model_id or self.model_uri or self.package):
            raise ValueError("a spec needs model_id or model_uri")
        return self


class SentenceModelFamily(NamedModel):
    """Fields shared by embedding and rerank families (base class, not registered itself);
    ``source``: where a builtin's facts and hub ids come from."""

    version: int = 2
    language: List[str] = Field(default_factory=lambda: ["en"])
    model_description: Optional[str] = None
    trust_remote_code: bool = False
    model_specs: List[SentenceModelSpec]
    source: Optional[str] = None

    @model_validator(mode="before")
    @classmethod
    def _top_level_spec(cls, data: Any) -> Any:
        if isinstance(data, dict) and "model_specs" not in data:
            data = dict(data)
            spec = {k: data.pop(k) for k in _SPEC_FIELDS if k in data}
            data["model_specs"] = [spec] if spec else []
        return data

    @field_validator("model_specs")
    @classmethod
    def _check_specs(cls, v: List[SentenceModelSpec]) -> List[SentenceModelSpec]:
        if not v:
            raise ValueError("model_specs must hold at least one spec (or give model_id / "
                             "model_uri at the top level)")
        return v


MODALITIES = ("text", "image")


class EmbeddingModelFamily(SentenceModelFamily):
    """An embedding model: ``dimensions`` is the vector length, ``max_tokens`` the longest
    input in tokens (longer inputs are truncated, as sentence-transformers does).

    ``matryoshka_dimensions`` (optional) lists the smaller sizes the model was trained to be
    truncated to; only those (and ``dimensions``) are accepted as a request's
    ``dimensions``. ``min_dimensions`` (optional) accepts every size from it up to
    ``dimensions`` instead (Qwen3-Embedding: 32..1024, its model card's "MRL support").

    LLM-based embedding models (Qwen3-Embedding, gte-Qwen2) set ``pooling: "last_token"``:
    they run on the Transformers engine, which takes the hidden state of each input's last
    real token (``end_token``: the token every input ends with, e.g. ``<|endoftext|>``;
    the engine appends it where the tokenizer does not) and L2-normalises it. Without ``pooling`` the model's
    own sentence-transformers modules decide (sentence-transformers engine).

    ``prompts`` are named prefixes a request picks with ``prompt_name`` (as
    sentence-transformers' ``config_sentence_transformers.json``: ``{"query": "Instruct:
    ...\nQuery:", "document": ""}``); ``instruction_template`` turns a request's
    ``instruction`` (a one-sentence task description) into a prefix, ``{instruction}``
    marking where it goes.

    ``bidirectional_attention``: the model reads its input with bidirectional attention
    although its checkpoint is a causal LM's (gte-Qwen2, whose model card says so and whose
    repository code does it): the Transformers engine runs that code
    (``trust_remote_code``), or for weights that load with transformers' own class masks
    bidirectionally itself; the vLLM engine asks vLLM's own model for it
    (``hf_overrides={"is_causal": false}``, as vLLM's Qwen2 model documents for gte-Qwen2).

    ``modalities``: what the model embeds; ``["text", "image"]`` for CLIP-style models
    (images and text in one space). ``normalize``: L2-normalise every vector after the
    model (for models whose own modules do not; always on for ``last_token``).
    """

    dimensions: int = Field(gt=0)
    max_tokens: int = Field(512, gt=0)
    matryoshka_dimensions: Optional[List[int]] = None
    min_dimensions: Optional[int] = Field(None, gt=0)
    pooling: Optional[Literal["last_token"]] = None
    end_token: Optional[str] = None
    bidirectional_attention: bool = False
    prompts: Optional[Dict[str, str]] = None
    instruction_template: Optional[str] = None
    modalities: List[Literal["text", "image"]] = Field(default_factory=lambda: ["text"])
    normalize: bool = False
    model_type: Literal["embedding"] = "embedding"

    @model_validator(mode="after")
    def _check_matryoshka(self) -> "EmbeddingModelFamily":
        for d in self.matryoshka_dimensions or []:
            if not 0 < d <= self.dimensions:
                raise ValueError(
                    f"matryoshka_dimensions must lie in 1..{self.dimensions}, got {d}"
                )
        if self.min_dimensions is not None and self.min_dimensions > self.dimensions:
            raise ValueError(f"min_dimensions must be at most dimensions ({self.dimensions})")
        if self.instruction_template is not None \
                and "{instruction}" not in self.instruction_template:
            raise ValueError("instruction_template must contain '{instruction}'")
        if "text" not in self.modalities:
            raise ValueError("modalities must include 'text'")
        if self.pooling is not None and self.modalities != ["text"]:
            raise ValueError("pooling 'last_token' embeds text only")
        return self


def load_builtin_families(path: Path, schema) -> Dict[str, Any]:
    """Parse a builtin ``model_spec.json`` (a list of families) into ``{model_name: family}``."""
    data = json.loads(path.read_text(encoding="utf-8"))
    return {d["model_name"]: schema.model_validate(d, context={"builtin": True}) for d in data}


@functools.lru_cache(maxsize=1)
def builtin_embedding_families() -> Dict[str, EmbeddingModelFamily]:
    """The families shipped in ``embedding/model_spec.json``, by ``model_name``."""
    return load_builtin_families(Path(__file__).with_name("model_spec.json"),
                                 EmbeddingModelFamily)

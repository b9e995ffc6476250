"""LLM family schema, the builtin registry and spec matching.

The JSON shape is the one of Xinference's "Custom Models" documentation::

    {"version": 2, "context_length": 2048, "model_name": "custom-llama-2",
     "model_lang": ["en"], "model_ability": ["generate", "chat"],
     "model_specs": [{"model_format": "ggufv2", "model_size_in_billions": 7,
                      "quantizations": ["q4_0"], "model_id": "...",
                      "model_uri": "file:///path", "model_file_name_template":
                      "llama-2-7b.{quantization}.gguf"}],
     "chat_template": "...jinja...", "stop": ["</s>"], "stop_token_ids": [2]}

Fractional sizes are written the way Xinference writes them: ``"0_5"`` for 0.5 billion.
"""

from __future__ import annotations

import functools
import json
import re
from pathlib import Path
from typing import Any, Dict, List, Literal, Optional, Union

from pydantic import Field, field_validator, model_validator

from ...errors import InvalidRequestError
from ..custom_family import NamedModel, WeightSource, check_abilities
KNOWN_FORMATS = ("pytorch", "ggufv2", "ggmlv3", "gptq", "awq", "fp8", "mlx", "bnb")
# Formats whose spec names one file per quantization (model_file_name_template required).
SINGLE_FILE_FORMATS = ("ggufv2", "ggmlv3")
KNOWN_ABILITIES = (
    "generate", "chat", "vision", "tools", "reasoning", "audio", "omni", "hybrid",
    "embed", "rerank",
)


def normalize_size(size: Union[int, float, str, None]) -> Optional[str]:
    """Return a size in billions in Xinference's spelling: ``7`` → ``"7"``, ``0.5`` or
    ``"0.5"`` → ``"0_5"``. ``None`` stays ``None``.

    Raises:
        InvalidRequestError: the value is not a positive number.
    """
    if size is None:
        return None
    text = str(size).strip().replace(".", "_")
    if not re.fullmatch(r"\d+(_\d+)?", text):
        raise InvalidRequestError(
            f"model_size_in_billions must be a number like 7, 0.5 or '0_5', got {size!r}"
        )
    whole, _, frac = text.partition("_")
    frac = frac.rstrip("0")
    whole = str(int(whole))
    return f"{whole}_{frac}" if frac else whole


class LLMSpec(WeightSource):
    """One way to run a family: a format, a size and its quantizations, and where its
    weights come from (:class:`WeightSource`).

    ``package`` is an extension of ours: the name of an installed Python package whose
    directory holds the weights (air-gapped installs), looked up without importing it.
    """

    model_format: str
    model_size_in_billions: Union[int, float, str]
    quantizations: List[str] = Field(default_factory=lambda: ["none"])
    model_file_name_template: Optional[str] = None
    package: Optional[str] = None
    #: GGUF vision models: the multimodal projector (``mmproj``) files published beside the
    #: weights in the same repository (upstream Xinference's field); the llama.cpp engine
    #: downloads the chosen one (launch option ``multimodal_projector``, default the first)
    multimodal_projectors: Optional[List[str]] = None

    @model_validator(mode="before")
    @classmethod
    def _single_quantization(cls, data: Any) -> Any:
        # Xinference's v2 files write one "quantization" per spec; the docs write a list.
        if isinstance(data, dict) and "quantizations" not in data and "quantization" in data:
            data = dict(data)
            data["quantizations"] = [data.pop("quantization")]
        return data

    @field_validator("model_format")
    @classmethod
    def _check_format(cls, v: str) -> str:
        if v not in KNOWN_FORMATS:
            raise ValueError(f"model_format must be one of {list(KNOWN_FORMATS)}, got {v!r}")
        return v

    @field_validator("model_size_in_billions")
    @classmethod
    def _check_size(cls, v):
        try:
            return normalize_size(v)
        except InvalidRequestError as e:
            raise ValueError(str(e)) from None

    @field_validator("quantizations")
    @classmethod
    def _check_quantizations(cls, v: List[str]) -> List[str]:
        if not v:
            raise ValueError("quantizations must list at least one quantization")
        return v

    @model_validator(mode="after")
    def _check_file_template(self) -> "LLMSpec":
        # Single-file formats name their file per quantization; ggmlv3 is accepted here (old
        # JSON registers unchanged) but no engine here runs it (400 at launch).
        tmpl = self.model_file_name_template
        if self.model_format in SINGLE_FILE_FORMATS and not tmpl:
            raise ValueError(
                f"model_file_name_template is required for {self.model_format} specs "
                "(e.g. \"my-model.{quantization}.gguf\")"
            )
        if tmpl:
            for q in self.quantizations:
                try:
                    tmpl.format(quantization=q)
                except (KeyError, IndexError, ValueError) as e:
                    raise ValueError(
                        f"model_file_name_template {tmpl!r} must be a file name with at "
                        f"most the placeholder {{quantization}} ({type(e).__name__}: {e})"
                    ) from None
        return self

    @property
    def size_in_billions(self) -> float:
        """The size as a float (``"0_135"`` → 0.135)."""
        return float(str(self.model_size_in_billions).replace("_", "."))


class LLMFamily(NamedModel):
    """A model family: its name (:class:`NamedModel`), abilities, chat template and
    specs."""

    version: int = 2
    context_length: int = 2048
    model_lang: List[str] = Field(default_factory=lambda: ["en"])
    model_ability: List[str] = Field(default_factory=lambda: ["generate"])
    model_description: Optional[str] = None
    model_family: Optional[str] = None
    model_specs: List[LLMSpec]
    chat_template: Optional[str] = None
    prompt_style: Optional[Dict[str, Any]] = None
    stop_token_ids: List[int] = Field(default_factory=list)
    stop: List[str] = Field(default_factory=list)
    model_type: Literal["LLM"] = "LLM"
    # tool-call format (a tool_parsers name) and reasoning tags, Xinference's field names
    tool_parser: Optional[str] = None
    reasoning_start_tag: Optional[str] = None
    reasoning_end_tag: Optional[str] = None

    @field_validator("tool_parser")
    @classmethod
    def _check_tool_parser(cls, v: Optional[str]) -> Optional[str]:
        if v is None:
            return v
        from .tool_parsers import check_tool_parser

        return check_tool_parser(v)

    @model_validator(mode="after")
    def _check_reasoning_tags(self) -> "LLMFamily":
        start, end = self.reasoning_start_tag, self.reasoning_end_tag
        if (start is None) != (end is None):
            raise ValueError("reasoning_start_tag and reasoning_end_tag go together")
        if start is not None and (not start.strip() or not end.strip() or start == end):
            raise ValueError("reasoning tags must be two different non-blank strings")
        return self

    @field_validator("model_ability")
    @classmethod
    def _check_ability(cls, v: List[str]) -> List[str]:
        return check_abilities(v, KNOWN_ABILITIES)

    @field_validator("context_length")
    @classmethod
    def _check_ctx(cls, v: int) -> int:
        if v <= 0:
            raise ValueError("context_length must be positive")
        return v

    @field_validator("model_specs")
    @classmethod
    def _check_specs(cls, v: List[LLMSpec]) -> List[LLMSpec]:
        if not v:
            raise ValueError("model_specs must hold at least one spec")
        return v

    @model_validator(mode="before")
    @classmethod
    def _legacy_prompt_style(cls, data: Any) -> Any:
        # Older custom JSON carries stop words inside prompt_style.
        if isinstance(data, dict) and isinstance(data.get("prompt_style"), dict):
            ps = data["prompt_style"]
            data = dict(data)
            data.setdefault("stop", ps.get("stop") or [])
            data.setdefault("stop_token_ids", ps.get("stop_token_ids") or [])
        return data


@functools.lru_cache(maxsize=1)
def builtin_llm_families() -> Dict[str, LLMFamily]:
    """The families shipped in ``llm_family.json``, by ``model_name``. Parsed once."""
    path = Path(__file__).with_name("llm_family.json")
    data = json.loads(path.read_text(encoding="utf-8"))
    return {d["model_name"]: LLMFamily.model_validate(d, context={"builtin": True})
            for d in data}

"""Rules every custom-model JSON shares, whatever its type.

* ``model_name``: starts with a letter or digit; letters, digits, ``_`` and ``-`` only
  (Xinference's "Custom Models" documentation). Builtin families are validated with the
  context ``{"builtin": True}`` and may use dots (``qwen2.5-instruct``).
* ``model_uri``: an absolute path or a ``file://`` URI.

:class:`WeightSource` declares where weights come from (``model_id`` on ``model_hub``,
``model_uri``, ``model_revision``) for every schema that has them: LLM and sentence-model
specs and :class:`CustomFamilyBase`, the pydantic base of the image, audio and video family
schemas (name, family, abilities, ``model_id`` and/or ``model_uri``). Unknown
fields are kept (``extra="allow"``) so a JSON written for Xinference registers unchanged.

A family of one source (image, audio, video) may list its copies on other hubs in
``model_src``, as upstream Xinference writes it: ``{"huggingface": {"model_id": ...,
"model_revision": ...}, "modelscope": {"model_id": ...}}``; ``model_id`` / ``model_hub``
default to its Hugging Face entry (or its first), and :meth:`CustomFamilyBase.weights_on`
says which id a download from a given hub fetches.
"""

from __future__ import annotations

import re
from typing import Any, ClassVar, Dict, List, Optional, Tuple

from pydantic import (BaseModel, ConfigDict, Field, ValidationInfo, field_validator,
                      model_validator)

from ..constants import MODEL_HUBS as KNOWN_HUBS  # where ``model_id`` is looked up
MODEL_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_\-]*$")


def check_model_name(v: str, info: Optional[ValidationInfo] = None) -> str:
    """Return ``v`` when it is a valid custom ``model_name``.

    Raises:
        ValueError: the name breaks the rule (pydantic turns it into a validation error that
        names the field).
    """
    if info is not None and (info.context or {}).get("builtin"):
        return v
    if not isinstance(v, str) or not MODEL_NAME_RE.match(v):
        raise ValueError(
            "model_name must start with a letter or digit and contain only letters, "
            f"digits, '_' and '-', got {v!r}"
        )
    return v


def check_model_uri(v: Optional[str]) -> Optional[str]:
    """Return ``v`` when it is ``None``, an absolute path or a ``file://`` URI.

    Raises:
        ValueError: anything else (relative paths, ``http://`` ...).
    """
    if v is not None and not str(v).startswith(("file://", "/")):
        raise ValueError(f"model_uri must be an absolute path or a file:// URI, got {v!r}")
    return v


def check_abilities(v: List[str], known) -> List[str]:
    """Return ``v`` when every ability in it is ``known``.

    Raises:
        ValueError: naming the unknown ones and the known ones.
    """
    bad = [a for a in v if a not in known]
    if bad:
        raise ValueError(f"unknown model_ability {bad}; known: {list(known)}")
    return v


class NamedModel(BaseModel):
    """A registration's ``model_name``, checked by :func:`check_model_name` (builtin
    families, validated with the context ``{"builtin": True}``, may use dots). Unknown
    fields are kept."""

    model_config = ConfigDict(extra="allow", protected_namespaces=())

    model_name: str

    @field_validator("model_name")
    @classmethod
    def _check_name(cls, v: str, info: ValidationInfo) -> str:
        return check_model_name(v, info)


class WeightSource(BaseModel):
    """Where a model's weights come from: ``model_id`` on ``model_hub`` (at
    ``model_revision``) and/or a local ``model_uri`` (validated by
    :func:`check_model_uri`). Unknown fields are kept."""

    model_config = ConfigDict(extra="allow", protected_namespaces=())

    model_id: Optional[str] = None
    model_hub: str = "huggingface"
    model_uri: Optional[str] = None
    model_revision: Optional[str] = None

    @field_validator("model_uri")
    @classmethod
    def _check_uri(cls, v: Optional[str]) -> Optional[str]:
        return check_model_uri(v)

    @field_validator("model_hub")
    @classmethod
    def _check_hub(cls, v: str) -> str:
        if v not in KNOWN_HUBS:
            raise ValueError(f"model_hub must be one of {list(KNOWN_HUBS)}, got {v!r}")
        return v


class HubCopy(BaseModel):
    """One hub's copy of a family's weights: an entry of ``model_src``."""

    model_config = ConfigDict(extra="allow", protected_namespaces=())

    model_id: str
    model_revision: Optional[str] = None


class CustomFamilyBase(NamedModel, WeightSource):
    """A custom registration of a non-LLM type. Subclasses set ``model_type``, the
    abilities they know and the default ``model_family``. ``model_src``: the family's
    copies per hub (see the module docstring); ``source``: where a builtin's facts come
    from (model card, config)."""

    KNOWN_ABILITIES: ClassVar[Tuple[str, ...]] = ()

    version: int = 1
    model_family: Optional[str] = None
    model_ability: List[str] = []
    model_description: Optional[str] = None
    model_src: Dict[str, HubCopy] = Field(default_factory=dict)
    source: Optional[str] = None

    @model_validator(mode="before")
    @classmethod
    def _default_from_model_src(cls, data: Any) -> Any:
        src = data.get("model_src") if isinstance(data, dict) else None
        if isinstance(src, dict) and src and not data.get("model_id") \
                and not data.get("model_uri"):
            hub = "huggingface" if "huggingface" in src else next(iter(src))
            entry = src[hub] if isinstance(src[hub], dict) else {}
            data = dict(data, model_hub=hub, model_id=entry.get("model_id"),
                        model_revision=entry.get("model_revision"))
        return data

    @field_validator("model_src")
    @classmethod
    def _check_src_hubs(cls, v: Dict[str, HubCopy]) -> Dict[str, HubCopy]:
        bad = [h for h in v if h not in KNOWN_HUBS]
        if bad:
            raise ValueError(f"model_src hubs must be among {list(KNOWN_HUBS)}, got {bad}")
        return v

    def hubs(self) -> List[str]:
        """The hubs this family lists weights on: ``model_hub`` (when it has a
        ``model_id``), then the keys of ``model_src``."""
        own = [self.model_hub] if self.model_id else []
        return list(dict.fromkeys(own + list(self.model_src)))

    def weights_on(self, hub: str) -> Tuple[Optional[str], Optional[str]]:
        """``(model_id, model_revision)`` a download from ``hub`` fetches: the hub's
        ``model_src`` entry, else the family's own ``model_id`` tried on that hub (a
        custom model whose id is the same on every hub)."""
        copy = self.model_src.get(hub)
        if copy is not None:
            return copy.model_id, copy.model_revision
        return self.model_id, self.model_revision

    @field_validator("model_ability")
    @classmethod
    def _check_ability(cls, v: List[str]) -> List[str]:
        return check_abilities(v, cls.KNOWN_ABILITIES)

    @model_validator(mode="after")
    def _check_source(self) -> Any:
        if not self.model_id and not self.model_uri:
            raise ValueError("give model_uri (file:///abs/path) or model_id (a hub id)")
        return self

"""The model registry: builtin families plus custom registrations, per model type.

Pure Python (no actors), owned by the SupervisorActor. Custom registrations follow
Xinference's "Custom Models" documentation; ``persist=True`` writes the JSON to
``XINFERENCE_HOME/model/<type>/<name>.json``, loaded again at start-up.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Type

from pydantic import BaseModel, ValidationError

from ..constants import xinference_model_dir
from ..errors import (
    ConflictError,
    InvalidRequestError,
    RegistrationNotFoundError,
    XinferenceError,
)
from ..fileio import atomic_write
from .custom_family import KNOWN_HUBS
from .options import json_object

logger = logging.getLogger(__name__)

# Canonical model type names, as the REST paths and the CLI's --model-type spell them.
MODEL_TYPES = ("LLM", "embedding", "rerank", "image", "audio", "video")


def canonical_model_type(model_type: str) -> str:
    """``"llm"`` → ``"LLM"``, ``"Embedding"`` → ``"embedding"``.

    Raises:
        InvalidRequestError: not one of :data:`MODEL_TYPES`.
    """
    for t in MODEL_TYPES:
        if t.lower() == str(model_type).lower():
            return t
    raise InvalidRequestError(f"Unknown model_type {model_type!r}; one of {list(MODEL_TYPES)}")


def format_validation_error(e: ValidationError) -> str:
    """One line per failed rule: ``field.path: message``."""
    parts = []
    for err in e.errors():
        loc = ".".join(str(x) for x in err.get("loc", ())) or "model"
        msg = err.get("msg", "invalid")
        if msg.startswith("Value error, "):
            msg = msg[len("Value error, "):]
        parts.append(f"{loc}: {msg}")
    return "; ".join(parts)


def family_hubs(fam: Any) -> set:
    """The hubs a family's weights are published on: each spec's ``model_hub`` (LLM and
    sentence-model specs) or the family's own and its ``model_src`` hubs (image, audio,
    video)."""
    specs = getattr(fam, "model_specs", None)
    if specs:
        return {getattr(s, "model_hub", "huggingface") for s in specs}
    if hasattr(fam, "hubs"):
        return set(fam.hubs()) or {fam.model_hub}
    return {getattr(fam, "model_hub", "huggingface")}


class ModelRegistry:
    """Builtin and custom families for each model type.

    ``schemas`` maps a model type to its pydantic family class; ``builtins`` maps it to a
    function returning ``{model_name: family}``. Types absent from ``schemas`` cannot be
    registered yet (their engines are not built).
    """

    def __init__(self, schemas: Dict[str, Type[BaseModel]],
                 builtins: Dict[str, Callable[[], Dict[str, BaseModel]]]):
        self._schemas = schemas
        self._builtins = builtins
        self._custom: Dict[str, Dict[str, BaseModel]] = {t: {} for t in MODEL_TYPES}
        # (type, name) -> the file a persisted registration lives in.
        self._files: Dict[tuple, Path] = {}

    # ---- lookup ---------------------------------------------------------------------------
    def builtin(self, model_type: str) -> Dict[str, BaseModel]:
        fn = self._builtins.get(model_type)
        return fn() if fn else {}

    def get(self, model_type: str, model_name: str) -> BaseModel:
        """The family named ``model_name``.

        Raises:
            RegistrationNotFoundError: neither builtin nor custom; the message lists a few
            names that exist.
        """
        model_type = canonical_model_type(model_type)
        fam = self._custom[model_type].get(model_name) or self.builtin(model_type).get(model_name)
        if fam is None:
            names = sorted(set(self.builtin(model_type)) | set(self._custom[model_type]))
            raise RegistrationNotFoundError(
                f"Model {model_name!r} is not registered as {model_type}; registered: {names}"
            )
        return fam

    def find_type(self, model_name: str) -> Optional[str]:
        """The model type under which ``model_name`` is registered, if any."""
        for t in MODEL_TYPES:
            if model_name in self._custom[t] or model_name in self.builtin(t):
                return t
        return None

    def list(self, model_type: str, detailed: bool = False,
             abilities: Optional[List[str]] = None, hub: Optional[str] = None
             ) -> List[Dict[str, Any]]:
        """``[{"model_name", "is_builtin"}]`` (plus the family when ``detailed``), only the
        families with every ability in ``abilities`` and, with ``hub``, only those with
        weights on that hub (a spec, or the family itself, whose ``model_hub`` is ``hub``).

        Raises:
            InvalidRequestError: ``hub`` is not a known hub.
        """
        model_type = canonical_model_type(model_type)
        if hub is not None and hub not in KNOWN_HUBS:
            raise InvalidRequestError(f"hub must be one of {list(KNOWN_HUBS)}, got {hub!r}")
        wanted = {a.lower() for a in abilities or []}
        rows = []
        for builtin, fams in ((True, self.builtin(model_type)),
                              (False, self._custom[model_type])):
            for name, fam in fams.items():
                have = {a.lower() for a in getattr(fam, "model_ability", None) or []}
                if not wanted <= have or (hub and hub not in family_hubs(fam)):
                    continue
                row: Dict[str, Any] = {"model_name": name, "is_builtin": builtin}
                if detailed:
                    row.update(fam.model_dump())
                rows.append(row)
        return rows

    def builtin_type(self, model_name: str) -> Optional[str]:
        """The model type of the builtin family named ``model_name``, if any."""
        for t in MODEL_TYPES:
            if model_name in self.builtin(t):
                return t
        return None

    def is_custom(self, model_type: str, model_name: str) -> bool:
        return model_name in self._custom[canonical_model_type(model_type)]

    # ---- custom registrations -----------------------------------------------------------
    def parse(self, model_type: str, model: Any) -> BaseModel:
        """Validate a custom family given as a JSON string or a dict.

        Raises:
            InvalidRequestError: bad JSON, an unsupported type, or a schema violation (the
            message names each field and rule).
        """
        model_type = canonical_model_type(model_type)
        schema = self._schemas.get(model_type)
        if schema is None:
            raise InvalidRequestError(f"Registering {model_type} models is not supported yet")
        model = json_object(model, "Invalid model JSON",
                            "The model definition must be a JSON object")
        try:
            return schema.model_validate(model)
        except ValidationError as e:
            raise InvalidRequestError(
                f"Invalid {model_type} model definition: {format_validation_error(e)}"
            ) from None

    def register(self, model_type: str, model: Any, persist: bool = False) -> BaseModel:
        """Add a custom family; with ``persist`` also write it to disk (atomically: on any
        error nothing is left in memory or on disk).

        Raises:
            InvalidRequestError: invalid definition, or the name is a builtin model's.
            ConflictError: a custom model of that name exists.
        """
        model_type = canonical_model_type(model_type)
        fam = self.parse(model_type, model)
        name = fam.model_name
        builtin_type = self.builtin_type(name)
        if builtin_type is not None:
            raise InvalidRequestError(
                f"model_name {name!r} is the name of a builtin {builtin_type} model; "
                "choose another model_name"
            )
        if name in self._custom[model_type]:
            raise ConflictError(
                f"A custom {model_type} model named {name!r} is already registered; "
                "unregister it first or choose another model_name"
            )
        if persist:
            # Written before the in-memory insert: a failed write leaves nothing behind.
            self._files[(model_type, name)] = self._write(model_type, fam)
        self._custom[model_type][name] = fam
        return fam

    def unregister(self, model_type: str, model_name: str) -> None:
        """Remove a custom family and its persisted file.

        Raises:
            InvalidRequestError: the model is builtin.
            RegistrationNotFoundError: no custom model of that name.
        """
        model_type = canonical_model_type(model_type)
        if model_name not in self._custom[model_type]:
            if model_name in self.builtin(model_type):
                raise InvalidRequestError(f"Model {model_name!r} is builtin; it cannot be unregistered")
            raise RegistrationNotFoundError(
                f"No custom {model_type} model named {model_name!r}"
            )
        path = self._files.pop((model_type, model_name), None) or self._path(model_type,
                                                                              model_name)
        if path.exists():
            path.unlink()
        del self._custom[model_type][model_name]

    def _path(self, model_type: str, model_name: str) -> Path:
        return xinference_model_dir() / model_type.lower() / f"{model_name}.json"

    def _write(self, model_type: str, fam: BaseModel) -> Path:
        """Write ``fam`` durably and atomically (:func:`xinference.fileio.atomic_write`);
        returns the path."""
        path = self._path(model_type, fam.model_name)
        try:
            atomic_write(path, fam.model_dump_json(indent=2, exclude_none=True))
        except OSError as e:
            raise XinferenceError(
                f"Could not persist the registration of {fam.model_name!r} to {path}: {e}"
            ) from None
        return path

    def load_persisted(self) -> int:
        """Register every ``XINFERENCE_HOME/model/<type>/*.json``; a damaged file is skipped
        with a warning. Returns how many were loaded."""
        n = 0
        for model_type in self._schemas:
            d = xinference_model_dir() / model_type.lower()
            if not d.is_dir():
                continue
            for path in sorted(d.glob("*.json")):
                try:
                    fam = self.parse(model_type, path.read_text(encoding="utf-8"))
                    if self.builtin_type(fam.model_name) is not None:
                        raise InvalidRequestError("its name is a builtin model's")
                    if fam.model_name in self._custom[model_type]:
                        raise InvalidRequestError(
                            f"{fam.model_name!r} is already registered from "
                            f"{self._files.get((model_type, fam.model_name))}"
                        )
                    self._custom[model_type][fam.model_name] = fam
                    self._files[(model_type, fam.model_name)] = path
                    n += 1
                except Exception as e:
                    logger.warning("Skipping damaged model registration %s: %s", path, e)
        return n

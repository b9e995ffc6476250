"""The picklable loader every model type hands from the supervisor to its model process.

A launch plan (``ModelTypeHandler.plan``) returns a :class:`ModelLoader` subclass; it is
pickled by xoscar from the supervisor to the worker and on into the model's sub-pool
process, where ``ModelActor`` calls :meth:`ModelLoader.load`. Only that call imports the
engine (and with it torch, diffusers, faster-whisper, ...): building a loader imports
nothing heavy.

Each model type subclasses it with the fields its weights are found by (a spec, a weight
format) and its own :meth:`~ModelLoader.resolve_path`; :meth:`~ModelLoader.load` is shared.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any, ClassVar, Dict, List, Optional, Tuple

from ..constants import default_model_hub
from ..errors import InvalidRequestError
from .cache_manager import resolve_model_path
from .registry import family_hubs


def import_class(class_path: str):
    """The class named by ``"package.module:Class"`` (imports the module)."""
    module, _, name = class_path.partition(":")
    return getattr(importlib.import_module(module), name)


def weights_on_hub(source: Any, hub: Optional[str] = None
                   ) -> Tuple[str, Optional[str], Optional[str]]:
    """``(hub, model_id, model_revision)`` a download of ``source`` (a spec or a family)
    fetches: ``hub`` or the source's own ``model_hub``; the id the source lists for that
    hub (a family's ``model_src`` entry, see
    :meth:`~xinference.model.custom_family.CustomFamilyBase.weights_on`), else its own
    ``model_id``."""
    hub = hub or getattr(source, "model_hub", None) or "huggingface"
    weights_on = getattr(source, "weights_on", None)
    if weights_on is not None:
        return (hub, *weights_on(hub))
    return hub, source.model_id, source.model_revision


def spec_on_hub(specs: List[Any], chosen: Any, hub: Optional[str]) -> Any:
    """The spec among ``specs`` with ``chosen``'s format whose ``model_hub`` is ``hub``
    (``chosen`` itself when it is on that hub, when ``hub`` is None or when no spec of
    that format is listed there)."""
    if not hub or getattr(chosen, "model_hub", None) == hub:
        return chosen
    return next((s for s in specs if s.model_hub == hub
                 and s.model_format == chosen.model_format), chosen)


def preferred_hub(family: Any, download_hub: Optional[str]) -> Optional[str]:
    """The hub a launch of a non-LLM ``family`` downloads from: ``download_hub`` when
    given, else the server's ``XINFERENCE_MODEL_SRC`` when the family lists weights there
    (:func:`~xinference.model.registry.family_hubs`), else None (the family's own hub).

    Raises:
        InvalidRequestError: ``XINFERENCE_MODEL_SRC`` names an unknown hub.
    """
    if download_hub:
        return download_hub
    try:
        hub = default_model_hub()
    except ValueError as e:  # a misconfigured server: say so on every launch
        raise InvalidRequestError(str(e)) from None
    return hub if hub in family_hubs(family) else None


@dataclass
class ModelLoader:
    """Launch parameters of one replica (picklable).

    Attributes:
        model_uid: the model's uid.
        family: the model's family (builtin or custom registration), carried whole so the
            worker needs no registry.
        engine_class: the engine as ``"module:Class"``; imported only by :meth:`load`.
        model_path: an explicit local path of the weights (``model_path`` of the launch).
        kwargs: the engine's launch options, already checked and parsed by the plan.

    Subclasses add their own fields as keyword-only (``field(kw_only=True)``), so the
    positional order of these five stays the same for every type.
    """

    #: set ``OMP_WAIT_POLICY=PASSIVE`` before the engine imports torch (see
    #: :func:`~xinference.model.embedding.engine_utils.prepare_torch_env`)
    uses_torch: ClassVar[bool] = False

    model_uid: str
    family: Any
    engine_class: str
    model_path: Optional[str] = None
    kwargs: Dict[str, Any] = field(default_factory=dict)
    #: the ``download_hub`` launch option (None: the spec's / family's ``model_hub``)
    download_hub: Optional[str] = None

    def resolve_path(self) -> str:
        """Local path of the weights (a directory or one file); see
        :func:`~xinference.model.cache_manager.resolve_model_path`.

        Raises:
            ModelLoadError: the files are neither local nor downloadable.
        """
        raise NotImplementedError

    def weights_source(self) -> Any:
        """The spec or family whose weights this replica loads (the family itself for
        types with one source; sentence models pick a spec)."""
        return self.family

    def weights_description(self) -> Dict[str, Any]:
        """``{"model_hub", "model_id"}`` the weights come from (for ``GET
        /v1/models/{uid}``); empty for weights given only by ``model_uri``."""
        src = self.weights_source()
        if not getattr(src, "model_id", None):
            return {}
        hub, model_id, _ = weights_on_hub(src, self.download_hub)
        return {"model_hub": hub, "model_id": model_id}

    def _resolve(self, source: Any, model_format: str, size: str = "0",
                 file_name: Optional[str] = None) -> str:
        """:func:`resolve_model_path` for this model with the hub and local fields
        (``model_id``, ``model_uri``, ``package``, ``package_subdir``, ``model_revision``)
        of ``source``, a spec or a family; the hub is ``download_hub`` or the source's
        own, and the id the one ``source`` lists for that hub (:func:`weights_on_hub`)."""
        hub, model_id, revision = weights_on_hub(source, self.download_hub)
        return resolve_model_path(
            model_name=self.family.model_name, model_format=model_format, size=size,
            model_id=model_id, file_name=file_name, model_uri=source.model_uri,
            model_path=self.model_path, package=source.package,
            package_subdir=getattr(source, "package_subdir", None),
            model_revision=revision, model_hub=hub,
        )

    def build(self, cls, path: str):
        """The engine object, not yet loaded: ``cls(model_uid, family, path, **kwargs)``."""
        return cls(self.model_uid, self.family, path, **self.kwargs)

    def load(self):
        """Prepare the process, resolve the files, import, build and load the engine;
        returns the loaded engine. Runs inside the model process.

        Raises:
            ModelLoadError: the weights cannot be found (or the engine's own load errors).
        """
        if self.uses_torch:
            from .embedding.engine_utils import prepare_torch_env

            prepare_torch_env()
        path = self.resolve_path()
        engine = self.build(import_class(self.engine_class), path)
        engine.load()
        return engine

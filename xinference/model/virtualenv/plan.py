"""Which packages a model's virtual environment holds, and whether a launch gets one.

Supervisor side (:func:`plan_for_engine` while a launch is planned; nothing is installed)
and worker side (:func:`resolve_requirements` / :func:`resolve_excludes`: markers such as
``has_cuda`` and ``#system_<pkg>#`` host versions resolved for that machine; :func:`env_key`
names the environment). See :mod:`xinference.model.virtualenv` for the whole picture.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import sys
from dataclasses import dataclass
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple

from ...constants import XINFERENCE_ENV_ENABLE_VIRTUAL_ENV
from ...errors import InvalidRequestError

#: what the model-process modules import (``xinference.core.model``, ``model.loader``,
#: chat templates, constraints, downloads); measured, see doc/virtualenv.md
MODEL_PROCESS_PACKAGES: Tuple[str, ...] = (
    "xoscar", "pydantic", "jinja2", "jsonschema", "huggingface_hub", "tqdm", "psutil",
    "orjson",  # the ModelActor encodes stream chunks as SSE bytes (ModelActor.next_sse)
)

#: distributions pinned to the worker's own version: their objects are pickled between the
#: worker and the model process
HOST_PINNED: Tuple[str, ...] = ("xoscar", "pydantic")


def _canonical(name: str) -> str:
    from packaging.utils import canonicalize_name

    return canonicalize_name(name)


def requirement_name(req: str) -> str:
    """The canonical distribution name of a requirement string (``"Foo_Bar>=1; x"`` ->
    ``"foo-bar"``; ``"#system_torch#"`` -> ``"torch"``).

    Raises:
        InvalidRequestError: not a requirement (PEP 508) string.
    """
    from packaging.requirements import InvalidRequirement, Requirement

    part = req.split(";", 1)[0].strip()
    if part.startswith("#system_") and part.endswith("#"):
        return _canonical(part[len("#system_"):-1])
    try:
        return _canonical(Requirement(part).name)
    except InvalidRequirement as e:
        raise InvalidRequestError(f"Invalid package requirement {req!r}: {e}") from None


def merge_requirements(*groups: Iterable[str]) -> List[str]:
    """One requirement list from several; an entry replaces an earlier one with the same
    distribution name (so a launch's ``virtual_env_packages`` override the engine's, and
    those the base list). Entries with environment markers are kept side by side (the
    marker decides later); order of first appearance is kept.

    Raises:
        InvalidRequestError: an entry is not a requirement string.
    """
    out: Dict[Tuple[str, str], str] = {}
    for group in groups:
        for req in group:
            if not isinstance(req, str) or not req.strip():
                raise InvalidRequestError(f"Invalid package requirement {req!r}")
            req = req.strip()
            name = requirement_name(req)
            marker = req.split(";", 1)[1].strip() if ";" in req else ""
            if not marker:  # an unconditional entry replaces every entry of that name
                for k in [k for k in out if k[0] == name]:
                    del out[k]
            out[(name, marker)] = req
    return list(out.values())


def base_requirements() -> List[str]:
    """What every environment gets for the model process itself: :data:`HOST_PINNED` at the
    worker's versions, the rest of :data:`MODEL_PROCESS_PACKAGES` with the project's own
    version bounds (from its installed metadata, bare names when it has none)."""
    from importlib import metadata

    bounds: Dict[str, str] = {}
    try:
        for req in metadata.requires("xinference") or []:
            if ";" not in req:
                bounds[requirement_name(req)] = req
    except metadata.PackageNotFoundError:
        pass
    out = []
    for name in MODEL_PROCESS_PACKAGES:
        if name in HOST_PINNED:
            out.append(f"{name}=={metadata.version(name)}")
        else:
            out.append(bounds.get(_canonical(name), name))
    return out


@functools.lru_cache(maxsize=1)
def _packages_distributions() -> Dict[str, List[str]]:
    from importlib import metadata

    return metadata.packages_distributions()


def host_requirements(import_names: Iterable[str]) -> List[str]:
    """The distributions that provide ``import_names`` (an engine's ``requires``) as
    ``#system_<dist>#`` placeholders: pinned to the versions installed here when the
    environment is made. A name no distribution provides here is kept as it is."""
    dists = _packages_distributions()
    out = []
    for mod in import_names:
        for dist in dists.get(mod, [mod]):
            out.append(f"#system_{dist}#")
    return out


def virtualenv_enabled_by_default() -> bool:
    """The server-wide default for engines that declare no packages:
    ``$XINFERENCE_ENABLE_VIRTUAL_ENV`` (``1``/``true``/``yes``; ``--enable-virtual-env`` of
    ``xinference-local`` and ``xinference-worker`` sets it). Read by the worker."""
    return os.environ.get(XINFERENCE_ENV_ENABLE_VIRTUAL_ENV, "").strip().lower() in (
        "1", "true", "yes", "on")


@dataclass(frozen=True)
class VirtualEnvPlan:
    """What a launch asks of its environment (picklable; the supervisor makes it while it
    plans the launch, the worker decides, resolves and creates it).

    The full requirement list (:attr:`requirements`) is only computed where it is needed
    (the worker, when it uses an environment): it reads the installed distributions
    (about a second on a busy machine), which every launch's planning should not pay.

    Attributes:
        engine_packages: the engine's declared packages (``EngineSpec.virtualenv_packages``;
            markers such as ``has_cuda`` allowed).
        engine_requires: the engine's import names; for an engine that declares no
            packages they become ``#system_<dist>#`` (this machine's versions).
        packages: the launch's ``virtual_env_packages`` (checked requirement strings).
        enable: True / False: decided (the launch said so, the engine declares packages, or
            ``virtual_env_packages`` were given); None: the worker's server-wide default.
        engine: the engine's name, for logs.
        excludes: distribution names (markers allowed) uv must leave out although a
            package depends on them (``EngineSpec.virtualenv_excludes``; uv's
            ``--excludes``): vLLM's CPU build pulls CUDA torchvision wheels that break
            imports against the CPU torch.
    """

    engine_packages: Tuple[str, ...] = ()
    engine_requires: Tuple[str, ...] = ()
    packages: Tuple[str, ...] = ()
    enable: Optional[bool] = None
    engine: str = ""
    excludes: Tuple[str, ...] = ()

    @property
    def requirements(self) -> List[str]:
        """Requirement strings, markers unresolved: :func:`base_requirements`, then the
        engine's packages (or its requires at this machine's versions), then the launch's
        ``virtual_env_packages``, a later entry replacing an earlier one of the same
        name; see :func:`resolve_requirements`."""
        engine_part = list(self.engine_packages) or host_requirements(self.engine_requires)
        return merge_requirements(base_requirements(), engine_part, self.packages)

    def wanted(self, server_default: bool) -> bool:
        """Whether the launch runs in an environment on a worker with ``server_default``."""
        return server_default if self.enable is None else self.enable


def plan_virtualenv(engine_name: str, engine_packages: Sequence[str],
                    engine_requires: Sequence[str], enable_virtual_env: Optional[bool] = None,
                    virtual_env_packages: Optional[Sequence[str]] = None, *,
                    engine_excludes: Sequence[str] = ()) -> Optional[VirtualEnvPlan]:
    """Decide (as far as the supervisor can) whether a launch runs in a virtual environment,
    and with which packages; nothing is installed here.

    - ``enable_virtual_env`` given: it decides;
    - else an engine that declares ``engine_packages`` gets one (it cannot run in the
      project's environment), and so does a launch with ``virtual_env_packages``;
    - else the worker's server-wide default decides (``--enable-virtual-env``).

    An engine without declared packages gets its ``engine_requires`` (import names) pinned
    to the versions installed here. Returns None when no environment can be used.

    Raises:
        InvalidRequestError: ``virtual_env_packages`` with ``enable_virtual_env=false``, not
        a list of requirement strings, or a bad ``enable_virtual_env``.
    """
    from ..options import flag

    if enable_virtual_env is not None:
        enable_virtual_env = flag("enable_virtual_env", enable_virtual_env)
    if virtual_env_packages is not None and (
            isinstance(virtual_env_packages, str)
            or not isinstance(virtual_env_packages, (list, tuple))):
        raise InvalidRequestError("'virtual_env_packages' must be a list of package "
                                  f"requirement strings, got {virtual_env_packages!r}")
    enable = enable_virtual_env
    if enable is None and (engine_packages or virtual_env_packages):
        enable = True
    if enable is False:
        if virtual_env_packages:
            raise InvalidRequestError(
                "'virtual_env_packages' needs a virtual environment; the launch has "
                "enable_virtual_env=false")
        return None
    packages = tuple(merge_requirements(virtual_env_packages or []))  # checked here: 400
    for x in engine_excludes:
        requirement_name(x)  # a bad table entry fails here, not in uv
    return VirtualEnvPlan(tuple(engine_packages), tuple(engine_requires), packages, enable,
                          engine_name, tuple(engine_excludes))


def plan_for_engine(class_path: str, enable_virtual_env: Optional[bool] = None,
                    virtual_env_packages: Optional[Sequence[str]] = None,
                    ) -> Optional[VirtualEnvPlan]:
    """:func:`plan_virtualenv` for the engine whose class is ``class_path`` (a loader's
    ``engine_class``), with its declared packages, requires and excludes from the engine
    tables (:func:`engine_environment`). What the supervisor calls for every launch, and
    what a script that prepares an engine's environment ahead of time should call (same
    plan, same key)."""
    desc = _engine_description(class_path)
    return plan_virtualenv(*engine_environment(class_path), enable_virtual_env,
                           virtual_env_packages,
                           engine_excludes=tuple(desc.virtualenv_excludes) if desc else ())


def marker_environment(has_cuda: bool) -> Dict[str, Any]:
    """The variables markers are evaluated with: PEP 508's plus xoscar's ``has_cuda``,
    ``cuda_version``, ``has_npu`` (from the worker's GPU list, without importing torch)."""
    from packaging.markers import default_environment

    env: Dict[str, Any] = dict(default_environment())
    env.update(has_cuda=has_cuda, cuda_version=None, cuda_arch=None, has_npu=False)
    return env


def resolve_requirements(plan: VirtualEnvPlan, has_cuda: bool) -> List[str]:
    """The plan's requirements for this machine: entries whose marker is false dropped,
    markers removed, ``#system_<pkg>#`` replaced by ``pkg==<installed version>``.

    Raises:
        InvalidRequestError: a marker that cannot be evaluated.
    """
    return _resolve(plan.requirements, has_cuda)


def _resolve(requirements: Iterable[str], has_cuda: bool) -> List[str]:
    from packaging.markers import Marker
    from xoscar.virtualenv.core import eval_custom_marker, is_custom_marker

    env = marker_environment(has_cuda)
    out = []
    for req in requirements:
        part, _, marker = req.partition(";")
        part, marker = part.strip(), marker.strip()
        if marker:
            try:
                if is_custom_marker(marker):
                    keep = eval_custom_marker(marker, env)
                else:
                    keep = Marker(marker).evaluate({k: str(v) for k, v in env.items()})
            except Exception as e:
                raise InvalidRequestError(
                    f"Cannot evaluate the marker of {req!r}: {e}") from None
            if not keep:
                continue
        out.append(_host_version(part))
    return merge_requirements(out)


def resolve_excludes(plan: VirtualEnvPlan, has_cuda: bool) -> List[str]:
    """The plan's excludes for this machine: canonical names of those whose marker holds.

    Raises:
        InvalidRequestError: a marker that cannot be evaluated.
    """
    names = _resolve(plan.excludes, has_cuda)
    return sorted({requirement_name(n) for n in names})


def _host_version(req: str) -> str:
    """``#system_<pkg>#`` -> ``pkg==<installed version>``, local label kept (the CPU torch
    here is ``2.13.0+cpu``: xoscar's own resolver drops ``+cpu``, and ``torch==2.13.0`` may
    resolve to the CUDA build on PyPI); other requirements unchanged; a package not
    installed here stays unpinned."""
    from importlib import metadata

    if not (req.startswith("#system_") and req.endswith("#")):
        return req
    name = req[len("#system_"):-1]
    try:
        return f"{name}=={metadata.version(name)}"
    except metadata.PackageNotFoundError:
        return name


def python_version() -> str:
    """``major.minor.micro`` of this interpreter (environments are made for it)."""
    return ".".join(map(str, sys.version_info[:3]))


def env_key(requirements: Sequence[str], python: Optional[str] = None,
            excludes: Sequence[str] = ()) -> str:
    """The directory name of an environment: 16 hex digits of the SHA-256 of its sorted
    requirement list, its excludes and the Python version (same packages, same
    environment)."""
    data: Dict[str, Any] = {"python": python or python_version(),
                            "packages": sorted(requirements)}
    if excludes:
        data["excludes"] = sorted(excludes)
    blob = json.dumps(data, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


#: modules whose module-level engine tables (dicts of :class:`~xinference.model.engine.
#: EngineSpec`, or single ones) :func:`engine_environment` searches by class path
ENGINE_TABLE_MODULES = ("xinference.model.llm.engines", "xinference.model.audio.launch",
                        "xinference.model.image.launch", "xinference.model.embedding.launch",
                        "xinference.model.video.launch")


def _engine_description(class_path: str) -> Any:
    """The :class:`~xinference.model.engine.EngineSpec` whose class is ``class_path`` in
    the engine tables, or None."""
    import importlib

    from ..engine import EngineSpec

    for mod_name in ENGINE_TABLE_MODULES:
        try:
            mod = importlib.import_module(mod_name)
        except ImportError:
            continue
        for value in list(vars(mod).values()):
            for desc in (value.values() if isinstance(value, dict) else (value,)):
                if isinstance(desc, EngineSpec) and desc.class_path == class_path:
                    return desc
    return None


def engine_environment(class_path: str) -> Tuple[str, Tuple[str, ...], Tuple[str, ...]]:
    """``(name, virtualenv_packages, requires)`` of the engine whose class is
    ``class_path`` (a loader's ``engine_class``), from the engine tables; an engine found
    in none gets ``(class name, (), ())``: its environment holds the model-process packages
    and the launch's ``virtual_env_packages`` only. (Its excludes: see
    :func:`plan_for_engine`.)"""
    desc = _engine_description(class_path)
    if desc is None:
        return class_path.rsplit(":", 1)[-1], (), ()
    return desc.name, tuple(desc.virtualenv_packages), tuple(desc.requires)

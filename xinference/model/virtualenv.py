"""Virtual environments per engine and per model, made with ``uv`` through
``xoscar.virtualenv``.

An engine whose packages conflict with the project's (vLLM pins its own transformers and
fastapi) runs its model process on the Python of its own environment. This module decides
*which* packages such an environment holds (supervisor side, at plan time, nothing installed:
:func:`plan_virtualenv`), resolves that list on the worker (markers such as ``has_cuda``:
:func:`resolve_requirements`) and creates or reuses the environment
(:func:`ensure_virtualenv`, blocking: the worker runs it in a thread).

What an environment holds:

- the project itself, without its dependencies: a symlink ``site-packages/xinference`` to
  the package the worker runs, so the model process runs exactly the worker's code (actor
  classes and loaders cross the process boundary by reference) and nothing of the gateway
  (fastapi, uvicorn, ...) is installed;
- what a model process imports (:data:`MODEL_PROCESS_PACKAGES`, measured by importing the
  model-process modules and listing the distributions they load), ``xoscar`` and
  ``pydantic`` pinned to the worker's versions (pickled objects cross between the two);
- the engine's packages (``EngineSpec.virtualenv_packages``), or, for an engine that
  declares none, its ``requires`` pinned to the versions installed here
  (``#system_<pkg>#``, xoscar's placeholder);
- the launch's ``virtual_env_packages``; a later entry replaces an earlier one of the same
  distribution name.

Environments live under ``XINFERENCE_HOME/virtualenv/<key>``, ``key`` a hash of the resolved
requirement list and the Python version. The marker file :data:`MARKER` is written last:
a directory without it (an install that failed, was cancelled or was killed) is never
trusted: the next launch removes and re-creates it. Package sources: ``uv`` gets the
indexes, find-links and constraints of pip's configuration here (``pip config list``),
unless ``UV_*`` index variables are set, in which case uv's own configuration applies.
"""

from __future__ import annotations

import collections
import hashlib
import json
import logging
import os
import shlex
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Tuple

from ..constants import XINFERENCE_ENV_ENABLE_VIRTUAL_ENV, xinference_home
from ..errors import ConflictError, InvalidRequestError, ModelLoadError, ModelNotFoundError

logger = logging.getLogger(__name__)

#: the file written last into a finished environment (its description, JSON)
MARKER = ".xinference-env.json"

#: what the model-process modules import (``xinference.core.model``, ``model.loader``,
#: chat templates, constraints, downloads); measured, see doc/virtualenv.md
MODEL_PROCESS_PACKAGES: Tuple[str, ...] = (
    "xoscar", "pydantic", "jinja2", "jsonschema", "huggingface_hub", "tqdm", "psutil",
)

#: distributions pinned to the worker's own version: their objects are pickled between the
#: worker and the model process
HOST_PINNED: Tuple[str, ...] = ("xoscar", "pydantic")

#: uv variables that, when set, mean "uv is configured here": pip's sources are not passed
UV_SOURCE_VARS = ("UV_INDEX_URL", "UV_DEFAULT_INDEX", "UV_INDEX", "UV_EXTRA_INDEX_URL",
                  "UV_FIND_LINKS")

#: lines of the installer's output quoted in a failed launch's error
ERROR_TAIL_LINES = 15


def virtualenv_root() -> Path:
    """``XINFERENCE_HOME/virtualenv``: one directory per environment."""
    return xinference_home() / "virtualenv"


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


def host_requirements(import_names: Iterable[str]) -> List[str]:
    """The distributions that provide ``import_names`` (an engine's ``requires``) as
    ``#system_<dist>#`` placeholders: pinned to the versions installed here when the
    environment is made. A name no distribution provides here is kept as it is."""
    from importlib import metadata

    dists = metadata.packages_distributions()
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

    Attributes:
        requirements: requirement strings, markers unresolved (``"vllm==0.32.0;
            has_cuda"``); see :func:`resolve_requirements`.
        enable: True / False: decided (the launch said so, the engine declares packages, or
            ``virtual_env_packages`` were given); None: the worker's server-wide default.
        engine: the engine's name, for logs.
    """

    requirements: Tuple[str, ...]
    enable: Optional[bool] = None
    engine: str = ""

    def wanted(self, server_default: bool) -> bool:
        """Whether the launch runs in an environment on a worker with ``server_default``."""
        return server_default if self.enable is None else self.enable


def plan_virtualenv(engine_name: str, engine_packages: Sequence[str],
                    engine_requires: Sequence[str], enable_virtual_env: Optional[bool] = None,
                    virtual_env_packages: Optional[Sequence[str]] = None,
                    ) -> Optional[VirtualEnvPlan]:
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
    from .options import flag

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
    engine_part = list(engine_packages) or host_requirements(engine_requires)
    reqs = merge_requirements(base_requirements(), engine_part, virtual_env_packages or [])
    return VirtualEnvPlan(tuple(reqs), enable, engine_name)


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
    from packaging.markers import Marker
    from xoscar.virtualenv.core import eval_custom_marker, is_custom_marker

    env = marker_environment(has_cuda)
    out = []
    for req in plan.requirements:
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


def env_key(requirements: Sequence[str], python: Optional[str] = None) -> str:
    """The directory name of an environment: 16 hex digits of the SHA-256 of its sorted
    requirement list and Python version (same packages, same environment)."""
    blob = json.dumps({"python": python or python_version(),
                       "packages": sorted(requirements)}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def pip_source_options() -> Dict[str, List[str]]:
    """pip's package sources here, for uv: ``{"index_url": [...], "extra_index_url": [...],
    "find_links": [...], "trusted_host": [...], "constraint": [...]}``, read with
    ``python -m pip config list`` (files and ``PIP_*`` variables merged as pip does; the
    later scope wins). Empty when any of :data:`UV_SOURCE_VARS` is set or pip is missing.
    """
    if any(os.environ.get(v) for v in UV_SOURCE_VARS):
        return {}
    try:
        text = subprocess.run([sys.executable, "-m", "pip", "config", "list"],
                              capture_output=True, text=True, timeout=30).stdout
    except Exception:
        return {}
    order = {"global": 0, "install": 1, ":env:": 2}
    found: Dict[str, Tuple[int, List[str]]] = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if not sep or "." not in key:
            continue
        scope, _, name = key.rpartition(".")
        name = name.replace("-", "_")
        if name not in ("index_url", "extra_index_url", "find_links", "trusted_host",
                        "constraint"):
            continue
        try:
            values = shlex.split(value.strip().strip("'\"").replace("\\n", " "))
        except ValueError:
            continue
        rank = order.get(scope, 0)
        if name not in found or rank >= found[name][0]:
            found[name] = (rank, values)
    return {k: v for k, (_, v) in found.items()}


def _manager_class():
    from xoscar.virtualenv.uv import UVVirtualEnvManager

    class IsolatedUVManager(UVVirtualEnvManager):
        """xoscar's uv manager with two changes: the environment does not see the base
        interpreter's site-packages (xoscar passes ``--system-site-packages``; the base
        Python here has 224 distributions that would leak into it), and the installer's
        output is kept (its last lines go into the launch error)."""

        def __init__(self, env_path: Path):
            super().__init__(env_path)
            self.output: collections.deque = collections.deque(maxlen=200)
            self.cancelled = threading.Event()  # set by InstallCancel

        def create_env(self, python_path: Optional[Path] = None,
                       exists: str = "ignore") -> None:
            cmd = [self._get_uv_path(), "venv", str(self.env_path), "--color", "never",
                   "--python", str(python_path or sys.executable)]
            self._run(cmd)

        def install_requirements(self, packages: List[str],
                                 sources: Dict[str, List[str]]) -> None:
            """``uv pip install`` of ``packages`` (already resolved) with pip's sources;
            every index is searched for the best version, as pip does
            (``--index-strategy unsafe-best-match``). Bytecode is compiled at install
            (``--compile-bytecode``): uv does not by default, and a model process that
            cannot write ``__pycache__`` (``PYTHONDONTWRITEBYTECODE``, read-only installs)
            would compile xoscar, numpy and pandas from source at every start (measured:
            5-6 s instead of 1.7-2.7 s to import xoscar's pool)."""
            cmd = [self._get_uv_path(), "pip", "install", "-p", str(self.env_path),
                   "--color", "never", "--compile-bytecode"]
            index = sources.get("index_url") or []
            self._append_source_options(
                cmd, index_url=index[0] if index else None,
                extra_index_url=sources.get("extra_index_url"),
                find_links=sources.get("find_links"),
                trusted_host=sources.get("trusted_host"),
                index_strategy="unsafe-best-match")
            for c in sources.get("constraint") or []:
                cmd += ["--constraint", c]
            self._run(cmd + list(packages))

        def _run(self, cmd: List[str]) -> None:
            logger.info("Running %s", " ".join(cmd))
            if self.cancelled.is_set():
                raise subprocess.CalledProcessError(-15, cmd)
            self._install_process = proc = subprocess.Popen(
                cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                errors="replace")
            if self.cancelled.is_set():  # cancelled while it started
                proc.terminate()
            assert proc.stdout is not None
            for line in proc.stdout:
                line = line.rstrip()
                self.output.append(line)
                logger.debug("uv: %s", line)
            code = proc.wait()
            self._install_process = None
            if code != 0:
                raise subprocess.CalledProcessError(code, cmd)

    return IsolatedUVManager


@dataclass
class VirtualEnvInfo:
    """A finished environment: its key, path, Python, requirements, and whether this call
    made it (``created``) and how long that took."""

    key: str
    path: str
    python: str
    requirements: List[str]
    created: bool
    seconds: float


class InstallCancel:
    """Stops an environment being made from another thread: :meth:`cancel` kills the
    running ``uv`` process; the making thread then removes the half-made directory."""

    def __init__(self):
        self.cancelled = threading.Event()
        self.manager = None

    def cancel(self) -> None:
        self.cancelled.set()
        if self.manager is not None:
            self.manager.cancel_install()  # xoscar: terminate uv and wait for it


def _project_package_dir() -> Path:
    import xinference

    return Path(xinference.__file__).resolve().parent


def _link_project(env: Path) -> None:
    """(Re)point ``site-packages/xinference`` of the environment at the worker's package."""
    import sysconfig

    site = Path(sysconfig.get_path("purelib", vars={"base": str(env)}))
    site.mkdir(parents=True, exist_ok=True)
    link, target = site / "xinference", _project_package_dir()
    if link.is_symlink() and Path(os.readlink(link)) == target:
        return
    tmp = site / f".xinference-{os.getpid()}"
    if tmp.is_symlink() or tmp.exists():
        tmp.unlink()
    tmp.symlink_to(target, target_is_directory=True)
    os.replace(tmp, link)


def read_marker(path: Path) -> Optional[Dict[str, Any]]:
    """The marker of the environment at ``path`` (None: not a finished environment)."""
    try:
        return json.loads((path / MARKER).read_text())
    except (OSError, ValueError):
        return None


def ensure_virtualenv(requirements: Sequence[str], cancel: Optional[InstallCancel] = None,
                      on_stage: Callable[[str], None] = lambda s: None) -> VirtualEnvInfo:
    """Create the environment for ``requirements`` (resolved, see
    :func:`resolve_requirements`) or reuse the finished one; blocking (run it in a thread).
    Several processes may ask for the same environment at once: an exclusive lock on
    ``<key>.lock`` lets one make it while the others wait.

    ``on_stage`` receives what is being done ("creating virtual environment ...").

    Raises:
        ModelLoadError: uv failed (the message quotes its last output lines); nothing of the
            environment is left.
        InvalidRequestError: ``uv`` is not installed.
        RequestAbortedError: cancelled; nothing is left.
    """
    import fcntl

    from ..errors import RequestAbortedError

    requirements = sorted(requirements)  # the same set in any order is the same environment
    key = env_key(requirements)
    root = virtualenv_root()
    root.mkdir(parents=True, exist_ok=True)
    path = root / key
    start = time.monotonic()
    with open(root / f"{key}.lock", "w") as lock:
        while True:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if cancel is not None and cancel.cancelled.is_set():
                    raise RequestAbortedError("Creating the virtual environment was "
                                              "cancelled") from None
                on_stage(f"waiting for virtual environment {key} being made elsewhere")
                time.sleep(0.5)
        marker = read_marker(path)
        if marker is not None and marker.get("packages") == requirements:
            _link_project(path)
            return VirtualEnvInfo(key, str(path), marker["python"], requirements, False,
                                  time.monotonic() - start)
        if path.exists():
            logger.warning("Removing the unfinished virtual environment %s", path)
            shutil.rmtree(path, ignore_errors=True)
        manager = _manager_class()(path)
        if cancel is not None:
            manager.cancelled = cancel.cancelled
            cancel.manager = manager
        try:
            on_stage(f"creating virtual environment {key}")
            manager.create_env()
            on_stage(f"installing {len(requirements)} packages into virtual environment "
                     f"{key}")
            manager.install_requirements(requirements, pip_source_options())
            if cancel is not None and cancel.cancelled.is_set():
                raise RequestAbortedError("Creating the virtual environment was cancelled")
            _link_project(path)
            seconds = time.monotonic() - start
            python = manager.get_python_path()
            data = {"key": key, "packages": requirements, "python": python,
                    "python_version": python_version(), "created": time.time(),
                    "install_seconds": round(seconds, 2)}
            tmp = path / (MARKER + ".tmp")
            tmp.write_text(json.dumps(data, indent=1))
            os.replace(tmp, path / MARKER)  # last: only now is the environment trusted
        except BaseException as e:
            shutil.rmtree(path, ignore_errors=True)
            if cancel is not None and cancel.cancelled.is_set():
                raise RequestAbortedError(
                    "Creating the virtual environment was cancelled") from None
            if isinstance(e, FileNotFoundError) and "uv" in str(e):
                raise InvalidRequestError(
                    "Virtual environments need uv: pip install uv") from None
            if isinstance(e, subprocess.CalledProcessError):
                tail = "\n".join(list(manager.output)[-ERROR_TAIL_LINES:])
                raise ModelLoadError(
                    f"Creating the virtual environment {key} failed (uv exit code "
                    f"{e.returncode}; packages: {requirements}):\n{tail}") from None
            raise
        finally:
            if cancel is not None:
                cancel.manager = None
    logger.info("Virtual environment %s made in %.1fs", path, seconds)
    return VirtualEnvInfo(key, str(path), python, requirements, True, seconds)


def _dir_size(path: Path) -> int:
    """Bytes of the files under ``path``, each inode once (uv hard-links from its cache,
    so this is an upper bound of the disk the environment alone takes)."""
    seen, total = set(), 0
    for dirpath, _, files in os.walk(path):
        for f in files:
            try:
                st = os.lstat(os.path.join(dirpath, f))
            except OSError:
                continue
            if (st.st_dev, st.st_ino) not in seen:
                seen.add((st.st_dev, st.st_ino))
                total += st.st_size
    return total


def list_virtualenvs(in_use: Optional[Dict[str, List[str]]] = None,
                     with_size: bool = True) -> List[Dict[str, Any]]:
    """The finished environments here (``GET /v1/virtualenvs`` rows): ``key``, ``path``,
    ``packages``, ``python_version``, ``size`` (bytes), ``created`` (Unix seconds),
    ``install_seconds``, ``in_use_by`` (model uids, from ``in_use``: key -> uids)."""
    root = virtualenv_root()
    rows = []
    if not root.is_dir():
        return rows
    for path in sorted(p for p in root.iterdir() if p.is_dir()):
        marker = read_marker(path)
        if marker is None:
            continue
        rows.append({"key": path.name, "path": str(path),
                     "packages": marker.get("packages", []),
                     "python_version": marker.get("python_version"),
                     "size": _dir_size(path) if with_size else None,
                     "created": marker.get("created"),
                     "install_seconds": marker.get("install_seconds"),
                     "in_use_by": sorted((in_use or {}).get(path.name, []))})
    return rows


def check_key(key: str) -> None:
    """Raises InvalidRequestError unless ``key`` looks like :func:`env_key`'s output
    (16 lowercase hex digits), so no other path under XINFERENCE_HOME can be named."""
    if not (isinstance(key, str) and len(key) == 16
            and all(c in "0123456789abcdef" for c in key)):
        raise InvalidRequestError(f"Not a virtual environment key: {key!r}")


def remove_virtualenv(key: str, in_use: Optional[Dict[str, List[str]]] = None) -> str:
    """Delete the environment ``key`` (finished or not); returns its path.

    Raises:
        InvalidRequestError: ``key`` is not an environment key.
        ConflictError: a running model uses it (409; the message names the models).
        ModelNotFoundError: no such environment (404).
    """
    check_key(key)
    users = (in_use or {}).get(key)
    if users:
        raise ConflictError(f"Virtual environment {key} is used by running model(s) "
                            f"{sorted(users)}; terminate them first")
    path = virtualenv_root() / key
    if not path.exists():
        raise ModelNotFoundError(f"No virtual environment {key!r}")
    (path / MARKER).unlink(missing_ok=True)  # never trusted again, even if rmtree stops
    shutil.rmtree(path, ignore_errors=True)
    (virtualenv_root() / f"{key}.lock").unlink(missing_ok=True)
    return str(path)


#: modules whose module-level engine tables (dicts of engine descriptions, or single
#: descriptions) :func:`engine_environment` searches; each description has ``class_path``
#: (or ``engine_class``), ``requires`` and optionally ``virtualenv_packages``
ENGINE_TABLE_MODULES = ("xinference.model.llm.engines", "xinference.model.audio.launch",
                        "xinference.model.image.launch", "xinference.model.embedding.launch",
                        "xinference.model.rerank.launch")


def engine_environment(class_path: str) -> Tuple[str, Tuple[str, ...], Tuple[str, ...]]:
    """``(name, virtualenv_packages, requires)`` of the engine whose class is
    ``class_path`` (a loader's ``engine_class``), from the engine tables; an engine found
    in none gets ``(class name, (), ())``: its environment holds the model-process packages
    and the launch's ``virtual_env_packages`` only."""
    import importlib

    for mod_name in ENGINE_TABLE_MODULES:
        try:
            mod = importlib.import_module(mod_name)
        except ImportError:
            continue
        for value in list(vars(mod).values()):
            for desc in (value.values() if isinstance(value, dict) else (value,)):
                path = getattr(desc, "class_path", None) or getattr(desc, "engine_class", None)
                if path == class_path and isinstance(getattr(desc, "requires", None), tuple):
                    return (str(getattr(desc, "name", class_path)),
                            tuple(getattr(desc, "virtualenv_packages", ()) or ()),
                            desc.requires)
    return class_path.rsplit(":", 1)[-1], (), ()

"""Making, reusing, listing and removing the environments: ``uv`` through
``xoscar.virtualenv`` (worker side, blocking: the worker runs it in a thread). See
:mod:`xinference.model.virtualenv` for what an environment holds and where it lives.
"""

from __future__ import annotations

import collections
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
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from ...constants import XINFERENCE_ENV_VIRTUAL_ENV_DIR, xinference_home
from ...errors import ConflictError, InvalidRequestError, ModelLoadError, ModelNotFoundError
from .plan import VirtualEnvPlan, env_key, python_version, resolve_excludes, \
    resolve_requirements

logger = logging.getLogger(__name__)

#: the file written last into a finished environment (its description, JSON)
MARKER = ".xinference-env.json"

#: uv variables that, when set, mean "uv is configured here": pip's sources are not passed
UV_SOURCE_VARS = ("UV_INDEX_URL", "UV_DEFAULT_INDEX", "UV_INDEX", "UV_EXTRA_INDEX_URL",
                  "UV_FIND_LINKS")

#: lines of the installer's output quoted in a failed launch's error
ERROR_TAIL_LINES = 15


def virtualenv_root() -> Path:
    """Where the environments live, one directory each: ``$XINFERENCE_VIRTUAL_ENV_DIR``,
    else ``XINFERENCE_HOME/virtualenv``."""
    custom = os.environ.get(XINFERENCE_ENV_VIRTUAL_ENV_DIR)
    return Path(custom) if custom else xinference_home() / "virtualenv"


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

        def install_requirements(self, packages: List[str], sources: Dict[str, List[str]],
                                 excludes: Sequence[str] = ()) -> None:
            """``uv pip install`` of ``packages`` (already resolved) with pip's sources;
            every index is searched for the best version, as pip does
            (``--index-strategy unsafe-best-match``). Bytecode is compiled at install
            (``--compile-bytecode``): uv does not by default, and a model process that
            cannot write ``__pycache__`` (``PYTHONDONTWRITEBYTECODE``, read-only installs)
            would compile xoscar, numpy and pandas from source at every start (measured:
            5-6 s instead of 1.7-2.7 s to import xoscar's pool; vLLM's environment: 37 s
            instead of 12 s to import vllm, paid once at creation: 212 s instead of 33 s)."""
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
            if excludes:
                listed = self.env_path / "excludes.txt"
                listed.write_text("".join(f"{x}\n" for x in excludes))
                cmd += ["--excludes", str(listed)]
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


def project_pythonpath() -> str:
    """A directory holding only a link ``xinference`` -> the package this process runs
    (``<root>/.project/<hash of its path>/``), made on first use. A model process gets it
    first on ``PYTHONPATH`` (:func:`model_process_env`): the project without its
    dependencies, and exactly the worker's code, while the environment itself stays free of
    the project, so environments are shared safely by several installs or checkouts (a link
    inside the environment would be re-pointed by each of them in turn)."""
    import hashlib

    target = _project_package_dir()
    shim = virtualenv_root() / ".project" / hashlib.sha256(
        str(target).encode()).hexdigest()[:16]
    link = shim / "xinference"
    if not (link.is_symlink() and Path(os.readlink(link)) == target):
        shim.mkdir(parents=True, exist_ok=True)
        tmp = shim / f".xinference-{os.getpid()}-{threading.get_ident()}"
        if tmp.is_symlink() or tmp.exists():
            tmp.unlink()
        tmp.symlink_to(target, target_is_directory=True)
        os.replace(tmp, link)
    return str(shim)


def model_process_env() -> Dict[str, str]:
    """Environment variables of a model process started on an environment's Python:
    ``PYTHONPATH`` = :func:`project_pythonpath`, then this process's ``PYTHONPATH``."""
    parts = [project_pythonpath()]
    if os.environ.get("PYTHONPATH"):
        parts.append(os.environ["PYTHONPATH"])
    return {"PYTHONPATH": os.pathsep.join(parts)}


def read_marker(path: Path) -> Optional[Dict[str, Any]]:
    """The marker of the environment at ``path`` (None: not a finished environment)."""
    try:
        return json.loads((path / MARKER).read_text())
    except (OSError, ValueError):
        return None


def ensure_virtualenv(requirements: Sequence[str], cancel: Optional[InstallCancel] = None,
                      on_stage: Callable[[str], None] = lambda s: None,
                      excludes: Sequence[str] = ()) -> VirtualEnvInfo:
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

    from ...errors import RequestAbortedError

    requirements = sorted(requirements)  # the same set in any order is the same environment
    excludes = sorted(excludes)
    key = env_key(requirements, excludes=excludes)
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
        if marker is not None and marker.get("packages") == requirements \
                and marker.get("excludes", []) == excludes:
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
            manager.install_requirements(requirements, pip_source_options(), excludes)
            if cancel is not None and cancel.cancelled.is_set():
                raise RequestAbortedError("Creating the virtual environment was cancelled")
            seconds = time.monotonic() - start
            python = manager.get_python_path()
            data = {"key": key, "packages": requirements, "excludes": excludes,
                    "python": python,
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
                     "excludes": marker.get("excludes", []),
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

    The environment's lock is taken first, so one being made (by a launch here or by
    another process sharing the directory) is not pulled from under its installer. The
    empty ``<key>.lock`` file stays (removing it could let two makers lock different files).

    Raises:
        InvalidRequestError: ``key`` is not an environment key.
        ConflictError: a running model uses it, or it is being made (409; the message says
            which).
        ModelNotFoundError: no such environment (404).
    """
    import fcntl

    check_key(key)
    users = (in_use or {}).get(key)
    if users:
        raise ConflictError(f"Virtual environment {key} is used by running model(s) "
                            f"{sorted(users)}; terminate them first")
    path = virtualenv_root() / key
    if not path.exists():
        raise ModelNotFoundError(f"No virtual environment {key!r}")
    with open(virtualenv_root() / f"{key}.lock", "w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ConflictError(f"Virtual environment {key} is being made; cancel that "
                                "launch or wait for it") from None
        (path / MARKER).unlink(missing_ok=True)  # never trusted again, even if rmtree stops
        shutil.rmtree(path, ignore_errors=True)
    return str(path)


def prepare_virtualenv(plan: VirtualEnvPlan, has_cuda: bool,
                       cancel: Optional["InstallCancel"] = None,
                       on_stage: Callable[[str], None] = lambda s: None) -> "VirtualEnvInfo":
    """Resolve ``plan`` for a machine with(out) a CUDA GPU and make or reuse its
    environment (:func:`resolve_requirements`, :func:`resolve_excludes`,
    :func:`ensure_virtualenv`): the one call the worker and set-up scripts make, so both
    get the same key. Blocking; same errors as :func:`ensure_virtualenv`."""
    return ensure_virtualenv(resolve_requirements(plan, has_cuda), cancel, on_stage,
                             excludes=resolve_excludes(plan, has_cuda))

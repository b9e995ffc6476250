"""Find a model's files on this machine, or download them.

Order (DESIGN.md): explicit ``model_path`` / the spec's ``model_uri`` → the cache under
``XINFERENCE_HOME/cache/`` → weights shipped inside an installed Python package → download
from the hub by ``model_id`` (huggingface_hub, into the cache). Offline with nothing found:
:class:`ModelLoadError` naming the model id and how to point at local files.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import threading
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional
from urllib.parse import unquote, urlparse

from ..constants import MODEL_HUBS, xinference_cache_dir
from ..errors import ModelLoadError, RequestAbortedError
from .progress import DOWNLOAD_SHARE, launch_cancelled, report_progress

# Seconds to wait for a TCP connection to the hub before calling this machine offline.
XINFERENCE_ENV_HUB_PROBE_TIMEOUT = "XINFERENCE_HUB_PROBE_TIMEOUT"

logger = logging.getLogger(__name__)


def uri_to_path(uri: str) -> Path:
    """``file:///abs/path`` or ``/abs/path`` → ``Path``."""
    if uri.startswith("file://"):
        return Path(unquote(urlparse(uri).path))
    return Path(uri)


def find_file(directory: Path, file_name: str) -> Optional[Path]:
    """``directory/file_name``, matching the name case-insensitively (``q4_1`` finds
    ``Q4_1``); a ``file_name`` with folders (its path in a hub repository) is also found
    directly in ``directory`` (a package ships it flat); ``None`` when absent."""
    exact = directory / file_name
    if exact.is_file():
        return exact
    if "/" in file_name:
        return find_file(directory, file_name.rsplit("/", 1)[1])
    if directory.is_dir():
        low = file_name.lower()
        for p in directory.iterdir():
            if p.name.lower() == low and p.is_file():
                return p
    return None


def package_dir(package: str) -> Optional[Path]:
    """Directory of an installed package, found without importing it."""
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        return None
    if spec is None:
        return None
    if spec.submodule_search_locations:
        return Path(list(spec.submodule_search_locations)[0])
    if spec.origin:
        return Path(spec.origin).parent
    return None


def cache_dir_for(model_name: str, model_format: str, size: str) -> Path:
    """``XINFERENCE_HOME/cache/<model_name>-<format>-<size>b``."""
    return xinference_cache_dir() / f"{model_name}-{model_format}-{size}b"


def _offline_error(model_id: Optional[str], what: str, err: Exception) -> ModelLoadError:
    return ModelLoadError(
        f"Could not find or download {what} (model_id {model_id!r}): {err}. "
        "This machine may be offline. Point at local files instead: launch with "
        "model_path=/path/to/model (CLI --model-path), or register a custom model whose "
        "spec has model_uri=file:///path/to/model."
    )


def _has_model_files(base: Path) -> bool:
    """A directory holding at least one complete file outside the hub libraries' ``.cache``
    (a ``*.incomplete`` partial download does not count: the next launch resumes it)."""
    return base.is_dir() and any(
        p.is_file() and not p.name.endswith(".incomplete")
        for p in base.rglob("*") if ".cache" not in p.relative_to(base).parts
    )


def resolve_model_path(
    *,
    model_name: str,
    model_format: str,
    size: str,
    model_id: Optional[str],
    file_name: Optional[str] = None,
    model_uri: Optional[str] = None,
    model_path: Optional[str] = None,
    package: Optional[str] = None,
    package_subdir: Optional[str] = None,
    model_revision: Optional[str] = None,
    model_hub: str = "huggingface",
) -> str:
    """Return a local path to the model: the file ``file_name`` (single-file formats such as
    GGUF) or a directory (Hugging Face layout).

    Reports launch progress (:mod:`xinference.model.progress`): download fractions while
    downloading, ``DOWNLOAD_SHARE`` once the files are local.

    ``model_hub`` (``huggingface`` | ``modelscope``) is where ``model_id`` is downloaded
    from; both land in the same cache directory (:func:`cache_dir_for`).

    Raises:
        ModelLoadError: an explicit path does not exist, or nothing is found locally and the
        hub download fails (offline: fails within seconds, naming ``model_id`` and how to
        point at local files; a hub error names the repository and the hub's message).
        InvalidRequestError: an unknown ``model_hub``.
    """
    check_hub(model_hub)
    path = _resolve(model_name=model_name, model_format=model_format, size=size,
                    model_id=model_id, file_name=file_name, model_uri=model_uri,
                    model_path=model_path, package=package, package_subdir=package_subdir,
                    model_revision=model_revision, hub=model_hub)
    report_progress(DOWNLOAD_SHARE)
    return path


def check_hub(hub: Any) -> str:
    """Return ``hub`` when it is a known model hub.

    Raises:
        InvalidRequestError: (400) naming the known hubs.
    """
    from ..errors import InvalidRequestError

    if hub not in MODEL_HUBS:
        raise InvalidRequestError(f"download hub must be one of {list(MODEL_HUBS)}, got {hub!r}")
    return hub


def _resolve(*, model_name, model_format, size, model_id, file_name, model_uri, model_path,
             package, package_subdir, model_revision, hub) -> str:
    def pick(base: Path, source: str) -> Optional[Path]:
        if file_name is None:
            return base if _has_model_files(base) else None
        if base.is_file():
            return base
        return find_file(base, file_name)

    for explicit, source in ((model_path, "model_path"), (model_uri, "model_uri")):
        if explicit:
            base = uri_to_path(explicit)
            if not base.exists():
                raise ModelLoadError(
                    f"{source} {explicit!r} does not exist on this machine ({base})"
                )
            found = pick(base, source)
            if found is None:
                raise ModelLoadError(
                    f"{source} {explicit!r} holds no {file_name or 'model files'}"
                )
            return str(found)

    cache = cache_dir_for(model_name, model_format, size)
    found = pick(cache, "cache") if cache.exists() else None
    if found is not None:
        return str(found)

    if package:
        pdir = package_dir(package)
        if pdir is not None:
            base = pdir / package_subdir if package_subdir else pdir
            found = pick(base, "package") if base.exists() else None
            if found is not None:
                logger.info("Using weights shipped by package %s: %s", package, found)
                return str(found)

    if not model_id:
        raise ModelLoadError(
            f"Model {model_name!r} has no local files and no model_id to download from; "
            "give model_path or a model_uri."
        )
    return _download(model_id, cache, file_name, model_revision, hub)


# hub -> (endpoint override variable, default endpoint, offline flag variable)
HUB_ENDPOINTS = {
    "huggingface": ("HF_ENDPOINT", "https://huggingface.co", "HF_HUB_OFFLINE"),
    "modelscope": ("MODELSCOPE_ENDPOINT", "https://modelscope.cn", "MODELSCOPE_OFFLINE"),
}


def hub_offline_reason(hub: str = "huggingface") -> Optional[str]:
    """Why ``hub`` cannot be reached from here, or ``None`` when a TCP connection to it
    opens. Honours ``HF_HUB_OFFLINE=1`` / ``MODELSCOPE_OFFLINE=1`` and the endpoint
    overrides ``HF_ENDPOINT`` / ``MODELSCOPE_ENDPOINT``; the probe waits at most
    ``$XINFERENCE_HUB_PROBE_TIMEOUT`` seconds (default 5), so an offline machine fails fast
    instead of waiting for the hub library's retries."""
    import socket

    env_endpoint, default, offline_var = HUB_ENDPOINTS[hub]
    if os.environ.get(offline_var, "").strip().lower() in ("1", "true", "yes", "on"):
        return f"{offline_var} is set"
    endpoint = os.environ.get(env_endpoint) or default
    u = urlparse(endpoint)
    host = u.hostname or urlparse(default).hostname
    port = u.port or (443 if u.scheme == "https" else 80)
    timeout = float(os.environ.get(XINFERENCE_ENV_HUB_PROBE_TIMEOUT) or 5)
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return None
    except OSError as e:
        return f"cannot reach {endpoint} ({type(e).__name__}: {e})"


class _ByteProgress:
    """Byte counts of the files of one download, summed into the launch progress (up to
    ``DOWNLOAD_SHARE``) and a log line every 10% (``Downloading: 40% of 98.4 MB``). Shared
    by the Hugging Face (tqdm) and ModelScope (callback) paths."""

    def __init__(self):
        self._lock = threading.Lock()
        self._files: List[List[float]] = []  # [done, total] per file
        self._logged = -1

    def add(self, total: float) -> List[float]:
        entry = [0.0, float(total or 0)]
        with self._lock:
            self._files.append(entry)
        return entry

    def update(self, entry: List[float], n: float) -> None:
        if launch_cancelled():
            raise _DownloadCancelled()
        with self._lock:
            entry[0] += float(n or 0)
            files = [f for f in self._files if f[1] > 0]
            total = sum(f[1] for f in files)
            done = sum(min(f[0], f[1]) for f in files)
        if total <= 0:
            return
        frac = done / total
        report_progress(frac * DOWNLOAD_SHARE)
        tenth = int(frac * 10)
        if tenth > self._logged:
            self._logged = tenth
            logger.info("Downloading: %d%% of %.1f MB", int(frac * 100), total / 1e6)


class _DownloadCancelled(BaseException):
    """Raised from a progress callback when the launch is cancelled. A BaseException so
    that hub libraries' retry loops (which catch Exception) let it through."""


def _modelscope_callback_class(board: _ByteProgress):
    """A ``modelscope`` ProgressCallback class (instantiated per file) feeding ``board``."""
    from modelscope.hub.callback import ProgressCallback

    class Callback(ProgressCallback):
        def __init__(self, filename: str, file_size: int):
            super().__init__(filename, file_size)
            self._entry = board.add(file_size)

        def update(self, size: int) -> None:
            board.update(self._entry, size)

    return Callback


def _progress_tqdm_class(board: _ByteProgress):
    """A tqdm class for huggingface_hub that feeds byte bars into ``board`` and draws no
    bar (a redrawn bar garbles a log file)."""
    from tqdm.auto import tqdm

    class ProgressTqdm(tqdm):
        def __init__(self, *args, **kwargs):
            kwargs["disable"] = True
            super().__init__(*args, **kwargs)
            self._entry = board.add(self.total or 0) if kwargs.get("unit") == "B" else None
            if self._entry is not None and kwargs.get("initial"):
                board.update(self._entry, kwargs["initial"])

        def update(self, n=1):
            if self._entry is not None:
                self._entry[1] = float(self.total or 0)  # huggingface_hub grows totals
                board.update(self._entry, n)
            elif launch_cancelled():
                raise _DownloadCancelled()
            return super().update(n)

    return ProgressTqdm


def _download_modelscope(model_id: str, cache: Path, file_name: Optional[str],
                         revision: Optional[str]) -> str:
    """Download from ModelScope with the ``modelscope`` library (endpoint:
    ``MODELSCOPE_ENDPOINT``), into ``cache`` like the Hugging Face path; the library resumes
    a dropped transfer with a Range request."""
    from modelscope.hub.snapshot_download import snapshot_download

    board = _ByteProgress()
    # read here, per download: the library reads its variable once, at import
    endpoint = os.environ.get(HUB_ENDPOINTS["modelscope"][0]) or None
    path = snapshot_download(model_id, revision=revision, local_dir=str(cache),
                             endpoint=endpoint,
                             allow_patterns=[file_name] if file_name else None,
                             progress_callbacks=[_modelscope_callback_class(board)])
    if file_name is None:
        return str(path)
    found = find_file(Path(path), file_name)
    if found is None:
        raise FileNotFoundError(f"{file_name} is not in the ModelScope repository {model_id}")
    return str(found)


def _download(model_id: str, cache: Path, file_name: Optional[str],
              revision: Optional[str], hub: str = "huggingface") -> str:
    """Download ``file_name`` of ``model_id`` (or the whole repository) from ``hub`` into
    ``cache``.

    Raises:
        ModelLoadError: offline, unknown repository or file, or any download failure (the
        message names the hub, the repository and the hub's answer); a half-filled cache
        directory is removed.
        RequestAbortedError: the launch was cancelled; partial files are removed.
    """
    if launch_cancelled():
        raise RequestAbortedError("The launch was cancelled before the download")
    offline = hub_offline_reason(hub)
    if offline:
        raise _offline_error(model_id, file_name or "the model", RuntimeError(offline))
    if hub == "modelscope":
        return _guarded_download(model_id, cache, file_name, hub, lambda: _download_modelscope(
            model_id, cache, file_name, revision))
    etag_timeout = float(os.environ.get("HF_HUB_ETAG_TIMEOUT") or 10)
    import huggingface_hub
    from huggingface_hub.utils import EntryNotFoundError  # also in older releases

    tqdm_class = _progress_tqdm_class(_ByteProgress())

    def fetch() -> str:
        if file_name is not None:
            try:
                return huggingface_hub.hf_hub_download(
                    model_id, file_name, revision=revision, local_dir=str(cache),
                    etag_timeout=etag_timeout, tqdm_class=tqdm_class,
                )
            except EntryNotFoundError:
                # The quantization may be spelled in another case in the repository.
                files = huggingface_hub.list_repo_files(model_id, revision=revision)
                match = next((f for f in files if f.lower() == file_name.lower()), None)
                if match is None:
                    raise
                return huggingface_hub.hf_hub_download(
                    model_id, match, revision=revision, local_dir=str(cache),
                    etag_timeout=etag_timeout, tqdm_class=tqdm_class,
                )
        huggingface_hub.snapshot_download(model_id, revision=revision, local_dir=str(cache),
                                          etag_timeout=etag_timeout, tqdm_class=tqdm_class)
        return str(cache)

    return _guarded_download(model_id, cache, file_name, hub, fetch)


def _guarded_download(model_id: str, cache: Path, file_name: Optional[str], hub: str,
                      fetch: Callable[[], str]) -> str:
    """Run one hub library's download ``fetch`` into ``cache``; on failure leave no
    half-filled cache directory behind, on cancellation no partial file either.

    Raises:
        RequestAbortedError: the launch was cancelled.
        ModelLoadError: the hub's error, naming the hub and the repository.
    """
    import shutil

    existed = cache.exists()
    cache.mkdir(parents=True, exist_ok=True)
    logger.info("Downloading %s from %s into %s", model_id, hub, cache)
    try:
        return fetch()
    except (Exception, _DownloadCancelled) as e:
        cancelled = isinstance(e, (RequestAbortedError, _DownloadCancelled)) \
            or launch_cancelled()
        if not existed and (cancelled or not _has_model_files(cache)):
            shutil.rmtree(cache, ignore_errors=True)
        elif cancelled:
            _remove_incomplete(cache)
        if cancelled:
            raise RequestAbortedError("The launch was cancelled during the download of "
                                      f"{model_id}; its partial files were removed") from None
        raise ModelLoadError(
            f"Could not download {file_name or 'the model'} of {model_id!r} from {hub}: "
            f"{type(e).__name__}: {e}. Check the model id and the hub endpoint "
            f"({HUB_ENDPOINTS[hub][0]}), or point at local files with model_path."
        ) from None


def _remove_incomplete(cache: Path) -> None:
    """Delete huggingface_hub's partial downloads (``*.incomplete``) under ``cache``."""
    for p in cache.rglob("*.incomplete"):
        try:
            p.unlink()
        except OSError:
            pass


# ---- cache management (``GET/DELETE /v1/cache/models``) ---------------------------------
def _dir_size(path: Path) -> int:
    total = 0
    for p in path.rglob("*"):
        try:
            if p.is_file() and not p.is_symlink():
                total += p.stat().st_size
        except OSError:
            pass
    return total


def parse_model_version(version: str) -> Dict[str, Optional[str]]:
    """``<model_name>-<model_format>-<size>b`` (a cache directory's name, see
    :func:`cache_dir_for`) → its parts; unknown layouts give only ``model_name``."""
    parts = version.rsplit("-", 2)
    if len(parts) == 3 and parts[2].endswith("b") and parts[0]:
        return {"model_name": parts[0], "model_format": parts[1],
                "model_size_in_billions": parts[2][:-1]}
    return {"model_name": version, "model_format": None, "model_size_in_billions": None}


def model_version_of(model_name: str, model_format: Any, size: Any) -> str:
    """The cache directory name (``model_version``) of a launched spec (no size: ``0``,
    as embedding and rerank specs are cached)."""
    return cache_dir_for(model_name, str(model_format),
                         "0" if size is None else str(size)).name


def check_version_not_running(model_version: str, running) -> None:
    """Refuse to touch ``model_version`` while a model runs or launches from it.

    Args:
        running: ``(model_uid, launch description)`` pairs of the running and launching
            models (a launch may be downloading into, or loading from, the cache).

    Raises:
        ConflictError: one of them uses that version (HTTP 409), naming it.
    """
    from ..errors import ConflictError

    for uid, d in running:
        if d.get("model_name") and model_version_of(
                d["model_name"], d.get("model_format"),
                d.get("model_size_in_billions")) == model_version:
            raise ConflictError(f"Model version {model_version!r} is in use by the "
                                f"running or launching model {uid!r}; terminate it (or "
                                "cancel its launch) first")


def list_cached_models(model_name: Optional[str] = None) -> List[Dict[str, Any]]:
    """What ``XINFERENCE_HOME/cache`` holds on this machine: one row per model version
    (cache directory) with ``model_name``, ``model_format``, ``model_size_in_billions``,
    ``model_version``, ``path``, ``size_bytes`` and ``files`` (relative paths, partial
    downloads excluded), sorted by version; ``model_name`` filters."""
    root = xinference_cache_dir()
    if not root.is_dir():
        return []
    out = []
    for d in sorted(root.iterdir()):
        if not d.is_dir() or d.name.startswith("."):
            continue
        row: Dict[str, Any] = dict(parse_model_version(d.name), model_version=d.name)
        if model_name and row["model_name"] != model_name:
            continue
        files = sorted(str(p.relative_to(d)) for p in d.rglob("*")
                       if p.is_file() and ".cache" not in p.relative_to(d).parts)
        row.update(path=str(d), size_bytes=_dir_size(d), files=files)
        out.append(row)
    return out


def cached_model_paths(model_version: str) -> List[str]:
    """The paths :func:`remove_cached_model` would delete (empty when not cached)."""
    d = _version_dir(model_version)
    return [str(d)] if d.is_dir() else []


def _version_dir(model_version: str) -> Path:
    from ..errors import InvalidRequestError

    if not model_version or "/" in model_version or model_version in (".", "..") \
            or model_version.startswith("."):
        raise InvalidRequestError(f"Invalid model_version {model_version!r}")
    return xinference_cache_dir() / model_version


def remove_cached_model(model_version: str) -> List[str]:
    """Delete one model version's cache directory; returns the removed paths (empty when
    it was not cached here).

    Raises:
        InvalidRequestError: a ``model_version`` that is not a plain directory name.
    """
    import shutil

    paths = cached_model_paths(model_version)
    for p in paths:
        shutil.rmtree(p)
    return paths

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
from typing import Optional
from urllib.parse import unquote, urlparse

from ..constants import xinference_cache_dir
from ..core.errors import ModelLoadError
from ..core.progress import DOWNLOAD_SHARE, report_progress

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
    """A directory holding at least one file outside huggingface_hub's ``.cache``."""
    return base.is_dir() and any(
        p.is_file() for p in base.rglob("*") if ".cache" not in p.relative_to(base).parts
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
) -> str:
    """Return a local path to the model: the file ``file_name`` (single-file formats such as
    GGUF) or a directory (Hugging Face layout).

    Reports launch progress (:mod:`xinference.core.progress`): download fractions while
    downloading, ``DOWNLOAD_SHARE`` once the files are local.

    Raises:
        ModelLoadError: an explicit path does not exist, or nothing is found locally and the
        hub download fails (offline: fails within seconds, naming ``model_id`` and how to
        point at local files).
    """
    path = _resolve(model_name=model_name, model_format=model_format, size=size,
                    model_id=model_id, file_name=file_name, model_uri=model_uri,
                    model_path=model_path, package=package, package_subdir=package_subdir,
                    model_revision=model_revision)
    report_progress(DOWNLOAD_SHARE)
    return path


def _resolve(*, model_name, model_format, size, model_id, file_name, model_uri, model_path,
             package, package_subdir, model_revision) -> str:
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
    return _download(model_id, cache, file_name, model_revision)


def hub_offline_reason() -> Optional[str]:
    """Why the hub cannot be reached from here, or ``None`` when a TCP connection to it
    opens. Honours ``HF_HUB_OFFLINE=1``; the probe waits at most
    ``$XINFERENCE_HUB_PROBE_TIMEOUT`` seconds (default 5), so an offline machine fails fast
    instead of waiting for huggingface_hub's retries."""
    import socket

    if os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on"):
        return "HF_HUB_OFFLINE is set"
    endpoint = os.environ.get("HF_ENDPOINT") or "https://huggingface.co"
    u = urlparse(endpoint)
    host = u.hostname or "huggingface.co"
    port = u.port or (443 if u.scheme == "https" else 80)
    timeout = float(os.environ.get(XINFERENCE_ENV_HUB_PROBE_TIMEOUT) or 5)
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return None
    except OSError as e:
        return f"cannot reach {endpoint} ({type(e).__name__}: {e})"


def _progress_tqdm_class():
    """A tqdm class that feeds byte progress into the launch progress and logs every 10%
    (``Downloading: 40% of 98.4 MB``) instead of drawing a bar."""
    from tqdm.auto import tqdm

    class ProgressTqdm(tqdm):
        _bars: list = []
        _lock = threading.Lock()
        _logged = -1

        def __init__(self, *args, **kwargs):
            self._done = float(kwargs.get("initial") or 0)
            kwargs["disable"] = True  # a redrawn bar garbles a log file: log lines instead
            super().__init__(*args, **kwargs)
            self._bytes = kwargs.get("unit") == "B"
            if self._bytes:
                with ProgressTqdm._lock:
                    ProgressTqdm._bars.append(self)
            self._report()

        def update(self, n=1):
            self._done += float(n or 0)
            out = super().update(n)
            self._report()
            return out

        def _report(self):
            with ProgressTqdm._lock:
                bars = [b for b in ProgressTqdm._bars if (b.total or 0) > 0]
                total = sum(b.total for b in bars)
                done = sum(min(b._done, b.total) for b in bars)
            if total <= 0:
                return
            frac = done / total
            report_progress(frac * DOWNLOAD_SHARE)
            tenth = int(frac * 10)
            if tenth > ProgressTqdm._logged:
                ProgressTqdm._logged = tenth
                logger.info("Downloading: %d%% of %.1f MB", int(frac * 100), total / 1e6)

    return ProgressTqdm


def _download(model_id: str, cache: Path, file_name: Optional[str],
              revision: Optional[str]) -> str:
    """Download ``file_name`` of ``model_id`` (or the whole repository) into ``cache``.

    Raises:
        ModelLoadError: offline, unknown repository or file, or any download failure; a
        half-filled cache directory is removed.
    """
    offline = hub_offline_reason()
    if offline:
        raise _offline_error(model_id, file_name or "the model", RuntimeError(offline))
    etag_timeout = float(os.environ.get("HF_HUB_ETAG_TIMEOUT") or 10)
    try:
        import huggingface_hub
        from huggingface_hub.utils import EntryNotFoundError  # also in older releases
    except ImportError as e:  # pragma: no cover - a core dependency
        raise _offline_error(model_id, "huggingface_hub", e)
    existed = cache.exists()
    cache.mkdir(parents=True, exist_ok=True)
    logger.info("Downloading %s from the hub into %s", model_id, cache)
    tqdm_class = _progress_tqdm_class()
    try:
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
    except Exception as e:
        # Leave no half-filled cache directory behind.
        if not existed and not _has_model_files(cache):
            import shutil

            shutil.rmtree(cache, ignore_errors=True)
        raise _offline_error(model_id, file_name or "the model", e) from None

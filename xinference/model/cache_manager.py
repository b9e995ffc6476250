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
from pathlib import Path
from typing import Optional
from urllib.parse import unquote, urlparse

from ..constants import xinference_cache_dir
from ..core.errors import ModelLoadError

logger = logging.getLogger(__name__)


def uri_to_path(uri: str) -> Path:
    """``file:///abs/path`` or ``/abs/path`` → ``Path``."""
    if uri.startswith("file://"):
        return Path(unquote(urlparse(uri).path))
    return Path(uri)


def find_file(directory: Path, file_name: str) -> Optional[Path]:
    """``directory/file_name``, matching the name case-insensitively (``q4_1`` finds
    ``Q4_1``); ``None`` when absent."""
    exact = directory / file_name
    if exact.is_file():
        return exact
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

    Raises:
        ModelLoadError: an explicit path does not exist, or nothing is found locally and the
        hub download fails.
    """
    def pick(base: Path, source: str) -> Optional[Path]:
        if file_name is None:
            return base if base.is_dir() and any(base.iterdir()) else None
        if base.is_file():
            return base
        return find_file(base, file_name)

    for explicit, source in ((model_path, "model_path"), (model_uri, "model_uri")):
        if explicit:
            base = uri_to_path(explicit)
            if not base.exists():
                raise ModelLoadError(f"{source} {explicit!r} does not exist")
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


def _download(model_id: str, cache: Path, file_name: Optional[str],
              revision: Optional[str]) -> str:
    os.environ.setdefault("HF_HUB_ETAG_TIMEOUT", "10")
    try:
        import huggingface_hub
    except ImportError as e:  # pragma: no cover - a core dependency
        raise _offline_error(model_id, "huggingface_hub", e)
    cache.mkdir(parents=True, exist_ok=True)
    logger.info("Downloading %s from the hub into %s", model_id, cache)
    try:
        if file_name is not None:
            files = huggingface_hub.list_repo_files(model_id, revision=revision)
            match = next((f for f in files if f.lower() == file_name.lower()), file_name)
            path = huggingface_hub.hf_hub_download(
                model_id, match, revision=revision, local_dir=str(cache)
            )
            return path
        huggingface_hub.snapshot_download(model_id, revision=revision, local_dir=str(cache))
        return str(cache)
    except Exception as e:
        # Leave no half-filled cache directory behind.
        try:
            if cache.exists() and not any(p.is_file() for p in cache.rglob("*")
                                          if ".cache" not in p.parts):
                import shutil

                shutil.rmtree(cache, ignore_errors=True)
        except OSError:
            pass
        raise _offline_error(model_id, file_name or "the model", e) from None

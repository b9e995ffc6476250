"""Durable writes of the server's state files (a leaf module: it imports nothing of ours).

Every state file (custom registrations, launch records, the CLI's saved tokens, the
cluster key) is written with :func:`atomic_write`: the bytes go to a temporary file in the
same directory, which is flushed and ``fsync``-ed, then renamed over the target
(``os.replace`` is atomic on POSIX and Windows), and the directory is ``fsync``-ed so the
rename itself survives a power cut. A reader therefore sees the old file or the new one,
never half of one, and a crash leaves at most a stray ``.tmp`` file.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Optional, Union


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # pragma: no cover - directories cannot be opened on Windows
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover - some file systems refuse fsync on directories
        pass
    finally:
        os.close(fd)


def atomic_write(path: Union[str, Path], data: Union[str, bytes],
                 mode: Optional[int] = None) -> Path:
    """Replace ``path`` with ``data`` (``str`` is written as UTF-8) durably and atomically
    (see the module docstring); missing parent directories are created. ``mode``: the
    file's permission bits (e.g. ``0o600`` for secrets), set on the temporary file before
    any byte is written, so the secret is never readable by others; default ``0o644``
    minus the umask, as ``open`` would give.

    Returns the path. Raises ``OSError`` (the temporary file is removed then)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    raw = data.encode("utf-8") if isinstance(data, str) else bytes(data)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            if mode is None:
                umask = os.umask(0)
                os.umask(umask)
                mode = 0o666 & ~umask
            os.fchmod(f.fileno(), mode)
            f.write(raw)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    _fsync_dir(path.parent)
    return path

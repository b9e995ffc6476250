"""Durable, atomic writes of state files (xinference.fileio) and their use by every state
file: launch records, custom registrations, the CLI's saved tokens, the cluster key."""

from __future__ import annotations

import json
import os
import stat

import pytest

from xinference import fileio


@pytest.fixture
def fsyncs(monkeypatch):
    """Every fd that os.fsync was called on, as what it names (a file or a directory)."""
    seen = []
    real = os.fsync

    def spy(fd):
        st = os.fstat(fd)
        seen.append("dir" if stat.S_ISDIR(st.st_mode) else "file")
        return real(fd)

    monkeypatch.setattr(fileio.os, "fsync", spy)
    return seen


def test_atomic_write_syncs_file_and_directory(tmp_path, fsyncs):
    p = fileio.atomic_write(tmp_path / "a" / "b.json", '{"x": 1}')
    assert p.read_text() == '{"x": 1}' and fsyncs == ["file", "dir"]
    fileio.atomic_write(p, b"secret", mode=0o600)
    assert p.read_bytes() == b"secret" and stat.S_IMODE(p.stat().st_mode) == 0o600
    assert [x.name for x in p.parent.iterdir()] == ["b.json"]  # no temporary left


def test_a_failed_write_keeps_the_old_file(tmp_path, monkeypatch):
    p = fileio.atomic_write(tmp_path / "state.json", "old")

    def boom(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(fileio.os, "replace", boom)
    with pytest.raises(OSError):
        fileio.atomic_write(p, "new")
    assert p.read_text() == "old" and [x.name for x in tmp_path.iterdir()] == ["state.json"]


def test_state_files_are_written_durably(tmp_path, monkeypatch, fsyncs):
    monkeypatch.setenv("XINFERENCE_HOME", str(tmp_path))
    from xinference.core.cluster_key import key_file, supervisor_key
    from xinference.core.persist import PersistStore
    from xinference.model import model_type_handlers
    from xinference.model.registry import ModelRegistry

    PersistStore().save("m1", {"model_uid": "m1", "model_name": "x"})
    assert fsyncs == ["file", "dir"]
    handlers = model_type_handlers()
    reg = ModelRegistry({t: h.schema for t, h in handlers.items()},
                        {t: h.builtins for t, h in handlers.items()})
    reg.register("embedding", json.dumps({
        "model_name": "my-emb", "dimensions": 384, "max_tokens": 256, "language": ["en"],
        "model_uri": f"file://{tmp_path}"}), persist=True)
    assert fsyncs == ["file", "dir"] * 2
    monkeypatch.delenv("XOSCAR_AUTH_KEY", raising=False)
    key = supervisor_key()
    assert fsyncs == ["file", "dir"] * 3
    assert stat.S_IMODE(key_file().stat().st_mode) == 0o600
    assert supervisor_key() == key  # saved: a restart keeps it

"""Models that survive a restart: launch records under ``XINFERENCE_HOME/persisted_models``.

A launch with ``persist=true`` (or any launch when the server runs with
``--persist-models`` / ``XINFERENCE_PERSIST_MODELS=1``) writes one JSON file per model uid
holding the launch request (model name, type, uid, replica, engine options ...) once the
model is running. The supervisor launches every record again when it starts and whenever a
worker registers, under the same uid and options (see ``SupervisorActor``); terminating the
model, or ``DELETE /v1/models/persisted/{model_uid}``, removes its record. A broken file is
skipped with a warning.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any, Dict

from ..constants import xinference_home

logger = logging.getLogger(__name__)

XINFERENCE_ENV_PERSIST_MODELS = "XINFERENCE_PERSIST_MODELS"


def persist_by_default() -> bool:
    """True when ``XINFERENCE_PERSIST_MODELS`` is ``1``/``true``/``yes``: every launch is
    recorded unless it says ``persist=false``."""
    return os.environ.get(XINFERENCE_ENV_PERSIST_MODELS, "").strip().lower() in (
        "1", "true", "yes", "on")


def persist_dir() -> Path:
    """``XINFERENCE_HOME/persisted_models``."""
    return xinference_home() / "persisted_models"


class PersistStore:
    """The launch records on disk (a model uid is a safe file name: letters, digits,
    ``_ - .``, starting with a letter or digit)."""

    def _path(self, model_uid: str) -> Path:
        return persist_dir() / f"{model_uid}.json"

    def save(self, model_uid: str, launch: Dict[str, Any]) -> None:
        """Write the record atomically (a crash never leaves half a file)."""
        d = persist_dir()
        d.mkdir(parents=True, exist_ok=True)
        tmp = d / f".{model_uid}.json.tmp"
        tmp.write_text(json.dumps(launch, indent=1, sort_keys=True), encoding="utf-8")
        os.replace(tmp, self._path(model_uid))

    def delete(self, model_uid: str) -> bool:
        """Forget a record; False when there was none."""
        try:
            self._path(model_uid).unlink()
            return True
        except FileNotFoundError:
            return False

    def load_all(self) -> Dict[str, Dict[str, Any]]:
        """``{model_uid: launch request}``; unreadable files are skipped with a warning."""
        d = persist_dir()
        out: Dict[str, Dict[str, Any]] = {}
        if not d.is_dir():
            return out
        for p in sorted(d.glob("*.json")):
            try:
                rec = json.loads(p.read_text(encoding="utf-8"))
                if not isinstance(rec, dict) or rec.get("model_uid") != p.stem:
                    raise ValueError("not a launch record of this uid")
            except Exception as e:
                logger.warning("Skipping the persisted model record %s: %s", p, e)
                continue
            out[p.stem] = rec
        return out

"""Models that survive a restart: launch records under ``XINFERENCE_HOME/persisted_models``.

A launch with ``persist=true`` (or any launch when the server runs with
``--persist-models`` / ``XINFERENCE_PERSIST_MODELS=1``) writes one JSON file per model uid
holding the launch request (model name, type, uid, replica, engine options ...) once the
model is running. The supervisor launches every record again when it starts and whenever a
worker registers, under the same uid and options (see ``SupervisorActor``); terminating the
model, or ``DELETE /v1/models/persisted/{model_uid}``, removes its record. A broken file is
skipped with a warning. A persisted model whose process dies (a heartbeat reports it) is
terminated and launched again from its record, at most ``XINFERENCE_MODEL_RESTART_LIMIT``
times (default 3) within :data:`RESTART_WINDOW` seconds; after that it stays ``dead``.
:class:`PersistStore` is the files; :class:`PersistedLaunches` the supervisor's part:
writing records after launches, relaunching them, restarting dead ones, reporting their
state.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Awaitable, Callable, Dict, List, Optional, Set

from ..constants import health_check_interval, xinference_home
from ..errors import ModelNotFoundError, ModelUnavailableError
from ..fileio import atomic_write

if TYPE_CHECKING:
    from .model_table import ModelTable
    from .workers import WorkerTable

logger = logging.getLogger(__name__)

XINFERENCE_ENV_PERSIST_MODELS = "XINFERENCE_PERSIST_MODELS"
XINFERENCE_ENV_MODEL_RESTART_LIMIT = "XINFERENCE_MODEL_RESTART_LIMIT"
#: seconds over which the restarts of one model are counted against the limit
RESTART_WINDOW = 600.0


def restart_limit() -> int:
    """Restarts of one dead persisted model allowed within :data:`RESTART_WINDOW`:
    ``$XINFERENCE_MODEL_RESTART_LIMIT`` (default 3; 0 turns restarts off)."""
    try:
        return max(0, int(os.environ.get(XINFERENCE_ENV_MODEL_RESTART_LIMIT, "3")))
    except ValueError:
        return 3


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
        """Write the record durably and atomically (:func:`xinference.fileio.atomic_write`:
        a crash never leaves half a file)."""
        atomic_write(self._path(model_uid), json.dumps(launch, indent=1, sort_keys=True))

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


class PersistedLaunches:
    """The supervisor's persisted launches: records written after a launch, launched
    again when workers (re)join, and their state.

    A relaunch that fails is recorded in the model table (``ModelTable.failed``: the uid
    answers 503 with the reason and lists with ``status: "error"``) and not retried; one
    that finds no room, or not its worker yet, waits for the next worker to register.
    A running persisted model that loses a process is restarted (:meth:`restart_dead`),
    within :func:`restart_limit`.

    Args:
        workers: the cluster's workers (whether any is there, and which).
        models: the model table (what runs, launches, or failed to relaunch).
        launch: the supervisor's ``launch_builtin_model``, called with a record's fields
            and ``persist=True``.
        terminate: the launcher's ``terminate`` (stops a model, keeps its record); None:
            dead models are not restarted.
    """

    def __init__(self, workers: "WorkerTable", models: "ModelTable",
                 launch: Callable[..., Awaitable[str]],
                 terminate: Optional[Callable[[str], Awaitable[None]]] = None):
        self.store = PersistStore()
        self._workers = workers
        self._models = models
        self._launch = launch
        self._terminate = terminate
        self._restarts: Dict[str, List[float]] = {}  # uid -> times of recent restarts
        self._restarting: Set[str] = set()
        self._gave_up: Dict[str, str] = {}  # uid -> why it is left dead
        self._lock = asyncio.Lock()
        self._tasks: Set[asyncio.Task] = set()
        self._started = time.monotonic()

    def records(self) -> Dict[str, Dict[str, Any]]:
        """``{model_uid: launch request}`` on disk."""
        return self.store.load_all()

    def launched(self, model_uid: str, record: Dict[str, Any],
                 persist: Optional[bool]) -> None:
        """``model_uid`` runs: record its launch ``record`` when ``persist`` (None: when
        ``XINFERENCE_PERSIST_MODELS`` says so); a failed relaunch of it is forgotten."""
        if persist or (persist is None and persist_by_default()):
            self.store.save(model_uid, {k: v for k, v in record.items() if v is not None})
        self._models.failed.pop(model_uid, None)
        self._gave_up.pop(model_uid, None)

    def terminated(self, model_uid: str) -> bool:
        """``model_uid`` is terminated: forget its record and failed relaunch; True when
        there was either."""
        persisted = self.store.delete(model_uid)
        failed = self._models.failed.pop(model_uid, None)
        self._restarts.pop(model_uid, None)
        self._gave_up.pop(model_uid, None)
        return persisted or failed is not None

    def rows(self) -> List[Dict[str, Any]]:
        """The launch records (``GET /v1/models/persisted``), each with ``status``:
        ``running``, ``dead`` (a process of it died: being restarted, or over the restart
        limit; with ``error``), ``launching``, ``failed`` (with ``error``) or ``pending``
        (waiting for a worker)."""
        failed = self._models.failed
        out = []
        for uid, rec in self.records().items():
            row: Dict[str, Any] = {"model_uid": uid, "launch": rec}
            if uid in self._models:
                m = self._models.running(uid)
                dead = [r for r in m.replicas if r["status"] != "ready"]
                row["status"] = "dead" if dead else "running"
                if dead:
                    row["error"] = self._gave_up.get(uid) or (
                        f"replica {dead[0]['replica_uid']}: {dead[0]['error']}"
                        + ("; restarting" if uid in self._restarting else ""))
            elif self._models.is_launching(uid):
                row["status"] = "launching"
            elif uid in failed:
                row.update(status="failed", error=failed[uid])
            else:
                row["status"] = "pending"
            out.append(row)
        return out

    def forget(self, model_uid: str) -> None:
        """Remove a launch record (the model keeps running if it runs).

        Raises:
            ModelNotFoundError: no record for ``model_uid``.
        """
        if not self.store.delete(model_uid):
            raise ModelNotFoundError(f"No persisted model {model_uid!r}")
        self._models.failed.pop(model_uid, None)

    def failed_row(self, model_uid: str) -> Dict[str, Any]:
        """The model description of a persisted model whose relaunch failed
        (``status: "error"``, ``error``: why), as ``describe_model`` answers."""
        rec = self.records().get(model_uid) or {"model_uid": model_uid}
        return {"model_uid": model_uid, "model_name": rec.get("model_name"),
                "model_type": rec.get("model_type", "LLM"),
                "model_engine": rec.get("model_engine"), "replica": rec.get("replica", 1),
                "replicas": [], "address": None, "created": None, "persisted": True,
                "status": "error", "error": self._models.failed[model_uid]}

    def restart_dead(self, model_uids: List[str]) -> None:
        """Models that lost a process (a heartbeat reported it): restart the persisted
        ones in the background (terminate, then launch the record again), unless they
        were restarted :func:`restart_limit` times within :data:`RESTART_WINDOW`; then
        they stay dead (``rows`` says why)."""
        if self._terminate is None:
            return
        records = self.records()
        now = time.monotonic()
        for uid in model_uids:
            if uid not in records or uid in self._restarting:
                continue
            recent = [t for t in self._restarts.get(uid, []) if now - t < RESTART_WINDOW]
            if len(recent) >= restart_limit():
                self._gave_up[uid] = (
                    f"its process died; restarted {len(recent)} time(s) within "
                    f"{RESTART_WINDOW:.0f}s already, so it is left dead (terminate it and "
                    f"launch it again)")
                logger.error("Persisted model %s: %s", uid, self._gave_up[uid])
                continue
            self._restarts[uid] = recent + [now]
            self._restarting.add(uid)
            task = asyncio.ensure_future(self._restart(uid, records[uid]))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _restart(self, uid: str, rec: Dict[str, Any]) -> None:
        try:
            async with self._lock:
                logger.warning("Restarting the persisted model %s: a process of it died",
                               uid)
                try:
                    await self._terminate(uid)
                except ModelNotFoundError:
                    pass
                await self._launch_record(uid, rec, "restart")
        finally:
            self._restarting.discard(uid)

    async def _launch_record(self, uid: str, rec: Dict[str, Any], what: str) -> None:
        """Launch a persisted record; no room yet is logged (it is tried again later), any
        other failure is kept in ``ModelTable.failed`` as "The ``what`` of ... failed"."""
        try:
            await self._launch(**dict(rec, persist=True))
        except ModelUnavailableError as e:
            logger.warning("Persisted model %s waits for room: %s", uid, e.message)
        except Exception as e:
            msg = getattr(e, "message", None) or f"{type(e).__name__}: {e}"
            self._models.failed[uid] = f"The {what} of persisted model {uid!r} failed: {msg}"
            logger.error("%s", self._models.failed[uid])

    def schedule(self) -> None:
        """Relaunch the records that are not running, in the background."""
        task = asyncio.ensure_future(self._relaunch())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _relaunch(self) -> None:
        """Launch the recorded models that are not running, once each (see the class
        docstring)."""
        if not self._workers.has_local():
            # A restarted supervisor: let the running workers report their models first.
            wait = self._started + 2 * health_check_interval() - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
        async with self._lock:
            for uid, rec in self.records().items():
                if uid in self._models or self._models.is_launching(uid) \
                        or uid in self._models.failed or not self._workers:
                    continue
                wip = rec.get("worker_ip")
                if wip and not self._workers.has(wip):
                    continue  # its worker has not joined yet
                logger.info("Launching the persisted model %s again", uid)
                await self._launch_record(uid, rec, "relaunch")

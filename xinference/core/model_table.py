"""The supervisor's model table: what each model uid is, and where its replicas run.

A model uid is *running* (a :class:`RunningModel` with its replicas), *launching*
(reserved while :class:`~xinference.core.launcher.Launcher` starts it), *lost* (every
replica's worker died or left: the uid answers 503 with the reason until it is launched
again or terminated), *failed* (a persisted model whose relaunch failed, see
:class:`~xinference.core.persist.PersistedLaunches`), or unknown.

Replicas of a worker declared dead are remembered (*away*): if the worker comes back
holding them they are adopted again, unless their model was terminated or relaunched
meanwhile; then the worker is told to stop them with its next heartbeat (*to stop*). This
module holds that state only; it makes no actor calls.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any, Dict, Iterable, Iterator, List, Optional, Set, Tuple

from ..errors import ConflictError, ModelNotFoundError, ModelUnavailableError

logger = logging.getLogger(__name__)


def replica_row(address: str, row: Dict[str, Any]) -> Dict[str, Any]:
    """The supervisor's row of one replica on worker ``address``, from the worker's row
    (``WorkerActor.list_replicas``) or its launch answer: ``replica_uid``,
    ``worker_address``, ``pid``, ``model_address``, ``gpu_idx``, ``virtualenv`` (the key of
    the environment whose Python runs it, or None), ``status`` (``"ready"`` | ``"dead"``)
    and ``error`` (why it is dead)."""
    alive = row.get("alive", True)
    return {"replica_uid": row["replica_uid"], "worker_address": address,
            "pid": row.get("pid"), "model_address": row.get("address"),
            "gpu_idx": row.get("gpu_idx"), "virtualenv": row.get("virtualenv"),
            "status": "ready" if alive else "dead",
            "error": None if alive else "its process died"}


@dataclass
class RunningModel:
    """A model with at least one replica (rows as in :func:`replica_row`)."""

    model_uid: str
    model_type: str
    desc: Dict[str, Any]
    replicas: List[Dict[str, Any]] = field(default_factory=list)
    created: int = field(default_factory=lambda: int(time.time()))
    rr: int = 0  # round-robin position

    def is_ready(self) -> bool:
        return any(r["status"] == "ready" for r in self.replicas)

    def next_order(self) -> List[Dict[str, Any]]:
        """The replicas starting at the round-robin position, which moves on by one."""
        n = len(self.replicas)
        order = [self.replicas[(self.rr + k) % n] for k in range(n)]
        self.rr = (self.rr + 1) % max(n, 1)
        return order


class ModelTable:
    """Model uids and their replicas (see the module docstring)."""

    def __init__(self):
        self._models: Dict[str, RunningModel] = {}
        self._launching: Set[str] = set()
        # model_uid -> why it is gone (every replica's worker died).
        self._lost: Dict[str, str] = {}
        # model_uid -> why the relaunch of its persisted record failed (not retried).
        self.failed: Dict[str, str] = {}
        # worker address -> {replica_uid: model_uid} dropped when the worker was declared
        # dead: adopted again if the worker comes back holding them ...
        self._away: Dict[str, Dict[str, str]] = {}
        # ... unless their model was terminated or relaunched meanwhile: then the worker is
        # told to stop them (worker address -> replica uids).
        self._to_stop: Dict[str, Set[str]] = {}

    # ---- states of a uid -------------------------------------------------------------------
    def __contains__(self, model_uid: str) -> bool:
        """``model_uid`` is running."""
        return model_uid in self._models

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._models))

    def items(self) -> List[Tuple[str, RunningModel]]:
        return list(self._models.items())

    def is_launching(self, model_uid: str) -> bool:
        return model_uid in self._launching

    def launching(self) -> List[str]:
        return sorted(self._launching)

    def reserve(self, model_uid: str) -> None:
        """Mark ``model_uid`` launching: it is no longer lost, and its replicas on workers
        declared dead must not come back.

        Raises:
            ConflictError: it is running or launching already.
        """
        self.check_free(model_uid)
        self._launching.add(model_uid)
        self._lost.pop(model_uid, None)
        self.forget_away(model_uid)

    def check_free(self, model_uid: str) -> None:
        """Raises ConflictError when ``model_uid`` is running or launching."""
        if model_uid in self._models or model_uid in self._launching:
            raise ConflictError(f"Model {model_uid!r} is already running or launching")

    def release(self, model_uid: str) -> None:
        """The launch of ``model_uid`` has ended (see :meth:`add` when it succeeded)."""
        self._launching.discard(model_uid)

    def add(self, model_uid: str, model_type: str, desc: Dict[str, Any],
            replicas: List[Dict[str, Any]]) -> None:
        """A launched model (before :meth:`release` of its uid)."""
        self._models[model_uid] = RunningModel(model_uid, model_type, desc, replicas)

    def pop(self, model_uid: str) -> Optional[RunningModel]:
        """Forget a running model (terminated); its replicas away must not come back."""
        m = self._models.pop(model_uid, None)
        self.forget_away(model_uid)
        return m

    def forget_lost(self, model_uid: str) -> bool:
        """Forget that ``model_uid`` was lost; True when it was."""
        return self._lost.pop(model_uid, None) is not None

    def running(self, model_uid: str) -> RunningModel:
        """The running model ``model_uid``.

        Raises:
            ModelUnavailableError: it is lost, or its relaunch failed (503, saying why).
            ModelNotFoundError: unknown uid.
        """
        m = self._models.get(model_uid)
        if m is None:
            if model_uid in self._lost:
                raise ModelUnavailableError(self._lost[model_uid])
            if model_uid in self.failed:
                raise ModelUnavailableError(self.failed[model_uid])
            raise ModelNotFoundError(f"Model not found in the model list, uid: {model_uid}")
        return m

    def using(self, model_name: str) -> List[str]:
        """Uids of the running models launched from registration ``model_name``."""
        return [uid for uid, m in self._models.items()
                if m.desc.get("model_name") == model_name]

    def descs(self) -> Iterable[Tuple[str, Dict[str, Any]]]:
        """``(model_uid, launch description)`` of every running model."""
        return ((uid, m.desc) for uid, m in list(self._models.items()))

    def count_on(self, address: str) -> int:
        """Replicas on worker ``address``."""
        return sum(1 for m in self._models.values() for r in m.replicas
                   if r["worker_address"] == address)

    # ---- workers coming and going ----------------------------------------------------------
    def drop_replicas_on(self, address: str, why: str, remember: bool) -> List[str]:
        """Remove the replicas held by worker ``address``; models left without replicas
        become lost. ``remember``: they may come back with the worker. Returns the dropped
        replica uids."""
        dropped = []
        for uid, m in list(self._models.items()):
            keep = [r for r in m.replicas if r["worker_address"] != address]
            if len(keep) == len(m.replicas):
                continue
            for r in m.replicas:
                if r["worker_address"] == address:
                    dropped.append(r["replica_uid"])
                    if remember:
                        self._away.setdefault(address, {})[r["replica_uid"]] = uid
            m.replicas = keep
            if not keep:
                del self._models[uid]
                self._lost[uid] = (
                    f"Model {uid!r} is gone: its last replica ran on worker {address}, which "
                    f"{why}; launch it again."
                )
        return dropped

    def adopt(self, address: str, rows: List[Dict[str, Any]]) -> Tuple[List[str], List[str]]:
        """A worker (re)registered reporting the replica ``rows`` it holds
        (``WorkerActor.list_replicas(detailed=True)``): serve them again, creating their
        models from the reported descriptions where needed. Replicas of a model that is
        launching are left alone; those terminated or relaunched meanwhile, or already
        known, are to be stopped. Returns ``(adopted, terminate)`` replica uids."""
        self._away.pop(address, None)
        to_stop = self._to_stop.pop(address, set())
        adopted: List[str] = []
        terminate: List[str] = []
        for row in rows:
            ruid, muid = row["replica_uid"], row["model_uid"]
            if muid in self._launching:
                continue
            known = muid in self._models and any(
                r["replica_uid"] == ruid for r in self._models[muid].replicas)
            if ruid in to_stop or known:
                terminate.append(ruid)
                continue
            m = self._models.get(muid)
            if m is None:
                desc = dict(row.get("desc") or {})
                m = self._models[muid] = RunningModel(
                    muid, row.get("model_type") or desc.get("model_type", "LLM"), desc,
                    created=int(row.get("launched_at") or time.time()))
                self._lost.pop(muid, None)
            m.replicas.append(replica_row(address, row))
            adopted.append(ruid)
        return adopted, terminate

    def mark_dead_processes(self, address: str, reported: Dict[str, Dict[str, Any]]) -> None:
        """Mark dead the ready replicas on ``address`` whose process the worker reports
        dead (``reported``: ``{replica_uid: row}`` of its heartbeat)."""
        for m in self._models.values():
            for r in m.replicas:
                row = reported.get(r["replica_uid"])
                if (r["worker_address"] == address and row is not None
                        and not row.get("alive", True) and r["status"] == "ready"):
                    r.update(status="dead", error="its process died")
                    logger.warning("Replica %s of %s on %s: its process (pid %s) died",
                                   r["replica_uid"], m.model_uid, address, r["pid"])

    def stop_later(self, address: str, replica_uid: str) -> None:
        """Tell worker ``address`` to stop ``replica_uid`` when it reports next."""
        self._to_stop.setdefault(address, set()).add(replica_uid)

    def keep(self, address: str, replica_uid: str) -> None:
        """Undo :meth:`stop_later` (the uid is being launched there again)."""
        self._to_stop.get(address, set()).discard(replica_uid)

    def take_to_stop(self, address: str, reported: Iterable[str]) -> List[str]:
        """The reported replica uids that worker ``address`` should stop now (each is
        returned once)."""
        stop = self._to_stop.get(address)
        terminate = sorted(stop & set(reported)) if stop else []
        if terminate:
            stop.difference_update(terminate)
        return terminate

    def forget_away(self, model_uid: str) -> None:
        """Replicas of ``model_uid`` on workers declared dead must not come back."""
        for address, away in self._away.items():
            for ruid in [r for r, uid in away.items() if uid == model_uid]:
                del away[ruid]
                self.stop_later(address, ruid)

    # ---- views -----------------------------------------------------------------------------
    def describe(self, model_uid: str) -> Dict[str, Any]:
        """The launch description plus ``created``, ``replicas``, ``address`` (the first
        replica's worker) and ``status`` (errors as :meth:`running`)."""
        m = self.running(model_uid)
        return dict(m.desc, created=m.created, replicas=[dict(r) for r in m.replicas],
                    address=m.replicas[0]["worker_address"] if m.replicas else None,
                    status="ready" if m.is_ready() else "error")

    def instances(self, records: Dict[str, Dict[str, Any]],
                  launching_replicas: Dict[str, int]) -> List[Dict[str, Any]]:
        """``GET /v1/models/instances`` rows (see ``SupervisorActor.list_instances``):
        running models, then launching ones (``launching_replicas``: replicas asked for,
        by uid), then lost and failed ones. ``records``: the persisted launch records,
        which name the models that are not running."""
        from ..model.cache_manager import model_version_of

        rows = []
        for uid, m in self._models.items():
            d = m.desc
            ready = m.is_ready()
            dead = [r for r in m.replicas if r["status"] != "ready"]
            rows.append({
                "model_name": d.get("model_name"), "model_uid": uid,
                "model_version": model_version_of(d["model_name"], d.get("model_format"),
                                                  d.get("model_size_in_billions"))
                if d.get("model_name") else None,
                "model_ability": d.get("model_ability", []), "replica": len(m.replicas),
                "status": "READY" if ready else "ERROR",
                "instance_created_ts": m.created,
                "error": None if ready else (dead[0]["error"] if dead else None)})
        for uid in sorted(self._launching):
            rec = records.get(uid, {})
            rows.append({"model_name": rec.get("model_name"), "model_uid": uid,
                         "model_version": None, "model_ability": [],
                         "replica": launching_replicas.get(uid, rec.get("replica", 1)),
                         "status": "CREATING", "instance_created_ts": None, "error": None})
        for uid, why in list(self._lost.items()) + list(self.failed.items()):
            if uid in self._models or uid in self._launching:
                continue
            rows.append({"model_name": records.get(uid, {}).get("model_name"),
                         "model_uid": uid, "model_version": None, "model_ability": [],
                         "replica": 0, "status": "ERROR", "instance_created_ts": None,
                         "error": why})
        return rows

    def metrics_rows(self) -> List[Dict[str, Any]]:
        """Per running model: ``model_uid``, ``model_name``, ``engine`` and ``replicas``
        (``{status: count}``), for :func:`xinference.core.metrics.render`."""
        out = []
        for uid, m in self._models.items():
            counts: Dict[str, int] = {}
            for r in m.replicas:
                counts[r["status"]] = counts.get(r["status"], 0) + 1
            out.append({"model_uid": uid, "model_name": m.desc.get("model_name"),
                        "engine": m.desc.get("model_engine"), "replicas": counts})
        return out

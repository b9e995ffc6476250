"""Replicas of a running model at run time: list, add (scale out), remove (scale in).

Upstream Xinference's routes: ``GET /v1/models/{uid}/replicas``, ``POST .../replicas/
scale_out`` and ``.../scale_in`` with ``{"cnt": n}``, ``DELETE .../replicas/{replica_id}``.

* Adding places each new replica as a launch does (:meth:`Launcher.place`: spread over the
  workers, least loaded first, GPUs checked) and starts it with the launch's own plan; it
  joins the round-robin the moment it is loaded, so requests reach it at once. A worker
  must also have the memory of one more replica free: as much as the largest running
  replica of the model holds (its process's resident memory, from the worker's report).
* Removing takes the replicas out of the round-robin first (no new request reaches them),
  then waits until each has no request in flight (streams finish, their last chunks are
  read), then stops its process: a client never sees a removed replica fail. A model
  keeps at least one replica.

Refusals name why: ``cnt`` below 1, fewer than one replica left, no worker with the GPUs or
the memory (400); an unknown replica (404); a model adopted from a worker after a
supervisor restart has no launch plan here, so it cannot grow (400).
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
from typing import Any, Dict, List, Optional

from ..constants import health_check_timeout
from ..errors import InvalidRequestError, ModelNotFoundError, ModelUnavailableError
from .events import WARNING
from .launcher import Launcher
from .model_table import ModelTable
from .workers import WorkerTable

logger = logging.getLogger(__name__)

#: seconds a removed replica may take to finish its requests before it is stopped anyway
DRAIN_TIMEOUT_ENV = "XINFERENCE_REPLICA_DRAIN_TIMEOUT"


def drain_timeout() -> float:
    return float(os.environ.get(DRAIN_TIMEOUT_ENV, "600"))


def _count(cnt: Any) -> int:
    if not isinstance(cnt, int) or isinstance(cnt, bool) or cnt < 1:
        raise InvalidRequestError(f"'cnt' must be an integer >= 1, got {cnt!r}")
    return cnt


class ReplicaScaler:
    """Adds and removes replicas of running models (see the module docstring)."""

    def __init__(self, launcher: Launcher, workers: WorkerTable, models: ModelTable):
        self._launcher = launcher
        self._workers = workers
        self._models = models
        self._locks: Dict[str, asyncio.Lock] = {}

    def _lock(self, model_uid: str) -> asyncio.Lock:
        return self._locks.setdefault(model_uid, asyncio.Lock())

    def list(self, model_uid: str) -> List[Dict[str, Any]]:
        """``[{"replica_id", "worker_address", "pid", "model_address", "gpu_idx",
        "status", "error"}]`` of a running model.

        Raises:
            ModelNotFoundError: not running (404).
        """
        m = self._models.running(model_uid)
        return [dict(r, replica_id=r["replica_uid"]) for r in m.replicas]

    # ---- scale out ---------------------------------------------------------------------
    def _memory_need(self, replicas: List[Dict[str, Any]]) -> int:
        """Bytes one more replica needs: the largest resident set of the model's replicas,
        as their workers last reported it (0 when unknown)."""
        need = 0
        for r in replicas:
            w = self._workers.get(r["worker_address"])
            rows = (w.status.get("models") or []) if w is not None else []
            for row in rows:
                if row.get("replica_uid") == r["replica_uid"]:
                    need = max(need, int(row.get("memory_rss") or 0))
        return need

    @staticmethod
    def _next_index(model_uid: str, replicas: List[Dict[str, Any]]) -> int:
        pat = re.compile(re.escape(model_uid) + r"-(\d+)$")
        used = [int(m.group(1)) for r in replicas
                if (m := pat.match(r["replica_uid"])) is not None]
        return max(used, default=-1) + 1

    async def scale_out(self, model_uid: str, cnt: Any) -> List[Dict[str, Any]]:
        """Add ``cnt`` replicas; returns the replica list once they serve.

        Raises:
            InvalidRequestError: bad ``cnt``, no launch plan, no worker with the GPUs or the
                memory (400, naming why). ModelNotFoundError: not running.
        """
        cnt = _count(cnt)
        async with self._lock(model_uid):
            m = self._models.running(model_uid)
            plan = self._launcher.plans.get(model_uid)
            if plan is None:
                raise InvalidRequestError(
                    f"Model {model_uid!r} was adopted from its worker after a supervisor "
                    "restart; its launch plan is not known here, so replicas cannot be "
                    "added (launch it again to scale it)")
            need = self._memory_need(m.replicas)
            placed = [r["worker_address"] for r in m.replicas]
            targets = []
            extra: Dict[str, int] = {}
            for _ in range(cnt):  # every placement is checked before any process starts
                try:
                    w = self._launcher.place(plan["worker_ip"], plan["n_gpu"],
                                             plan["gpu_idx"], placed + targets)
                except (ModelUnavailableError, InvalidRequestError) as e:
                    raise InvalidRequestError(
                        f"Cannot add {cnt} replica(s) of {model_uid!r}: {e.message}") \
                        from None
                free = int(w.status.get("memory_available") or 0)
                extra[w.address] = extra.get(w.address, 0) + need
                if need and extra[w.address] > free:
                    raise InvalidRequestError(
                        f"Cannot add {cnt} replica(s) of {model_uid!r}: each needs about "
                        f"{need / 2**20:.0f} MiB (the resident memory of a running replica), "
                        f"worker {w.address} has {free / 2**20:.0f} MiB available")
                targets.append(w.address)
            index = self._next_index(model_uid, m.replicas)
            self._launcher.events.add(model_uid, f"Scale out by {cnt} requested",
                                      kind="replica")
            for k, address in enumerate(targets):
                w = self._workers.get(address)
                if w is None:
                    raise ModelUnavailableError(f"Worker {address} left while scaling out")
                ruid = f"{model_uid}-{index + k}"
                self._models.keep(address, ruid)
                row = await self._launcher.start_replica(
                    w, model_uid, ruid, plan["model_type"], plan["loader"], plan["desc"],
                    plan["request_limits"], plan["n_gpu"], plan["gpu_idx"], plan["venv"])
                m = self._models.running(model_uid)  # terminated meanwhile: 404
                m.replicas.append(row)  # serves from now on
                self._launcher.events.add(model_uid, f"Replica {ruid} added",
                                          kind="replica", replica_uid=ruid)
            return self.list(model_uid)

    # ---- scale in ----------------------------------------------------------------------
    def detach(self, model_uid: str, cnt: Any = None,
               replica_id: Optional[str] = None) -> List[Dict[str, Any]]:
        """Take replicas out of the round-robin (no new request reaches them) and return
        their rows, for :meth:`stop`: ``replica_id``, or the ``cnt`` newest (dead ones
        first).

        Raises:
            InvalidRequestError: bad ``cnt``, or fewer than one replica would be left (400).
            ModelNotFoundError: not running, or no such replica (404).
        """
        m = self._models.running(model_uid)
        if replica_id is not None:
            rows = [r for r in m.replicas if r["replica_uid"] == replica_id]
            if not rows:
                names = [r["replica_uid"] for r in m.replicas]
                raise ModelNotFoundError(f"Model {model_uid!r} has no replica {replica_id!r}; "
                                         f"its replicas: {names}")
        else:
            cnt = _count(cnt)
            dead = [r for r in m.replicas if r["status"] != "ready"]
            ready = [r for r in m.replicas if r["status"] == "ready"]
            rows = (dead + list(reversed(ready)))[:cnt]
        left = len(m.replicas) - len(rows)
        if left < 1:
            raise InvalidRequestError(
                f"Model {model_uid!r} has {len(m.replicas)} replica(s); removing "
                f"{len(rows)} would leave {left}: a model keeps at least 1 (terminate it "
                "instead)")
        gone = {r["replica_uid"] for r in rows}
        m.replicas = [r for r in m.replicas if r["replica_uid"] not in gone]
        m.rr = 0
        for r in rows:
            self._launcher.events.add(model_uid, f"Replica {r['replica_uid']} removed from "
                                      "service; draining its requests", kind="replica",
                                      replica_uid=r["replica_uid"])
        return rows

    async def stop(self, model_uid: str, rows: List[Dict[str, Any]]) -> None:
        """Drain and stop replicas taken out by :meth:`detach`: wait until each has no
        request in flight (``ModelActor.in_flight``, seen twice in a row, a second apart,
        so a request routed just before the detach arrives first), at most
        ``XINFERENCE_REPLICA_DRAIN_TIMEOUT`` seconds (600), then stop its process."""
        await asyncio.gather(*(self._drain_stop(model_uid, r) for r in rows))

    async def _drain_stop(self, model_uid: str, r: Dict[str, Any]) -> None:
        ruid = r["replica_uid"]
        w = self._workers.get(r["worker_address"])
        if w is None:
            self._models.stop_later(r["worker_address"], ruid)
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + drain_timeout()
        idle = 0
        while r["status"] == "ready" and idle < 2 and loop.time() < deadline:
            await asyncio.sleep(1.0)
            try:
                ref = await self._workers.call(w, w.ref.get_model(ruid),
                                               health_check_timeout())
                busy = await asyncio.wait_for(ref.in_flight(), health_check_timeout())
            except Exception:  # the process is gone: nothing to drain
                break
            idle = idle + 1 if busy == 0 else 0
        if idle < 2 and r["status"] == "ready" and loop.time() >= deadline:
            self._launcher.events.add(model_uid, f"Replica {ruid} still busy after "
                                      f"{drain_timeout():.0f} s; stopping it", WARNING,
                                      "replica", ruid)
        await self._launcher.stop_replica(w, ruid)
        await self._workers.refresh_status(w)
        self._launcher.events.add(model_uid, f"Replica {ruid} stopped", kind="replica",
                                  replica_uid=ruid)

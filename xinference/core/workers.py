"""The supervisor's table of workers: registration, heartbeats, liveness, calls to them.

A worker registers on its first heartbeat (or through :meth:`WorkerTable.add` for the
worker of ``xinference-local``), reporting the replicas it holds; the model table adopts
them, which is how a restarted supervisor gets its model table back. A worker silent for
``interval * XINFERENCE_HEALTH_CHECK_FAILURE_THRESHOLD`` seconds is declared dead (noticed
within ``interval * (threshold + 1)``) and its replicas are dropped from the model table
(:class:`~xinference.core.model_table.ModelTable`), which remembers them in case the worker
comes back. Every call to a worker goes through :meth:`WorkerTable.call`, which gives up
when the worker is declared dead meanwhile, so nothing waits on a dead machine.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Optional

import xoscar as xo

from ..constants import (
    WORKER_UID,
    health_check_failure_threshold,
    health_check_interval,
    health_check_timeout,
)
from ..errors import InvalidRequestError, ModelUnavailableError

if TYPE_CHECKING:
    from .model_table import ModelTable

logger = logging.getLogger(__name__)


def host_of(address: str) -> str:
    """``"10.0.0.2:34567"`` -> ``"10.0.0.2"``."""
    return address.rsplit(":", 1)[0]


@dataclass
class Worker:
    """One registered worker pool, as the supervisor sees it."""

    address: str
    ref: Any  # its WorkerActor
    worker_id: Optional[str] = None  # new per worker process: tells a restart apart
    local: bool = False  # in the supervisor's own process (xinference-local): never expires
    last_seen: float = field(default_factory=time.monotonic)
    status: Dict[str, Any] = field(default_factory=dict)  # its last heartbeat
    suspect: bool = False  # a call failed since its last heartbeat
    gone: asyncio.Event = field(default_factory=asyncio.Event)  # set once declared dead

    def matches(self, worker_ip: str) -> bool:
        """``worker_ip`` names this worker: its address or its host."""
        return worker_ip in (self.address, host_of(self.address))


class WorkerTable:
    """The live workers of the cluster (see the module docstring).

    Args:
        models: the model table whose replicas live on these workers; told when a worker
            registers (adopt its replicas), reports (dead processes, replicas to stop),
            leaves or dies (drop its replicas).
        on_join: called whenever a worker (re)joins with its status known; the supervisor
            relaunches persisted models then.
        on_dead: called with the uids of models that lost a replica (its process died, as
            a heartbeat reports); the supervisor restarts persisted ones.
    """

    def __init__(self, models: "ModelTable", on_join: Callable[[], None],
                 on_dead: Optional[Callable[[List[str]], None]] = None):
        self._workers: Dict[str, Worker] = {}
        self._models = models
        self._on_join = on_join
        self._on_dead = on_dead
        self._watch_task: Optional[asyncio.Task] = None

    def start(self) -> None:
        """Start declaring silent workers dead (on the running loop)."""
        self._watch_task = asyncio.ensure_future(self._watch())

    def stop(self) -> None:
        if self._watch_task is not None:
            self._watch_task.cancel()

    # ---- lookups ---------------------------------------------------------------------------
    def get(self, address: str) -> Optional[Worker]:
        return self._workers.get(address)

    def all(self) -> List[Worker]:
        return list(self._workers.values())

    def __bool__(self) -> bool:
        return bool(self._workers)

    def has_local(self) -> bool:
        """A worker lives in the supervisor's process (``xinference-local``)."""
        return any(w.local for w in self._workers.values())

    def has(self, worker_ip: str) -> bool:
        return any(w.matches(worker_ip) for w in self._workers.values())

    def select(self, worker_ip: Optional[str], listing: bool = False) -> List[Worker]:
        """Every worker, or those at ``worker_ip``.

        Raises:
            InvalidRequestError: no worker at ``worker_ip`` (``listing``: the message names
                the workers there are).
        """
        ws = list(self._workers.values())
        if worker_ip:
            ws = [w for w in ws if w.matches(worker_ip)]
            if not ws:
                raise InvalidRequestError(
                    f"No worker at {worker_ip!r}"
                    + (f"; workers: {sorted(self._workers)}" if listing else ""))
        return ws

    def info(self) -> List[Dict[str, Any]]:
        """One dict per live worker (see ``SupervisorActor.get_workers_info``)."""
        now = time.monotonic()
        out = []
        for w in self._workers.values():
            info = {k: v for k, v in w.status.items() if k != "models"}
            info["models"] = [{k: v for k, v in row.items() if k != "desc"}
                              for row in w.status.get("models", [])]
            info.update(node_type="Worker", address=w.address, ip_address=host_of(w.address),
                        status="suspect" if w.suspect else "alive", local=w.local,
                        last_heartbeat_seconds_ago=round(now - w.last_seen, 3))
            out.append(info)
        return out

    # ---- membership ------------------------------------------------------------------------
    async def add(self, worker_address: str, local: bool = False) -> None:
        """Register a worker pool (its WorkerActor uid is ``WORKER_UID``) without waiting for
        its first heartbeat; ``local``: never declared dead."""
        w = self._workers.get(worker_address)
        if w is None:
            ref = await xo.actor_ref(address=worker_address, uid=WORKER_UID)
            w = self._workers[worker_address] = Worker(worker_address, ref)
        w.local = w.local or local
        w.last_seen = time.monotonic()
        try:
            status = await xo.wait_for(w.ref.get_status(), health_check_timeout())
        except Exception:  # its heartbeat will fill it in
            return
        w.status, w.worker_id = status, status.get("worker_id")
        self._on_join()

    def remove(self, worker_address: str) -> None:
        """A worker leaving on purpose (it stopped its models): forget it and its
        replicas."""
        if self._workers.pop(worker_address, None) is not None:
            self._models.drop_replicas_on(worker_address, "left the cluster", remember=False)
            logger.info("Worker %s left the cluster", worker_address)

    async def heartbeat(self, worker_address: str, status: Dict[str, Any]) -> Dict[str, Any]:
        """A worker's periodic report (``WorkerActor.get_status``, detailed).

        The first report of a worker process (new address, or a new ``worker_id`` at a known
        address: the worker restarted) registers it and adopts the replicas it reports.
        Later reports refresh its resources and mark replicas whose process died.

        Returns ``{"terminate": [replica_uid, ...]}``: replicas the worker should stop.
        """
        w = self._workers.get(worker_address)
        if w is None or w.worker_id != status.get("worker_id"):
            return await self._register(worker_address, status, w)
        w.last_seen, w.status, w.suspect = time.monotonic(), status, False
        reported = {row["replica_uid"]: row for row in status.get("models", [])}
        dead = self._models.mark_dead_processes(worker_address, reported)
        if dead and self._on_dead is not None:
            self._on_dead(dead)
        return {"terminate": self._models.take_to_stop(worker_address, reported)}

    async def _register(self, address: str, status: Dict[str, Any],
                        previous: Optional[Worker]) -> Dict[str, Any]:
        if previous is not None and previous.worker_id is not None:
            # Same address, new process: what the old process held is gone.
            self._models.drop_replicas_on(address, "restarted", remember=False)
        ref = previous.ref if previous is not None else await xo.actor_ref(
            address=address, uid=WORKER_UID)
        self._workers[address] = Worker(address, ref, status.get("worker_id"),
                                        previous.local if previous else False,
                                        status=status)
        adopted, terminate = self._models.adopt(address, status.get("models", []))
        logger.info("Worker %s registered: %s CPUs, %.1f GiB memory, %d GPU(s)%s", address,
                    status.get("cpu_count"), (status.get("memory_total") or 0) / 2 ** 30,
                    status.get("gpu_count", 0),
                    f"; serving its replicas {adopted} again" if adopted else "")
        self._on_join()
        return {"terminate": terminate}

    def _declare_dead(self, address: str, why: str) -> None:
        w = self._workers.pop(address, None)
        if w is None:
            return
        w.gone.set()
        dropped = self._models.drop_replicas_on(address, why, remember=True)
        logger.warning("Worker %s is dead (%s); dropped its replicas %s", address, why,
                       dropped)

    async def _watch(self):
        """Declare dead the workers that stopped heart-beating."""
        while True:
            interval = health_check_interval()
            await asyncio.sleep(min(1.0, interval / 2))
            limit = interval * health_check_failure_threshold()
            now = time.monotonic()
            for address, w in list(self._workers.items()):
                silent = now - w.last_seen
                if not w.local and silent > limit:
                    self._declare_dead(address, f"sent no heartbeat for {silent:.1f}s")

    # ---- calls -----------------------------------------------------------------------------
    async def call(self, w: Worker, coro, timeout: Optional[float] = None):
        """Await an actor call to ``w``; give up when ``w`` is declared dead meanwhile or
        after ``timeout`` seconds, marking it suspect.

        Raises:
            ModelUnavailableError: ``w`` died or did not answer in time (503).
        """
        task = asyncio.ensure_future(coro)
        gone = asyncio.ensure_future(w.gone.wait())
        try:
            done, _ = await asyncio.wait({task, gone}, timeout=timeout,
                                         return_when=asyncio.FIRST_COMPLETED)
        finally:
            gone.cancel()
        if task in done:
            return task.result()
        task.cancel()
        w.suspect = True
        if w.gone.is_set():
            raise ModelUnavailableError(f"Worker {w.address} is dead")
        raise ModelUnavailableError(f"Worker {w.address} did not answer in {timeout:.0f}s")

    async def refresh_status(self, w: Worker) -> None:
        """Ask ``w`` for its status now (after a launch or terminate changed it)."""
        try:
            w.status = await self.call(w, w.ref.get_status(), health_check_timeout())
        except Exception:
            pass

"""WorkerActor: one per machine; starts and stops model processes.

Each model replica runs in its own xoscar sub-pool process (``append_sub_pool``) holding one
:class:`ModelActor`, so a crashing engine never takes the worker down. A failed launch
removes the sub-pool before the error is re-raised: no orphan process, no half-launched model.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from dataclasses import dataclass
from typing import Any, Dict, List, Optional

import xoscar as xo

from ..constants import XINFERENCE_ENV_SPARE_PROCESS
from .errors import ConflictError, ModelNotFoundError, ModelUnavailableError
from .model import ModelActor
from .progress import LaunchProgressActor

logger = logging.getLogger(__name__)


@dataclass
class _Replica:
    replica_uid: str
    model_uid: str
    sub_pool_address: str
    ref: Any
    pid: int
    launched_at: float


class WorkerActor(xo.StatelessActor):
    """Holds the model processes of this machine.

    Args:
        supervisor_address: xoscar address of the supervisor's pool.
        main_pool: this process's main actor pool (the parent of the model sub-pools).
    """

    def __init__(self, supervisor_address: str, main_pool):
        super().__init__()
        self._supervisor_address = supervisor_address
        self._main_pool = main_pool
        self._replicas: Dict[str, _Replica] = {}
        self._launching: Dict[str, asyncio.Task] = {}
        # replica_uid -> LaunchProgressActor ref in the model process, while it loads.
        self._progress_refs: Dict[str, Any] = {}
        # A model process started ahead of time (no model in it yet): launching takes it, so
        # a launch does not wait for a Python interpreter and xoscar to start (~1 s).
        self._spare: Optional[asyncio.Task] = None

    async def __post_create__(self):
        self._refill_spare()

    def _refill_spare(self):
        if os.environ.get(XINFERENCE_ENV_SPARE_PROCESS, "1") != "0":
            self._spare = asyncio.ensure_future(self._new_sub_pool({}))

    async def _new_sub_pool(self, env: Dict[str, str]) -> str:
        return await self._main_pool.append_sub_pool(
            env=env, modules=["xinference.core.xoscar_setup"]
        )

    async def _take_sub_pool(self, env: Dict[str, str]) -> str:
        """A fresh model process: the spare one when it fits (no special environment),
        else a new one."""
        spare, self._spare = self._spare, None
        if spare is not None and not env:
            try:
                address = await spare
                proc = self._main_pool.sub_processes.get(address)
                if proc is not None and proc.returncode is None:
                    self._refill_spare()
                    return address
            except Exception:
                logger.warning("The spare model process failed to start; starting another")
        elif spare is not None:
            self._spare = spare
        address = await self._new_sub_pool(env)
        if self._spare is None:
            self._refill_spare()
        return address

    @classmethod
    def default_uid(cls) -> str:
        return "worker"

    async def __pre_destroy__(self):
        if self._spare is not None:
            self._spare.cancel()
        for uid in list(self._replicas):
            try:
                await self.terminate_model(uid)
            except Exception:  # shutting down: keep going
                logger.exception("Failed to terminate %s on shutdown", uid)

    async def launch_model(self, replica_uid: str, model_uid: str, model_type: str,
                           loader, model_desc: Dict[str, Any],
                           request_limits: Optional[int] = None,
                           env: Optional[Dict[str, str]] = None) -> Dict[str, Any]:
        """Start a sub-pool process, create the ModelActor in it and load the weights.

        Returns ``{"address", "pid", "load_seconds"}``.

        Raises:
            ConflictError: ``replica_uid`` is already running here.
            XinferenceError (from the model process): the weights could not be loaded; the
            process has been removed by then.
        """
        if replica_uid in self._replicas or replica_uid in self._launching:
            raise ConflictError(f"Model {replica_uid!r} is already running on this worker")
        task = asyncio.ensure_future(self._launch(
            replica_uid, model_uid, model_type, loader, model_desc, request_limits, env
        ))
        self._launching[replica_uid] = task
        try:
            return await task
        finally:
            self._launching.pop(replica_uid, None)

    async def _launch(self, replica_uid, model_uid, model_type, loader, model_desc,
                      request_limits, env):
        address = await self._take_sub_pool(dict(env or {}))
        try:
            self._progress_refs[replica_uid] = await xo.create_actor(
                LaunchProgressActor, address=address, uid=f"{replica_uid}-progress"
            )
            ref = await xo.create_actor(
                ModelActor, model_uid, model_type, model_desc, loader, request_limits,
                address=address, uid=replica_uid,
            )
            info = await ref.load()
        except BaseException:
            await self._remove_sub_pool(address)
            raise
        finally:
            self._progress_refs.pop(replica_uid, None)
        self._replicas[replica_uid] = _Replica(
            replica_uid, model_uid, address, ref, info["pid"], time.time()
        )
        logger.info("Launched %s in process %s (%s) in %.2fs", replica_uid, info["pid"],
                    address, info["load_seconds"])
        return {"address": address, **info}

    async def get_launch_progress(self, replica_uid: str) -> float:
        """0..1: 1.0 once the replica is loaded, the model process's own report while it
        loads (see :mod:`xinference.core.progress`), 0.0 while its process starts.

        Raises:
            ModelNotFoundError: the replica is neither launching nor running here.
        """
        if replica_uid in self._replicas:
            return 1.0
        if replica_uid not in self._launching:
            raise ModelNotFoundError(f"Model not found on this worker: {replica_uid!r}")
        ref = self._progress_refs.get(replica_uid)
        if ref is None:
            return 0.0
        try:
            return float(await asyncio.wait_for(ref.get(), timeout=5))
        except Exception:  # the process is going away: the launch will report why
            return 0.0

    async def _remove_sub_pool(self, address: str):
        try:
            await self._main_pool.remove_sub_pool(address, force=True)
        except Exception:
            logger.exception("Failed to remove sub pool %s", address)

    async def terminate_model(self, replica_uid: str) -> None:
        """Destroy the ModelActor and its process.

        Raises:
            ModelNotFoundError: no such replica on this worker.
        """
        rep = self._replicas.pop(replica_uid, None)
        if rep is None:
            raise ModelNotFoundError(f"Model not found on this worker: {replica_uid!r}")
        if self._is_alive(rep):
            try:
                await asyncio.wait_for(xo.destroy_actor(rep.ref), timeout=5)
            except Exception:
                logger.warning("ModelActor %s did not stop cleanly", replica_uid)
        await self._remove_sub_pool(rep.sub_pool_address)

    def _is_alive(self, rep: _Replica) -> bool:
        proc = self._main_pool.sub_processes.get(rep.sub_pool_address)
        return proc is not None and proc.returncode is None

    async def get_model(self, replica_uid: str):
        """The replica's ModelActor ref.

        Raises:
            ModelNotFoundError: unknown replica.
            ModelUnavailableError: its process has died (terminate and launch it again).
        """
        rep = self._replicas.get(replica_uid)
        if rep is None:
            raise ModelNotFoundError(f"Model not found: {replica_uid!r}")
        if not self._is_alive(rep):
            raise ModelUnavailableError(
                f"The process of model {rep.model_uid!r} (pid {rep.pid}) has died; "
                "terminate it and launch it again."
            )
        return rep.ref

    def list_replicas(self) -> List[Dict[str, Any]]:
        """Replicas on this worker with their process id and liveness."""
        return [
            {"replica_uid": r.replica_uid, "model_uid": r.model_uid, "pid": r.pid,
             "address": r.sub_pool_address, "alive": self._is_alive(r),
             "launched_at": r.launched_at}
            for r in self._replicas.values()
        ]

    def get_status(self) -> Dict[str, Any]:
        """Resources of this machine (CPU count, memory) and its replicas."""
        import psutil

        vm = psutil.virtual_memory()
        return {"cpu_count": os.cpu_count(), "memory_total": vm.total,
                "memory_available": vm.available, "models": self.list_replicas()}

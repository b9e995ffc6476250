"""WorkerActor: one per machine; starts and stops model processes.

Each model replica runs in its own xoscar sub-pool process (``append_sub_pool``) holding one
:class:`ModelActor`, so a crashing engine never takes the worker down. A failed launch
removes the sub-pool before the error is re-raised: no orphan process, no half-launched model.

Cluster duties: every ``XINFERENCE_HEALTH_CHECK_INTERVAL`` seconds the worker sends the
supervisor a heartbeat with its resources (:mod:`xinference.core.resource`) and its replicas
(with their launch descriptions and liveness). The supervisor registers a worker on its
first heartbeat, so a worker that was declared dead, or a restarted supervisor, picks the
worker and its models up again without restarting anything. A model process that dies is
noticed here (the main pool owns the process) and reported in the next heartbeat.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple

import xoscar as xo

from ..constants import (
    SUPERVISOR_UID,
    WORKER_UID,
    XINFERENCE_ENV_SPARE_PROCESS,
    health_check_interval,
    health_check_timeout,
)
from ..errors import ConflictError, ModelNotFoundError, ModelUnavailableError
from ..model.progress import LaunchProgressActor
from .discovery import fetch_supervisor_address
from .model import ModelActor
from .resource import allocate_gpus, gpu_env, normalize_gpu_idx, normalize_n_gpu

logger = logging.getLogger(__name__)


def _rss(pid: Optional[int]) -> Optional[int]:
    """Resident memory of process ``pid`` in bytes (None when it is gone or unknown): the
    supervisor sizes replicas added at run time by it (:mod:`xinference.core.scaling`)."""
    import psutil

    try:
        return psutil.Process(pid).memory_info().rss if pid else None
    except (psutil.Error, OSError):
        return None


@dataclass
class _Replica:
    replica_uid: str
    model_uid: str
    sub_pool_address: str
    ref: Any
    pid: int
    launched_at: float
    model_type: str = "LLM"
    desc: Dict[str, Any] = field(default_factory=dict)
    request_limits: Optional[int] = None
    gpus: Optional[List[int]] = None
    dead_noticed: bool = False
    virtualenv: Optional[str] = None  # key of the environment whose Python runs it


#: imported by the spare model process while it waits (see WorkerActor._new_sub_pool)
SPARE_IMPORTS = ["xinference.core.model", "xinference.model.loader"]


class WorkerActor(xo.StatelessActor):
    """Holds the model processes of this machine.

    Args:
        supervisor_address: xoscar address of the supervisor's pool.
        main_pool: this process's main actor pool (the parent of the model sub-pools).
        endpoint: the supervisor's REST endpoint; when given, the worker asks it again for
            the supervisor's address (``GET /v1/address``) after heartbeats fail, so a
            supervisor restarted on another internal port is found too.
        heartbeat: send heartbeats (cluster workers and ``xinference-local`` alike).
        api_key: the worker's credential for ``GET /v1/address`` when the supervisor runs
            with ``--auth-config`` (an admin API key; see doc/team.md).
    """

    def __init__(self, supervisor_address: str, main_pool, endpoint: Optional[str] = None,
                 heartbeat: bool = True, api_key: Optional[str] = None):
        super().__init__()
        self._api_key = api_key  # for GET /v1/address when the supervisor has auth on
        self._supervisor_address = supervisor_address
        self._main_pool = main_pool
        self._endpoint = endpoint
        self._heartbeat_enabled = heartbeat
        self._heartbeat_task: Optional[asyncio.Task] = None
        self._supervisor_ref = None
        self._connected = False
        # A new id per worker process: the supervisor tells a restarted worker (same
        # address, new id) from one that only missed heartbeats.
        self._worker_id = uuid.uuid4().hex
        self._gpus: List[Dict[str, Any]] = []
        # replica_uid -> GPUs given to a replica that is still launching.
        self._launch_gpus: Dict[str, Optional[List[int]]] = {}
        self._replicas: Dict[str, _Replica] = {}
        self._launching: Dict[str, asyncio.Task] = {}
        # replica_uid -> (model_uid, launch description) while it launches
        self._launch_descs: Dict[str, Any] = {}
        # replica_uid -> LaunchProgressActor ref in the model process, while it loads.
        self._progress_refs: Dict[str, Any] = {}
        # A model process started ahead of time (no model in it yet): launching takes it, so
        # a launch does not wait for a Python interpreter and xoscar to start (~1 s).
        self._spare: Optional[asyncio.Task] = None
        self._closing = False
        # While a replica's virtual environment is being made: replica_uid -> what it does
        # (launch progress "stage") and -> its InstallCancel; while a replica in an
        # environment launches: replica_uid -> (model_uid, environment key).
        self._env_stage: Dict[str, str] = {}
        self._env_cancel: Dict[str, Any] = {}
        self._launch_envs: Dict[str, Tuple[str, str]] = {}  # -> (model_uid, key)

    async def __post_create__(self):
        from .resource import gpu_info

        self._refill_spare()
        self._gpus = await asyncio.to_thread(gpu_info)
        if self._heartbeat_enabled:
            self._heartbeat_task = asyncio.ensure_future(self._heartbeat_loop())

    def _refill_spare(self):
        if os.environ.get(XINFERENCE_ENV_SPARE_PROCESS, "1") != "0" and not self._closing:
            self._spare = asyncio.ensure_future(self._new_sub_pool({}, spare=True))

    async def _new_sub_pool(self, env: Dict[str, str], python: Optional[str] = None,
                            spare: bool = False) -> str:
        """A new model process; a spare one imports ahead, while it waits, what every model
        process imports when its ModelActor and loader arrive (pydantic, the registry)."""
        modules = ["xinference.core.xoscar_setup"] + (SPARE_IMPORTS if spare else [])
        return await self._main_pool.append_sub_pool(env=env, modules=modules,
                                                     start_python=python)

    async def _take_sub_pool(self, env: Dict[str, str], python: Optional[str] = None) -> str:
        """A fresh model process: the spare one when it fits (no special environment, the
        worker's own Python), else a new one (on ``python``: a virtual environment's). The
        spare taken is replaced once the launch ends (see :meth:`_launch`), not now: a
        Python interpreter starting beside the engine's load slows that load down where
        cores are few."""
        spare, self._spare = self._spare, None
        if spare is not None and not env and python is None:
            try:
                address = await spare
                proc = self._main_pool.sub_processes.get(address)
                if proc is not None and proc.returncode is None:
                    return address
            except Exception:
                logger.warning("The spare model process failed to start; starting another")
        elif spare is not None:
            self._spare = spare
        return await self._new_sub_pool(env, python)

    @classmethod
    def default_uid(cls) -> str:
        return WORKER_UID

    async def __pre_destroy__(self):
        self._closing = True  # a launch ending now starts no spare process
        if self._heartbeat_task is not None:
            self._heartbeat_task.cancel()
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
                           env: Optional[Dict[str, str]] = None, n_gpu: Any = "auto",
                           gpu_idx: Any = None, virtualenv=None) -> Dict[str, Any]:
        """Start a sub-pool process, create the ModelActor in it and load the weights.

        ``virtualenv`` (a :class:`~xinference.model.virtualenv.VirtualEnvPlan`, from the
        supervisor's plan): when it asks for an environment (or leaves it to this worker's
        ``XINFERENCE_ENABLE_VIRTUAL_ENV``), the environment is made or reused first and the
        process started on its Python (see :meth:`_prepare_virtualenv`).

        ``n_gpu``/``gpu_idx`` choose the replica's GPUs (see
        :func:`xinference.core.resource.allocate_gpus`); the process gets them as
        ``CUDA_VISIBLE_DEVICES``. On a worker without GPUs ``"auto"`` means CPU.

        Returns ``{"address", "pid", "load_seconds", "gpu_idx", "virtualenv"}``.

        Raises:
            ConflictError: ``replica_uid`` is already running here.
            InvalidRequestError / ModelUnavailableError: the GPUs asked for are not here /
            not free.
            XinferenceError (from the model process): the weights could not be loaded; the
            process has been removed by then.
            ModelLoadError: the virtual environment could not be made (uv's last lines).
        """
        if replica_uid in self._replicas or replica_uid in self._launching:
            raise ConflictError(f"Model {replica_uid!r} is already running on this worker")
        gpus = allocate_gpus([g["index"] for g in self._gpus], self._gpus_in_use(),
                             normalize_n_gpu(n_gpu), normalize_gpu_idx(gpu_idx))
        env = dict(env or {}, **gpu_env(gpus))
        task = asyncio.ensure_future(self._launch(
            replica_uid, model_uid, model_type, loader, model_desc, request_limits, env, gpus,
            virtualenv))
        self._launching[replica_uid] = task
        self._launch_gpus[replica_uid] = gpus
        self._launch_descs[replica_uid] = (model_uid, model_desc)
        try:
            return await task
        finally:
            self._launching.pop(replica_uid, None)
            self._launch_descs.pop(replica_uid, None)
            self._launch_gpus.pop(replica_uid, None)
            self._launch_envs.pop(replica_uid, None)

    def _gpus_in_use(self) -> Dict[int, int]:
        used: Dict[int, int] = {}
        for gpus in [r.gpus for r in self._replicas.values()] + list(self._launch_gpus.values()):
            for i in gpus or []:
                used[i] = used.get(i, 0) + 1
        return used

    async def _prepare_virtualenv(self, replica_uid: str, plan):
        """Make or reuse the environment ``plan`` asks for on this machine (None: the launch
        runs on the worker's Python). The uv run happens in a thread; cancelling the launch
        kills uv and removes the half-made environment before this returns."""
        from ..model.virtualenv import (InstallCancel, prepare_virtualenv,
                                        virtualenv_enabled_by_default)

        if plan is None or not plan.wanted(virtualenv_enabled_by_default()):
            return None
        cancel = InstallCancel()
        self._env_cancel[replica_uid] = cancel

        def stage(text: str) -> None:
            self._env_stage[replica_uid] = text

        fut = asyncio.ensure_future(asyncio.to_thread(
            prepare_virtualenv, plan, bool(self._gpus), cancel, stage))
        try:
            info = await asyncio.shield(fut)
        except asyncio.CancelledError:
            cancel.cancel()  # kill uv; the thread removes the directory
            await asyncio.wait({fut})
            raise
        finally:
            self._env_cancel.pop(replica_uid, None)
            self._env_stage.pop(replica_uid, None)
        logger.info("%s runs in virtual environment %s (%s in %.1fs)", replica_uid,
                    info.path, "made" if info.created else "reused", info.seconds)
        return info

    def virtualenvs_in_use(self) -> Dict[str, List[str]]:
        """``{environment key: [model uids]}`` of the replicas here, launching ones too."""
        out: Dict[str, List[str]] = {}
        for r in self._replicas.values():
            if r.virtualenv:
                out.setdefault(r.virtualenv, []).append(r.model_uid)
        for model_uid, key in self._launch_envs.values():
            out.setdefault(key, []).append(model_uid)
        return out

    async def list_virtualenvs(self) -> List[Dict[str, Any]]:
        """This machine's environments (see
        :func:`xinference.model.virtualenv.list_virtualenvs`) with ``worker_address``."""
        from ..model.virtualenv import list_virtualenvs

        rows = await asyncio.to_thread(list_virtualenvs, self.virtualenvs_in_use())
        return [dict(r, worker_address=self.address) for r in rows]

    async def remove_virtualenv(self, key: str) -> str:
        """Delete environment ``key`` here; returns its path.

        Raises:
            ConflictError: a replica here runs (or is launching) on it (409).
            ModelNotFoundError: no such environment here (404).
        """
        from ..model.virtualenv import remove_virtualenv

        return await asyncio.to_thread(remove_virtualenv, key, self.virtualenvs_in_use())

    def get_launch_stage(self, replica_uid: str) -> Optional[str]:
        """What the launch of ``replica_uid`` is doing when it is not loading weights
        ("installing 9 packages into virtual environment ..."); None otherwise."""
        return self._env_stage.get(replica_uid)

    async def _launch(self, replica_uid, model_uid, model_type, loader, model_desc,
                      request_limits, env, gpus=None, virtualenv=None):
        try:
            return await self._launch_in_process(replica_uid, model_uid, model_type, loader,
                                                 model_desc, request_limits, env, gpus,
                                                 virtualenv)
        finally:  # the spare process taken (or none started yet) is replaced now
            if self._spare is None:
                self._refill_spare()

    async def _launch_in_process(self, replica_uid, model_uid, model_type, loader,
                                 model_desc, request_limits, env, gpus=None,
                                 virtualenv=None):
        venv = await self._prepare_virtualenv(replica_uid, virtualenv)
        if venv is not None:
            self._launch_envs[replica_uid] = (model_uid, venv.key)
        env = dict(env or {})
        if venv is not None:  # the project's code reaches that Python through PYTHONPATH
            from ..model.virtualenv import model_process_env

            env.update(model_process_env())
        address = await self._take_sub_pool(env, venv.python if venv is not None else None)
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
            replica_uid, model_uid, address, ref, info["pid"], time.time(), model_type,
            dict(model_desc), request_limits, gpus,
            virtualenv=venv.key if venv is not None else None,
        )
        logger.info("Launched %s in process %s (%s) in %.2fs%s", replica_uid, info["pid"],
                    address, info["load_seconds"],
                    f" on GPU {gpus}" if gpus else "")
        return {"address": address, "gpu_idx": gpus,
                "virtualenv": venv.key if venv is not None else None, **info}

    async def get_launch_progress(self, replica_uid: str) -> float:
        """0..1: 1.0 once the replica is loaded, the model process's own report while it
        loads (see :mod:`xinference.model.progress`), 0.0 while its process starts.

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

    async def cancel_launch(self, replica_uid: str, grace: float = 10.0) -> None:
        """Stop a launch in progress and remove its process. The model process is asked to
        stop first (a download stops at its next chunk and removes its partial files); a
        load that has not ended after ``grace`` seconds is cut off by removing the process.
        Returns once the launch has ended.

        Raises:
            ModelNotFoundError: ``replica_uid`` is not launching here.
        """
        task = self._launching.get(replica_uid)
        if task is None:
            raise ModelNotFoundError(f"Model {replica_uid!r} is not launching on this worker")
        env_cancel = self._env_cancel.get(replica_uid)
        if env_cancel is not None:  # making its environment: kill uv now
            await asyncio.to_thread(env_cancel.cancel)
        ref = self._progress_refs.get(replica_uid)
        if ref is not None:
            try:
                await asyncio.wait_for(ref.cancel(), timeout=5)
            except Exception:  # the process is going away already
                pass
        done, _ = await asyncio.wait({task}, timeout=grace)
        if not done:
            task.cancel()
            await asyncio.wait({task})
        logger.info("Launch of %s cancelled", replica_uid)

    def stop_process(self) -> None:
        """Stop this worker process as SIGTERM does (``DELETE /v1/clusters``): leave the
        cluster, terminate its models, exit. Returns before that happens."""
        import signal

        asyncio.get_running_loop().call_later(0.2, os.kill, os.getpid(), signal.SIGTERM)

    # ---- cache and metrics ---------------------------------------------------------------
    async def list_cached_models(self, model_name: Optional[str] = None
                                 ) -> List[Dict[str, Any]]:
        """This machine's cache rows (see
        :func:`xinference.model.cache_manager.list_cached_models`) with
        ``actor_ip_address`` (this worker's address)."""
        from ..model.cache_manager import list_cached_models

        rows = await asyncio.to_thread(list_cached_models, model_name)
        return [dict(r, actor_ip_address=self.address) for r in rows]

    async def cached_model_paths(self, model_version: str) -> List[str]:
        from ..model.cache_manager import cached_model_paths

        return await asyncio.to_thread(cached_model_paths, model_version)

    async def remove_cached_model(self, model_version: str) -> List[str]:
        """Delete one model version's cache here; refused while a replica here uses it
        or is being launched from it.

        Raises:
            ConflictError: a running or launching replica here uses it (409).
        """
        from ..model.cache_manager import check_version_not_running, remove_cached_model

        check_version_not_running(
            model_version, [(r.model_uid, r.desc) for r in self._replicas.values()]
            + list(self._launch_descs.values()))
        return await asyncio.to_thread(remove_cached_model, model_version)

    async def get_metrics(self) -> Dict[str, Any]:
        """One scrape of this node: resources and each live replica's counters (see
        :mod:`xinference.core.metrics`); a replica that does not answer in 5 s is
        skipped."""
        from .resource import node_resources

        res = await asyncio.to_thread(node_resources)

        async def stats(rep: _Replica):
            try:
                return await asyncio.wait_for(rep.ref.get_metrics(), timeout=5)
            except Exception:
                return None

        live = [r for r in self._replicas.values() if self._is_alive(r)]
        replicas = [m for m in await asyncio.gather(*(stats(r) for r in live)) if m]
        return {"node": self.address, "cpu_count": res["cpu_count"],
                "cpu_utilization": (res.get("cpu_utilization") or 0.0) / 100.0,
                "memory_total": res["memory_total"],
                "memory_available": res["memory_available"],
                "gpus": [{"index": g.get("index"), "memory_total": g.get("memory_total"),
                          "memory_used": g.get("memory_used")} for g in res["gpus"]],
                "model_processes": len(live), "replicas": replicas}

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

    def list_replicas(self, detailed: bool = False) -> List[Dict[str, Any]]:
        """Replicas on this worker with their process id, liveness and GPUs; ``detailed``
        adds what the supervisor needs to adopt them (``model_type``, ``desc``,
        ``request_limits``)."""
        out = []
        for r in self._replicas.values():
            row = {"replica_uid": r.replica_uid, "model_uid": r.model_uid, "pid": r.pid,
                   "address": r.sub_pool_address, "alive": self._is_alive(r),
                   "launched_at": r.launched_at, "gpu_idx": r.gpus,
                   "virtualenv": r.virtualenv, "memory_rss": _rss(r.pid)}
            if detailed:
                row.update(model_type=r.model_type, desc=r.desc,
                           request_limits=r.request_limits)
            out.append(row)
        return out

    async def get_status(self, detailed: bool = False) -> Dict[str, Any]:
        """This node's resources (see :func:`xinference.core.resource.node_resources`),
        ``gpu_allocations`` (``{index: model processes}``), its replicas (``models``), its
        address and ``worker_id``."""
        from .resource import node_resources

        res = await asyncio.to_thread(node_resources)
        self._gpus = res["gpus"]
        return dict(res, address=self.address, worker_id=self._worker_id,
                    gpu_allocations=self._gpus_in_use(),
                    models=self.list_replicas(detailed))

    # ---- heartbeat -----------------------------------------------------------------------
    def _notice_dead_replicas(self) -> None:
        for r in self._replicas.values():
            if not r.dead_noticed and not self._is_alive(r):
                r.dead_noticed = True
                proc = self._main_pool.sub_processes.get(r.sub_pool_address)
                code = getattr(proc, "returncode", None)
                logger.warning("The process of model %s (pid %s) has died (exit code %s); "
                               "reporting it to the supervisor", r.replica_uid, r.pid, code)

    async def _resolve_supervisor_address(self) -> None:
        """Ask the REST endpoint again for the supervisor's address (it may have moved)."""
        if not self._endpoint:
            return
        try:
            address = await asyncio.to_thread(
                fetch_supervisor_address, self._endpoint, 0, self._api_key,
                health_check_timeout())
        except Exception:
            return
        if address != self._supervisor_address:
            logger.info("The supervisor is now at %s", address)
            self._supervisor_address = address
            self._supervisor_ref = None

    async def heartbeat(self) -> bool:
        """Send one heartbeat now; True when the supervisor answered. The supervisor's reply
        may name replicas to stop (models terminated while this worker was unreachable)."""
        self._notice_dead_replicas()
        status = await self.get_status(detailed=True)
        timeout = health_check_timeout()
        try:
            if self._supervisor_ref is None:
                self._supervisor_ref = await xo.wait_for(
                    xo.actor_ref(address=self._supervisor_address, uid=SUPERVISOR_UID), timeout
                )
            reply = await xo.wait_for(
                self._supervisor_ref.worker_heartbeat(self.address, status), timeout
            )
        except Exception as e:
            if self._connected:
                logger.warning("Heartbeat to the supervisor at %s failed (%s: %s); retrying "
                               "every %.1fs", self._supervisor_address, type(e).__name__, e,
                               health_check_interval())
            self._connected = False
            self._supervisor_ref = None
            return False
        if not self._connected:
            logger.info("Registered with the supervisor at %s", self._supervisor_address)
        self._connected = True
        for uid in (reply or {}).get("terminate", []):
            if uid in self._replicas:
                logger.info("Stopping %s: the supervisor no longer serves it", uid)
                try:
                    await self.terminate_model(uid)
                except Exception:
                    logger.exception("Stopping %s failed", uid)
        return True

    async def leave(self) -> None:
        """Stop heart-beating and tell the supervisor this worker is leaving (on a clean
        shutdown), so its replicas are dropped at once instead of after the dead timeout."""
        if self._heartbeat_task is not None:
            self._heartbeat_task.cancel()
            self._heartbeat_task = None
        try:
            ref = await xo.wait_for(
                xo.actor_ref(address=self._supervisor_address, uid=SUPERVISOR_UID), 5)
            await xo.wait_for(ref.remove_worker(self.address), 5)
        except Exception as e:
            logger.warning("Could not tell the supervisor that this worker leaves: %s", e)

    async def _heartbeat_loop(self):
        failures = 0
        while True:
            try:
                ok = await self.heartbeat()
            except asyncio.CancelledError:
                raise
            except Exception:  # never let the loop die
                logger.exception("Heartbeat failed")
                ok = False
            failures = 0 if ok else failures + 1
            if failures and failures % 3 == 0:
                await self._resolve_supervisor_address()
            await asyncio.sleep(health_check_interval())

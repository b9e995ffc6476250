"""SupervisorActor: one per cluster, the RPC front of the cluster's bookkeeping.

The actor holds no bookkeeping of its own; each part lives with its state in its own
module, and the actor's methods (called by the REST API and the workers) delegate to them:

- :mod:`~xinference.core.workers`: the worker table (registration on the first heartbeat,
  liveness, calls that give up on a dead worker);
- :mod:`~xinference.core.model_table`: model uids (running, launching, lost, failed) and
  where their replicas run;
- :mod:`~xinference.core.launcher`: placement on the least-loaded worker, launch, cancel,
  terminate, launch progress;
- :mod:`~xinference.core.router`: round-robin over ready replicas (the REST API gets the
  ModelActor ref and talks to the model process directly) and request aborts;
- :mod:`~xinference.core.persist`: launch records, relaunched when workers (re)join;
- :class:`~xinference.model.registry.ModelRegistry`: builtin and custom registrations.

Custom registrations live here only: a launch plans the model here and sends the worker a
loader that carries the whole family (see ``ModelTypeHandler.plan``), so a worker never
resolves a registration itself, and a worker that joins later can launch custom models
registered before it came.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Dict, List, Optional

import xoscar as xo

from ..constants import SUPERVISOR_UID, health_check_timeout
from ..errors import (
    ConflictError,
    InvalidRequestError,
    ModelNotFoundError,
    ModelUnavailableError,
)
from ..model import model_type_handlers
from ..model.registry import ModelRegistry
from .launcher import Launcher
from .model_table import ModelTable
from .persist import PersistedLaunches
from .resource import node_resources
from .router import ReplicaRouter
from .workers import Worker, WorkerTable, host_of

logger = logging.getLogger(__name__)


class SupervisorActor(xo.StatelessActor):
    """The cluster's bookkeeper. See the module docstring.

    Liveness: workers heartbeat every ``XINFERENCE_HEALTH_CHECK_INTERVAL`` seconds
    (:meth:`worker_heartbeat`); one silent for ``interval * XINFERENCE_HEALTH_CHECK_FAILURE_
    THRESHOLD`` seconds is declared dead (noticed within ``interval * (threshold + 1)``), its
    replicas dropped. A model left without replicas is *lost*: its uid answers 503 with the
    reason until it is launched again or terminated. A worker registers on its first
    heartbeat, reporting the replicas it holds; the supervisor adopts them, which is how a
    restarted supervisor gets its model table back.
    """

    def __init__(self):
        super().__init__()
        handlers = model_type_handlers()
        self._registry = ModelRegistry(
            {t: h.schema for t, h in handlers.items()},
            {t: h.builtins for t, h in handlers.items()},
        )
        self._models = ModelTable()
        self._workers = WorkerTable(self._models, on_join=self._on_worker_join)
        self._launcher = Launcher(self._registry, self._workers, self._models)
        self._router = ReplicaRouter(self._workers, self._models)
        self._persisted = PersistedLaunches(self._workers, self._models,
                                            launch=self.launch_builtin_model)

    @classmethod
    def default_uid(cls) -> str:
        return SUPERVISOR_UID

    async def __post_create__(self):
        n = self._registry.load_persisted()
        if n:
            logger.info("Loaded %d persisted custom model registration(s)", n)
        self._workers.start()

    async def __pre_destroy__(self):
        self._workers.stop()

    def _on_worker_join(self) -> None:
        self._persisted.schedule()

    # ---- workers --------------------------------------------------------------------------
    async def add_worker(self, worker_address: str, local: bool = False) -> None:
        """Register a worker pool (its WorkerActor uid is ``WORKER_UID``) right away,
        without waiting for its first heartbeat. ``local``: the worker lives in this
        process (``xinference-local``) and is never declared dead."""
        await self._workers.add(worker_address, local)

    async def remove_worker(self, worker_address: str) -> None:
        """A worker leaving on purpose (it stopped its models): forget it and its replicas."""
        self._workers.remove(worker_address)

    async def worker_heartbeat(self, worker_address: str,
                               status: Dict[str, Any]) -> Dict[str, Any]:
        """A worker's periodic report (see :meth:`WorkerActor.get_status`, detailed).

        The first report of a worker process (new address, or a new ``worker_id`` at a known
        address: the worker restarted) registers it and adopts the replicas it reports.
        Later reports refresh its resources and mark replicas whose process died.

        Returns ``{"terminate": [replica_uid, ...]}``: replicas the worker should stop.
        """
        return await self._workers.heartbeat(worker_address, status)

    # ---- launch / terminate --------------------------------------------------------------
    async def launch_builtin_model(self, model_name: str, model_type: str = "LLM",
                                   model_uid: Optional[str] = None, replica: int = 1,
                                   n_gpu: Any = "auto", request_limits: Optional[int] = None,
                                   worker_ip: Optional[str] = None, gpu_idx: Any = None,
                                   persist: Optional[bool] = None, **kwargs) -> str:
        """Launch a model (see :meth:`Launcher.launch
        <xinference.core.launcher.Launcher.launch>` for the arguments and errors).

        ``persist`` (default: ``XINFERENCE_PERSIST_MODELS``) records the launch once it
        runs, so the model is launched again with the same uid and options when the
        server or its worker restarts (:mod:`xinference.core.persist`).

        Raises:
            RequestAbortedError: the launch was cancelled (:meth:`cancel_launch`, 499).
        """
        if persist is not None and not isinstance(persist, bool):
            raise InvalidRequestError(f"'persist' must be true or false, got {persist!r}")
        record = dict(kwargs, model_name=model_name, model_type=model_type,
                      model_uid=model_uid or model_name, replica=replica, n_gpu=n_gpu,
                      request_limits=request_limits, worker_ip=worker_ip, gpu_idx=gpu_idx)
        uid = await self._launcher.launch(model_name, model_type, model_uid, replica, n_gpu,
                                          request_limits, worker_ip, gpu_idx, **kwargs)
        self._persisted.launched(uid, record, persist)
        return uid

    async def cancel_launch(self, model_uid: str) -> Dict[str, Any]:
        """Stop the launch of ``model_uid`` (download or load): its processes are removed
        and a download's partial files deleted; the launch call answers 499. Returns once
        the launch has ended.

        Raises:
            InvalidRequestError: ``model_uid`` is not launching (400).
        """
        return await self._launcher.cancel(model_uid)

    async def terminate_model(self, model_uid: str) -> None:
        """Stop every replica of ``model_uid`` and forget its launch record (a lost model
        is just forgotten). A worker that cannot be reached is told to stop the replica when
        it reports again.

        Raises:
            ModelNotFoundError: not running, lost or recorded.
        """
        forgotten = self._persisted.terminated(model_uid)
        await self._launcher.terminate(model_uid, forgotten)

    async def get_launch_progress(self, model_uid: str) -> float:
        """Launch progress of ``model_uid``, 0..1 (``GET /v1/models/{model_uid}/progress``):
        replicas already loaded count 1 each, the one loading counts its process's report
        (download fraction, see :mod:`xinference.model.progress`); 1.0 once running.

        Raises:
            ModelNotFoundError: neither launching nor running.
        """
        return await self._launcher.progress(model_uid)

    async def get_launch_stage(self, model_uid: str) -> Optional[str]:
        """What the launch of ``model_uid`` is doing besides loading (making its virtual
        environment), or None."""
        return await self._launcher.stage(model_uid)

    async def list_virtualenvs(self) -> List[Dict[str, Any]]:
        """Every worker's virtual environments (``GET /v1/virtualenvs``; see
        :meth:`WorkerActor.list_virtualenvs`)."""
        out = []
        for w in self._workers.all():
            try:
                out.extend(await self._workers.call(w, w.ref.list_virtualenvs(),
                                                    health_check_timeout() * 6))
            except ModelUnavailableError as e:
                logger.warning("Listing the environments of %s failed: %s", w.address,
                               e.message)
        return out

    async def remove_virtualenv(self, key: str) -> Dict[str, Any]:
        """Delete environment ``key`` on every worker that has it; ``{"key", "removed":
        {worker address: path}}``.

        Raises:
            InvalidRequestError: not an environment key (400).
            ConflictError: a model on some worker runs on it (409; nothing is removed).
            ModelNotFoundError: no worker has it (404).
        """
        from ..model.virtualenv import check_key

        check_key(key)
        holders = []
        for w in self._workers.all():
            rows = await self._workers.call(w, w.ref.list_virtualenvs(),
                                            health_check_timeout() * 6)
            if any(r["key"] == key for r in rows):
                holders.append(w)
        for w in holders:  # check every holder before removing anything
            users = (await self._workers.call(w, w.ref.virtualenvs_in_use())).get(key)
            if users:
                raise ConflictError(f"Virtual environment {key} is used by running "
                                    f"model(s) {sorted(users)}; terminate them first")
        if not holders:
            raise ModelNotFoundError(f"No virtual environment {key!r}")
        removed = {w.address: await self._workers.call(w, w.ref.remove_virtualenv(key))
                   for w in holders}
        return {"key": key, "removed": removed}

    # ---- queries ---------------------------------------------------------------------------
    async def get_model(self, model_uid: str):
        """The ModelActor ref of the next ready replica (round-robin). A replica whose
        process died or whose worker does not answer is skipped.

        Raises:
            ModelNotFoundError: not running. ModelUnavailableError: no replica can serve
            (process died, worker gone), or the model is lost.
        """
        return await self._router.get_model(model_uid)

    async def abort_request(self, model_uid: str, request_id: str) -> Dict[str, Any]:
        """Abort the running request ``request_id`` of ``model_uid`` on whichever replica
        runs it (see :meth:`ModelActor.abort_request`).

        Raises:
            ModelNotFoundError: no such model. RequestNotFoundError: no replica runs it.
        """
        return await self._router.abort_request(model_uid, request_id)

    def get_model_type(self, model_uid: str) -> str:
        return self._models.running(model_uid).model_type

    def describe_model(self, model_uid: str) -> Dict[str, Any]:
        """The launch description plus each replica (``replica_uid``, ``worker_address``,
        ``pid``, ``model_address``, ``gpu_idx``, ``status``) and ``address`` (the first
        replica's worker); a persisted model whose relaunch failed: ``status: "error"`` and
        ``error``."""
        if model_uid not in self._models and model_uid in self._models.failed:
            return self._persisted.failed_row(model_uid)
        return self._models.describe(model_uid)

    def list_models(self) -> Dict[str, Dict[str, Any]]:
        """``{model_uid: description}`` of every running model, plus persisted models
        whose relaunch failed (``status: "error"`` and ``error``)."""
        out = {uid: self.describe_model(uid) for uid in self._models}
        for uid in self._models.failed:
            if uid not in out:
                out[uid] = self._persisted.failed_row(uid)
        return out

    def list_instances(self, model_name: Optional[str] = None,
                       model_uid: Optional[str] = None) -> List[Dict[str, Any]]:
        """``GET /v1/models/instances``: every model instance known here, running or not:
        ``model_name``, ``model_uid``, ``model_version``, ``model_ability``, ``replica``,
        ``status`` (``CREATING``, ``READY``, ``ERROR``), ``instance_created_ts`` and
        ``error``."""
        rows = self._models.instances(self._persisted.records(),
                                      self._launcher.launching_replicas())
        return [r for r in rows
                if (model_name is None or r["model_name"] == model_name)
                and (model_uid is None or r["model_uid"] == model_uid)]

    # ---- cluster ---------------------------------------------------------------------------
    def get_workers_info(self) -> List[Dict[str, Any]]:
        """One dict per live worker: its last heartbeat (``cpu_count``, ``memory_total``,
        ``memory_available``, ``gpus``, ``gpu_count``, ``gpu_vram_total``,
        ``gpu_allocations``, ``models``) plus ``node_type`` ("Worker"), ``address``,
        ``ip_address``, ``status`` ("alive" | "suspect") and
        ``last_heartbeat_seconds_ago``."""
        return self._workers.info()

    async def get_cluster_info(self) -> List[Dict[str, Any]]:
        """The supervisor node (its resources) followed by :meth:`get_workers_info`."""
        res = await asyncio.to_thread(node_resources)
        res.update(node_type="Supervisor", address=self.address,
                   ip_address=host_of(self.address), status="alive")
        return [res] + self.get_workers_info()

    async def stop_cluster(self) -> List[str]:
        """``DELETE /v1/clusters``: tell every worker process to stop (each terminates
        its models and exits as on SIGTERM); returns their addresses. The caller stops
        the supervisor's own process afterwards. Persisted launch records are kept."""
        stopped = []
        for w in self._workers.all():
            if w.local:
                continue
            try:
                await self._workers.call(w, w.ref.stop_process(), health_check_timeout())
                stopped.append(w.address)
            except Exception as e:
                logger.warning("Stopping worker %s failed: %s", w.address, e)
        return stopped

    async def collect_metrics(self) -> Dict[str, Any]:
        """One scrape (see :func:`xinference.core.metrics.render`): the model table here
        and every worker's :meth:`WorkerActor.get_metrics` (a worker that does not answer
        in the health-check timeout is left out)."""
        async def node(w: Worker):
            try:
                return await self._workers.call(w, w.ref.get_metrics(),
                                                health_check_timeout())
            except Exception:
                return None

        nodes = await asyncio.gather(*(node(w) for w in self._workers.all()))
        return {"models": self._models.metrics_rows(), "nodes": [n for n in nodes if n]}

    # ---- registrations ---------------------------------------------------------------------
    def list_model_registrations(self, model_type: str, detailed: bool = False):
        return self._registry.list(model_type, detailed)

    def get_model_registration(self, model_type: str, model_name: str) -> Dict[str, Any]:
        fam = self._registry.get(model_type, model_name)
        return dict(fam.model_dump(), is_builtin=not self._registry.is_custom(model_type,
                                                                              model_name))

    def register_model(self, model_type: str, model: Any, persist: bool = False) -> str:
        """Register a custom model; returns its name."""
        return self._registry.register(model_type, model, persist).model_name

    def unregister_model(self, model_type: str, model_name: str) -> None:
        """Refused with 409 while a model launched from this registration is running."""
        running = self._models.using(model_name)
        if running and self._registry.is_custom(model_type, model_name):
            raise ConflictError(
                f"Model {model_name!r} is running as {running}; terminate it first"
            )
        self._registry.unregister(model_type, model_name)

    def query_engines_by_model_name(self, model_name: str) -> Dict[str, Any]:
        """``{engine: [spec rows]}`` for a registered family of any type with engines.

        Raises:
            RegistrationNotFoundError: unknown name.
            InvalidRequestError: the model's type has no engine here (image/audio/video).
        """
        model_type = self._registry.find_type(model_name) or "LLM"
        family = self._registry.get(model_type, model_name)
        engines = model_type_handlers()[model_type].engines
        if engines is None:
            raise InvalidRequestError(f"No engine runs {model_type} models here yet")
        return engines(family)

    # ---- persisted models ------------------------------------------------------------------
    def list_persisted_models(self) -> List[Dict[str, Any]]:
        """The launch records (``GET /v1/models/persisted``), each with ``status``:
        ``running``, ``launching``, ``failed`` (with ``error``) or ``pending`` (waiting for
        a worker)."""
        return self._persisted.rows()

    def forget_persisted_model(self, model_uid: str) -> None:
        """Remove a launch record (the model keeps running if it runs).

        Raises:
            ModelNotFoundError: no record for ``model_uid``.
        """
        self._persisted.forget(model_uid)

    # ---- cache -----------------------------------------------------------------------------
    async def list_cached_models(self, model_name: Optional[str] = None,
                                 worker_ip: Optional[str] = None) -> List[Dict[str, Any]]:
        """Every worker's cache rows (see :meth:`WorkerActor.list_cached_models`)."""
        out = []
        for w in self._workers.select(worker_ip):
            try:
                out.extend(await self._workers.call(
                    w, w.ref.list_cached_models(model_name), health_check_timeout() * 3))
            except ModelUnavailableError as e:
                logger.warning("Listing the cache of %s failed: %s", w.address, e.message)
        return out

    async def cached_model_paths(self, model_version: str,
                                 worker_ip: Optional[str] = None) -> Dict[str, List[str]]:
        """``{worker address: [paths]}`` that removing ``model_version`` would delete."""
        out = {}
        for w in self._workers.select(worker_ip):
            paths = await self._workers.call(w, w.ref.cached_model_paths(model_version),
                                             health_check_timeout() * 3)
            if paths:
                out[w.address] = paths
        return out

    async def remove_cached_model(self, model_version: str,
                                  worker_ip: Optional[str] = None) -> Dict[str, List[str]]:
        """Delete one model version from the caches (of one worker with ``worker_ip``);
        returns ``{worker address: [removed paths]}``.

        Raises:
            ConflictError: a running model uses that version (409).
            ModelNotFoundError: it is cached nowhere (404).
        """
        from ..model.cache_manager import check_version_not_running

        check_version_not_running(model_version, self._models.descs())
        out = {}
        for w in self._workers.select(worker_ip):
            paths = await self._workers.call(w, w.ref.remove_cached_model(model_version),
                                             health_check_timeout() * 3)
            if paths:
                out[w.address] = paths
        if not out:
            raise ModelNotFoundError(f"Model version {model_version!r} is not cached"
                                     + (f" on {worker_ip}" if worker_ip else ""))
        return out

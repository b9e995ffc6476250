"""SupervisorActor: one per cluster.

Tracks registrations (builtin and custom), the workers (heartbeats, resources, liveness),
running models and which worker holds each replica; places launches on the least-loaded
worker that can hold them, and hands the REST API the ModelActor ref of a model
(round-robin over ready replicas) so inference traffic goes straight to the model process.

Custom registrations live here only: a launch plans the model here and sends the worker a
loader that carries the whole family (see ``ModelTypeHandler.plan``), so a worker never
resolves a registration itself, and a worker that joins later can launch custom models
registered before it came.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

import xoscar as xo

from ..constants import (
    health_check_failure_threshold,
    health_check_interval,
    health_check_timeout,
)
from ..model.cache_manager import check_hub
from ..model.options import flag
from ..model import model_type_handlers
from ..model.registry import ModelRegistry, canonical_model_type
from ..errors import (
    ConflictError,
    InvalidRequestError,
    ModelNotFoundError,
    ModelUnavailableError,
    RegistrationNotFoundError,
    RequestAbortedError,
    RequestNotFoundError,
)
from .persist import PersistStore, persist_by_default
from .resource import (allocate_gpus, memory_fit_error, node_resources, normalize_gpu_idx,
                       normalize_n_gpu)

logger = logging.getLogger(__name__)

MODEL_UID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_\-.]*$")


@dataclass
class _RunningModel:
    model_uid: str
    model_type: str
    desc: Dict[str, Any]
    # Each replica: replica_uid, worker_address, pid, model_address, gpu_idx,
    # status ("ready" | "dead") and error (why it is dead).
    replicas: List[Dict[str, Any]] = field(default_factory=list)
    created: int = field(default_factory=lambda: int(time.time()))
    rr: int = 0  # round-robin position


@dataclass
class _Worker:
    address: str
    ref: Any
    worker_id: Optional[str] = None
    local: bool = False  # in the supervisor's own process (xinference-local): never expires
    last_seen: float = field(default_factory=time.monotonic)
    status: Dict[str, Any] = field(default_factory=dict)  # its last heartbeat
    suspect: bool = False  # a call failed since its last heartbeat
    gone: asyncio.Event = field(default_factory=asyncio.Event)  # set once declared dead


def _host(address: str) -> str:
    return address.rsplit(":", 1)[0]


def _replica_row(address: str, row: Dict[str, Any]) -> Dict[str, Any]:
    alive = row.get("alive", True)
    return {"replica_uid": row["replica_uid"], "worker_address": address,
            "pid": row.get("pid"), "model_address": row.get("address"),
            "gpu_idx": row.get("gpu_idx"), "status": "ready" if alive else "dead",
            "error": None if alive else "its process died"}


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
        self._workers: Dict[str, _Worker] = {}
        self._models: Dict[str, _RunningModel] = {}
        self._launching: set = set()
        # model_uid -> {"replica", "done", "worker", "replica_uid"} while it launches.
        self._launch_state: Dict[str, Dict[str, Any]] = {}
        self._registry: Optional[ModelRegistry] = None
        # model_uid -> why it is gone (every replica's worker died).
        self._lost: Dict[str, str] = {}
        # worker address -> {replica_uid: model_uid} dropped when the worker was declared
        # dead; if it comes back holding them they are adopted again ...
        self._away: Dict[str, Dict[str, str]] = {}
        # ... unless their model was terminated or relaunched meanwhile: then the worker is
        # told to stop them (worker address -> replica uids).
        self._to_stop: Dict[str, set] = {}
        self._inflight: Dict[str, int] = {}  # worker address -> replicas being launched
        self._watch_task: Optional[asyncio.Task] = None
        # model_uid -> the task running its launch, and the launches asked to stop
        self._launch_tasks: Dict[str, asyncio.Task] = {}
        self._cancelled: set = set()
        # persisted models: records on disk, and why a relaunch failed (not retried)
        self._persist = PersistStore()
        self._relaunch_failed: Dict[str, str] = {}
        self._relaunch_lock = asyncio.Lock()
        self._relaunch_tasks: set = set()
        self._started = time.monotonic()

    @classmethod
    def default_uid(cls) -> str:
        return "supervisor"

    async def __post_create__(self):
        handlers = model_type_handlers()
        self._registry = ModelRegistry(
            {t: h.schema for t, h in handlers.items()},
            {t: h.builtins for t, h in handlers.items()},
        )
        n = self._registry.load_persisted()
        if n:
            logger.info("Loaded %d persisted custom model registration(s)", n)
        self._watch_task = asyncio.ensure_future(self._watch_workers())

    async def __pre_destroy__(self):
        if self._watch_task is not None:
            self._watch_task.cancel()

    # ---- workers --------------------------------------------------------------------------
    async def add_worker(self, worker_address: str, local: bool = False) -> None:
        """Register a worker pool (its WorkerActor uid is ``"worker"``) right away, without
        waiting for its first heartbeat. ``local``: the worker lives in this process
        (``xinference-local``) and is never declared dead."""
        from .worker import WorkerActor

        w = self._workers.get(worker_address)
        if w is None:
            ref = await xo.actor_ref(address=worker_address, uid=WorkerActor.default_uid())
            w = self._workers[worker_address] = _Worker(worker_address, ref)
        w.local = w.local or local
        w.last_seen = time.monotonic()
        try:
            status = await xo.wait_for(w.ref.get_status(), health_check_timeout())
        except Exception:  # its heartbeat will fill it in
            return
        w.status, w.worker_id = status, status.get("worker_id")
        self._schedule_relaunch()

    async def remove_worker(self, worker_address: str) -> None:
        """A worker leaving on purpose (it stopped its models): forget it and its replicas."""
        if self._workers.pop(worker_address, None) is not None:
            self._drop_replicas_on(worker_address, "left the cluster", remember=False)
            logger.info("Worker %s left the cluster", worker_address)

    async def worker_heartbeat(self, worker_address: str,
                               status: Dict[str, Any]) -> Dict[str, Any]:
        """A worker's periodic report (see :meth:`WorkerActor.get_status`, detailed).

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
        for m in self._models.values():
            for r in m.replicas:
                row = reported.get(r["replica_uid"])
                if (r["worker_address"] == worker_address and row is not None
                        and not row.get("alive", True) and r["status"] == "ready"):
                    r.update(status="dead", error="its process died")
                    logger.warning("Replica %s of %s on %s: its process (pid %s) died",
                                   r["replica_uid"], m.model_uid, worker_address, r["pid"])
        stop = self._to_stop.get(worker_address)
        terminate = sorted(stop & set(reported)) if stop else []
        if terminate:
            stop.difference_update(terminate)
        return {"terminate": terminate}

    async def _register(self, address: str, status: Dict[str, Any],
                        previous: Optional[_Worker]) -> Dict[str, Any]:
        from .worker import WorkerActor

        if previous is not None and previous.worker_id is not None:
            # Same address, new process: what the old process held is gone.
            self._drop_replicas_on(address, "restarted", remember=False)
        ref = previous.ref if previous is not None else await xo.actor_ref(
            address=address, uid=WorkerActor.default_uid())
        self._workers[address] = _Worker(address, ref, status.get("worker_id"),
                                         previous.local if previous else False,
                                         status=status)
        self._away.pop(address, None)
        to_stop = self._to_stop.pop(address, set())
        adopted: List[str] = []
        terminate: List[str] = []
        for row in status.get("models", []):
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
                m = self._models[muid] = _RunningModel(
                    muid, row.get("model_type") or desc.get("model_type", "LLM"), desc,
                    created=int(row.get("launched_at") or time.time()))
                self._lost.pop(muid, None)
            m.replicas.append(_replica_row(address, row))
            adopted.append(ruid)
        logger.info("Worker %s registered: %s CPUs, %.1f GiB memory, %d GPU(s)%s", address,
                    status.get("cpu_count"), (status.get("memory_total") or 0) / 2 ** 30,
                    status.get("gpu_count", 0),
                    f"; serving its replicas {adopted} again" if adopted else "")
        self._schedule_relaunch()
        return {"terminate": terminate}

    def _drop_replicas_on(self, address: str, why: str, remember: bool) -> List[str]:
        """Remove the replicas held by worker ``address`` from the model table; models left
        without replicas become lost. ``remember``: they may come back with the worker."""
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

    def _declare_dead(self, address: str, why: str) -> None:
        w = self._workers.pop(address, None)
        if w is None:
            return
        w.gone.set()
        dropped = self._drop_replicas_on(address, why, remember=True)
        logger.warning("Worker %s is dead (%s); dropped its replicas %s", address, why,
                       dropped)

    async def _watch_workers(self):
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

    async def _call_worker(self, w: _Worker, coro, timeout: Optional[float] = None):
        """Await an actor call to ``w``; give up when ``w`` is declared dead meanwhile or
        after ``timeout`` seconds (ModelUnavailableError), so nothing waits on a dead
        machine."""
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

    async def _refresh_status(self, w: _Worker) -> None:
        try:
            w.status = await self._call_worker(w, w.ref.get_status(), health_check_timeout())
        except Exception:
            pass

    def _load(self, address: str) -> int:
        n = self._inflight.get(address, 0)
        for m in self._models.values():
            n += sum(1 for r in m.replicas if r["worker_address"] == address)
        return n

    def _place(self, worker_ip: Optional[str], n_gpu, gpu_idx,
               placed: List[str], need=None) -> _Worker:
        """The least-loaded worker that can hold one more replica.

        Order: fewest replicas of this model already placed there (spread), fewest replicas
        in all, a worker that answered lately, most free memory.

        Raises:
            ModelUnavailableError: no worker, or the GPUs asked for are busy (503).
            InvalidRequestError: no worker matches ``worker_ip`` or has the GPUs (400).
        """
        workers = list(self._workers.values())
        if not workers:
            raise ModelUnavailableError(
                "No worker is available to launch models; start one with "
                "'xinference-worker -e <supervisor endpoint>'"
            )
        if worker_ip:
            workers = [w for w in workers if worker_ip in (w.address, _host(w.address))]
            if not workers:
                raise InvalidRequestError(
                    f"No worker at {worker_ip!r}; workers: {sorted(self._workers)}"
                )
        fits, reasons, busy = [], [], False
        for w in workers:
            gpus = [g["index"] for g in w.status.get("gpus", [])]
            used = {int(k): v for k, v in (w.status.get("gpu_allocations") or {}).items()}
            try:
                chosen = allocate_gpus(gpus, used, n_gpu, gpu_idx)
                short = need is not None and memory_fit_error(need.total, w.status, chosen)
                if short:  # never fits there: the estimate says why (400)
                    raise InvalidRequestError(
                        f"the model needs {need.describe()} but {short}; launch with "
                        "check_memory=false to try anyway")
                fits.append(w)
            except ModelUnavailableError as e:
                busy = True
                reasons.append(f"worker {w.address}: {e.message}")
            except InvalidRequestError as e:
                reasons.append(f"worker {w.address}: {e.message}")
        if not fits:
            error = ModelUnavailableError if busy else InvalidRequestError
            raise error("No worker can hold this model: " + "; ".join(reasons))
        return min(fits, key=lambda w: (placed.count(w.address), self._load(w.address),
                                        w.suspect,
                                        -(w.status.get("memory_available") or 0)))

    # ---- launch / terminate --------------------------------------------------------------
    async def launch_builtin_model(self, model_name: str, model_type: str = "LLM",
                                   model_uid: Optional[str] = None, replica: int = 1,
                                   n_gpu: Any = "auto", request_limits: Optional[int] = None,
                                   worker_ip: Optional[str] = None, gpu_idx: Any = None,
                                   persist: Optional[bool] = None, **kwargs) -> str:
        """Launch a model (see :meth:`_launch_model` for the arguments and errors).

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
        task = asyncio.ensure_future(self._launch_model(
            model_name, model_type, model_uid, replica, n_gpu, request_limits, worker_ip,
            gpu_idx, **kwargs))
        uid = record["model_uid"]
        try:
            await task
        except asyncio.CancelledError:
            if uid in self._cancelled:
                raise RequestAbortedError(f"The launch of model {uid!r} was cancelled") \
                    from None
            raise
        finally:
            if uid not in self._launching:
                self._cancelled.discard(uid)
        if persist or (persist is None and persist_by_default()):
            self._persist.save(uid, {k: v for k, v in record.items() if v is not None})
        self._relaunch_failed.pop(uid, None)
        return uid

    @staticmethod
    def _memory_need(family, desc: Dict[str, Any], kwargs: Dict[str, Any], cpu: bool):
        """The memory estimate of an LLM launch (weights only when no shape is found
        locally: a lower bound), or None for other model types."""
        if desc.get("model_type") != "LLM":
            return None
        from ..model.llm.memory import estimate_for_family

        try:
            return estimate_for_family(
                family, model_format=desc["model_format"],
                model_size_in_billions=desc["model_size_in_billions"],
                quantization=desc["quantization"], context_length=desc["context_length"],
                model_engine=desc["model_engine"], model_path=kwargs.get("model_path"),
                cpu=cpu)
        except Exception as e:  # an estimate must never block a launch it cannot judge
            logger.warning("No memory estimate for %s: %s", family.model_name, e)
            return None

    async def estimate_model_memory(self, model_name: str, **choices) -> Dict[str, Any]:
        """``GET /v1/models/{model_name}/memory``: the memory estimate of launching a
        registered LLM (see :func:`~xinference.model.llm.memory.estimate_for_family`;
        ``config.json`` may be fetched alone from the hub, off the event loop).

        Raises:
            InvalidRequestError: not an LLM, nothing matches, a bad context length.
        """
        from ..model.llm.memory import estimate_for_family

        model_type = self._registry.find_type(model_name) or "LLM"
        if model_type != "LLM":
            raise InvalidRequestError(
                f"Memory estimates cover LLMs; {model_name!r} is a {model_type} model")
        try:
            family = self._registry.get("LLM", model_name)
        except RegistrationNotFoundError as e:
            raise InvalidRequestError(e.message) from None
        cpu = flag("cpu", choices.pop("cpu", None), False)
        est = await asyncio.to_thread(estimate_for_family, family, download=True, cpu=cpu,
                                      **choices)
        return dict(est.to_dict(), description=est.describe())

    async def cancel_launch(self, model_uid: str) -> Dict[str, Any]:
        """Stop the launch of ``model_uid`` (download or load): its processes are removed
        and a download's partial files deleted; the launch call answers 499. Returns once
        the launch has ended.

        Raises:
            InvalidRequestError: ``model_uid`` is not launching (400).
        """
        if model_uid not in self._launching:
            raise InvalidRequestError(f"Model {model_uid!r} is not launching")
        self._cancelled.add(model_uid)
        task = self._launch_tasks.get(model_uid)
        state = self._launch_state.get(model_uid)
        if state is not None:
            try:
                await state["worker"].cancel_launch(state["replica_uid"])
            except ModelNotFoundError:  # that replica finished meanwhile
                pass
            except Exception as e:
                logger.warning("Cancelling the launch of %s on its worker failed: %s",
                               model_uid, e)
        if task is not None and not task.done():
            task.cancel()
        if task is not None:
            await asyncio.wait({task}, timeout=health_check_timeout() * 6)
        return {"model_uid": model_uid, "cancelled": True}

    async def _launch_model(self, model_name: str, model_type: str = "LLM",
                            model_uid: Optional[str] = None, replica: int = 1,
                            n_gpu: Any = "auto", request_limits: Optional[int] = None,
                            worker_ip: Optional[str] = None, gpu_idx: Any = None,
                            **kwargs) -> str:
        """Launch ``replica`` copies of a registered model under ``model_uid`` (default: the
        model name), spread over the workers (see :meth:`_place`). Returns the uid once
        every replica is loaded.

        Raises:
            RegistrationNotFoundError / InvalidRequestError: unknown name, bad spec or uid,
            bad ``n_gpu``/``gpu_idx``, no worker at ``worker_ip`` or with the GPUs asked.
            ConflictError: ``model_uid`` is already running or launching.
            ModelUnavailableError: no worker, or not enough free GPUs now (503).
            ModelLoadError: the weights could not be found or loaded.
        """
        model_type = canonical_model_type(model_type)
        if not model_name:
            raise InvalidRequestError("'model_name' is required")
        model_uid = model_uid or model_name
        if not MODEL_UID_RE.match(model_uid):
            raise InvalidRequestError(
                f"Invalid model_uid {model_uid!r}: use letters, digits, '_', '-', '.'"
            )
        if model_uid in self._models or model_uid in self._launching:
            raise ConflictError(f"Model {model_uid!r} is already running or launching")
        handler = model_type_handlers().get(model_type)
        if handler is None:
            raise InvalidRequestError(f"Launching {model_type} models is not supported yet")
        if not isinstance(replica, int) or replica < 1:
            raise InvalidRequestError(f"'replica' must be a positive integer, got {replica!r}")
        if request_limits is not None and (not isinstance(request_limits, int)
                                           or request_limits < 1):
            raise InvalidRequestError("'request_limits' must be a positive integer")
        n_gpu, gpu_idx = normalize_n_gpu(n_gpu), normalize_gpu_idx(gpu_idx)
        try:
            family = self._registry.get(model_type, model_name)
        except RegistrationNotFoundError as e:  # a bad launch request, not a missing URL
            raise InvalidRequestError(e.message) from None
        # Engines read n_gpu: "auto" (a GPU when the process sees one), an int, or 0 for the
        # CPU; Xinference's n_gpu=None (CPU only) reaches them as 0.
        kwargs["n_gpu"] = 0 if n_gpu is None else n_gpu
        # download_hub: LLM specs are chosen by hub; other types fetch their model_id there
        download_hub = kwargs.pop("download_hub", None)
        if download_hub is not None:
            check_hub(download_hub)
        check_memory = flag("check_memory", kwargs.pop("check_memory", None), True)
        if model_type == "LLM":
            loader, desc = handler.plan(family, model_uid, download_hub=download_hub, **kwargs)
        else:
            loader, desc = handler.plan(family, model_uid, **kwargs)
            loader.download_hub = download_hub
        desc.update(model_uid=model_uid, replica=replica, n_gpu=n_gpu,
                    request_limits=request_limits)
        cpu = n_gpu in (0, None) or not any(w.status.get("gpus")
                                            for w in self._workers.values())
        need = self._memory_need(family, desc, kwargs, cpu) if check_memory else None
        self._place(worker_ip, n_gpu, gpu_idx, [], need)  # fail fast, before any process

        self._launching.add(model_uid)
        self._launch_tasks[model_uid] = asyncio.current_task()
        self._lost.pop(model_uid, None)
        self._forget_away(model_uid)
        launched: List[Dict[str, Any]] = []
        placed: List[str] = []
        try:
            for i in range(replica):
                w = self._place(worker_ip, n_gpu, gpu_idx, placed)
                replica_uid = f"{model_uid}-{i}"
                self._to_stop.get(w.address, set()).discard(replica_uid)
                self._launch_state[model_uid] = {"replica": replica, "done": i,
                                                 "worker": w.ref, "replica_uid": replica_uid}
                self._inflight[w.address] = self._inflight.get(w.address, 0) + 1
                try:
                    info = await self._call_worker(w, w.ref.launch_model(
                        replica_uid, model_uid, model_type, loader, desc, request_limits,
                        n_gpu=n_gpu, gpu_idx=gpu_idx,
                    ))
                except ModelUnavailableError:
                    if w.gone.is_set():  # if it was only slow, it stops the replica later
                        self._to_stop.setdefault(w.address, set()).add(replica_uid)
                    raise
                finally:
                    self._inflight[w.address] -= 1
                placed.append(w.address)
                launched.append(_replica_row(w.address, dict(info, replica_uid=replica_uid)))
                await self._refresh_status(w)
        except BaseException:
            for rep in launched:
                w = self._workers.get(rep["worker_address"])
                try:
                    if w is not None:
                        await self._call_worker(w, w.ref.terminate_model(rep["replica_uid"]),
                                                health_check_timeout() * 3)
                except Exception:
                    logger.exception("Cleanup of %s failed", rep["replica_uid"])
            raise
        finally:
            self._launching.discard(model_uid)
            self._launch_tasks.pop(model_uid, None)
            self._launch_state.pop(model_uid, None)
        self._models[model_uid] = _RunningModel(model_uid, model_type, desc, launched)
        return model_uid

    def _forget_away(self, model_uid: str) -> None:
        """Replicas of ``model_uid`` on workers declared dead must not come back."""
        for address, away in self._away.items():
            for ruid in [r for r, uid in away.items() if uid == model_uid]:
                del away[ruid]
                self._to_stop.setdefault(address, set()).add(ruid)

    async def terminate_model(self, model_uid: str) -> None:
        """Stop every replica of ``model_uid`` (a lost model is just forgotten). A worker
        that cannot be reached is told to stop the replica when it reports again.

        Raises:
            ModelNotFoundError: not running.
        """
        m = self._models.pop(model_uid, None)
        self._forget_away(model_uid)
        persisted = self._persist.delete(model_uid)
        failed = self._relaunch_failed.pop(model_uid, None)
        if m is None:
            if self._lost.pop(model_uid, None) is not None or persisted or failed:
                return
            raise ModelNotFoundError(f"Model not found in the model list, uid: {model_uid}")
        answered = {}  # workers that took a terminate call: their status is refreshed once
        for rep in m.replicas:
            address, ruid = rep["worker_address"], rep["replica_uid"]
            w = self._workers.get(address)
            if w is None:
                self._to_stop.setdefault(address, set()).add(ruid)
                continue
            try:
                await self._call_worker(w, w.ref.terminate_model(ruid),
                                        health_check_timeout() * 3)
            except ModelNotFoundError:
                pass
            except Exception as e:
                logger.warning("Terminating %s on %s failed (%s); it is stopped when the "
                               "worker reports again", ruid, address, e)
                self._to_stop.setdefault(address, set()).add(ruid)
                continue
            answered[address] = w
        for w in answered.values():
            await self._refresh_status(w)

    async def get_launch_progress(self, model_uid: str) -> float:
        """Launch progress of ``model_uid``, 0..1 (``GET /v1/models/{model_uid}/progress``):
        replicas already loaded count 1 each, the one loading counts its process's report
        (download fraction, see :mod:`xinference.model.progress`); 1.0 once running.

        Raises:
            ModelNotFoundError: neither launching nor running.
        """
        if model_uid in self._models:
            return 1.0
        state = self._launch_state.get(model_uid)
        if state is None:
            if model_uid in self._launching:  # planned, no replica started yet
                return 0.0
            raise ModelNotFoundError(
                f"Model not found in the model list, uid: {model_uid} (not launching)"
            )
        try:
            current = await xo.wait_for(
                state["worker"].get_launch_progress(state["replica_uid"]),
                health_check_timeout())
        except Exception:  # not started yet, slow to answer, or the worker is going away
            current = 0.0
        # never backwards: a query that failed under load repeats the last answer
        value = max(state.get("last_progress", 0.0),
                    min(1.0, (state["done"] + current) / state["replica"]))
        state["last_progress"] = value
        return value

    # ---- queries ---------------------------------------------------------------------------
    def _running(self, model_uid: str) -> _RunningModel:
        m = self._models.get(model_uid)
        if m is None:
            if model_uid in self._lost:
                raise ModelUnavailableError(self._lost[model_uid])
            if model_uid in self._relaunch_failed:
                raise ModelUnavailableError(self._relaunch_failed[model_uid])
            raise ModelNotFoundError(f"Model not found in the model list, uid: {model_uid}")
        return m

    async def get_model(self, model_uid: str):
        """The ModelActor ref of the next ready replica (round-robin). A replica whose
        process died or whose worker does not answer is skipped.

        Raises:
            ModelNotFoundError: not running. ModelUnavailableError: no replica can serve
            (process died, worker gone), or the model is lost.
        """
        m = self._running(model_uid)
        n = len(m.replicas)
        order = [m.replicas[(m.rr + k) % n] for k in range(n)]
        m.rr = (m.rr + 1) % max(n, 1)

        def healthy(r):
            w = self._workers.get(r["worker_address"])
            return w is not None and not w.suspect

        candidates = sorted((r for r in order if r["status"] == "ready"),
                            key=lambda r: not healthy(r))
        error: Optional[Exception] = None
        for r in candidates:
            w = self._workers.get(r["worker_address"])
            if w is None:
                continue
            try:
                return await self._call_worker(w, w.ref.get_model(r["replica_uid"]),
                                               health_check_timeout())
            except ModelUnavailableError as e:  # process died, or the worker is gone
                error = e
                if "has died" in e.message:
                    r.update(status="dead", error=e.message)
                else:
                    logger.warning("Replica %s: %s; trying another replica",
                                   r["replica_uid"], e.message)
            except ModelNotFoundError:  # the worker no longer holds it
                r.update(status="dead", error="its worker no longer holds it")
            except Exception as e:  # connection refused/closed: the worker is going away
                w.suspect = True
                error = ModelUnavailableError(
                    f"Worker {w.address} holding {model_uid!r} is unreachable "
                    f"({type(e).__name__})")
                logger.warning("Replica %s: %s; trying another replica",
                               r["replica_uid"], error.message)
        if error is not None:
            raise error
        dead = [r for r in m.replicas if r["status"] == "dead"]
        reason = f" ({dead[0]['error']})" if dead else ""
        raise ModelUnavailableError(
            f"No replica of model {model_uid!r} can serve{reason}; terminate it and launch "
            "it again."
        )

    def get_model_type(self, model_uid: str) -> str:
        return self._running(model_uid).model_type

    def describe_model(self, model_uid: str) -> Dict[str, Any]:
        """The launch description plus each replica (``replica_uid``, ``worker_address``,
        ``pid``, ``model_address``, ``gpu_idx``, ``status``) and ``address`` (the first
        replica's worker)."""
        if model_uid not in self._models and model_uid in self._relaunch_failed:
            return self._failed_row(model_uid)
        m = self._running(model_uid)
        return dict(m.desc, created=m.created, replicas=[dict(r) for r in m.replicas],
                    address=m.replicas[0]["worker_address"] if m.replicas else None,
                    status="ready" if any(r["status"] == "ready" for r in m.replicas)
                    else "error")

    def _failed_row(self, model_uid: str) -> Dict[str, Any]:
        rec = self._persist.load_all().get(model_uid) or {"model_uid": model_uid}
        return {"model_uid": model_uid, "model_name": rec.get("model_name"),
                "model_type": rec.get("model_type", "LLM"),
                "model_engine": rec.get("model_engine"), "replica": rec.get("replica", 1),
                "replicas": [], "address": None, "created": None, "persisted": True,
                "status": "error", "error": self._relaunch_failed[model_uid]}

    def list_models(self) -> Dict[str, Dict[str, Any]]:
        """``{model_uid: description}`` of every running model, plus persisted models
        whose relaunch failed (``status: "error"`` and ``error``)."""
        out = {uid: self.describe_model(uid) for uid in self._models}
        for uid in self._relaunch_failed:
            if uid not in out:
                out[uid] = self._failed_row(uid)
        return out

    # ---- cluster ---------------------------------------------------------------------------
    def get_workers_info(self) -> List[Dict[str, Any]]:
        """One dict per live worker: its last heartbeat (``cpu_count``, ``memory_total``,
        ``memory_available``, ``gpus``, ``gpu_count``, ``gpu_vram_total``,
        ``gpu_allocations``, ``models``) plus ``node_type`` ("Worker"), ``address``,
        ``ip_address``, ``status`` ("alive" | "suspect") and
        ``last_heartbeat_seconds_ago``."""
        now = time.monotonic()
        out = []
        for w in self._workers.values():
            info = {k: v for k, v in w.status.items() if k != "models"}
            info["models"] = [{k: v for k, v in row.items() if k != "desc"}
                              for row in w.status.get("models", [])]
            info.update(node_type="Worker", address=w.address, ip_address=_host(w.address),
                        status="suspect" if w.suspect else "alive", local=w.local,
                        last_heartbeat_seconds_ago=round(now - w.last_seen, 3))
            out.append(info)
        return out

    async def get_cluster_info(self) -> List[Dict[str, Any]]:
        """The supervisor node (its resources) followed by :meth:`get_workers_info`."""
        res = await asyncio.to_thread(node_resources)
        res.update(node_type="Supervisor", address=self.address,
                   ip_address=_host(self.address), status="alive")
        return [res] + self.get_workers_info()

    # ---- registrations ---------------------------------------------------------------------
    def list_model_registrations(self, model_type: str, detailed: bool = False,
                                 abilities: Optional[List[str]] = None,
                                 hub: Optional[str] = None):
        """Registrations of ``model_type``, filtered by ``abilities`` (all required) and
        ``hub`` (see :meth:`ModelRegistry.list`)."""
        return self._registry.list(model_type, detailed, abilities, hub)

    def get_model_registration(self, model_type: str, model_name: str) -> Dict[str, Any]:
        fam = self._registry.get(model_type, model_name)
        return dict(fam.model_dump(), is_builtin=not self._registry.is_custom(model_type,
                                                                              model_name))

    def register_model(self, model_type: str, model: Any, persist: bool = False) -> str:
        """Register a custom model; returns its name."""
        return self._registry.register(model_type, model, persist).model_name

    def unregister_model(self, model_type: str, model_name: str) -> None:
        """Refused with 409 while a model launched from this registration is running."""
        running = [uid for uid, m in self._models.items()
                   if m.desc.get("model_name") == model_name]
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
        out = []
        for uid, rec in self._persist.load_all().items():
            status = ("running" if uid in self._models else "launching"
                      if uid in self._launching else "failed"
                      if uid in self._relaunch_failed else "pending")
            row = {"model_uid": uid, "launch": rec, "status": status}
            if status == "failed":
                row["error"] = self._relaunch_failed[uid]
            out.append(row)
        return out

    def forget_persisted_model(self, model_uid: str) -> None:
        """Remove a launch record (the model keeps running if it runs).

        Raises:
            ModelNotFoundError: no record for ``model_uid``.
        """
        if not self._persist.delete(model_uid):
            raise ModelNotFoundError(f"No persisted model {model_uid!r}")
        self._relaunch_failed.pop(model_uid, None)

    def _schedule_relaunch(self) -> None:
        task = asyncio.ensure_future(self._relaunch_persisted())
        self._relaunch_tasks.add(task)
        task.add_done_callback(self._relaunch_tasks.discard)

    async def _relaunch_persisted(self) -> None:
        """Launch the recorded models that are not running, once each: a relaunch that
        fails is reported (``status: "error"`` in the model list) and not retried; one
        that finds no room or not its worker waits for the next worker to register."""
        if not any(w.local for w in self._workers.values()):
            # A restarted supervisor: let the running workers report their models first.
            wait = self._started + 2 * health_check_interval() - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
        async with self._relaunch_lock:
            for uid, rec in self._persist.load_all().items():
                if uid in self._models or uid in self._launching \
                        or uid in self._relaunch_failed or not self._workers:
                    continue
                wip = rec.get("worker_ip")
                if wip and not any(wip in (w.address, _host(w.address))
                                   for w in self._workers.values()):
                    continue  # its worker has not joined yet
                logger.info("Launching the persisted model %s again", uid)
                try:
                    await self.launch_builtin_model(**dict(rec, persist=True))
                except ModelUnavailableError as e:
                    logger.warning("Persisted model %s waits for room: %s", uid, e.message)
                except Exception as e:
                    msg = getattr(e, "message", None) or f"{type(e).__name__}: {e}"
                    self._relaunch_failed[uid] = (
                        f"The relaunch of persisted model {uid!r} failed: {msg}")
                    logger.error("%s", self._relaunch_failed[uid])

    # ---- requests, instances, cache, cluster ----------------------------------------------
    async def abort_request(self, model_uid: str, request_id: str) -> Dict[str, Any]:
        """Abort the running request ``request_id`` of ``model_uid`` on whichever replica
        runs it (see :meth:`ModelActor.abort_request`).

        Raises:
            ModelNotFoundError: no such model. RequestNotFoundError: no replica runs it.
        """
        m = self._running(model_uid)
        for r in list(m.replicas):
            w = self._workers.get(r["worker_address"])
            if w is None or r["status"] != "ready":
                continue
            try:
                ref = await self._call_worker(w, w.ref.get_model(r["replica_uid"]),
                                              health_check_timeout())
                return await xo.wait_for(ref.abort_request(request_id),
                                         health_check_timeout())
            except RequestNotFoundError:
                continue
            except Exception as e:  # a replica that cannot answer does not run it
                logger.warning("Abort on replica %s failed: %s", r["replica_uid"], e)
        raise RequestNotFoundError(
            f"No running request {request_id!r} on model {model_uid!r}")

    def list_instances(self, model_name: Optional[str] = None,
                       model_uid: Optional[str] = None) -> List[Dict[str, Any]]:
        """``GET /v1/models/instances``: every model instance known here, running or not:
        ``model_name``, ``model_uid``, ``model_version``, ``model_ability``, ``replica``,
        ``status`` (``CREATING``, ``READY``, ``ERROR``), ``instance_created_ts`` and
        ``error``."""
        from ..model.cache_manager import model_version_of

        rows = []
        for uid, m in self._models.items():
            d = m.desc
            ready = any(r["status"] == "ready" for r in m.replicas)
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
        records = self._persist.load_all()
        for uid in sorted(self._launching):
            rec = records.get(uid, {})
            state = self._launch_state.get(uid) or {}
            rows.append({"model_name": rec.get("model_name"), "model_uid": uid,
                         "model_version": None, "model_ability": [],
                         "replica": state.get("replica", rec.get("replica", 1)),
                         "status": "CREATING", "instance_created_ts": None, "error": None})
        for uid, why in list(self._lost.items()) + list(self._relaunch_failed.items()):
            if uid in self._models or uid in self._launching:
                continue
            rows.append({"model_name": records.get(uid, {}).get("model_name"),
                         "model_uid": uid, "model_version": None, "model_ability": [],
                         "replica": 0, "status": "ERROR", "instance_created_ts": None,
                         "error": why})
        return [r for r in rows
                if (model_name is None or r["model_name"] == model_name)
                and (model_uid is None or r["model_uid"] == model_uid)]

    def _workers_at(self, worker_ip: Optional[str]) -> List[_Worker]:
        ws = list(self._workers.values())
        if worker_ip:
            ws = [w for w in ws if worker_ip in (w.address, _host(w.address))]
            if not ws:
                raise InvalidRequestError(f"No worker at {worker_ip!r}")
        return ws

    async def list_cached_models(self, model_name: Optional[str] = None,
                                 worker_ip: Optional[str] = None) -> List[Dict[str, Any]]:
        """Every worker's cache rows (see :meth:`WorkerActor.list_cached_models`)."""
        out = []
        for w in self._workers_at(worker_ip):
            try:
                out.extend(await self._call_worker(w, w.ref.list_cached_models(model_name),
                                                   health_check_timeout() * 3))
            except ModelUnavailableError as e:
                logger.warning("Listing the cache of %s failed: %s", w.address, e.message)
        return out

    async def cached_model_paths(self, model_version: str,
                                 worker_ip: Optional[str] = None) -> Dict[str, List[str]]:
        """``{worker address: [paths]}`` that removing ``model_version`` would delete."""
        out = {}
        for w in self._workers_at(worker_ip):
            paths = await self._call_worker(w, w.ref.cached_model_paths(model_version),
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

        check_version_not_running(model_version,
                                  ((uid, m.desc) for uid, m in self._models.items()))
        out = {}
        for w in self._workers_at(worker_ip):
            paths = await self._call_worker(w, w.ref.remove_cached_model(model_version),
                                            health_check_timeout() * 3)
            if paths:
                out[w.address] = paths
        if not out:
            raise ModelNotFoundError(f"Model version {model_version!r} is not cached"
                                     + (f" on {worker_ip}" if worker_ip else ""))
        return out

    async def stop_cluster(self) -> List[str]:
        """``DELETE /v1/clusters``: tell every worker process to stop (each terminates
        its models and exits as on SIGTERM); returns their addresses. The caller stops
        the supervisor's own process afterwards. Persisted launch records are kept."""
        stopped = []
        for w in list(self._workers.values()):
            if w.local:
                continue
            try:
                await self._call_worker(w, w.ref.stop_process(), health_check_timeout())
                stopped.append(w.address)
            except Exception as e:
                logger.warning("Stopping worker %s failed: %s", w.address, e)
        return stopped

    async def collect_metrics(self) -> Dict[str, Any]:
        """One scrape (see :func:`xinference.core.metrics.render`): the model table here
        and every worker's :meth:`WorkerActor.get_metrics` (a worker that does not answer
        in the health-check timeout is left out)."""
        models = []
        for uid, m in self._models.items():
            counts: Dict[str, int] = {}
            for r in m.replicas:
                counts[r["status"]] = counts.get(r["status"], 0) + 1
            models.append({"model_uid": uid, "model_name": m.desc.get("model_name"),
                           "engine": m.desc.get("model_engine"), "replicas": counts})

        async def node(w: _Worker):
            try:
                return await self._call_worker(w, w.ref.get_metrics(),
                                               health_check_timeout())
            except Exception:
                return None

        nodes = await asyncio.gather(*(node(w) for w in list(self._workers.values())))
        return {"models": models, "nodes": [n for n in nodes if n]}

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
from ..model import model_type_handlers
from ..model.registry import ModelRegistry, canonical_model_type
from .errors import (
    ConflictError,
    InvalidRequestError,
    ModelNotFoundError,
    ModelUnavailableError,
    RegistrationNotFoundError,
)
from .resource import allocate_gpus, node_resources, normalize_gpu_idx, normalize_n_gpu

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
               placed: List[str]) -> _Worker:
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
                allocate_gpus(gpus, used, n_gpu, gpu_idx)
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
        loader, desc = handler.plan(family, model_uid, **kwargs)
        desc.update(model_uid=model_uid, replica=replica, n_gpu=n_gpu,
                    request_limits=request_limits)
        self._place(worker_ip, n_gpu, gpu_idx, [])  # fail fast, before any process starts

        self._launching.add(model_uid)
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
        if m is None:
            if self._lost.pop(model_uid, None) is not None:
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
        (download fraction, see :mod:`xinference.core.progress`); 1.0 once running.

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
        except Exception:  # not started yet, or the worker is going away
            current = 0.0
        return min(1.0, (state["done"] + current) / state["replica"])

    # ---- queries ---------------------------------------------------------------------------
    def _running(self, model_uid: str) -> _RunningModel:
        m = self._models.get(model_uid)
        if m is None:
            if model_uid in self._lost:
                raise ModelUnavailableError(self._lost[model_uid])
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
        m = self._running(model_uid)
        return dict(m.desc, created=m.created, replicas=[dict(r) for r in m.replicas],
                    address=m.replicas[0]["worker_address"] if m.replicas else None)

    def list_models(self) -> Dict[str, Dict[str, Any]]:
        """``{model_uid: description}`` of every running model."""
        return {uid: self.describe_model(uid) for uid in self._models}

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

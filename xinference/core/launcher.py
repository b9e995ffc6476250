"""The supervisor's launcher: placement, launch, cancel, terminate and launch progress.

A launch plans the model here (``ModelTypeHandler.plan`` turns the registration into a
loader that carries the whole family, so a worker never resolves a registration itself)
and starts ``replica`` copies one after the other, each on the least-loaded worker that can
hold it (:meth:`Launcher.place`). A replica that fails stops the launch and the replicas
already started. While it runs, the launch can be cancelled (the worker removes the
replica's process and a download's partial files) and reports its progress.
"""

from __future__ import annotations

import asyncio
import logging
import re
from typing import Any, Dict, List, Optional, Tuple

import xoscar as xo

from ..constants import health_check_timeout
from ..errors import (
    InvalidRequestError,
    ModelNotFoundError,
    ModelUnavailableError,
    RegistrationNotFoundError,
    RequestAbortedError,
)
from ..model.cache_manager import check_hub
from ..model.loader import preferred_hub
from ..model.options import flag
from ..model import model_type_handlers
from ..model.registry import ModelRegistry, canonical_model_type
from ..model.virtualenv import plan_for_engine
from .events import ERROR, WARNING, EventLog
from .launch_caps import check_launch_caps
from .limits import DEFAULT_REQUEST_LIMITS
from .model_table import ModelTable, replica_row
from .resource import allocate_gpus, memory_fit_error, normalize_gpu_idx, normalize_n_gpu
from .workers import Worker, WorkerTable

logger = logging.getLogger(__name__)

MODEL_UID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_\-.]*$")


class Launcher:
    """Starts and stops models on the workers (see the module docstring).

    Args:
        registry: the registrations that launches are planned from.
        workers: where replicas go.
        models: the model table; a launch reserves its uid there and adds the model once
            every replica runs.
    """

    def __init__(self, registry: ModelRegistry, workers: WorkerTable, models: ModelTable,
                 events: Optional[EventLog] = None):
        self._registry = registry
        self._workers = workers
        self._models = models
        self.events = events or EventLog()
        # model_uid -> what adding a replica at run time needs (see ReplicaScaler)
        self.plans: Dict[str, Dict[str, Any]] = {}
        self._inflight: Dict[str, int] = {}  # worker address -> replicas being launched
        # model_uid -> the task running its launch, and the launches asked to stop
        self._tasks: Dict[str, asyncio.Task] = {}
        self._cancelled: set = set()
        # model_uid -> {"replica", "done", "worker", "replica_uid"} while it launches.
        self._state: Dict[str, Dict[str, Any]] = {}
        # model_uid -> its launch description, from planning until the launch ends
        self._planned: Dict[str, Dict[str, Any]] = {}

    # ---- placement -------------------------------------------------------------------------
    def _load(self, address: str) -> int:
        return self._inflight.get(address, 0) + self._models.count_on(address)

    def place(self, worker_ip: Optional[str], n_gpu, gpu_idx, placed: List[str],
              need=None) -> Worker:
        """The least-loaded worker that can hold one more replica.

        Order: fewest replicas of this model already placed there (``placed``: their
        addresses; spread), fewest replicas in all, a worker that answered lately, most
        free memory.

        ``need`` (a memory estimate, :class:`~xinference.model.llm.memory.MemoryEstimate`)
        keeps only the workers whose chosen GPUs (free memory) or host memory (a CPU load)
        can hold it.

        Raises:
            ModelUnavailableError: no worker, or the GPUs asked for are busy (503).
            InvalidRequestError: no worker matches ``worker_ip``, has the GPUs, or has the
            memory (400, with the estimate).
        """
        if not self._workers:
            raise ModelUnavailableError(
                "No worker is available to launch models; start one with "
                "'xinference-worker -e <supervisor endpoint>'"
            )
        workers = self._workers.select(worker_ip, listing=True)
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

    # ---- launch ----------------------------------------------------------------------------
    async def launch(self, model_name: str, model_type: str = "LLM",
                     model_uid: Optional[str] = None, replica: int = 1,
                     n_gpu: Any = "auto", request_limits: Optional[int] = None,
                     worker_ip: Optional[str] = None, gpu_idx: Any = None,
                     **kwargs) -> str:
        """Launch ``replica`` copies of a registered model under ``model_uid`` (default: the
        model name), spread over the workers (see :meth:`place`). Returns the uid once
        every replica is loaded. ``kwargs`` go to the model type's planner (engine,
        format, size, quantization, engine options ...).

        Raises:
            RegistrationNotFoundError / InvalidRequestError: unknown name, bad spec or uid,
            bad ``n_gpu``/``gpu_idx``, no worker at ``worker_ip`` or with the GPUs asked;
            ``replica``, ``n_parallel`` or ``n_ctx`` above the cluster's caps
            (:mod:`xinference.core.launch_caps`).
            ConflictError: ``model_uid`` is already running or launching.
            ModelUnavailableError: no worker, or not enough free GPUs now (503).
            ModelLoadError: the weights could not be found or loaded.
            RequestAbortedError: the launch was cancelled (:meth:`cancel`, 499).
        """
        uid = model_uid or model_name
        busy = self._models.is_launching(uid) or uid in self._models
        if not busy:
            self.events.add(uid, f"Launch of {model_type} model {model_name!r} requested "
                            f"({replica} replica(s))")
        task = asyncio.ensure_future(self._launch(
            model_name, model_type, model_uid, replica, n_gpu, request_limits, worker_ip,
            gpu_idx, **kwargs))
        try:
            out = await task
            self.events.add(uid, "Model is running")
            return out
        except asyncio.CancelledError:
            if uid in self._cancelled:
                self.events.add(uid, "Launch cancelled", WARNING, "error")
                raise RequestAbortedError(f"The launch of model {uid!r} was cancelled") \
                    from None
            raise
        except Exception as e:
            if not busy:
                self.events.add(uid, f"Launch failed: {getattr(e, 'message', None) or e}",
                                ERROR, "error")
            raise
        finally:
            if not self._models.is_launching(uid):
                self._cancelled.discard(uid)

    async def _launch(self, model_name: str, model_type: str, model_uid: Optional[str],
                      replica: int, n_gpu: Any, request_limits: Optional[int],
                      worker_ip: Optional[str], gpu_idx: Any, **kwargs) -> str:
        model_type = canonical_model_type(model_type)
        if not model_name:
            raise InvalidRequestError("'model_name' is required")
        model_uid = model_uid or model_name
        if not MODEL_UID_RE.match(model_uid):
            raise InvalidRequestError(
                f"Invalid model_uid {model_uid!r}: use letters, digits, '_', '-', '.'"
            )
        self._models.check_free(model_uid)
        handler = model_type_handlers().get(model_type)
        if handler is None:
            raise InvalidRequestError(f"Launching {model_type} models is not supported yet")
        if not isinstance(replica, int) or replica < 1:
            raise InvalidRequestError(f"'replica' must be a positive integer, got {replica!r}")
        if request_limits is not None and (not isinstance(request_limits, int)
                                           or request_limits < 1):
            raise InvalidRequestError("'request_limits' must be a positive integer")
        if request_limits is None:
            request_limits = DEFAULT_REQUEST_LIMITS.get(model_type)
        max_tokens_limit = kwargs.pop("max_tokens_limit", None)
        if max_tokens_limit is not None:
            if model_type != "LLM":
                raise InvalidRequestError("'max_tokens_limit' is an option of LLMs only")
            if isinstance(max_tokens_limit, bool) or not isinstance(max_tokens_limit, int) \
                    or max_tokens_limit < 1:
                raise InvalidRequestError("'max_tokens_limit' must be a positive integer")
        n_gpu, gpu_idx = normalize_n_gpu(n_gpu), normalize_gpu_idx(gpu_idx)
        try:
            family = self._registry.get(model_type, model_name)
        except RegistrationNotFoundError as e:  # a bad launch request, not a missing URL
            raise InvalidRequestError(e.message) from None
        # Engines read n_gpu: "auto" (a GPU when the process sees one), an int, or 0 for the
        # CPU; Xinference's n_gpu=None (CPU only) reaches them as 0.
        kwargs["n_gpu"] = 0 if n_gpu is None else n_gpu
        venv_opts = (kwargs.pop("enable_virtual_env", None),
                     kwargs.pop("virtual_env_packages", None))
        # download_hub: LLM specs are chosen by hub; other types fetch their model_id there
        download_hub = kwargs.pop("download_hub", None)
        if download_hub is not None:
            check_hub(download_hub)
        check_memory = flag("check_memory", kwargs.pop("check_memory", None), True)
        if model_type == "LLM":
            loader, desc = handler.plan(family, model_uid, download_hub=download_hub, **kwargs)
        else:
            loader, desc = handler.plan(family, model_uid, **kwargs)
            loader.download_hub = preferred_hub(family, download_hub)
            desc.update(loader.weights_description())
        # The engine's own environment, if any (model/virtualenv): decided here as far as
        # the launch and the engine say, made on the worker.
        venv = plan_for_engine(loader.engine_class, *venv_opts)
        if venv is not None:  # shown by GET /v1/models/{uid} (None: the worker's default)
            desc.update(enable_virtual_env=venv.enable,
                        virtual_env_packages=list(venv.packages))
        desc.update(model_uid=model_uid, replica=replica, n_gpu=n_gpu,
                    request_limits=request_limits)
        if max_tokens_limit is not None:
            desc["max_tokens_limit"] = max_tokens_limit
        check_launch_caps(replica, kwargs,
                          [w.status for w in self._workers.select(worker_ip)])
        cpu = n_gpu in (0, None) or not any(w.status.get("gpus") for w in self._workers.all())
        need = memory_need(family, desc, kwargs, cpu) if check_memory else None
        self.place(worker_ip, n_gpu, gpu_idx, [], need)  # fail fast, before any process

        self._models.reserve(model_uid)
        self._planned[model_uid] = desc
        self._tasks[model_uid] = asyncio.current_task()
        launched: List[Dict[str, Any]] = []
        placed: List[str] = []
        try:
            for i in range(replica):
                w = self.place(worker_ip, n_gpu, gpu_idx, placed, need)
                replica_uid = f"{model_uid}-{i}"
                self._models.keep(w.address, replica_uid)
                self._state[model_uid] = {"replica": replica, "done": i,
                                          "worker": w.ref, "replica_uid": replica_uid}
                placed.append(w.address)
                launched.append(await self.start_replica(
                    w, model_uid, replica_uid, model_type, loader, desc, request_limits,
                    n_gpu, gpu_idx, venv))
        except BaseException:
            for rep in launched:
                w = self._workers.get(rep["worker_address"])
                try:
                    if w is not None:
                        await self._workers.call(w, w.ref.terminate_model(rep["replica_uid"]),
                                                 health_check_timeout() * 3)
                except Exception:
                    logger.exception("Cleanup of %s failed", rep["replica_uid"])
            raise
        finally:
            self._models.release(model_uid)
            self._planned.pop(model_uid, None)
            self._tasks.pop(model_uid, None)
            self._state.pop(model_uid, None)
        self._models.add(model_uid, model_type, desc, launched)
        self.plans[model_uid] = {"loader": loader, "desc": desc, "model_type": model_type,
                                 "n_gpu": n_gpu, "gpu_idx": gpu_idx, "worker_ip": worker_ip,
                                 "request_limits": request_limits, "venv": venv}
        return model_uid

    async def start_replica(self, w: Worker, model_uid: str, replica_uid: str,
                            model_type: str, loader, desc: Dict[str, Any],
                            request_limits: Optional[int], n_gpu, gpu_idx, venv=None
                            ) -> Dict[str, Any]:
        """Start one replica on worker ``w`` and wait until it is loaded; its row (see
        :func:`replica_row`). Records the placement, download/load progress milestones
        (25/50/75/100%) and the outcome in the model's events.

        Raises:
            as ``WorkerActor.launch_model``; ModelUnavailableError when ``w`` is gone.
        """
        self.events.add(model_uid, f"Replica {replica_uid} placed on worker {w.address}",
                        replica_uid=replica_uid)
        self._inflight[w.address] = self._inflight.get(w.address, 0) + 1
        watcher = asyncio.ensure_future(self._watch_progress(w, model_uid, replica_uid))
        try:
            info = await self._workers.call(w, w.ref.launch_model(
                replica_uid, model_uid, model_type, loader, desc, request_limits,
                n_gpu=n_gpu, gpu_idx=gpu_idx, virtualenv=venv,
            ))
        except ModelUnavailableError:
            if w.gone.is_set():  # if it was only slow, it stops the replica later
                self._models.stop_later(w.address, replica_uid)
            raise
        finally:
            watcher.cancel()
            self._inflight[w.address] -= 1
        self.events.add(model_uid, f"Replica {replica_uid} loaded (pid {info.get('pid')})",
                        replica_uid=replica_uid)
        await self._workers.refresh_status(w)
        return replica_row(w.address, dict(info, replica_uid=replica_uid))

    async def _watch_progress(self, w: Worker, model_uid: str, replica_uid: str,
                              every: float = 1.0) -> None:
        """Record each quarter of the replica's download/load progress as it is passed."""
        next_mark = 0.25
        while next_mark <= 1.0:
            await asyncio.sleep(every)
            try:
                p = await xo.wait_for(w.ref.get_launch_progress(replica_uid),
                                      health_check_timeout())
            except Exception:  # not started yet, or done
                continue
            if p >= next_mark:
                while next_mark <= p:
                    next_mark += 0.25
                self.events.add(model_uid, f"Replica {replica_uid}: download/load "
                                f"{int(min(p, 1.0) * 100)}%", kind="download",
                                replica_uid=replica_uid)

    async def cancel(self, model_uid: str) -> Dict[str, Any]:
        """Stop the launch of ``model_uid`` (download or load): its processes are removed
        and a download's partial files deleted; the launch call answers 499. Returns once
        the launch has ended.

        Raises:
            InvalidRequestError: ``model_uid`` is not launching (400).
        """
        if not self._models.is_launching(model_uid):
            raise InvalidRequestError(f"Model {model_uid!r} is not launching")
        self._cancelled.add(model_uid)
        task = self._tasks.get(model_uid)
        state = self._state.get(model_uid)
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

    def launching_descs(self) -> List[Tuple[str, Dict[str, Any]]]:
        """``(model_uid, launch description)`` of every launch in progress (the cache a
        launch downloads into or loads from must not be removed under it)."""
        return list(self._planned.items())

    def launching_replicas(self) -> Dict[str, int]:
        """``{model_uid: replicas asked for}`` of the launches that have placed a
        replica."""
        return {uid: s["replica"] for uid, s in self._state.items()}

    async def progress(self, model_uid: str) -> float:
        """Launch progress of ``model_uid``, 0..1: replicas already loaded count 1 each,
        the one loading counts its process's report (download fraction, see
        :mod:`xinference.model.progress`); 1.0 once running.

        Raises:
            ModelNotFoundError: neither launching nor running.
        """
        if model_uid in self._models:
            return 1.0
        state = self._state.get(model_uid)
        if state is None:
            if self._models.is_launching(model_uid):  # planned, no replica started yet
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

    async def stage(self, model_uid: str) -> Optional[str]:
        """What the replica of ``model_uid`` being launched does besides loading (its
        worker's :meth:`~xinference.core.worker.WorkerActor.get_launch_stage`: making the
        virtual environment), or None."""
        state = self._state.get(model_uid)
        if state is None:
            return None
        try:
            return await xo.wait_for(state["worker"].get_launch_stage(state["replica_uid"]),
                                     health_check_timeout())
        except Exception:  # not started yet, or the worker is going away
            return None

    # ---- terminate -------------------------------------------------------------------------
    async def stop_replica(self, w, ruid: str) -> bool:
        """Ask worker ``w`` to stop replica ``ruid``; True when it answered (an unknown
        replica counts as stopped). A worker that cannot be reached is told to stop it when
        it reports again (False)."""
        try:
            await self._workers.call(w, w.ref.terminate_model(ruid),
                                     health_check_timeout() * 3)
        except ModelNotFoundError:
            pass
        except Exception as e:
            logger.warning("Stopping %s on %s failed (%s); it is stopped when the worker "
                           "reports again", ruid, w.address, e)
            self._models.stop_later(w.address, ruid)
            return False
        return True

    async def terminate(self, model_uid: str, forgotten: bool = False) -> None:
        """Stop every replica of ``model_uid`` (a lost model is just forgotten). A worker
        that cannot be reached is told to stop the replica when it reports again.
        ``forgotten``: the caller already dropped a record of this uid (a persisted launch
        or a failed relaunch), so an unknown uid is no error.

        Raises:
            ModelNotFoundError: not running, not lost and not ``forgotten``.
        """
        m = self._models.pop(model_uid)
        self.plans.pop(model_uid, None)
        if m is None:
            if self._models.forget_lost(model_uid) or forgotten:
                self.events.add(model_uid, "Terminated (it was not running)", kind="terminate")
                return
            raise ModelNotFoundError(f"Model not found in the model list, uid: {model_uid}")
        self.events.add(model_uid, f"Terminate requested: stopping {len(m.replicas)} "
                        "replica(s)", kind="terminate")
        answered = {}  # workers that took a terminate call: their status is refreshed once
        for rep in m.replicas:
            address, ruid = rep["worker_address"], rep["replica_uid"]
            w = self._workers.get(address)
            if w is None:
                self._models.stop_later(address, ruid)
                continue
            if await self.stop_replica(w, ruid):
                answered[address] = w
        for w in answered.values():
            await self._workers.refresh_status(w)
        self.events.add(model_uid, "Terminated", kind="terminate")


def memory_need(family, desc: Dict[str, Any], kwargs: Dict[str, Any], cpu: bool):
    """The memory estimate of an LLM launch (weights only when no shape is found locally:
    a lower bound), or None for other model types or when no estimate can be made."""
    if desc.get("model_type") != "LLM":
        return None
    from ..model.llm.memory import estimate_for_family

    try:
        return estimate_for_family(
            family, model_format=desc["model_format"],
            model_size_in_billions=desc["model_size_in_billions"],
            quantization=desc["quantization"], context_length=desc["context_length"],
            model_engine=desc["model_engine"], model_path=kwargs.get("model_path"), cpu=cpu)
    except Exception as e:  # an estimate must never block a launch it cannot judge
        logger.warning("No memory estimate for %s: %s", family.model_name, e)
        return None

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
from typing import Any, Dict, List, Optional

import xoscar as xo

from ..constants import health_check_timeout
from ..errors import (
    InvalidRequestError,
    ModelNotFoundError,
    ModelUnavailableError,
    RegistrationNotFoundError,
    RequestAbortedError,
)
from ..model import model_type_handlers
from ..model.registry import ModelRegistry, canonical_model_type
from ..model.virtualenv import plan_for_engine
from .model_table import ModelTable, replica_row
from .resource import allocate_gpus, normalize_gpu_idx, normalize_n_gpu
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

    def __init__(self, registry: ModelRegistry, workers: WorkerTable, models: ModelTable):
        self._registry = registry
        self._workers = workers
        self._models = models
        self._inflight: Dict[str, int] = {}  # worker address -> replicas being launched
        # model_uid -> the task running its launch, and the launches asked to stop
        self._tasks: Dict[str, asyncio.Task] = {}
        self._cancelled: set = set()
        # model_uid -> {"replica", "done", "worker", "replica_uid"} while it launches.
        self._state: Dict[str, Dict[str, Any]] = {}

    # ---- placement -------------------------------------------------------------------------
    def _load(self, address: str) -> int:
        return self._inflight.get(address, 0) + self._models.count_on(address)

    def place(self, worker_ip: Optional[str], n_gpu, gpu_idx, placed: List[str]) -> Worker:
        """The least-loaded worker that can hold one more replica.

        Order: fewest replicas of this model already placed there (``placed``: their
        addresses; spread), fewest replicas in all, a worker that answered lately, most
        free memory.

        Raises:
            ModelUnavailableError: no worker, or the GPUs asked for are busy (503).
            InvalidRequestError: no worker matches ``worker_ip`` or has the GPUs (400).
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
            bad ``n_gpu``/``gpu_idx``, no worker at ``worker_ip`` or with the GPUs asked.
            ConflictError: ``model_uid`` is already running or launching.
            ModelUnavailableError: no worker, or not enough free GPUs now (503).
            ModelLoadError: the weights could not be found or loaded.
            RequestAbortedError: the launch was cancelled (:meth:`cancel`, 499).
        """
        uid = model_uid or model_name
        task = asyncio.ensure_future(self._launch(
            model_name, model_type, model_uid, replica, n_gpu, request_limits, worker_ip,
            gpu_idx, **kwargs))
        try:
            return await task
        except asyncio.CancelledError:
            if uid in self._cancelled:
                raise RequestAbortedError(f"The launch of model {uid!r} was cancelled") \
                    from None
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
        loader, desc = handler.plan(family, model_uid, **kwargs)
        # The engine's own environment, if any (model/virtualenv): decided here as far as
        # the launch and the engine say, made on the worker.
        venv = plan_for_engine(loader.engine_class, *venv_opts)
        if venv is not None:  # shown by GET /v1/models/{uid} (None: the worker's default)
            desc.update(enable_virtual_env=venv.enable,
                        virtual_env_packages=list(venv.packages))
        desc.update(model_uid=model_uid, replica=replica, n_gpu=n_gpu,
                    request_limits=request_limits)
        self.place(worker_ip, n_gpu, gpu_idx, [])  # fail fast, before any process starts

        self._models.reserve(model_uid)
        self._tasks[model_uid] = asyncio.current_task()
        launched: List[Dict[str, Any]] = []
        placed: List[str] = []
        try:
            for i in range(replica):
                w = self.place(worker_ip, n_gpu, gpu_idx, placed)
                replica_uid = f"{model_uid}-{i}"
                self._models.keep(w.address, replica_uid)
                self._state[model_uid] = {"replica": replica, "done": i,
                                          "worker": w.ref, "replica_uid": replica_uid}
                self._inflight[w.address] = self._inflight.get(w.address, 0) + 1
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
                    self._inflight[w.address] -= 1
                placed.append(w.address)
                launched.append(replica_row(w.address, dict(info, replica_uid=replica_uid)))
                await self._workers.refresh_status(w)
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
            self._tasks.pop(model_uid, None)
            self._state.pop(model_uid, None)
        self._models.add(model_uid, model_type, desc, launched)
        return model_uid

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
        except Exception:  # not started yet, or the worker is going away
            current = 0.0
        return min(1.0, (state["done"] + current) / state["replica"])

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
    async def terminate(self, model_uid: str, forgotten: bool = False) -> None:
        """Stop every replica of ``model_uid`` (a lost model is just forgotten). A worker
        that cannot be reached is told to stop the replica when it reports again.
        ``forgotten``: the caller already dropped a record of this uid (a persisted launch
        or a failed relaunch), so an unknown uid is no error.

        Raises:
            ModelNotFoundError: not running, not lost and not ``forgotten``.
        """
        m = self._models.pop(model_uid)
        if m is None:
            if self._models.forget_lost(model_uid) or forgotten:
                return
            raise ModelNotFoundError(f"Model not found in the model list, uid: {model_uid}")
        answered = {}  # workers that took a terminate call: their status is refreshed once
        for rep in m.replicas:
            address, ruid = rep["worker_address"], rep["replica_uid"]
            w = self._workers.get(address)
            if w is None:
                self._models.stop_later(address, ruid)
                continue
            try:
                await self._workers.call(w, w.ref.terminate_model(ruid),
                                         health_check_timeout() * 3)
            except ModelNotFoundError:
                pass
            except Exception as e:
                logger.warning("Terminating %s on %s failed (%s); it is stopped when the "
                               "worker reports again", ruid, address, e)
                self._models.stop_later(address, ruid)
                continue
            answered[address] = w
        for w in answered.values():
            await self._workers.refresh_status(w)

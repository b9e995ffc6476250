"""SupervisorActor: one per cluster.

Tracks registrations (builtin and custom), running models and which worker holds each
replica, places launches, and hands the REST API the ModelActor ref of a model (round-robin
over replicas) so inference traffic goes straight to the model process.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import re
import time
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

import xoscar as xo

from ..model import model_type_handlers
from ..model.registry import ModelRegistry, canonical_model_type
from .errors import (
    ConflictError,
    InvalidRequestError,
    ModelNotFoundError,
    ModelUnavailableError,
    RegistrationNotFoundError,
)

logger = logging.getLogger(__name__)

MODEL_UID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_\-.]*$")


@dataclass
class _RunningModel:
    model_uid: str
    model_type: str
    desc: Dict[str, Any]
    replicas: List[Dict[str, Any]] = field(default_factory=list)  # replica_uid, worker, pid
    created: int = field(default_factory=lambda: int(time.time()))
    rr: Any = None


class SupervisorActor(xo.StatelessActor):
    """The cluster's bookkeeper. See the module docstring."""

    def __init__(self):
        super().__init__()
        self._workers: Dict[str, Any] = {}  # worker pool address -> WorkerActor ref
        self._models: Dict[str, _RunningModel] = {}
        self._launching: set = set()
        # model_uid -> {"replica", "done", "worker", "replica_uid"} while it launches.
        self._launch_state: Dict[str, Dict[str, Any]] = {}
        self._registry: Optional[ModelRegistry] = None

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

    # ---- workers --------------------------------------------------------------------------
    async def add_worker(self, worker_address: str) -> None:
        """Register a worker pool (its WorkerActor uid is ``"worker"``)."""
        from .worker import WorkerActor

        self._workers[worker_address] = await xo.actor_ref(
            address=worker_address, uid=WorkerActor.default_uid()
        )

    def _pick_worker(self, worker_ip: Optional[str] = None):
        if not self._workers:
            raise ModelUnavailableError("No worker is available to launch models")
        items = list(self._workers.items())
        if worker_ip:
            items = [(a, r) for a, r in items if a.split(":")[0] == worker_ip]
            if not items:
                raise InvalidRequestError(f"No worker at {worker_ip!r}")
        return items[0]

    # ---- launch / terminate --------------------------------------------------------------
    async def launch_builtin_model(self, model_name: str, model_type: str = "LLM",
                                   model_uid: Optional[str] = None, replica: int = 1,
                                   n_gpu: Any = "auto", request_limits: Optional[int] = None,
                                   worker_ip: Optional[str] = None, gpu_idx: Any = None,
                                   **kwargs) -> str:
        """Launch ``replica`` copies of a registered model under ``model_uid`` (default: the
        model name). Returns the uid once every replica is loaded.

        Raises:
            RegistrationNotFoundError / InvalidRequestError: unknown name, bad spec or uid.
            ConflictError: ``model_uid`` is already running or launching.
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
        try:
            family = self._registry.get(model_type, model_name)
        except RegistrationNotFoundError as e:  # a bad launch request, not a missing URL
            raise InvalidRequestError(e.message) from None
        if n_gpu not in (None, "auto"):
            kwargs["n_gpu"] = n_gpu
        loader, desc = handler.plan(family, model_uid, **kwargs)
        desc.update(model_uid=model_uid, replica=replica, n_gpu=n_gpu,
                    request_limits=request_limits)

        self._launching.add(model_uid)
        launched: List[Dict[str, Any]] = []
        try:
            for i in range(replica):
                address, worker = self._pick_worker(worker_ip)
                replica_uid = f"{model_uid}-{i}"
                self._launch_state[model_uid] = {"replica": replica, "done": i,
                                                 "worker": worker, "replica_uid": replica_uid}
                info = await worker.launch_model(
                    replica_uid, model_uid, model_type, loader, desc, request_limits
                )
                launched.append({"replica_uid": replica_uid, "worker_address": address,
                                 "pid": info["pid"], "model_address": info["address"]})
        except BaseException:
            for rep in launched:
                try:
                    await self._workers[rep["worker_address"]].terminate_model(rep["replica_uid"])
                except Exception:
                    logger.exception("Cleanup of %s failed", rep["replica_uid"])
            raise
        finally:
            self._launching.discard(model_uid)
            self._launch_state.pop(model_uid, None)
        self._models[model_uid] = _RunningModel(
            model_uid, model_type, desc, launched, rr=itertools.cycle(range(len(launched)))
        )
        return model_uid

    async def terminate_model(self, model_uid: str) -> None:
        """Stop every replica of ``model_uid``.

        Raises:
            ModelNotFoundError: not running.
        """
        m = self._models.pop(model_uid, None)
        if m is None:
            raise ModelNotFoundError(f"Model not found in the model list, uid: {model_uid}")
        for rep in m.replicas:
            worker = self._workers.get(rep["worker_address"])
            if worker is None:
                continue
            try:
                await worker.terminate_model(rep["replica_uid"])
            except Exception:
                logger.exception("Terminating %s failed", rep["replica_uid"])

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
            current = await state["worker"].get_launch_progress(state["replica_uid"])
        except ModelNotFoundError:
            current = 0.0
        return min(1.0, (state["done"] + current) / state["replica"])

    # ---- queries ---------------------------------------------------------------------------
    def _running(self, model_uid: str) -> _RunningModel:
        m = self._models.get(model_uid)
        if m is None:
            raise ModelNotFoundError(f"Model not found in the model list, uid: {model_uid}")
        return m

    async def get_model(self, model_uid: str):
        """The ModelActor ref of the next replica (round-robin).

        Raises:
            ModelNotFoundError: not running. ModelUnavailableError: its process died.
        """
        m = self._running(model_uid)
        rep = m.replicas[next(m.rr)]
        worker = self._workers.get(rep["worker_address"])
        if worker is None:
            raise ModelUnavailableError(f"The worker holding {model_uid!r} is gone")
        return await worker.get_model(rep["replica_uid"])

    def get_model_type(self, model_uid: str) -> str:
        return self._running(model_uid).model_type

    def describe_model(self, model_uid: str) -> Dict[str, Any]:
        """The launch description plus the replicas and where they run."""
        m = self._running(model_uid)
        return dict(m.desc, created=m.created, replicas=list(m.replicas),
                    address=m.replicas[0]["worker_address"] if m.replicas else None)

    def list_models(self) -> Dict[str, Dict[str, Any]]:
        """``{model_uid: description}`` of every running model."""
        return {uid: self.describe_model(uid) for uid in self._models}

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
        """``{engine: [spec rows]}`` for an LLM family.

        Raises:
            RegistrationNotFoundError: unknown name.
        """
        from ..model.llm.engines import engines_for_family

        return engines_for_family(self._registry.get("LLM", model_name))

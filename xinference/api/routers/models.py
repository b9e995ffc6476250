"""Model management: list, launch, describe, terminate, launch progress, registrations and
engines (Xinference's ``/v1/models``, ``/v1/model_registrations``, ``/v1/engines``)."""

from __future__ import annotations

from typing import List, Optional

from fastapi import Query, Request

from ..gateway import redact_locations, sees_locations
from ..model_paths import check_launch, check_registration, is_admin_caller
from ..schemas import LaunchModelRequest, RegisterModelRequest
from . import Route, Router


class ModelsRouter(Router):
    ROUTES = [
        Route("GET", "/v1/models", "list_models", "models:list"),
        Route("POST", "/v1/models", "launch_model", "models:start"),
        Route("GET", "/v1/models/{model_uid}", "describe_model", "models:list"),
        Route("DELETE", "/v1/models/{model_uid}", "terminate_model", "models:stop"),
        Route("GET", "/v1/models/{model_uid}/progress", "get_launch_progress",
              "models:read"),
        Route("GET", "/v1/model_registrations/{model_type}", "list_model_registrations",
              "models:list"),
        Route("POST", "/v1/model_registrations/{model_type}", "register_model",
              "models:register"),
        Route("GET", "/v1/model_registrations/{model_type}/{model_name}",
              "get_model_registration", "models:list"),
        Route("DELETE", "/v1/model_registrations/{model_type}/{model_name}",
              "unregister_model", "models:unregister"),
        Route("GET", "/v1/engines/{model_name}", "query_engines", "models:list"),
        Route("GET", "/v1/models/{model_name}/memory", "estimate_model_memory",
              "models:list"),
    ]

    async def _supervisor(self):
        return await self.api.supervisor()

    async def list_models(self, request: Request):
        """OpenAI's model list: ``{"object": "list", "data": [{"id", "object": "model",
        ...the launch description}]}``; actor addresses and pids only for admins (see
        :func:`~xinference.api.gateway.sees_locations`)."""
        models = await (await self._supervisor()).list_models()
        if not sees_locations(request):
            models = redact_locations(models)
        return {"object": "list", "data": [
            dict(desc, id=uid, object="model", created=desc.get("created"),
                 owned_by="xinference")
            for uid, desc in models.items()
        ]}

    async def describe_model(self, model_uid: str, request: Request):
        """The launch description, ``replicas`` and ``status``; actor addresses and pids
        only for admins."""
        desc = await (await self._supervisor()).describe_model(model_uid)
        return desc if sees_locations(request) else redact_locations(desc)

    async def launch_model(self, body: LaunchModelRequest, request: Request):
        """Launch a model; ``model_path`` and ``trust_remote_code`` need ``admin`` with
        auth on (see :mod:`xinference.api.model_paths`)."""
        kwargs = body.model_dump(exclude_none=True)
        check_launch(kwargs, is_admin_caller(self.api, request))
        uid = await (await self._supervisor()).launch_builtin_model(**kwargs)
        self.api.models.drop(uid)  # a uid used before may now name other processes
        return {"model_uid": uid}

    async def get_launch_progress(self, model_uid: str):
        """``{"progress": 0..1}`` while ``model_uid`` launches (download fraction where
        huggingface_hub reports one), with ``"stage": str`` while a step without a
        fraction runs (its virtual environment being made); ``{"progress": 1.0}`` once it
        runs; 404 when unknown."""
        supervisor = await self._supervisor()
        progress = await supervisor.get_launch_progress(model_uid)
        stage = await supervisor.get_launch_stage(model_uid) if progress < 1.0 else None
        return {"progress": progress, **({"stage": stage} if stage else {})}

    async def terminate_model(self, model_uid: str):
        self.api.models.drop(model_uid)
        await (await self._supervisor()).terminate_model(model_uid)
        return {"id": model_uid, "object": "model", "deleted": True}

    async def list_model_registrations(
            self, model_type: str, detailed: bool = False,
            ability: Optional[List[str]] = Query(None), hub: Optional[str] = None):
        """Registrations of ``model_type``; ``?ability=tools&ability=reasoning`` keeps the
        families with all of them, ``?hub=modelscope`` those with weights there (400 for an
        unknown hub)."""
        return await (await self._supervisor()).list_model_registrations(
            model_type, detailed, ability, hub)

    async def get_model_registration(self, model_type: str, model_name: str):
        return await (await self._supervisor()).get_model_registration(model_type,
                                                                        model_name)

    async def register_model(self, model_type: str, body: RegisterModelRequest,
                             request: Request):
        """Register a custom model; a ``model_uri`` outside the allowed directories needs
        ``admin`` with auth on (see :mod:`xinference.api.model_paths`)."""
        check_registration(body.model, is_admin_caller(self.api, request))
        name = await (await self._supervisor()).register_model(
            model_type, body.model, body.persist
        )
        return {"model_name": name, "model_type": model_type, "persist": body.persist}

    async def unregister_model(self, model_type: str, model_name: str):
        await (await self._supervisor()).unregister_model(model_type, model_name)
        return {"model_name": model_name, "deleted": True}

    async def query_engines(self, model_name: str):
        return await (await self._supervisor()).query_engines_by_model_name(model_name)

    async def estimate_model_memory(
            self, model_name: str, model_format: Optional[str] = None,
            model_size_in_billions: Optional[str] = None, quantization: Optional[str] = None,
            context_length: Optional[int] = None, model_engine: Optional[str] = None,
            cpu: Optional[bool] = None):
        """Will it fit? Bytes of ``weights``, ``kv_cache``, ``activations`` and ``total``
        for a launch of ``model_name`` with these choices (``xinference cal-model-mem``)."""
        return await (await self._supervisor()).estimate_model_memory(
            model_name, model_format=model_format,
            model_size_in_billions=model_size_in_billions, quantization=quantization,
            context_length=context_length, model_engine=model_engine, cpu=cpu)


ROUTERS = [ModelsRouter]

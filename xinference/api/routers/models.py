"""Model management: list, launch, describe, terminate, launch progress, registrations and
engines (Xinference's ``/v1/models``, ``/v1/model_registrations``, ``/v1/engines``)."""

from __future__ import annotations

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
    ]

    async def _supervisor(self):
        return await self.api.supervisor()

    async def list_models(self):
        """OpenAI's model list: ``{"object": "list", "data": [{"id", "object": "model",
        ...the launch description}]}``."""
        models = await (await self._supervisor()).list_models()
        return {"object": "list", "data": [
            dict(desc, id=uid, object="model", created=desc.get("created"),
                 owned_by="xinference")
            for uid, desc in models.items()
        ]}

    async def describe_model(self, model_uid: str):
        return await (await self._supervisor()).describe_model(model_uid)

    async def launch_model(self, body: LaunchModelRequest):
        kwargs = body.model_dump(exclude_none=True)
        uid = await (await self._supervisor()).launch_builtin_model(**kwargs)
        self.api.models.drop(uid)  # a uid used before may now name other processes
        return {"model_uid": uid}

    async def get_launch_progress(self, model_uid: str):
        """``{"progress": 0..1, "stage": str | None}`` while ``model_uid`` launches
        (download fraction where huggingface_hub reports one; ``stage`` says when its
        virtual environment is being made), 1.0 once it runs; 404 when unknown."""
        supervisor = await self._supervisor()
        progress = await supervisor.get_launch_progress(model_uid)
        stage = await supervisor.get_launch_stage(model_uid) if progress < 1.0 else None
        return {"progress": progress, "stage": stage}

    async def terminate_model(self, model_uid: str):
        self.api.models.drop(model_uid)
        await (await self._supervisor()).terminate_model(model_uid)
        return {"id": model_uid, "object": "model", "deleted": True}

    async def list_model_registrations(self, model_type: str, detailed: bool = False):
        return await (await self._supervisor()).list_model_registrations(model_type,
                                                                          detailed)

    async def get_model_registration(self, model_type: str, model_name: str):
        return await (await self._supervisor()).get_model_registration(model_type,
                                                                        model_name)

    async def register_model(self, model_type: str, body: RegisterModelRequest):
        name = await (await self._supervisor()).register_model(
            model_type, body.model, body.persist
        )
        return {"model_name": name, "model_type": model_type, "persist": body.persist}

    async def unregister_model(self, model_type: str, model_name: str):
        await (await self._supervisor()).unregister_model(model_type, model_name)
        return {"model_name": model_name, "deleted": True}

    async def query_engines(self, model_name: str):
        return await (await self._supervisor()).query_engines_by_model_name(model_name)


ROUTERS = [ModelsRouter]

"""``RESTfulClient`` (alias ``Client``): the Python SDK over the REST API, with ``requests``;
``AsyncRESTfulClient`` (alias ``AsyncClient``): the same on ``asyncio`` (``httpx2``).

Method names and arguments follow Xinference's documented client so user code runs
unchanged::

    client = RESTfulClient("http://127.0.0.1:9997")
    uid = client.launch_model(model_name="smollm2-instruct", model_engine="llama.cpp")
    model = client.get_model(uid)
    model.chat(messages=[{"role": "user", "content": "Hi"}], generate_config={"max_tokens": 32})

A server error raises :class:`RESTfulClientError` carrying the server's message and status.
"""

from __future__ import annotations

import json
from typing import Any, Dict, List, Optional, Union

from .handles import RESTfulModelHandle, handle_for
from .transport import AsyncTransport, Call, HTTPBase, RESTfulClientError, SyncTransport

#: ``RESTfulClientError`` is re-exported: user code catches it from this module
__all__ = ["AsyncClient", "AsyncRESTfulClient", "Client", "RESTfulClient",
           "RESTfulClientError"]


class RESTfulClient(HTTPBase):
    """Client of one Xinference endpoint (``http://host:port``).

    Args:
        base_url: the server's endpoint.
        api_key: sent as ``Authorization: Bearer`` when given.
        timeout: seconds per HTTP request; None waits as long as the server works.
    """

    transport_class = SyncTransport

    def __init__(self, base_url: str = "http://127.0.0.1:9997", api_key: Optional[str] = None,
                 timeout: Optional[float] = None):
        super().__init__(self.transport_class(base_url, api_key, timeout))

    def close(self):
        """Close the HTTP connections (with :class:`AsyncRESTfulClient`: a coroutine)."""
        return self._transport.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # ---- auth ------------------------------------------------------------------------
    token: Optional[str] = None

    def login(self, username: str, password: str) -> None:
        """Log in (``POST /token``, OAuth2 password form) and send the JWT with every
        later request of this client and its model handles; ``self.token`` holds it.

        Raises:
            RESTfulClientError: 401 for a wrong username or password, 400 when the server
            has no auth.
        """
        def use(body: Dict[str, Any]) -> None:
            self.token = body["access_token"]
            self._transport.set_header("Authorization", f"Bearer {self.token}")

        return self._do(Call("log in", "POST", "/token",
                             data={"username": username, "password": password}, then=use))

    # ---- running models --------------------------------------------------------------
    def launch_model(self, model_name: str, model_type: str = "LLM",
                     model_engine: Optional[str] = None, model_uid: Optional[str] = None,
                     model_size_in_billions: Optional[Union[int, float, str]] = None,
                     model_format: Optional[str] = None, quantization: Optional[str] = None,
                     replica: int = 1, n_gpu: Optional[Union[int, str]] = "auto",
                     request_limits: Optional[int] = None, worker_ip: Optional[str] = None,
                     gpu_idx: Optional[Union[int, List[int]]] = None,
                     model_path: Optional[str] = None, **kwargs) -> str:
        """Launch a registered model and wait until it is loaded; returns its ``model_uid``.
        Extra keyword arguments are engine options (``n_ctx``, ``enable_thinking`` ...).
        ``n_gpu=None`` means the CPU (sent as ``"none"``: a missing ``n_gpu`` is ``auto``)."""
        if n_gpu is None:
            n_gpu = "none"
        body = {
            "model_name": model_name, "model_type": model_type, "model_engine": model_engine,
            "model_uid": model_uid, "model_size_in_billions": model_size_in_billions,
            "model_format": model_format, "quantization": quantization, "replica": replica,
            "n_gpu": n_gpu, "request_limits": request_limits, "worker_ip": worker_ip,
            "gpu_idx": gpu_idx, "model_path": model_path, **kwargs,
        }
        body = {k: v for k, v in body.items() if v is not None}
        return self._do(Call("launch model", "POST", "/v1/models", json=body,
                             then=lambda r: r["model_uid"]))

    def list_models(self) -> Dict[str, Dict[str, Any]]:
        """``{model_uid: description}`` of the running models."""
        return self._do(Call("list models", "GET", "/v1/models",
                             then=lambda r: {m["id"]: m for m in r["data"]}))

    def describe_model(self, model_uid: str) -> Dict[str, Any]:
        return self._do(Call("describe model", "GET", f"/v1/models/{model_uid}"))

    def get_launch_model_progress(self, model_uid: str) -> Dict[str, float]:
        """``{"progress": 0..1, "stage": ...}`` of a model being launched (1.0 once it
        runs; ``stage`` names what it does besides loading, e.g. making its virtual
        environment).

        Raises:
            RESTfulClientError: 404 when the uid is neither launching nor running.
        """
        return self._do(Call("get launch progress", "GET",
                             f"/v1/models/{model_uid}/progress"))

    def terminate_model(self, model_uid: str) -> None:
        return self._do(Call("terminate model", "DELETE", f"/v1/models/{model_uid}",
                             result="none"))

    def get_model(self, model_uid: str) -> RESTfulModelHandle:
        """A handle for a running model, chosen by its type and abilities."""
        return self._do(Call("get model", "GET", f"/v1/models/{model_uid}",
                             then=lambda d: handle_for(d, model_uid, self._transport)))

    def get_model_events(self, model_uid: str) -> List[Dict[str, Any]]:
        """The model's events, oldest first: ``[{"event_type", "event_ts",
        "event_content", "kind", "replica_uid"}]`` (``GET /v1/models/{uid}/events``; 404
        for a uid never launched)."""
        return self._do(Call("get model events", "GET", f"/v1/models/{model_uid}/events"))

    def list_model_replicas(self, model_uid: str) -> List[Dict[str, Any]]:
        """``[{"replica_id", "worker_address", "pid", "status", ...}]`` of a running
        model (``GET /v1/models/{uid}/replicas``)."""
        return self._do(Call("list replicas", "GET", f"/v1/models/{model_uid}/replicas"))

    def scale_out(self, model_uid: str, cnt: int = 1) -> Dict[str, Any]:
        """Add ``cnt`` replicas, placed as a launch places them; returns once they serve.

        Raises:
            RESTfulClientError: 400 for ``cnt`` < 1 or beyond the workers' GPUs / memory.
        """
        return self._do(Call("scale out", "POST", f"/v1/models/{model_uid}/replicas/scale_out",
                             json={"cnt": cnt}))

    def scale_in(self, model_uid: str, cnt: int = 1) -> Dict[str, Any]:
        """Remove ``cnt`` replicas; their in-flight requests finish first.

        Raises:
            RESTfulClientError: 400 when fewer than one replica would be left.
        """
        return self._do(Call("scale in", "POST", f"/v1/models/{model_uid}/replicas/scale_in",
                             json={"cnt": cnt}))

    def remove_model_replica(self, model_uid: str, replica_id: str) -> Dict[str, Any]:
        """Remove one replica by id (drained first); 404 for an unknown one."""
        return self._do(Call("remove replica", "DELETE",
                             f"/v1/models/{model_uid}/replicas/{replica_id}"))

    # ---- registrations ---------------------------------------------------------------
    def list_model_registrations(self, model_type: str = "LLM", detailed: bool = False,
                                 ability: Optional[List[str]] = None,
                                 hub: Optional[str] = None) -> List[Dict[str, Any]]:
        """Registrations of ``model_type``; ``ability`` (all required) and ``hub``
        (``huggingface`` | ``modelscope``) filter them on the server."""
        params: Dict[str, Any] = {"detailed": str(detailed).lower()}
        if ability:
            params["ability"] = list(ability)
        if hub:
            params["hub"] = hub
        return self._do(Call("list model registrations", "GET",
                             f"/v1/model_registrations/{model_type}", params=params))

    def estimate_model_memory(self, model_name: str, model_size_in_billions: Any = None,
                              model_format: Optional[str] = None,
                              quantization: Optional[str] = None,
                              context_length: Optional[int] = None,
                              model_engine: Optional[str] = None,
                              cpu: bool = False) -> Dict[str, Any]:
        """Memory estimate of launching an LLM (``GET /v1/models/{name}/memory``): bytes of
        ``weights``, ``kv_cache``, ``activations``, ``total`` and a ``description``."""
        params = {k: v for k, v in dict(
            model_size_in_billions=model_size_in_billions, model_format=model_format,
            quantization=quantization, context_length=context_length,
            model_engine=model_engine, cpu=str(cpu).lower() if cpu else None).items()
            if v is not None}
        return self._do(Call("estimate model memory", "GET",
                             f"/v1/models/{model_name}/memory", params=params))

    def get_model_registration(self, model_type: str, model_name: str) -> Dict[str, Any]:
        return self._do(Call("get model registration", "GET",
                             f"/v1/model_registrations/{model_type}/{model_name}"))

    def register_model(self, model_type: str, model: Union[str, Dict[str, Any]],
                       persist: bool = False) -> None:
        """Register a custom model from its JSON (a string, as in the docs, or a dict)."""
        if not isinstance(model, str):
            model = json.dumps(model)
        return self._do(Call("register model", "POST",
                             f"/v1/model_registrations/{model_type}",
                             json={"model": model, "persist": persist}, result="none"))

    def unregister_model(self, model_type: str, model_name: str) -> None:
        return self._do(Call("unregister model", "DELETE",
                             f"/v1/model_registrations/{model_type}/{model_name}",
                             result="none"))

    def query_engine_by_model_name(self, model_name: str) -> Dict[str, Any]:
        """``{engine: [{model_format, model_size_in_billions, quantizations, ...}]}``."""
        return self._do(Call("query engines", "GET", f"/v1/engines/{model_name}"))

    # ---- cluster ---------------------------------------------------------------------
    def get_workers_info(self) -> List[Dict[str, Any]]:
        """The live workers: ``[{"address", "ip_address", "cpu_count", "memory_total",
        "memory_available", "gpus", "gpu_count", "models", "status",
        "last_heartbeat_seconds_ago", ...}]`` (``GET /v1/workers``)."""
        return self._do(Call("get workers info", "GET", "/v1/workers"))

    def get_cluster_info(self) -> List[Dict[str, Any]]:
        """Every node, the supervisor first (``GET /v1/cluster/info``)."""
        return self._do(Call("get cluster info", "GET", "/v1/cluster/info"))

    def get_supervisor_info(self) -> Dict[str, Any]:
        """The supervisor node of :meth:`get_cluster_info`."""
        return self._do(Call("get cluster info", "GET", "/v1/cluster/info",
                             then=lambda nodes: nodes[0]))

    def get_instance_info(self, model_name: Optional[str] = None,
                          model_uid: Optional[str] = None) -> List[Dict[str, Any]]:
        """Model instances, running, launching or failed (``GET /v1/models/instances``)."""
        params = {k: v for k, v in (("model_name", model_name), ("model_uid", model_uid))
                  if v is not None}
        return self._do(Call("get instance info", "GET", "/v1/models/instances",
                             params=params))

    def abort_request(self, model_uid: str, request_id: str) -> Dict[str, Any]:
        """Abort the running request that was sent with ``request_id`` (a stream ends
        with ``finish_reason`` ``"abort"``; a non-stream request is answered 499).

        Raises:
            RESTfulClientError: 404 when no such request runs.
        """
        return self._do(Call("abort request", "POST",
                             f"/v1/models/{model_uid}/requests/{request_id}/abort"))

    def cancel_launch_model(self, model_uid: str) -> Dict[str, Any]:
        """Cancel a launch in progress (``POST /v1/models/{uid}/cancel``); 400 when the
        model is not launching."""
        return self._do(Call("cancel launch", "POST", f"/v1/models/{model_uid}/cancel"))

    def list_persisted_models(self) -> List[Dict[str, Any]]:
        """Launches recorded to come back after a restart (``GET /v1/models/persisted``)."""
        return self._do(Call("list persisted models", "GET", "/v1/models/persisted"))

    def forget_persisted_model(self, model_uid: str) -> None:
        return self._do(Call("forget persisted model", "DELETE",
                             f"/v1/models/persisted/{model_uid}", result="none"))

    def list_virtualenvs(self) -> List[Dict[str, Any]]:
        """The engines' virtual environments on every worker (``GET /v1/virtualenvs``):
        ``key``, ``path``, ``packages``, ``size`` (bytes), ``created``, ``in_use_by``..."""
        return self._do(Call("list virtual environments", "GET", "/v1/virtualenvs",
                             then=lambda r: r["data"]))

    def remove_virtualenv(self, key: str) -> Dict[str, Any]:
        """Delete virtual environment ``key`` (``DELETE /v1/virtualenvs/{key}``).

        Raises:
            RESTfulClientError: 409 while a running model uses it, 404 when unknown.
        """
        return self._do(Call("remove virtual environment", "DELETE",
                             f"/v1/virtualenvs/{key}"))

    def list_cached_models(self, model_name: Optional[str] = None,
                           worker_ip: Optional[str] = None) -> List[Dict[str, Any]]:
        """Cached model versions on each worker (``GET /v1/cache/models``)."""
        params = {k: v for k, v in (("model_name", model_name), ("worker_ip", worker_ip))
                  if v is not None}
        return self._do(Call("list cached models", "GET", "/v1/cache/models",
                             params=params, then=lambda r: r["list"]))

    def list_deletable_models(self, model_version: str,
                              worker_ip: Optional[str] = None) -> Dict[str, Any]:
        """``{"paths": [...], "workers": {...}}`` that removing ``model_version`` deletes."""
        params = {"model_version": model_version}
        if worker_ip:
            params["worker_ip"] = worker_ip
        return self._do(Call("list cached files", "GET", "/v1/cache/models/files",
                             params=params))

    list_cached_model_files = list_deletable_models

    def confirm_and_remove_model(self, model_version: str,
                                 worker_ip: Optional[str] = None) -> Dict[str, Any]:
        """Delete one model version from the cache (409 while a model runs from it)."""
        params = {"model_version": model_version}
        if worker_ip:
            params["worker_ip"] = worker_ip
        return self._do(Call("remove cached model", "DELETE", "/v1/cache/models",
                             params=params))

    remove_cached_model = confirm_and_remove_model

    def abort_cluster(self) -> Dict[str, Any]:
        """Stop every worker and then the supervisor (``DELETE /v1/clusters``)."""
        return self._do(Call("stop cluster", "DELETE", "/v1/clusters"))

    def get_cluster_version(self) -> Dict[str, Any]:
        """``{"version": ...}`` of the server (``GET /v1/cluster/version``)."""
        return self._do(Call("get cluster version", "GET", "/v1/cluster/version"))



class AsyncRESTfulClient(RESTfulClient):
    """:class:`RESTfulClient` on ``asyncio`` (``httpx2``): the same methods and arguments,
    each a coroutine, and the same model handles, whose methods are coroutines too; a
    stream is an async iterator of chunks (as upstream Xinference's async client)::

        client = AsyncRESTfulClient("http://127.0.0.1:9997")
        model = await client.get_model(uid)
        reply = await model.chat(messages=[...], generate_config={"max_tokens": 32})
        async for chunk in await model.chat(messages=[...], generate_config={"stream": True}):
            ...
        await client.close()

    Also usable as ``async with AsyncRESTfulClient(...) as client``.
    """

    transport_class = AsyncTransport

    async def __aenter__(self):
        return self

    async def __aexit__(self, *exc):
        await self.close()


Client = RESTfulClient
AsyncClient = AsyncRESTfulClient

"""``RESTfulClient`` (alias ``Client``): the Python SDK over the REST API, with ``requests``.

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

import requests

from .handles import RESTfulModelHandle, handle_for
from .transport import HTTPBase, RESTfulClientError

#: ``RESTfulClientError`` is re-exported: user code catches it from this module
__all__ = ["Client", "RESTfulClient", "RESTfulClientError"]


class RESTfulClient(HTTPBase):
    """Client of one Xinference endpoint (``http://host:port``).

    Args:
        base_url: the server's endpoint.
        api_key: sent as ``Authorization: Bearer`` when given.
        timeout: seconds per HTTP request; None waits as long as the server works.
    """

    def __init__(self, base_url: str = "http://127.0.0.1:9997", api_key: Optional[str] = None,
                 timeout: Optional[float] = None):
        session = requests.Session()
        if api_key:
            session.headers["Authorization"] = f"Bearer {api_key}"
        super().__init__(base_url, session, timeout)

    def close(self) -> None:
        self._session.close()

    # ---- auth ------------------------------------------------------------------------
    token: Optional[str] = None

    def login(self, username: str, password: str) -> None:
        """Log in (``POST /token``, OAuth2 password form) and send the JWT with every
        later request of this client and its model handles; ``self.token`` holds it.

        Raises:
            RESTfulClientError: 401 for a wrong username or password, 400 when the server
            has no auth.
        """
        resp = self._request("log in", "POST", "/token",
                             data={"username": username, "password": password})
        self.token = resp.json()["access_token"]
        self._session.headers["Authorization"] = f"Bearer {self.token}"

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
        return self._request("launch model", "POST", "/v1/models", json=body).json()["model_uid"]

    def list_models(self) -> Dict[str, Dict[str, Any]]:
        """``{model_uid: description}`` of the running models."""
        data = self._request("list models", "GET", "/v1/models").json()["data"]
        return {m["id"]: m for m in data}

    def describe_model(self, model_uid: str) -> Dict[str, Any]:
        return self._request("describe model", "GET", f"/v1/models/{model_uid}").json()

    def get_launch_model_progress(self, model_uid: str) -> Dict[str, float]:
        """``{"progress": 0..1, "stage": ...}`` of a model being launched (1.0 once it
        runs; ``stage`` names what it does besides loading, e.g. making its virtual
        environment).

        Raises:
            RESTfulClientError: 404 when the uid is neither launching nor running.
        """
        return self._request("get launch progress", "GET",
                             f"/v1/models/{model_uid}/progress").json()

    def terminate_model(self, model_uid: str) -> None:
        self._request("terminate model", "DELETE", f"/v1/models/{model_uid}")

    def get_model(self, model_uid: str) -> RESTfulModelHandle:
        """A handle for a running model, chosen by its type and abilities."""
        desc = self.describe_model(model_uid)
        return handle_for(desc, (model_uid, self._base_url, self._session, self._timeout))

    # ---- registrations ---------------------------------------------------------------
    def list_model_registrations(self, model_type: str = "LLM",
                                 detailed: bool = False) -> List[Dict[str, Any]]:
        return self._request("list model registrations", "GET",
                             f"/v1/model_registrations/{model_type}",
                             params={"detailed": str(detailed).lower()}).json()

    def get_model_registration(self, model_type: str, model_name: str) -> Dict[str, Any]:
        return self._request("get model registration", "GET",
                             f"/v1/model_registrations/{model_type}/{model_name}").json()

    def register_model(self, model_type: str, model: Union[str, Dict[str, Any]],
                       persist: bool = False) -> None:
        """Register a custom model from its JSON (a string, as in the docs, or a dict)."""
        if not isinstance(model, str):
            model = json.dumps(model)
        self._request("register model", "POST", f"/v1/model_registrations/{model_type}",
                      json={"model": model, "persist": persist})

    def unregister_model(self, model_type: str, model_name: str) -> None:
        self._request("unregister model", "DELETE",
                      f"/v1/model_registrations/{model_type}/{model_name}")

    def query_engine_by_model_name(self, model_name: str) -> Dict[str, Any]:
        """``{engine: [{model_format, model_size_in_billions, quantizations, ...}]}``."""
        return self._request("query engines", "GET", f"/v1/engines/{model_name}").json()

    # ---- cluster ---------------------------------------------------------------------
    def get_workers_info(self) -> List[Dict[str, Any]]:
        """The live workers: ``[{"address", "ip_address", "cpu_count", "memory_total",
        "memory_available", "gpus", "gpu_count", "models", "status",
        "last_heartbeat_seconds_ago", ...}]`` (``GET /v1/workers``)."""
        return self._request("get workers info", "GET", "/v1/workers").json()

    def get_cluster_info(self) -> List[Dict[str, Any]]:
        """Every node, the supervisor first (``GET /v1/cluster/info``)."""
        return self._request("get cluster info", "GET", "/v1/cluster/info").json()

    def get_supervisor_info(self) -> Dict[str, Any]:
        """The supervisor node of :meth:`get_cluster_info`."""
        return self.get_cluster_info()[0]

    def get_instance_info(self, model_name: Optional[str] = None,
                          model_uid: Optional[str] = None) -> List[Dict[str, Any]]:
        """Model instances, running, launching or failed (``GET /v1/models/instances``)."""
        params = {k: v for k, v in (("model_name", model_name), ("model_uid", model_uid))
                  if v is not None}
        return self._request("get instance info", "GET", "/v1/models/instances",
                             params=params).json()

    def abort_request(self, model_uid: str, request_id: str) -> Dict[str, Any]:
        """Abort the running request that was sent with ``request_id`` (a stream ends
        with ``finish_reason`` ``"abort"``; a non-stream request is answered 499).

        Raises:
            RESTfulClientError: 404 when no such request runs.
        """
        return self._request("abort request", "POST",
                             f"/v1/models/{model_uid}/requests/{request_id}/abort").json()

    def cancel_launch_model(self, model_uid: str) -> Dict[str, Any]:
        """Cancel a launch in progress (``POST /v1/models/{uid}/cancel``); 400 when the
        model is not launching."""
        return self._request("cancel launch", "POST", f"/v1/models/{model_uid}/cancel").json()

    def list_persisted_models(self) -> List[Dict[str, Any]]:
        """Launches recorded to come back after a restart (``GET /v1/models/persisted``)."""
        return self._request("list persisted models", "GET", "/v1/models/persisted").json()

    def forget_persisted_model(self, model_uid: str) -> None:
        self._request("forget persisted model", "DELETE", f"/v1/models/persisted/{model_uid}")

    def list_virtualenvs(self) -> List[Dict[str, Any]]:
        """The engines' virtual environments on every worker (``GET /v1/virtualenvs``):
        ``key``, ``path``, ``packages``, ``size`` (bytes), ``created``, ``in_use_by``..."""
        return self._request("list virtual environments", "GET",
                             "/v1/virtualenvs").json()["data"]

    def remove_virtualenv(self, key: str) -> Dict[str, Any]:
        """Delete virtual environment ``key`` (``DELETE /v1/virtualenvs/{key}``).

        Raises:
            RESTfulClientError: 409 while a running model uses it, 404 when unknown.
        """
        return self._request("remove virtual environment", "DELETE",
                             f"/v1/virtualenvs/{key}").json()

    def list_cached_models(self, model_name: Optional[str] = None,
                           worker_ip: Optional[str] = None) -> List[Dict[str, Any]]:
        """Cached model versions on each worker (``GET /v1/cache/models``)."""
        params = {k: v for k, v in (("model_name", model_name), ("worker_ip", worker_ip))
                  if v is not None}
        return self._request("list cached models", "GET", "/v1/cache/models",
                             params=params).json()["list"]

    def list_deletable_models(self, model_version: str,
                              worker_ip: Optional[str] = None) -> Dict[str, Any]:
        """``{"paths": [...], "workers": {...}}`` that removing ``model_version`` deletes."""
        params = {"model_version": model_version}
        if worker_ip:
            params["worker_ip"] = worker_ip
        return self._request("list cached files", "GET", "/v1/cache/models/files",
                             params=params).json()

    list_cached_model_files = list_deletable_models

    def confirm_and_remove_model(self, model_version: str,
                                 worker_ip: Optional[str] = None) -> Dict[str, Any]:
        """Delete one model version from the cache (409 while a model runs from it)."""
        params = {"model_version": model_version}
        if worker_ip:
            params["worker_ip"] = worker_ip
        return self._request("remove cached model", "DELETE", "/v1/cache/models",
                             params=params).json()

    remove_cached_model = confirm_and_remove_model

    def abort_cluster(self) -> Dict[str, Any]:
        """Stop every worker and then the supervisor (``DELETE /v1/clusters``)."""
        return self._request("stop cluster", "DELETE", "/v1/clusters").json()

    def get_cluster_version(self) -> Dict[str, Any]:
        """``{"version": ...}`` of the server (``GET /v1/cluster/version``)."""
        return self._request("get cluster version", "GET", "/v1/cluster/version").json()


Client = RESTfulClient

"""How a worker finds its supervisor: ``GET {endpoint}/v1/address`` on the REST API.

The supervisor's REST API answers with the xoscar address of its actor pool (a JSON
string). A worker asks once when it starts (:func:`fetch_supervisor_address` with a
timeout that waits for a supervisor still starting) and again after heartbeats keep
failing (one attempt, see :class:`~xinference.core.worker.WorkerActor`), so a supervisor
restarted on another internal port is found too. When the supervisor runs with
``--auth-config`` the request needs an admin API key (:func:`auth_headers`).

The worker also needs the cluster's actor-pool key (:mod:`xinference.core.cluster_key`):
unless it is in its environment, it asks ``GET {endpoint}/v1/cluster/key`` once, right
after the address and with the same credential (:func:`fetch_cluster_key`).
"""

from __future__ import annotations

import json
import os
import time
import urllib.error
import urllib.request
from typing import Optional

from ..constants import XINFERENCE_ENV_API_KEY


def auth_headers(api_key: Optional[str]) -> dict:
    """``Authorization`` for the supervisor's REST API: ``api_key`` or
    ``$XINFERENCE_API_KEY`` (a key of a user with the ``admin`` permission, needed when the
    supervisor runs with ``--auth-config``); ``{}`` when there is neither."""
    key = api_key or os.environ.get(XINFERENCE_ENV_API_KEY)
    return {"Authorization": f"Bearer {key}"} if key else {}


def _get_json(url: str, api_key: Optional[str], request_timeout: float):
    req = urllib.request.Request(url, headers=auth_headers(api_key))
    try:
        with urllib.request.urlopen(req, timeout=request_timeout) as resp:
            return json.loads(resp.read())
    except urllib.error.HTTPError as e:
        if e.code in (401, 403):
            try:
                detail = json.loads(e.read()).get("detail")
            except Exception:
                detail = e.reason
            raise PermissionError(f"{e.code}: {detail}") from None
        raise


def _get_address(url: str, api_key: Optional[str], request_timeout: float) -> str:
    address = _get_json(url, api_key, request_timeout)
    if not isinstance(address, str) or not address:
        raise ValueError(f"{url} answered {address!r}, not an actor pool address")
    return address


def fetch_supervisor_address(endpoint: str, timeout: float = 60.0,
                             api_key: Optional[str] = None,
                             request_timeout: float = 5.0) -> str:
    """The supervisor's xoscar address, from ``GET {endpoint}/v1/address``.

    Tried every 0.5 s until ``timeout`` seconds have passed (``timeout=0``: one attempt);
    each request waits at most ``request_timeout`` seconds. Blocking: call it in a thread
    from async code.

    Raises:
        RuntimeError: the endpoint did not answer in time (names the endpoint and the last
            error), or refused the credential (401/403: at once, saying to give an admin
            API key).
    """
    url = endpoint.rstrip("/") + "/v1/address"
    deadline = time.monotonic() + timeout
    while True:
        try:
            return _get_address(url, api_key, request_timeout)
        except PermissionError as e:
            raise RuntimeError(
                f"the supervisor at {endpoint} refused this worker ({e}); give an admin "
                "API key with --api-key or XINFERENCE_API_KEY") from None
        except Exception as e:
            if time.monotonic() >= deadline:
                raise RuntimeError(
                    f"The supervisor at {endpoint} did not answer {url} within "
                    f"{timeout:.0f}s ({e}); start it with 'xinference-supervisor' first"
                ) from e
            time.sleep(0.5)


def fetch_cluster_key(endpoint: str, api_key: Optional[str] = None,
                      request_timeout: float = 5.0) -> str:
    """The cluster's actor-pool key, from ``GET {endpoint}/v1/cluster/key`` (``{"key":
    ...}``; call it once the endpoint answered :func:`fetch_supervisor_address`).
    Blocking.

    Raises:
        RuntimeError: the credential was refused (401/403), or the answer holds no key
            (the supervisor runs without one, or predates it).
    """
    url = endpoint.rstrip("/") + "/v1/cluster/key"
    try:
        answer = _get_json(url, api_key, request_timeout)
    except PermissionError as e:
        raise RuntimeError(
            f"the supervisor at {endpoint} refused this worker the cluster key ({e}); give "
            "an admin API key with --api-key or XINFERENCE_API_KEY") from None
    except Exception as e:
        raise RuntimeError(f"could not get the cluster key from {url} ({e}); set "
                           "XOSCAR_AUTH_KEY to the supervisor's key") from None
    key = answer.get("key") if isinstance(answer, dict) else None
    if not isinstance(key, str) or not key:
        raise RuntimeError(f"{url} answered no cluster key; set XOSCAR_AUTH_KEY to the "
                           "supervisor's key")
    return key

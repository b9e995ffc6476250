"""The actor pools behind the cluster key (xinference.core.cluster_key).

A real ``xinference-local`` generates a key, saves it under its home and signs its frames;
a process without the key that calls the supervisor's pool directly (a raw xoscar
``actor_ref`` call, as an attacker on the network would) is refused, the same call with the
key works, and the key is handed out only to admins (``GET /v1/cluster/key``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import requests

from .conftest import start_server

pytestmark = pytest.mark.e2e

# A raw xoscar call to the supervisor, as a process that knows only the pool's address.
_RAW_CALL = """
import asyncio, sys
import xoscar as xo

async def main():
    ref = await xo.actor_ref(address=sys.argv[1], uid="supervisor")
    return await ref.list_model_registrations("LLM")

try:
    out = asyncio.run(asyncio.wait_for(main(), 15))
    print("ANSWERED", len(out))
except Exception as e:
    print("REFUSED", type(e).__name__, e)
"""


def raw_call(address: str, key=None) -> str:
    """Run :data:`_RAW_CALL` in a fresh process (with ``key`` as ``XOSCAR_AUTH_KEY``, or
    none); returns its output."""
    env = {k: v for k, v in os.environ.items() if k != "XOSCAR_AUTH_KEY"}
    if key:
        env["XOSCAR_AUTH_KEY"] = key
    r = subprocess.run([sys.executable, "-c", _RAW_CALL, address], capture_output=True,
                       text=True, timeout=60, env=env)
    return r.stdout + r.stderr


def test_pool_refuses_frames_without_the_key(tmp_path):
    srv = start_server(tmp_path / "home", env={"XOSCAR_AUTH_KEY": ""})
    try:
        key_file = Path(tmp_path / "home" / "auth" / "cluster_key")
        key = key_file.read_text().strip()
        assert len(key) == 64 and oct(key_file.stat().st_mode & 0o777) == "0o600"
        address = requests.get(srv.endpoint + "/v1/address", timeout=10).json()
        assert requests.get(srv.endpoint + "/v1/cluster/key",
                            timeout=10).json() == {"key": key}
        refused = raw_call(address)
        assert "REFUSED" in refused and "ANSWERED" not in refused, refused
        wrong = raw_call(address, "0" * 64)
        assert "REFUSED" in wrong, wrong
        ok = raw_call(address, key)
        assert "ANSWERED" in ok, ok
        # The server keeps serving after the refused frames.
        assert requests.get(srv.endpoint + "/v1/models", timeout=10).ok
    finally:
        srv.stop()
    # A restart keeps the saved key (running workers and models keep working).
    srv = start_server(tmp_path / "home", env={"XOSCAR_AUTH_KEY": ""})
    try:
        assert requests.get(srv.endpoint + "/v1/cluster/key",
                            timeout=10).json() == {"key": key}
    finally:
        srv.stop()


def test_operator_key_and_admin_only_handout(tmp_path):
    from .test_auth import auth_config, bearer, key_of

    cfg = tmp_path / "auth.json"
    cfg.write_text(json.dumps(auth_config(expire=30)))
    key = "operator-chosen-key-0123456789"
    srv = start_server(tmp_path / "home", env={"XOSCAR_AUTH_KEY": key},
                       args=["--auth-config", str(cfg)])
    try:
        url = srv.endpoint + "/v1/cluster/key"
        assert requests.get(url, timeout=10).status_code == 401
        assert requests.get(url, headers=bearer(key_of("models:read")),
                            timeout=10).status_code == 403
        r = requests.get(url, headers=bearer(key_of("admin")), timeout=10)
        assert r.json() == {"key": key}
        assert not (tmp_path / "home" / "auth" / "cluster_key").exists()
        address = requests.get(srv.endpoint + "/v1/address",
                               headers=bearer(key_of("admin")), timeout=10).json()
        assert "REFUSED" in raw_call(address)
        assert "ANSWERED" in raw_call(address, key)
    finally:
        srv.stop()


def test_short_cluster_key_is_refused_at_start(tmp_path):
    r = subprocess.run([sys.executable, "-m", "xinference.deploy.cmdline_local",
                        "--cluster-key", "short"], capture_output=True, text=True,
                       timeout=60, env=dict(os.environ, XINFERENCE_HOME=str(tmp_path)))
    assert r.returncode == 1 and "at least 16" in r.stderr, r.stderr

"""Auth end to end: a real ``xinference-local --auth-config`` with one user per permission.

The table test walks every route of every route table and checks that each permission
allows exactly the routes whose row names it (``admin`` all of them) and that no route but
the public ones answers without a credential. Then real clients: the OpenAI SDK and
``RESTfulClient`` with API keys, ``POST /token`` JWTs (forged, expired), the CLI's
``-ak`` and ``xinference login``, a malformed config stopping start-up, and a worker joining
a cluster whose supervisor has auth on.
"""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import openai
import pytest
import requests

from xinference.api.auth import PERMISSIONS
from xinference.api.routers import AREAS, PUBLIC_PATHS
from xinference.client import RESTfulClient
from xinference.client.restful_client import RESTfulClientError

from .conftest import (
    LoggedProcess,
    free_port,
    minilm_dir,
    start_server,
    wait_gone,
    wait_until,
)

pytestmark = pytest.mark.e2e

SECRET = "4f1c8e2b9a7d6c5e3f2a1b0c9d8e7f6a5b4c3d2e1f0a9b8c"
EXPIRE_MINUTES = 0.1  # 6 s: the expiry test waits for it
PASSWORD = "pw-{}"


def key_of(perm: str) -> str:
    return "sk-" + "".join(c for c in perm if c.isalnum()).ljust(13, "0") + "Key1"


def auth_config(expire: float = EXPIRE_MINUTES) -> dict:
    users = [{"username": perm.replace(":", "_"), "password": PASSWORD.format(perm),
              "permissions": [perm], "api_keys": [key_of(perm)]} for perm in sorted(PERMISSIONS)]
    users.append({"username": "nobody", "password": "pw-nobody", "permissions": [],
                  "api_keys": ["sk-nobodynobody123"]})
    return {"auth_config": {"algorithm": "HS256", "secret_key": SECRET,
                            "token_expire_in_minutes": expire},
            "user_config": users}


def bearer(key: str) -> dict:
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    home = tmp_path_factory.mktemp("auth-home")
    cfg = home / "auth.json"
    cfg.write_text(json.dumps(auth_config()))
    server = start_server(home, args=["--auth-config", str(cfg)])
    yield server
    server.stop()


def all_route_rows():
    rows = []
    for area in AREAS:
        for cls in importlib.import_module(f"xinference.api.routers.{area}").ROUTERS:
            rows.extend(cls.ROUTES)
    return rows


def _request(endpoint: str, route, headers) -> requests.Response:
    path = route.path
    for name in ("model_uid", "model_type", "model_name", "request_id", "file_name",
                 "replica_id"):
        path = path.replace("{%s}" % name, "no-such-" + name.replace("_", "-"))
    # a real file for a path parameter (the literal "{path:path}" matched the public list
    # by its spelling, not by the route)
    path = path.replace("{path:path}", "js/app.js")
    kw = {"json": {}} if route.method in ("POST", "PUT") else {}
    return requests.request(route.method, endpoint + path, headers=headers, timeout=30, **kw)


def test_each_permission_allows_exactly_its_routes(srv):
    rows = all_route_rows()
    assert len(rows) > 25 and all(r.scope is not None or r.path in PUBLIC_PATHS for r in rows)
    checked = 0
    for route in rows:
        if route.method == "DELETE" and route.path == "/v1/clusters":
            allowed_users = []  # would stop the server: only refusals are sent
        else:
            allowed_users = None
        # No credential: only the public routes answer.
        r = _request(srv.endpoint, route, {})
        if route.scope is None:
            assert r.status_code not in (401, 403), (route, r.text)
        else:
            assert r.status_code == 401, (route, r.status_code, r.text)
            assert r.headers.get("www-authenticate") == "Bearer"
            assert r.json()["error"]["type"] == "authentication_error"
        for perm in sorted(PERMISSIONS) + ["nobody"]:
            key = key_of(perm) if perm != "nobody" else "sk-nobodynobody123"
            allowed = route.scope is None or perm in ("admin", route.scope)
            if allowed and allowed_users is not None:
                continue
            r = _request(srv.endpoint, route, bearer(key))
            if allowed:
                assert r.status_code not in (401, 403), (perm, route, r.text)
            else:
                assert r.status_code == 403, (perm, route, r.status_code, r.text)
                body = r.json()
                assert body["error"]["type"] == "permission_error"
                assert route.scope in body["detail"]
            checked += 1
    assert checked > 250
    # An unknown key and a malformed header are 401, as is an unknown path.
    for headers in (bearer("sk-notakeynotakey1"), {"Authorization": "Basic abc"},
                    {"Authorization": "Bearer"}):
        r = requests.get(srv.endpoint + "/v1/models", headers=headers, timeout=10)
        assert r.status_code == 401, headers
    assert requests.get(srv.endpoint + "/v1/nothing-here", timeout=10).status_code == 401
    assert requests.get(srv.endpoint + "/v1/nothing-here", headers=bearer(key_of("admin")),
                        timeout=10).status_code == 404
    assert requests.get(srv.endpoint + "/v1/cluster/auth", timeout=10).json() == {"auth": True}


def test_openai_sdk_and_restful_client_with_keys(srv):
    admin = RESTfulClient(srv.endpoint, api_key=key_of("admin"))
    uid = admin.launch_model(model_name="all-MiniLM-L6-v2", model_type="embedding",
                             model_uid="auth-emb", model_path=minilm_dir())
    try:
        lister = RESTfulClient(srv.endpoint, api_key=key_of("models:list"))
        assert uid in lister.list_models()
        with pytest.raises(RESTfulClientError) as e:
            lister.launch_model(model_name="all-MiniLM-L6-v2", model_type="embedding")
        assert e.value.status_code == 403

        sdk = openai.OpenAI(base_url=srv.endpoint + "/v1", api_key=key_of("models:read"))
        emb = sdk.embeddings.create(model=uid, input=["hello", "world"])
        assert len(emb.data) == 2 and len(emb.data[0].embedding) == 384
        bad = openai.OpenAI(base_url=srv.endpoint + "/v1", api_key="sk-wrongwrongwrong1")
        with pytest.raises(openai.AuthenticationError):
            bad.embeddings.create(model=uid, input="hello")
        # models:list may list but not infer.
        no_read = openai.OpenAI(base_url=srv.endpoint + "/v1", api_key=key_of("models:list"))
        with pytest.raises(openai.PermissionDeniedError):
            no_read.embeddings.create(model=uid, input="hello")
    finally:
        admin.terminate_model(uid)


def test_jwt_login_forged_and_expired(srv):
    client = RESTfulClient(srv.endpoint)
    with pytest.raises(RESTfulClientError) as e:
        client.login("models_list", "wrong")
    assert e.value.status_code == 401
    with pytest.raises(RESTfulClientError) as e:
        client.login("ghost", "whatever")
    assert e.value.status_code == 401
    issued = time.monotonic()
    client.login("models_list", PASSWORD.format("models:list"))
    assert client.token.count(".") == 2
    assert isinstance(client.list_models(), dict)  # the JWT carries models:list ...
    with pytest.raises(RESTfulClientError) as e:  # ... and only that
        client.launch_model(model_name="all-MiniLM-L6-v2", model_type="embedding")
    assert e.value.status_code == 403

    import jwt

    claims = jwt.decode(client.token, SECRET, algorithms=["HS256"])
    assert claims["sub"] == "models_list" and claims["scopes"] == ["models:list"]
    forged = jwt.encode(dict(claims, scopes=["admin"]), "another-secret-of-32-bytes-000000",
                        algorithm="HS256")
    r = requests.get(srv.endpoint + "/v1/models", headers=bearer(forged), timeout=10)
    assert r.status_code == 401 and "Invalid token" in r.json()["detail"]
    unsigned = jwt.encode(claims, None, algorithm="none")
    assert requests.get(srv.endpoint + "/v1/models", headers=bearer(unsigned),
                        timeout=10).status_code == 401
    # Escalation inside a correctly signed token is limited to what the user holds.
    boosted = jwt.encode(dict(claims, scopes=["admin"]), SECRET, algorithm="HS256")
    assert requests.post(srv.endpoint + "/v1/models", headers=bearer(boosted), json={},
                         timeout=10).status_code == 403

    # The token expires after token_expire_in_minutes.
    def expired():
        r = requests.get(srv.endpoint + "/v1/models", headers=bearer(client.token), timeout=10)
        return r.status_code == 401 and "expired" in r.json()["detail"]

    wait_until(expired, 30, "the token to expire")
    assert time.monotonic() - issued >= EXPIRE_MINUTES * 60 - 1
    # A form post as the OAuth2 password flow sends it.
    r = requests.post(srv.endpoint + "/token", timeout=10, data={
        "grant_type": "password", "username": "admin", "password": PASSWORD.format("admin")})
    assert r.status_code == 200 and r.json()["token_type"] == "bearer"


def xi(*args, home: Path, env=None):
    return subprocess.run([sys.executable, "-m", "xinference.deploy.cmdline", *args],
                          capture_output=True, text=True, timeout=120,
                          env=dict(os.environ, XINFERENCE_HOME=str(home), **(env or {})))


def test_cli_api_key_and_login(srv, tmp_path):
    r = xi("list", "-e", srv.endpoint, home=tmp_path)
    assert r.returncode == 1 and "401" in r.stderr
    r = xi("list", "-e", srv.endpoint, "-ak", key_of("models:list"), home=tmp_path)
    assert r.returncode == 0, r.stderr
    r = xi("login", "-e", srv.endpoint, "-u", "models_list", "-p", "wrong", home=tmp_path)
    assert r.returncode == 1 and "401" in r.stderr
    r = xi("login", "-e", srv.endpoint, "-u", "models_list", "-p",
           PASSWORD.format("models:list"), home=tmp_path)
    assert r.returncode == 0, r.stderr
    token_file = tmp_path / "auth" / "tokens.json"
    assert oct(token_file.stat().st_mode & 0o777) == "0o600"
    r = xi("list", "-e", srv.endpoint, home=tmp_path)
    assert r.returncode == 0, r.stderr
    r = xi("cached", "-e", srv.endpoint, home=tmp_path)  # models:list lacks cache:list
    assert r.returncode == 1 and "403" in r.stderr


@pytest.mark.parametrize("mutate, field", [
    (lambda c: c["user_config"][0]["api_keys"].append("abc"), "user_config[0].api_keys"),
    (lambda c: c["auth_config"].pop("secret_key"), "auth_config.secret_key"),
    (lambda c: c["user_config"][1]["permissions"].append("models:fly"),
     "user_config[1].permissions"),
    (lambda c: c["auth_config"].update(algorithm="RS256"), "auth_config.algorithm"),
    (lambda c: c["user_config"][2].update(username=c["user_config"][0]["username"]),
     "user_config[2].username"),
])
def test_malformed_auth_config_stops_startup(tmp_path, mutate, field):
    cfg = auth_config()
    mutate(cfg)
    path = tmp_path / "auth.json"
    path.write_text(json.dumps(cfg))
    r = subprocess.run([sys.executable, "-m", "xinference.deploy.cmdline_local", "--port",
                        str(free_port()), "--auth-config", str(path)],
                       capture_output=True, text=True, timeout=60,
                       env=dict(os.environ, XINFERENCE_HOME=str(tmp_path)))
    assert r.returncode == 1
    assert field in r.stderr, r.stderr


def test_worker_joins_an_auth_on_cluster(tmp_path):
    bin_dir = Path(sys.executable).parent
    cfg = tmp_path / "auth.json"
    cfg.write_text(json.dumps(auth_config(expire=30)))
    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    procs = []
    try:
        sup = LoggedProcess([str(bin_dir / "xinference-supervisor"), "-H", "127.0.0.1", "-p",
                             str(port), "--auth-config", str(cfg)], tmp_path / "sup",
                            tmp_path / "sup.log")
        procs.append(sup)
        wait_until(lambda: _ok(endpoint + "/status"), 60, "the supervisor")
        # Without a credential the worker is refused at once and says why.
        denied = subprocess.run([str(bin_dir / "xinference-worker"), "-e", endpoint, "-H",
                                 "127.0.0.2"], capture_output=True, text=True, timeout=60,
                                env=dict(os.environ, XINFERENCE_HOME=str(tmp_path / "w0")))
        assert denied.returncode == 1 and "401" in denied.stderr, denied.stderr
        worker = LoggedProcess([str(bin_dir / "xinference-worker"), "-e", endpoint, "-H",
                                "127.0.0.2", "-ak", key_of("admin")], tmp_path / "w1",
                               tmp_path / "w1.log")
        procs.append(worker)
        admin = RESTfulClient(endpoint, api_key=key_of("admin"))
        wait_until(lambda: [w["ip_address"] for w in admin.get_workers_info()] == ["127.0.0.2"],
                   60, "the worker to register")
        with pytest.raises(RESTfulClientError) as e:
            RESTfulClient(endpoint).get_workers_info()
        assert e.value.status_code == 401
        # The supervisor's /metrics covers the worker and its model process.
        uid = admin.launch_model(model_name="all-MiniLM-L6-v2", model_type="embedding",
                                 model_uid="cluster-emb", model_path=minilm_dir())
        pid = admin.describe_model(uid)["replicas"][0]["pid"]
        sdk = openai.OpenAI(base_url=endpoint + "/v1", api_key=key_of("models:read"))
        assert len(sdk.embeddings.create(model=uid, input="hi").data) == 1
        text = requests.get(endpoint + "/metrics", timeout=30).text
        from prometheus_client.parser import text_string_to_metric_families

        samples = {(s.name, s.labels.get("node"), s.labels.get("model_uid")): s.value
                   for f in text_string_to_metric_families(text) for s in f.samples}
        nodes = {n for (name, n, _) in samples if name == "xinference_node_cpu_count"}
        assert nodes == {"127.0.0.2"}  # the host, without the actor pool port
        assert samples[("xinference_model_requests_total", next(iter(nodes)), uid)] == 1
        # stop-cluster (admin only) stops the worker, its model and the supervisor.
        r = subprocess.run([sys.executable, "-m", "xinference.deploy.cmdline", "stop-cluster",
                            "-e", endpoint, "-y", "-ak", key_of("models:stop")],
                           capture_output=True, text=True, timeout=60)
        assert r.returncode == 1 and "403" in r.stderr
        r = subprocess.run([sys.executable, "-m", "xinference.deploy.cmdline", "stop-cluster",
                            "-e", endpoint, "-y", "-ak", key_of("admin")],
                           capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stderr
        assert worker.proc.wait(60) == 0 and sup.proc.wait(60) == 0
        assert not wait_gone([pid], 20)
        assert "left the cluster" in sup.log()
    finally:
        for p in reversed(procs):
            p.stop()


def _ok(url: str) -> bool:
    try:
        return requests.get(url, timeout=2).ok
    except requests.RequestException:
        return False


def test_anthropic_sdk_sends_its_key_as_x_api_key(srv):
    """The Anthropic SDK authenticates with ``x-api-key``; refusals come in Anthropic's
    error shape."""
    import anthropic

    ok = anthropic.Anthropic(base_url=srv.endpoint, api_key=key_of("models:read"),
                             max_retries=0)
    with pytest.raises(anthropic.NotFoundError) as e:  # past auth: the model is unknown
        ok.messages.create(model="no-such-model", max_tokens=5,
                           messages=[{"role": "user", "content": "hi"}])
    assert e.value.body["error"]["type"] == "not_found_error"
    bad = anthropic.Anthropic(base_url=srv.endpoint, api_key="sk-wrongwrongwrong1",
                              max_retries=0)
    with pytest.raises(anthropic.AuthenticationError) as e:
        bad.messages.create(model="x", max_tokens=5, messages=[{"role": "user",
                                                                "content": "hi"}])
    assert e.value.body["error"]["type"] == "authentication_error"
    lister = anthropic.Anthropic(base_url=srv.endpoint, api_key=key_of("models:list"),
                                 max_retries=0)
    with pytest.raises(anthropic.PermissionDeniedError):
        lister.messages.count_tokens(model="x", messages=[{"role": "user", "content": "hi"}])

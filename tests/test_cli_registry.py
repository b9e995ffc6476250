"""``xinference register / unregister / registrations / engine / launch --model-path`` run
as the installed console script (``.venv/bin/xinference``) against a real server of this
module, with its own ``XINFERENCE_HOME``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import start_server
from .test_custom_models import SMOL_DIR, SMOL_FILE, smol_family

XINFERENCE = str(Path(sys.executable).parent / "xinference")


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    server = start_server(tmp_path_factory.mktemp("cli-registry-home"))
    yield server
    server.stop()


def xi(srv, *args, stdin=None):
    return subprocess.run([XINFERENCE, *args, "-e", srv.endpoint], input=stdin,
                          capture_output=True, text=True, timeout=180,
                          env=dict(os.environ))


def test_register_launch_unregister(srv, tmp_path):
    model_json = tmp_path / "model.json"
    model_json.write_text(json.dumps(smol_family("cli-smol"), indent=2))
    persisted = srv.home / "model" / "llm" / "cli-smol.json"

    r = xi(srv, "register", "--model-type", "LLM", "--file", str(model_json), "--persist")
    assert r.returncode == 0, r.stderr
    assert "Registered LLM model cli-smol (persisted)." in r.stdout
    assert persisted.is_file()

    r = xi(srv, "registrations", "--model-type", "LLM")
    assert r.returncode == 0, r.stderr
    rows = {ln.split()[1]: ln.split()[-1] for ln in r.stdout.splitlines()[2:] if ln.strip()}
    assert rows["cli-smol"] == "False" and rows["smollm2-instruct"] == "True"
    r = xi(srv, "registrations", "-t", "LLM", "-n", "cli-smol")
    assert json.loads(r.stdout)["model_specs"][0]["model_uri"] == f"file://{SMOL_DIR}"

    r = xi(srv, "engine", "-n", "cli-smol")
    assert r.returncode == 0, r.stderr
    line = next(ln for ln in r.stdout.splitlines() if ln.startswith("llama.cpp"))
    assert "ggufv2" in line and "Q4_1" in line and "yes" in line

    r = xi(srv, "launch", "--model-name", "cli-smol", "--model-format", "ggufv2")
    assert r.returncode == 0, r.stderr
    assert "Model uid: cli-smol" in r.stdout
    r = xi(srv, "generate", "--model-uid", "cli-smol", "--max-tokens", "6", "--no-stream",
           stdin="Once upon a time\n\n")
    assert r.returncode == 0, r.stderr
    assert r.stdout.replace("Prompt:", "").strip()

    # Refused while running (409), then allowed once terminated.
    r = xi(srv, "unregister", "--model-type", "LLM", "--model-name", "cli-smol")
    assert r.returncode == 1
    assert "status 409" in r.stderr and "terminate it first" in r.stderr
    assert persisted.is_file()
    assert xi(srv, "terminate", "--model-uid", "cli-smol").returncode == 0
    r = xi(srv, "unregister", "--model-type", "LLM", "--model-name", "cli-smol")
    assert r.returncode == 0, r.stderr
    assert "Unregistered LLM model cli-smol." in r.stdout
    assert not persisted.exists()
    assert "cli-smol" not in xi(srv, "registrations", "-t", "LLM").stdout


def test_register_errors(srv, tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{ this is not json")
    r = xi(srv, "register", "--model-type", "LLM", "--file", str(bad))
    assert r.returncode == 1
    assert "status 400" in r.stderr and "Invalid model JSON" in r.stderr

    no_template = tmp_path / "no-template.json"
    no_template.write_text(json.dumps(smol_family("cli-nt", model_file_name_template=None)))
    r = xi(srv, "register", "--model-type", "LLM", "--file", str(no_template), "--persist")
    assert r.returncode == 1
    assert "model_file_name_template is required for ggufv2" in r.stderr
    assert not (srv.home / "model" / "llm" / "cli-nt.json").exists()

    good = tmp_path / "good.json"
    good.write_text(json.dumps(smol_family("cli-twice")))
    assert xi(srv, "register", "-t", "LLM", "--file", str(good)).returncode == 0
    r = xi(srv, "register", "-t", "LLM", "--file", str(good))
    assert r.returncode == 1 and "status 409" in r.stderr and "already registered" in r.stderr
    assert xi(srv, "unregister", "-t", "LLM", "-n", "cli-twice").returncode == 0

    r = xi(srv, "register", "--model-type", "LLM", "--file", str(tmp_path / "missing.json"))
    assert r.returncode == 2 and "does not exist" in r.stderr

    r = xi(srv, "unregister", "--model-type", "LLM", "--model-name", "nobody")
    assert r.returncode == 1 and "status 404" in r.stderr
    r = xi(srv, "unregister", "--model-type", "LLM", "--model-name", "smollm2-instruct")
    assert r.returncode == 1 and "status 400" in r.stderr and "builtin" in r.stderr


def test_register_image_model(srv, tmp_path):
    f = tmp_path / "sd.json"
    f.write_text(json.dumps({"model_name": "cli-sd", "model_family": "stable_diffusion",
                             "model_uri": "file:///models/sd"}))
    r = xi(srv, "register", "--model-type", "image", "--file", str(f), "--persist")
    assert r.returncode == 0, r.stderr
    assert (srv.home / "model" / "image" / "cli-sd.json").is_file()
    assert "cli-sd" in xi(srv, "registrations", "-t", "image").stdout
    r = xi(srv, "launch", "--model-name", "cli-sd", "--model-type", "image")
    # image models launch now; this one's model_uri points at no directory
    assert r.returncode == 1 and "does not exist on this machine" in r.stderr
    assert xi(srv, "unregister", "-t", "image", "-n", "cli-sd").returncode == 0
    assert not (srv.home / "model" / "image" / "cli-sd.json").exists()


def test_launch_builtin_with_model_path(srv):
    r = xi(srv, "launch", "--model-name", "smollm2-instruct", "--model-engine", "llama.cpp",
           "--model-uid", "cli-path", "--model-path", str(SMOL_DIR / SMOL_FILE))
    assert r.returncode == 0, r.stderr
    assert "Model uid: cli-path" in r.stdout
    assert "cli-path" in xi(srv, "list").stdout
    assert xi(srv, "terminate", "--model-uid", "cli-path").returncode == 0
    r = xi(srv, "launch", "--model-name", "smollm2-instruct", "--model-uid", "cli-nopath",
           "--model-path", "/no/such/model.gguf")
    assert r.returncode == 1
    assert "model_path '/no/such/model.gguf' does not exist" in r.stderr
    assert "cli-nopath" not in xi(srv, "list").stdout


def test_registrations_filtered_by_ability(srv):
    r = xi(srv, "registrations", "-t", "LLM", "--ability", "tools")
    assert r.returncode == 0, r.stderr
    names = {ln.split()[1] for ln in r.stdout.splitlines()[2:] if ln.strip()}
    assert {"qwen3", "qwen2.5-instruct", "llama-3.1-instruct", "mistral-instruct-v0.3"} <= names
    assert "smollm2-instruct" not in names and "gemma-3-it" not in names
    r = xi(srv, "registrations", "-t", "LLM", "-a", "tools", "-a", "reasoning")
    names = {ln.split()[1] for ln in r.stdout.splitlines()[2:] if ln.strip()}
    assert "qwen3" in names and "qwen2.5-instruct" not in names


def test_registrations_filtered_by_hub_and_rest_query(srv):
    import requests

    r = xi(srv, "registrations", "-t", "LLM", "--hub", "modelscope", "-a", "tools")
    assert r.returncode == 0, r.stderr
    names = {ln.split()[1] for ln in r.stdout.splitlines()[2:] if ln.strip()}
    assert {"qwen3", "glm-4.5", "kimi-k2-instruct"} <= names
    assert "mistral-instruct-v0.3" not in names  # published on Hugging Face only
    rows = requests.get(f"{srv.endpoint}/v1/model_registrations/LLM",
                        params={"ability": ["reasoning", "tools"], "hub": "modelscope"}).json()
    assert "gpt-oss" in {x["model_name"] for x in rows}
    bad = requests.get(f"{srv.endpoint}/v1/model_registrations/LLM", params={"hub": "x"})
    assert bad.status_code == 400 and "hub" in bad.json()["error"]["message"]

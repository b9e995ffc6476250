"""The ``xinference`` CLI, run as a real subprocess against the real server."""

import os
import subprocess
import sys

import click
import pytest

from xinference.deploy.cmdline import _extra_kwargs

from .conftest import SMOLLM


def xi(endpoint, *args, stdin=None, use_env=False):
    env = dict(os.environ)
    argv = [sys.executable, "-m", "xinference.deploy.cmdline", *args]
    if use_env:
        env["XINFERENCE_ENDPOINT"] = endpoint
    else:
        argv += ["-e", endpoint]
    return subprocess.run(argv, input=stdin, capture_output=True, text=True, env=env,
                          timeout=180)


def test_launch_list_terminate(endpoint):
    r = xi(endpoint, "launch", "--model-name", SMOLLM, "--model-engine", "llama.cpp",
           "-u", "cli-model", "-s", "0_135", "-f", "ggufv2", "-q", "q4_1", "--n_ctx", "1024")
    assert r.returncode == 0, r.stderr
    assert "cli-model" in r.stdout
    r = xi(endpoint, "list")
    assert r.returncode == 0
    line = next(ln for ln in r.stdout.splitlines() if ln.startswith("cli-model"))
    assert "llama.cpp" in line and "ggufv2" in line and "q4_1" in line
    import requests

    assert requests.get(f"{endpoint}/v1/models/cli-model").json()["context_length"] == 1024
    r = xi(endpoint, "terminate", "--model-uid", "cli-model", use_env=True)
    assert r.returncode == 0, r.stderr
    assert "cli-model" not in xi(endpoint, "list").stdout


def test_launch_error_exits_nonzero_with_server_message(endpoint):
    r = xi(endpoint, "launch", "-n", "no-such-model")
    assert r.returncode == 1
    assert "no-such-model" in r.stderr and "400" in r.stderr
    r = xi(endpoint, "terminate", "--model-uid", "ghost")
    assert r.returncode == 1 and "ghost" in r.stderr


def test_registrations_and_engine(endpoint):
    r = xi(endpoint, "registrations", "-t", "LLM")
    assert r.returncode == 0
    assert any(SMOLLM in ln and "True" in ln for ln in r.stdout.splitlines())
    r = xi(endpoint, "engine", "-n", SMOLLM)
    assert r.returncode == 0
    assert "llama.cpp" in r.stdout and "q4_1" in r.stdout and "Transformers" in r.stdout


@pytest.mark.parametrize("stream", ["--stream", "--no-stream"])
def test_chat_interactive(endpoint, stream):
    r = xi(endpoint, "chat", "--model-uid", SMOLLM, "--max-tokens", "8", stream,
           stdin="Hello there\nAnd again\n\n")
    assert r.returncode == 0, r.stderr
    answers = [ln for ln in r.stdout.split("Assistant: ")[1:]]
    assert len(answers) == 2 and all(a.strip() for a in answers)


def test_generate_interactive(endpoint):
    r = xi(endpoint, "generate", "--model-uid", SMOLLM, "--max-tokens", "6",
           stdin="Once upon a time\n\n", use_env=True)
    assert r.returncode == 0, r.stderr
    assert r.stdout.replace("Prompt:", "").strip()


def test_extra_kwargs_parsing():
    assert _extra_kwargs(["--n_ctx", "4096", "--flag", "true", "--name=x", "--n-batch",
                          "none"]) == {"n_ctx": 4096, "flag": True, "name": "x",
                                       "n_batch": None}
    with pytest.raises(click.UsageError):
        _extra_kwargs(["--dangling"])


def test_cluster_commands_exist():
    for mod in ("supervisor", "worker"):
        r = subprocess.run([sys.executable, "-c",
                            f"from xinference.deploy.cmdline import {mod}; {mod}(['--help'])"],
                           capture_output=True, text=True)
        assert "Usage" in r.stdout

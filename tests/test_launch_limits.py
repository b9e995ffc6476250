"""Caps on ``replica``, ``n_parallel`` and ``n_ctx`` from the workers' resources
(xinference.core.launch_caps): the rule on reported resources, and 400s naming the cap from a
real server."""

from __future__ import annotations

import os

import pytest
import requests

from xinference.core.launch_caps import check_launch_caps, launch_caps
from xinference.errors import InvalidRequestError

from .conftest import SMOLLM

GIB = 1024 ** 3
CPU_WORKER = {"cpu_count": 2, "gpu_count": 0, "memory_total": 24 * GIB,
              "gpu_vram_total": 0}
GPU_WORKER = {"cpu_count": 16, "gpu_count": 2, "memory_total": 64 * GIB,
              "gpu_vram_total": 160 * GIB}


def test_caps_follow_the_reported_resources():
    assert launch_caps([CPU_WORKER]) == {"replica": 8, "n_parallel": 16,
                                         "n_ctx": 24 * GIB // (16 * 1024)}
    caps = launch_caps([CPU_WORKER, GPU_WORKER])
    assert caps["replica"] == 8 + 64
    assert caps["n_parallel"] == 16 * 8 + 2 * 64  # the largest worker
    assert caps["n_ctx"] == 224 * GIB // (16 * 1024)
    assert launch_caps([{}, {"cpu_count": None}]) is None  # nothing reported yet


def test_check_names_the_cap_and_leaves_non_numbers_to_the_engine():
    check_launch_caps(8, {"n_parallel": 16, "n_ctx": 4096}, [CPU_WORKER])
    check_launch_caps(10 ** 6, {"n_ctx": 10 ** 12}, [{}])  # no report: no cap
    check_launch_caps(1, {"n_parallel": "many"}, [CPU_WORKER])  # the engine answers
    for replica, opts, name in ((9, {}, "replica"), (1, {"n_parallel": 17}, "n_parallel"),
                                (1, {"n_ctx": "99999999999"}, "n_ctx")):
        with pytest.raises(InvalidRequestError) as e:
            check_launch_caps(replica, opts, [CPU_WORKER])
        assert f"'{name}' is" in e.value.message and "cap of" in e.value.message


@pytest.mark.e2e
def test_server_refuses_launches_over_the_caps(endpoint):
    cores = os.cpu_count()
    cases = [({"replica": 4 * cores + 1}, "replica", 4 * cores),
             ({"n_parallel": 8 * cores + 1}, "n_parallel", 8 * cores),
             ({"n_ctx": 10 ** 9}, "n_ctx", None)]
    for extra, name, cap in cases:
        r = requests.post(endpoint + "/v1/models", timeout=60, json=dict(
            {"model_name": SMOLLM, "model_uid": "capped", "model_engine": "llama.cpp"},
            **extra))
        assert r.status_code == 400, r.text
        detail = r.json()["detail"]
        assert f"'{name}' is" in detail and "cap of" in detail, detail
        if cap is not None:
            assert f"cap of {cap} " in detail, detail
    models = requests.get(endpoint + "/v1/models", timeout=10).json()["data"]
    assert "capped" not in [m["id"] for m in models]

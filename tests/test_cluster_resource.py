"""GPU allocation and resource parsing of cluster workers (pure logic, no GPU needed).

The machines here have no GPU, so these check the allocation rule that
``WorkerActor.launch_model`` and the supervisor's placement apply, the ``nvidia-smi``
parser on real output rows, and that detection on this machine reports what is there.
"""

from __future__ import annotations

import pytest

from xinference.errors import InvalidRequestError, ModelUnavailableError
from xinference.core.resource import (
    allocate_gpus,
    gpu_env,
    gpu_info,
    node_resources,
    normalize_gpu_idx,
    normalize_n_gpu,
    parse_nvidia_smi,
)


def test_parse_nvidia_smi_rows():
    text = ("0, NVIDIA H100 80GB HBM3, 81559, 4\n"
            "1, NVIDIA H100 80GB HBM3, 81559, 40960\n"
            "garbage line\n")
    gpus = parse_nvidia_smi(text)
    assert [g["index"] for g in gpus] == [0, 1]
    assert gpus[0]["name"] == "NVIDIA H100 80GB HBM3"
    assert gpus[1]["memory_total"] == 81559 * 2 ** 20
    assert gpus[1]["memory_used"] == 40960 * 2 ** 20


def test_node_resources_of_this_machine():
    res = node_resources()
    assert res["cpu_count"] >= 1
    assert 0 < res["memory_available"] <= res["memory_total"]
    assert res["gpu_count"] == len(res["gpus"]) == len(gpu_info())
    assert res["gpu_vram_total"] == sum(g["memory_total"] for g in res["gpus"])


def test_visible_devices_of_the_worker_limit_the_offer(monkeypatch):
    import xinference.core.resource as r

    monkeypatch.setattr(r, "_gpus_nvml", lambda: parse_nvidia_smi(
        "0, A, 100, 0\n1, B, 100, 0\n2, C, 100, 0"))
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,2")
    assert [g["index"] for g in gpu_info()] == [0, 2]


@pytest.mark.parametrize("value, expected", [
    ("auto", "auto"), (None, None), (0, None), ("0", None), ("none", None), (2, 2), ("2", 2),
])
def test_normalize_n_gpu(value, expected):
    assert normalize_n_gpu(value) == expected


@pytest.mark.parametrize("value", [-1, "many", 1.5, True, [1]])
def test_bad_n_gpu_is_400(value):
    with pytest.raises(InvalidRequestError):
        normalize_n_gpu(value)


def test_normalize_gpu_idx():
    assert normalize_gpu_idx(None) is None
    assert normalize_gpu_idx(1) == [1]
    assert normalize_gpu_idx([0, 2]) == [0, 2]
    for bad in ([], [0, 0], [-1], "0", [True]):
        with pytest.raises(InvalidRequestError):
            normalize_gpu_idx(bad)


def test_cpu_worker():
    assert allocate_gpus([], {}, "auto", None) is None  # CPU, no env: the spare process fits
    assert allocate_gpus([], {}, None, None) is None
    with pytest.raises(InvalidRequestError, match=r"more GPUs than the worker has \(0\)"):
        allocate_gpus([], {}, 1, None)
    with pytest.raises(InvalidRequestError, match=r"GPU index \[0\] is not on this worker"):
        allocate_gpus([], {}, "auto", [0])


def test_gpu_worker():
    gpus = [0, 1, 2]
    assert allocate_gpus(gpus, {}, None, None) == []  # CPU model: hide every GPU
    assert allocate_gpus(gpus, {0: 1}, "auto", None) == [1]  # least used
    assert allocate_gpus(gpus, {0: 1, 1: 1, 2: 1}, "auto", None) == [0]  # all shared: lowest
    assert allocate_gpus(gpus, {1: 1}, 2, None) == [0, 2]  # free ones only
    with pytest.raises(ModelUnavailableError, match="only 1 are free"):
        allocate_gpus(gpus, {0: 1, 1: 2}, 2, None)
    assert allocate_gpus(gpus, {2: 1}, None, [2]) == [2]  # explicit indexes may be shared
    with pytest.raises(InvalidRequestError, match="does not match"):
        allocate_gpus(gpus, {}, 2, [1])


def test_gpu_env():
    assert gpu_env(None) == {}
    assert gpu_env([]) == {"CUDA_VISIBLE_DEVICES": "", "CUDA_DEVICE_ORDER": "PCI_BUS_ID"}
    assert gpu_env([1, 3])["CUDA_VISIBLE_DEVICES"] == "1,3"

"""The supervisor's per-model event log and the replica bookkeeping of scaling, without a
server: bounds, order, 404 for unknown uids, which replicas a scale-in takes and the 400s."""

from __future__ import annotations

import asyncio

import pytest

from xinference.core.events import EventLog
from xinference.core.model_table import ModelTable
from xinference.core.scaling import ReplicaScaler
from xinference.errors import InvalidRequestError, ModelNotFoundError


def test_log_is_bounded_per_model_and_in_uids():
    log = EventLog(per_model=3, models=2)
    for i in range(5):
        log.add("a", f"e{i}")
    assert [e["event_content"] for e in log.get("a")] == ["e2", "e3", "e4"]
    e = log.get("a")[0]
    assert set(e) == {"event_type", "event_ts", "event_content", "kind", "replica_uid"}
    log.add("b", "x", "ERROR", "error")
    log.add("a", "e5")  # a is now the most recently written
    log.add("c", "y")  # evicts b, the least recently written
    with pytest.raises(ModelNotFoundError):
        log.get("b")
    assert log.get("c")[0]["event_content"] == "y"
    with pytest.raises(ModelNotFoundError, match="never"):
        EventLog().get("ghost")


def _table(statuses):
    t = ModelTable()
    rows = [{"replica_uid": f"m-{i}", "worker_address": "w", "pid": i, "model_address": "a",
             "gpu_idx": None, "status": s, "error": None} for i, s in enumerate(statuses)]
    t.add("m", "LLM", {"model_name": "x"}, rows)
    return t


class _Launcher:
    def __init__(self, events):
        self.events = events
        self.plans = {}


def _scaler(t):
    return ReplicaScaler(_Launcher(t.events), workers=None, models=t)


def test_detach_takes_dead_then_newest_and_keeps_one():
    t = _table(["ready", "dead", "ready", "ready"])
    s = _scaler(t)
    rows = s.detach("m", cnt=2)
    assert [r["replica_uid"] for r in rows] == ["m-1", "m-3"]
    assert [r["replica_id"] for r in s.list("m")] == ["m-0", "m-2"]
    with pytest.raises(InvalidRequestError, match="at least 1"):
        s.detach("m", cnt=2)
    with pytest.raises(ModelNotFoundError, match="m-0"):
        s.detach("m", replica_id="m-9")
    assert [r["replica_uid"] for r in s.detach("m", replica_id="m-0")] == ["m-0"]
    for bad in (0, -1, "1", True, None):
        with pytest.raises(InvalidRequestError, match="cnt"):
            s.detach("m", cnt=bad)
    texts = [e["event_content"] for e in t.events.get("m")]
    assert "Replica m-1 removed from service; draining its requests" in texts


def test_scale_out_without_a_plan_is_400():
    s = _scaler(_table(["ready"]))
    with pytest.raises(InvalidRequestError, match="launch plan"):
        asyncio.run(s.scale_out("m", 1))
    with pytest.raises(InvalidRequestError, match="cnt"):
        asyncio.run(s.scale_out("m", 0))

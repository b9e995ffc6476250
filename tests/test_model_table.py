"""The supervisor's model table (``xinference.core.model_table``): pure state, no actors.

The cluster e2e tests drive the same paths through real workers; these pin the
bookkeeping rules themselves: lost models, replicas away with a dead worker, replicas to
stop, round-robin, uid states."""

from __future__ import annotations

import pytest

from xinference.core.model_table import ModelTable, replica_row
from xinference.errors import ConflictError, ModelNotFoundError, ModelUnavailableError

W1, W2 = "10.0.0.1:4000", "10.0.0.2:4000"


def _row(ruid, muid="m", alive=True):
    return {"replica_uid": ruid, "model_uid": muid, "pid": 7, "address": "x:1",
            "alive": alive, "launched_at": 100, "model_type": "embedding",
            "desc": {"model_name": "mini", "model_type": "embedding"}}


def _launched(table, uid="m", workers=(W1, W2)):
    table.reserve(uid)
    table.add(uid, "embedding", {"model_name": "mini"},
              [replica_row(w, _row(f"{uid}-{i}", uid)) for i, w in enumerate(workers)])
    table.release(uid)


def test_uid_states_and_conflicts():
    t = ModelTable()
    t.reserve("m")
    assert t.is_launching("m") and "m" not in t
    with pytest.raises(ConflictError):
        t.reserve("m")
    t.release("m")
    with pytest.raises(ModelNotFoundError):
        t.running("m")
    _launched(t)
    with pytest.raises(ConflictError):
        t.check_free("m")
    assert t.using("mini") == ["m"] and t.count_on(W1) == 1
    t.failed["p"] = "relaunch failed: no such file"
    with pytest.raises(ModelUnavailableError, match="no such file"):
        t.running("p")


def test_round_robin_moves_by_one():
    t = ModelTable()
    _launched(t)
    m = t.running("m")
    firsts = [m.next_order()[0]["replica_uid"] for _ in range(4)]
    assert firsts == ["m-0", "m-1", "m-0", "m-1"]


def test_dead_worker_then_back_adopts_its_replicas():
    t = ModelTable()
    _launched(t, workers=(W1,))
    assert t.drop_replicas_on(W1, "sent no heartbeat", remember=True) == ["m-0"]
    with pytest.raises(ModelUnavailableError, match="is gone"):
        t.running("m")
    adopted, terminate = t.adopt(W1, [_row("m-0")])
    assert (adopted, terminate) == (["m-0"], [])
    m = t.running("m")
    assert m.model_type == "embedding" and m.replicas[0]["worker_address"] == W1


def test_replicas_of_a_relaunched_model_are_stopped_when_their_worker_returns():
    t = ModelTable()
    _launched(t, workers=(W1,))
    t.drop_replicas_on(W1, "sent no heartbeat", remember=True)
    t.reserve("m")  # launched again elsewhere while W1 was away
    t.add("m", "embedding", {"model_name": "mini"}, [replica_row(W2, _row("m-0"))])
    t.release("m")
    adopted, terminate = t.adopt(W1, [_row("m-0")])
    assert adopted == [] and terminate == ["m-0"]


def test_to_stop_is_handed_out_once_and_only_for_reported_replicas():
    t = ModelTable()
    t.stop_later(W1, "a-0")
    t.stop_later(W1, "b-0")
    assert t.take_to_stop(W1, ["a-0"]) == ["a-0"]
    assert t.take_to_stop(W1, ["a-0"]) == []
    t.keep(W1, "b-0")  # launched there again
    assert t.take_to_stop(W1, ["b-0"]) == []


def test_dead_process_reported_marks_the_replica():
    t = ModelTable()
    _launched(t)
    t.mark_dead_processes(W1, {"m-0": _row("m-0", alive=False)})
    rows = {r["replica_uid"]: r for r in t.running("m").replicas}
    assert rows["m-0"]["status"] == "dead" and rows["m-1"]["status"] == "ready"
    assert t.describe("m")["status"] == "ready"
    assert t.metrics_rows()[0]["replicas"] == {"dead": 1, "ready": 1}


def test_instances_cover_running_launching_lost_and_failed():
    t = ModelTable()
    _launched(t, "run", workers=(W1,))
    _launched(t, "lost", workers=(W2,))
    t.drop_replicas_on(W2, "left the cluster", remember=False)
    t.reserve("new")
    t.failed["old"] = "relaunch failed"
    rows = {r["model_uid"]: r for r in t.instances(
        {"new": {"model_name": "mini", "replica": 3}, "old": {"model_name": "mini"}},
        {"new": 2})}
    assert rows["run"]["status"] == "READY" and rows["run"]["replica"] == 1
    assert rows["new"]["status"] == "CREATING" and rows["new"]["replica"] == 2
    assert rows["lost"]["status"] == "ERROR" and "left the cluster" in rows["lost"]["error"]
    assert rows["old"]["error"] == "relaunch failed" and rows["old"]["model_name"] == "mini"

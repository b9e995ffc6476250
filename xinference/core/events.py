"""Per-model event log of the supervisor: what happened to a model uid, newest last.

Launch steps (placement, each replica loaded), download/load progress milestones, errors
with their messages, replica deaths, replicas added and removed, relaunches and terminate
are recorded as they happen. ``GET /v1/models/{model_uid}/events`` (and ``xinference
events -u UID``, the web UI's running-models view) read them; a failed launch leaves its
story here, not only an error string.

Bounded: at most :data:`EVENTS_PER_MODEL` events per uid (the oldest go first) and
:data:`MODELS_KEPT` uids (the uid least recently written goes first). Event fields follow
upstream Xinference's (``event_type``, ``event_ts``, ``event_content``) plus ``kind`` and
``replica_uid``. Kept in memory: a restarted supervisor starts with empty logs.
"""

from __future__ import annotations

import time
from collections import OrderedDict, deque
from typing import Any, Deque, Dict, List, Optional

from ..errors import ModelNotFoundError

EVENTS_PER_MODEL = 200
MODELS_KEPT = 512

#: ``event_type`` values
INFO, WARNING, ERROR = "INFO", "WARNING", "ERROR"
#: ``kind`` values
KINDS = ("launch", "download", "replica", "error", "terminate")


class EventLog:
    """Bounded per-model event log (see the module docstring); no actor calls."""

    def __init__(self, per_model: int = EVENTS_PER_MODEL, models: int = MODELS_KEPT):
        self._per_model = per_model
        self._models = models
        self._logs: "OrderedDict[str, Deque[Dict[str, Any]]]" = OrderedDict()

    def add(self, model_uid: str, content: str, event_type: str = INFO,
            kind: str = "launch", replica_uid: Optional[str] = None) -> None:
        """Record one event of ``model_uid``.

        Args:
            content: what happened, for people (an error's message included).
            event_type: ``INFO``, ``WARNING`` or ``ERROR``.
            kind: one of :data:`KINDS`.
            replica_uid: the replica it concerns, if one.
        """
        log = self._logs.get(model_uid)
        if log is None:
            log = self._logs[model_uid] = deque(maxlen=self._per_model)
            while len(self._logs) > self._models:
                self._logs.popitem(last=False)
        else:
            self._logs.move_to_end(model_uid)
        log.append({"event_type": event_type, "event_ts": time.time(),
                    "event_content": content, "kind": kind, "replica_uid": replica_uid})

    def get(self, model_uid: str) -> List[Dict[str, Any]]:
        """The events of ``model_uid``, oldest first.

        Raises:
            ModelNotFoundError: nothing was ever recorded for that uid (404).
        """
        log = self._logs.get(model_uid)
        if log is None:
            raise ModelNotFoundError(f"No events for model {model_uid!r}: it was never "
                                     "launched here")
        return [dict(e) for e in log]

"""Launch progress of a model process, readable while the weights load.

A model process loads one model. While its loader runs in the engine thread, the download
code reports into the process-wide tracker (:func:`report_progress`), and a tiny
:class:`LaunchProgressActor` living in the same sub-pool answers the worker's queries from
the pool's event loop (which the blocking load does not hold).

Scale: 0.0 = launch started; 0.0-0.8 = files being downloaded (bytes done / bytes total,
as huggingface_hub reports them); 0.8 = files found locally, weights loading; the supervisor
reports 1.0 once the model is ready.
"""

from __future__ import annotations

import threading

import xoscar as xo

DOWNLOAD_SHARE = 0.8  # part of the scale spent on downloading files

_lock = threading.Lock()
_progress = 0.0


def report_progress(value: float) -> None:
    """Set this process's launch progress (clamped to 0..1, never going back)."""
    global _progress
    with _lock:
        _progress = max(_progress, min(1.0, max(0.0, float(value))))


def current_progress() -> float:
    """This process's launch progress, 0..1."""
    return _progress


def reset_progress() -> None:
    global _progress
    with _lock:
        _progress = 0.0
    _cancelled.clear()


_cancelled = threading.Event()


def cancel_launch() -> None:
    """Ask this process's launch to stop (``POST /v1/models/{uid}/cancel``): a download
    stops at its next chunk and removes its partial files."""
    _cancelled.set()


def launch_cancelled() -> bool:
    """True once :func:`cancel_launch` was called in this process."""
    return _cancelled.is_set()


class LaunchProgressActor(xo.StatelessActor):
    """Answers :func:`current_progress` of the model process it lives in.

    Created first in each model process, it also makes sure that process logs (download
    progress, where the weights came from) into the server log when nothing else set
    logging up there.
    """

    async def __post_create__(self):
        import logging

        if not logging.getLogger().handlers:
            from ..log import setup_logging

            setup_logging()  # the server's --log-level, inherited through the environment

    def get(self) -> float:
        return current_progress()

    def cancel(self) -> None:
        """Stop the launch of this process's model (see :func:`cancel_launch`)."""
        cancel_launch()

class RequestProgress:
    """Progress of one image or video request (``GET /v1/requests/{request_id}/progress``),
    updated by the engine thread, read by the ModelActor's event loop.

    ``status``: ``"queued"`` (waiting for the engine) → ``"running"`` → ``"done"``,
    ``"cancelled"`` (its client went away; the engine stopped at the next step) or
    ``"error"``. ``progress`` is steps done / total steps (0..1); 1.0 once done.
    """

    def __init__(self, request_id: str):
        self.request_id = request_id
        self.status = "queued"
        self.progress = 0.0
        self.finished_at = None  # time.monotonic() once no longer queued or running

    def update(self, done: float, total: float) -> None:
        """``done`` of ``total`` steps are finished (kept below 1.0 until :meth:`finish`)."""
        self.status = "running"
        if total > 0:
            self.progress = max(self.progress, min(0.99, float(done) / float(total)))

    def finish(self, status: str = "done") -> None:
        import time

        self.status = status
        if status == "done":
            self.progress = 1.0
        self.finished_at = time.monotonic()

    def to_dict(self) -> dict:
        return {"request_id": self.request_id, "status": self.status,
                "progress": self.progress}

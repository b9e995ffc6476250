"""Prometheus metrics: one table of names, the per-model counters kept in each ModelActor,
and the collector that renders one scrape.

Where the numbers live:

* each ModelActor (in its model process) keeps a :class:`ModelStats`: plain counters and
  fixed-bucket histograms, updated without any RPC on the request path;
* the gateway's ``GET /metrics`` asks the supervisor once per scrape, which asks every
  worker, which asks each of its ModelActors (``get_metrics``) and adds the node's CPU,
  memory and GPU memory; :func:`render` turns that snapshot plus the gateway's own HTTP
  metrics (:class:`HTTPMetrics`, from an ASGI middleware) into the text format with
  ``prometheus_client``.

A terminated model's series disappear with it (nothing is kept per model outside its
process). Labels are only ``model_uid``, ``model_name``, ``engine`` and ``node`` on model
and node series, ``method``, ``route`` and ``status`` on HTTP series.
``XINFERENCE_DISABLE_METRICS=1`` turns all of it off (``/metrics`` answers 404).
"""

from __future__ import annotations

import bisect
import os
import time
from typing import Any, Dict, List, Optional, Sequence, Tuple

XINFERENCE_ENV_DISABLE_METRICS = "XINFERENCE_DISABLE_METRICS"

LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
                   120.0, 300.0)
TTFT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)

MODEL_LABELS = ("model_uid", "model_name", "engine", "node")

#: name -> (type, help, buckets); every metric this project exports, named once
METRICS: Dict[str, Tuple[str, str, Optional[Sequence[float]]]] = {
    # per model (from each ModelActor; summed over replicas by Prometheus queries)
    "xinference_model_requests_total": (
        "counter", "Requests a model answered or failed (streams count once).", None),
    "xinference_model_request_errors_total": (
        "counter", "Requests that ended with an error (aborted ones not included).", None),
    "xinference_model_requests_aborted_total": (
        "counter", "Requests stopped by an abort or by their client going away.", None),
    "xinference_model_request_duration_seconds": (
        "histogram", "Time from admission to the end of the answer (stream included).",
        LATENCY_BUCKETS),
    "xinference_model_time_to_first_token_seconds": (
        "histogram", "Time from admission to the first generated text of a stream.",
        TTFT_BUCKETS),
    "xinference_model_prompt_tokens_total": (
        "counter", "Prompt tokens of answered LLM requests.", None),
    "xinference_model_generated_tokens_total": (
        "counter", "Completion tokens of answered LLM requests.", None),
    "xinference_model_generation_tokens_per_second": (
        "gauge", "Completion tokens per second after the first token, last request.", None),
    "xinference_model_admitted_requests": (
        "gauge", "Requests admitted now (running and waiting), per replica summed.", None),
    "xinference_model_queued_requests": (
        "gauge", "Admitted requests waiting for the engine (one-at-a-time engines).", None),
    "xinference_model_engine_running_requests": (
        "gauge", "Requests the engine's scheduler is decoding now (its own count).", None),
    "xinference_model_engine_waiting_requests": (
        "gauge", "Requests waiting in the engine's scheduler (KV cache or batch full).",
        None),
    # cluster (from the supervisor)
    "xinference_running_models": ("gauge", "Models running in the cluster.", None),
    "xinference_model_replicas": (
        "gauge", "Replicas of a model by status (ready, dead).", None),
    # nodes (from each worker)
    "xinference_node_cpu_count": ("gauge", "Logical CPUs of a node.", None),
    "xinference_node_cpu_utilization_ratio": (
        "gauge", "CPU utilization of a node, 0..1, since the previous scrape.", None),
    "xinference_node_memory_total_bytes": ("gauge", "Memory of a node.", None),
    "xinference_node_memory_available_bytes": ("gauge", "Available memory of a node.", None),
    "xinference_node_gpu_memory_total_bytes": ("gauge", "Memory of a GPU.", None),
    "xinference_node_gpu_memory_used_bytes": ("gauge", "Memory used on a GPU.", None),
    "xinference_node_model_processes": ("gauge", "Model processes on a node.", None),
    # gateway (HTTP middleware)
    "xinference_http_requests_total": (
        "counter", "HTTP requests by route template, method and status.", None),
    "xinference_http_request_duration_seconds": (
        "histogram", "HTTP request latency (to the end of the body) by route.",
        LATENCY_BUCKETS),
}


def metrics_enabled() -> bool:
    """False when ``XINFERENCE_DISABLE_METRICS`` is ``1``/``true``/``yes``."""
    return os.environ.get(XINFERENCE_ENV_DISABLE_METRICS, "").strip().lower() not in (
        "1", "true", "yes", "on")


class Histogram:
    """A fixed-bucket histogram: per-bucket counts (non-cumulative), sum and count."""

    __slots__ = ("buckets", "counts", "sum", "count")

    def __init__(self, buckets: Sequence[float]):
        self.buckets = tuple(buckets)
        self.counts = [0] * (len(self.buckets) + 1)  # the last one is +Inf
        self.sum = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.buckets, value)] += 1
        self.sum += value
        self.count += 1

    def snapshot(self) -> Dict[str, Any]:
        return {"buckets": list(self.buckets), "counts": list(self.counts), "sum": self.sum,
                "count": self.count}


class ModelStats:
    """Counters of one ModelActor (one replica). Updated in the actor's event loop only."""

    def __init__(self):
        self.requests = 0
        self.errors = 0
        self.aborted = 0
        self.prompt_tokens = 0
        self.generated_tokens = 0
        self.tokens_per_second = 0.0
        self.duration = Histogram(LATENCY_BUCKETS)
        self.ttft = Histogram(TTFT_BUCKETS)

    def finished(self, started: float, outcome: str, ttft: Optional[float] = None,
                 usage: Optional[Dict[str, Any]] = None) -> None:
        """Record one request that ended: ``outcome`` is ``"ok"``, ``"error"`` or
        ``"aborted"``; ``started`` a ``time.monotonic()``; ``usage`` OpenAI's usage."""
        elapsed = time.monotonic() - started
        self.requests += 1
        if outcome == "error":
            self.errors += 1
        elif outcome == "aborted":
            self.aborted += 1
        self.duration.observe(elapsed)
        if ttft is not None:
            self.ttft.observe(ttft)
        if usage:
            prompt = int(usage.get("prompt_tokens") or 0)
            completion = int(usage.get("completion_tokens") or 0)
            self.prompt_tokens += prompt
            self.generated_tokens += completion
            decode = elapsed - (ttft or 0.0)
            if completion > 1 and decode > 0:
                self.tokens_per_second = (completion - (1 if ttft else 0)) / decode

    def snapshot(self, admitted: int, queued: int) -> Dict[str, Any]:
        return {"requests": self.requests, "errors": self.errors, "aborted": self.aborted,
                "prompt_tokens": self.prompt_tokens,
                "generated_tokens": self.generated_tokens,
                "tokens_per_second": self.tokens_per_second,
                "duration": self.duration.snapshot(), "ttft": self.ttft.snapshot(),
                "admitted": admitted, "queued": queued}


class HTTPMetrics:
    """HTTP request counts and latency of the gateway, by route template (never the raw
    path, so model uids and request ids do not make new series)."""

    def __init__(self):
        self.counts: Dict[Tuple[str, str, str], int] = {}
        self.latency: Dict[Tuple[str, str], Histogram] = {}

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        key = (method, route, str(status))
        self.counts[key] = self.counts.get(key, 0) + 1
        h = self.latency.get((method, route))
        if h is None:
            h = self.latency[(method, route)] = Histogram(LATENCY_BUCKETS)
        h.observe(seconds)


class HTTPMetricsMiddleware:
    """Pure ASGI middleware counting every HTTP request by its route template (``/v1/models/
    {model_uid}``; ``other`` for paths no route matched) and status, timed to the end of
    the response body (a whole stream for SSE)."""

    def __init__(self, app, fastapi_app, metrics: HTTPMetrics):
        self.app = app
        self._fastapi = fastapi_app
        self.metrics = metrics

    def _template(self, scope) -> str:
        from starlette.routing import Match

        for route in self._fastapi.router.routes:
            match, _ = route.matches(scope)
            if match == Match.FULL:
                return getattr(route, "path", "other")
        return "other"

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started = time.monotonic()
        status = [500]

        async def send_wrapper(message):
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            self.metrics.observe(scope.get("method", "GET"), self._template(scope),
                                 status[0], time.monotonic() - started)


# ---- rendering -------------------------------------------------------------------------
def _family(name: str, labels: Sequence[str]):
    from prometheus_client.core import (
        CounterMetricFamily,
        GaugeMetricFamily,
        HistogramMetricFamily,
    )

    kind, doc, _ = METRICS[name]
    cls = {"counter": CounterMetricFamily, "gauge": GaugeMetricFamily,
           "histogram": HistogramMetricFamily}[kind]
    if kind == "counter":  # prometheus_client adds the _total suffix itself
        return cls(name[: -len("_total")], doc, labels=list(labels))
    return cls(name, doc, labels=list(labels))


def _add_histogram(fam, labels: List[str], snap: Dict[str, Any]) -> None:
    cumulative, buckets = 0, []
    for bound, n in zip(list(snap["buckets"]) + [float("inf")], snap["counts"]):
        cumulative += n
        buckets.append(("+Inf" if bound == float("inf") else repr(float(bound)),
                        cumulative))
    fam.add_metric(labels, buckets, snap["sum"])


def _merge_histograms(a: Optional[Dict[str, Any]], b: Dict[str, Any]) -> Dict[str, Any]:
    if a is None:
        return dict(b, counts=list(b["counts"]))
    return {"buckets": a["buckets"], "counts": [x + y for x, y in zip(a["counts"],
                                                                      b["counts"])],
            "sum": a["sum"] + b["sum"], "count": a["count"] + b["count"]}


def render(snapshot: Dict[str, Any], http: Optional[HTTPMetrics]) -> bytes:
    """The Prometheus text exposition of one scrape.

    ``snapshot`` is :meth:`SupervisorActor.collect_metrics`'s answer: ``{"models":
    [{"model_uid", "model_name", "engine", "replicas": {"ready": n, "dead": n}}],
    "nodes": [{"node", "cpu_count", "cpu_utilization", "memory_total",
    "memory_available", "gpus": [{"index", "memory_total", "memory_used"}],
    "model_processes", "replicas": [{"model_uid", "model_name", "engine", "stats"}]}]}``.
    Replicas of one model on one node are summed into one series.
    """
    from prometheus_client import CollectorRegistry, generate_latest

    class _Collector:
        def collect(self):
            yield from _families(snapshot, http)

    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Collector())
    return generate_latest(registry)


def _families(snapshot: Dict[str, Any], http: Optional[HTTPMetrics]):
    fams = {}

    def fam(name, labels):
        if name not in fams:
            fams[name] = _family(name, labels)
        return fams[name]

    running = fam("xinference_running_models", [])
    running.add_metric([], len(snapshot.get("models", [])))
    reps = fam("xinference_model_replicas", ["model_uid", "model_name", "engine", "status"])
    for m in snapshot.get("models", []):
        for status, n in sorted((m.get("replicas") or {}).items()):
            reps.add_metric([m["model_uid"], str(m.get("model_name") or ""),
                             str(m.get("engine") or ""), status], n)

    for node in snapshot.get("nodes", []):
        nl = [node["node"]]
        fam("xinference_node_cpu_count", ["node"]).add_metric(nl, node.get("cpu_count") or 0)
        fam("xinference_node_cpu_utilization_ratio", ["node"]).add_metric(
            nl, node.get("cpu_utilization") or 0.0)
        fam("xinference_node_memory_total_bytes", ["node"]).add_metric(
            nl, node.get("memory_total") or 0)
        fam("xinference_node_memory_available_bytes", ["node"]).add_metric(
            nl, node.get("memory_available") or 0)
        fam("xinference_node_model_processes", ["node"]).add_metric(
            nl, node.get("model_processes") or 0)
        for g in node.get("gpus") or []:
            gl = [node["node"], str(g.get("index"))]
            fam("xinference_node_gpu_memory_total_bytes", ["node", "gpu"]).add_metric(
                gl, g.get("memory_total") or 0)
            fam("xinference_node_gpu_memory_used_bytes", ["node", "gpu"]).add_metric(
                gl, g.get("memory_used") or 0)
        merged: Dict[Tuple[str, str, str], Dict[str, Any]] = {}
        for r in node.get("replicas") or []:
            key = (r["model_uid"], str(r.get("model_name") or ""), str(r.get("engine") or ""))
            s = r["stats"]
            m = merged.get(key)
            if m is None:
                merged[key] = dict(s, duration=_merge_histograms(None, s["duration"]),
                                   ttft=_merge_histograms(None, s["ttft"]))
                continue
            for k in ("requests", "errors", "aborted", "prompt_tokens", "generated_tokens",
                      "admitted", "queued"):
                m[k] += s[k]
            for k in ("engine_running", "engine_waiting"):
                if s.get(k) is not None:
                    m[k] = (m.get(k) or 0) + s[k]
            m["tokens_per_second"] = max(m["tokens_per_second"], s["tokens_per_second"])
            m["duration"] = _merge_histograms(m["duration"], s["duration"])
            m["ttft"] = _merge_histograms(m["ttft"], s["ttft"])
        for (uid, name, engine), s in sorted(merged.items()):
            labels = [uid, name, engine, node["node"]]
            for metric, field in (
                    ("xinference_model_requests_total", "requests"),
                    ("xinference_model_request_errors_total", "errors"),
                    ("xinference_model_requests_aborted_total", "aborted"),
                    ("xinference_model_prompt_tokens_total", "prompt_tokens"),
                    ("xinference_model_generated_tokens_total", "generated_tokens"),
                    ("xinference_model_generation_tokens_per_second", "tokens_per_second"),
                    ("xinference_model_admitted_requests", "admitted"),
                    ("xinference_model_queued_requests", "queued")):
                fam(metric, MODEL_LABELS).add_metric(labels, s[field])
            for metric, field in (
                    ("xinference_model_engine_running_requests", "engine_running"),
                    ("xinference_model_engine_waiting_requests", "engine_waiting")):
                if s.get(field) is not None:
                    fam(metric, MODEL_LABELS).add_metric(labels, s[field])
            _add_histogram(fam("xinference_model_request_duration_seconds", MODEL_LABELS),
                           labels, s["duration"])
            _add_histogram(fam("xinference_model_time_to_first_token_seconds",
                               MODEL_LABELS), labels, s["ttft"])

    if http is not None:
        counts = fam("xinference_http_requests_total", ["method", "route", "status"])
        for (method, route, status), n in sorted(http.counts.items()):
            counts.add_metric([method, route, status], n)
        lat = fam("xinference_http_request_duration_seconds", ["method", "route"])
        for (method, route), h in sorted(http.latency.items()):
            _add_histogram(lat, [method, route], h.snapshot())
    return list(fams.values())

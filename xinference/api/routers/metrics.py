"""Prometheus metrics: ``GET /metrics`` (text exposition format; see
:mod:`xinference.core.metrics`). Public, like Prometheus' own targets; 404 when
``XINFERENCE_DISABLE_METRICS=1``."""

from __future__ import annotations

from fastapi.responses import Response

from ...errors import ModelNotFoundError
from . import Route, Router


class MetricsRouter(Router):
    ROUTES = [Route("GET", "/metrics", "metrics", None)]

    async def metrics(self):
        from prometheus_client import CONTENT_TYPE_LATEST

        from ...core.metrics import render

        if self.api.http_metrics is None:
            raise ModelNotFoundError("Metrics are disabled (XINFERENCE_DISABLE_METRICS)")
        snapshot = await (await self.api.supervisor()).collect_metrics()
        return Response(render(snapshot, self.api.http_metrics),
                        media_type=CONTENT_TYPE_LATEST)


ROUTERS = [MetricsRouter]

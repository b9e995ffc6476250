"""Embeddings (OpenAI Embeddings API) and rerank (Xinference's ``/v1/rerank``); the model
process batches concurrent requests."""

from __future__ import annotations

from fastapi import Request

from ..schemas import CreateEmbeddingRequest, RerankRequest
from . import Route, Router


class EmbeddingsRouter(Router):
    ROUTES = [
        Route("POST", "/v1/embeddings", "create_embedding", "models:read"),
        Route("POST", "/v1/rerank", "rerank", "models:read"),
    ]

    async def create_embedding(self, body: CreateEmbeddingRequest, request: Request):
        """OpenAI Embeddings; the model process batches concurrent requests."""
        config = body.model_dump(exclude_none=True, exclude={"model", "input", "stream"})
        return await self.api._infer("create_embedding", body.model, body.input, config,
                                     request)

    async def rerank(self, body: RerankRequest, request: Request):
        """Rerank ``documents`` against ``query``; results sorted by relevance."""
        config = body.model_dump(exclude_none=True,
                                 exclude={"model", "documents", "stream"})
        return await self.api._infer("rerank", body.model, body.documents, config, request)


ROUTERS = [EmbeddingsRouter]

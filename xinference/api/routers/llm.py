"""LLM inference: OpenAI Completions and Chat Completions (SSE when ``stream``)."""

from __future__ import annotations

from fastapi import Request

from ..schemas import CreateChatCompletionRequest, CreateCompletionRequest
from . import Route, Router


class LLMRouter(Router):
    ROUTES = [
        Route("POST", "/v1/completions", "create_completion", "models:read"),
        Route("POST", "/v1/chat/completions", "create_chat_completion", "models:read"),
    ]

    async def create_completion(self, body: CreateCompletionRequest, request: Request):
        return await self.api._infer("generate", body.target_uid, body.prompt,
                                     body.generate_config(), request)

    async def create_chat_completion(self, body: CreateChatCompletionRequest,
                                     request: Request):
        return await self.api._infer("chat", body.target_uid, body.messages,
                                     body.generate_config(), request)


ROUTERS = [LLMRouter]

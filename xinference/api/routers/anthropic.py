"""Anthropic Messages API: ``POST /v1/messages`` and ``POST /v1/messages/count_tokens``,
translated onto the chat pipeline by :mod:`xinference.api.anthropic` (the ModelActor's
``chat`` answers both APIs). Errors are in Anthropic's shape."""

from __future__ import annotations

import json
from typing import Any, AsyncIterator

from fastapi import Request
from fastapi.responses import JSONResponse

from ...core.streams import ModelStream
from ...errors import InvalidRequestError
from .. import anthropic as am
from ..errors import exception_to_response
from ..gateway import SSE_PING, sse_response
from . import Route, Router


def anthropic_error_response(e: BaseException) -> JSONResponse:
    """Any exception as an Anthropic error response (status as the OpenAI routes give)."""
    resp = exception_to_response(e)
    message = json.loads(resp.body).get("detail", str(e))
    out = JSONResponse(am.error_body(resp.status_code, message),
                       status_code=resp.status_code)
    if "www-authenticate" in resp.headers:
        out.headers["WWW-Authenticate"] = resp.headers["www-authenticate"]
    return out


async def _json(request: Request) -> Any:
    try:
        return await request.json()
    except ValueError:
        raise InvalidRequestError("Request body is not valid JSON") from None


class AnthropicRouter(Router):
    ROUTES = [
        Route("POST", "/v1/messages", "create_message", "models:read"),
        Route("POST", "/v1/messages/count_tokens", "count_tokens", "models:read"),
    ]

    async def _check_thinking(self, model_uid: str) -> None:
        _, desc = await self.api._call_uid(model_uid, "describe", ())
        if "reasoning" not in (desc.get("model_ability") or []):
            raise InvalidRequestError(
                f"thinking: model {model_uid!r} has no reasoning ability (abilities: "
                f"{list(desc.get('model_ability') or [])}); leave 'thinking' out or set "
                "it to disabled")

    async def create_message(self, request: Request):
        try:
            body = await _json(request)
            uid, messages, cfg, thinking = am.to_chat_request(body)
            stops = cfg.get("stop", [])
            if thinking:
                await self._check_thinking(uid)
            ref, result = await self.api._call_uid(uid, "chat", (messages, cfg),
                                                   None if cfg.get("stream") else request)
        except Exception as e:
            return anthropic_error_response(e)
        if not isinstance(result, ModelStream):
            return JSONResponse(am.to_message(result, stops))
        return sse_response(self._events(ref, result, uid, stops))

    async def _events(self, ref, stream: ModelStream, uid: str, stops
                      ) -> AsyncIterator[bytes]:
        out = am.MessageStream(uid, stops)
        yield out.start()

        def on_error(e: Exception) -> bytes:
            resp = anthropic_error_response(e)
            return out.error(resp.status_code, json.loads(resp.body)["error"]["message"])

        failed = False
        async for b in self.api._relay_encoded(ref, stream, out.feed, on_error,
                                               ping=SSE_PING):
            failed = failed or b.startswith(b"event: error")
            if b:
                yield b
        if not failed:
            tail = out.end()
            if tail:
                yield tail

    async def count_tokens(self, request: Request):
        """``{"input_tokens": n}``: the prompt the model would see for this request,
        rendered by its chat template (tools included) and tokenized, without generating."""
        try:
            body = await _json(request)
            uid, messages, cfg, thinking = am.to_chat_request(body, count_only=True)
            if thinking:
                await self._check_thinking(uid)
            _, n = await self.api._call_uid(uid, "count_chat_tokens", (messages, cfg))
        except Exception as e:
            return anthropic_error_response(e)
        return JSONResponse({"input_tokens": n})


ROUTERS = [AnthropicRouter]

"""Transport of the Python SDK: one request-description layer, two executors.

Every SDK method (client and model handles) describes its HTTP request once as a
:class:`Call` (method, path, body, how to read the answer, what to make of it) and hands it
to :meth:`HTTPBase._do`. The object's transport executes it:

* :class:`SyncTransport` (``requests``) returns the result: :class:`RESTfulClient` and its
  handles;
* :class:`AsyncTransport` (``httpx2``, the maintained successor of httpx) returns a coroutine
  of the result, and streams as async iterators: :class:`AsyncRESTfulClient` and the same
  handle classes, awaited (``model = await client.get_model(uid)``; ``await
  model.chat(...)``).

So the sync and the async SDK share every method, argument and docstring; only the two
executors below differ. Errors: any status >= 400 raises :class:`RESTfulClientError` with the
server's message (Xinference's ``detail`` or OpenAI's ``error.message``); an error object
inside an SSE stream raises it too.
"""

from __future__ import annotations

import asyncio
import json
import weakref
from dataclasses import dataclass
from typing import Any, AsyncIterator, Callable, Dict, Iterator, Optional

import requests

#: how a :class:`Call` reads its answer
RESULTS = ("json", "sse", "none", "json_or_text", "bytes", "byte_stream")


class RESTfulClientError(RuntimeError):
    """The server answered with an error; ``status_code`` and ``detail`` are the server's."""

    def __init__(self, action: str, status_code: int, detail: str):
        super().__init__(f"Failed to {action}, status {status_code}, detail: {detail}")
        self.status_code = status_code
        self.detail = detail


@dataclass
class Call:
    """One HTTP request of the SDK, independent of the HTTP library.

    Args:
        action: what the caller wanted, for error messages ("launch model").
        method, path: HTTP method and path under the base URL.
        json / params / data / files: the body (JSON, query, form fields, multipart files
            ``{name: (filename, bytes[, content type])}``).
        result: how to read the answer: ``json``; ``sse`` (an iterator of the JSON chunks
            of a ``text/event-stream`` until ``[DONE]``); ``none``; ``json_or_text`` (JSON
            when the answer says so, else text); ``bytes``; ``byte_stream`` (an iterator of
            byte chunks).
        then: applied to the read result (e.g. pick a field, build a handle).
    """

    action: str
    method: str
    path: str
    json: Any = None
    params: Optional[Dict[str, Any]] = None
    data: Optional[Dict[str, Any]] = None
    files: Optional[Dict[str, Any]] = None
    result: str = "json"
    then: Optional[Callable[[Any], Any]] = None

    def body_kw(self) -> Dict[str, Any]:
        return {k: v for k, v in (("json", self.json), ("params", self.params),
                                  ("data", self.data), ("files", self.files))
                if v is not None}

    def finish(self, value: Any) -> Any:
        return self.then(value) if self.then is not None else value


def error_detail(status: int, text: str) -> str:
    """The server's message in an error answer's body."""
    try:
        body = json.loads(text)
        return str(body.get("detail") or (body.get("error") or {}).get("message") or text)
    except (ValueError, AttributeError):
        return text


def sse_chunk(action: str, line: str) -> Any:
    """The JSON chunk of one SSE line; None for lines without data (comments, blank,
    ``event:``); :data:`DONE` at ``data: [DONE]``.

    Raises:
        RESTfulClientError: the chunk is an in-band error object.
    """
    if not line or not line.startswith("data:"):
        return None
    data = line[5:].strip()
    if data == "[DONE]":
        return DONE
    chunk = json.loads(data)
    if isinstance(chunk, dict) and "error" in chunk and "choices" not in chunk:
        err = chunk["error"] or {}
        raise RESTfulClientError(action, int(err.get("code") or 500),
                                 str(err.get("message") or chunk.get("detail")))
    return chunk


DONE = object()


def _is_json(content_type: str) -> bool:
    return content_type.startswith("application/json")


class SyncTransport:
    """Executes :class:`Call` s with a ``requests`` session (blocking)."""

    def __init__(self, base_url: str, api_key: Optional[str], timeout: Optional[float]):
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self.session = requests.Session()
        if api_key:
            self.set_header("Authorization", f"Bearer {api_key}")

    def set_header(self, name: str, value: str) -> None:
        self.session.headers[name] = value

    def close(self) -> None:
        self.session.close()

    def execute(self, call: Call) -> Any:
        stream = call.result in ("sse", "byte_stream")
        resp = self.session.request(call.method, self.base_url + call.path, stream=stream,
                                    timeout=self.timeout, **call.body_kw())
        if resp.status_code >= 400:
            detail = error_detail(resp.status_code, resp.text)
            resp.close()
            raise RESTfulClientError(call.action, resp.status_code, detail)
        return call.finish(self._read(call, resp))

    @staticmethod
    def _read(call: Call, resp: requests.Response) -> Any:
        if call.result == "json":
            return resp.json()
        if call.result == "none":
            return None
        if call.result == "bytes":
            return resp.content
        if call.result == "json_or_text":
            return resp.json() if _is_json(resp.headers.get("content-type", "")) \
                else resp.text
        if call.result == "sse":
            return _iter_sse(call.action, resp)
        return _iter_bytes(resp)


def _iter_sse(action: str, resp: requests.Response) -> Iterator[Dict[str, Any]]:
    try:
        for line in resp.iter_lines(decode_unicode=True):
            chunk = sse_chunk(action, line)
            if chunk is DONE:
                return
            if chunk is not None:
                yield chunk
    finally:
        resp.close()


def _iter_bytes(resp: requests.Response) -> Iterator[bytes]:
    try:
        for chunk in resp.iter_content(chunk_size=None):
            if chunk:
                yield chunk
    finally:
        resp.close()


class AsyncTransport:
    """Executes :class:`Call` s with an ``httpx2.AsyncClient``: :meth:`execute` is a
    coroutine; streamed answers come back as async iterators that close the response when
    they end or are closed. One HTTP client per event loop (a client made in one
    ``asyncio.run`` cannot serve the next; threads with loops of their own each get one)."""

    def __init__(self, base_url: str, api_key: Optional[str], timeout: Optional[float]):
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self.headers: Dict[str, str] = {}
        self._clients: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()
        if api_key:
            self.set_header("Authorization", f"Bearer {api_key}")

    def set_header(self, name: str, value: str) -> None:
        self.headers[name] = value
        for client in list(self._clients.values()):
            client.headers[name] = value

    def _http(self):
        import httpx2

        loop = asyncio.get_running_loop()
        client = self._clients.get(loop)
        if client is None:
            client = self._clients[loop] = httpx2.AsyncClient(
                base_url=self.base_url, headers=self.headers, timeout=self.timeout)
        return client

    async def close(self) -> None:
        """Close the HTTP client of the running loop (those of other loops go with their
        loops)."""
        client = self._clients.pop(asyncio.get_running_loop(), None)
        if client is not None:
            await client.aclose()

    async def execute(self, call: Call) -> Any:
        http = self._http()
        req = http.build_request(call.method, call.path, **call.body_kw())
        stream = call.result in ("sse", "byte_stream")
        resp = await http.send(req, stream=stream)
        if resp.status_code >= 400:
            text = (await resp.aread()).decode("utf-8", errors="replace") if stream \
                else resp.text
            await resp.aclose()
            raise RESTfulClientError(call.action, resp.status_code,
                                     error_detail(resp.status_code, text))
        if call.result == "sse":
            return call.finish(_aiter_sse(call.action, resp))
        if call.result == "byte_stream":
            return call.finish(_aiter_bytes(resp))
        if call.result == "json":
            value = resp.json()
        elif call.result == "none":
            value = None
        elif call.result == "bytes":
            value = resp.content
        else:
            value = resp.json() if _is_json(resp.headers.get("content-type", "")) \
                else resp.text
        return call.finish(value)


async def _aiter_sse(action: str, resp) -> AsyncIterator[Dict[str, Any]]:
    try:
        async for line in resp.aiter_lines():
            chunk = sse_chunk(action, line)
            if chunk is DONE:
                return
            if chunk is not None:
                yield chunk
    finally:
        await resp.aclose()


async def _aiter_bytes(resp) -> AsyncIterator[bytes]:
    try:
        async for chunk in resp.aiter_bytes():
            if chunk:
                yield chunk
    finally:
        await resp.aclose()


class HTTPBase:
    """What the client and every model handle share: a transport (sync or async) bound to
    the server's base URL, API key and timeout (seconds, None: wait as long as the server
    works). :meth:`_do` executes a :class:`Call` with it: the result, or with an async
    transport a coroutine of it."""

    def __init__(self, transport):
        self._transport = transport

    @property
    def _base_url(self) -> str:
        return self._transport.base_url

    def _do(self, call: Call):
        return self._transport.execute(call)

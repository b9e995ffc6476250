"""Transport of the Python SDK: errors, the HTTP session base and the SSE reader.

:class:`HTTPBase` holds a ``requests`` session, the server's base URL and a timeout;
:meth:`HTTPBase._request` raises :class:`RESTfulClientError` for any status >= 400 with
the server's message (Xinference's ``detail`` or OpenAI's ``error.message``).
:func:`iter_sse` reads a ``text/event-stream`` answer chunk by chunk.
"""

from __future__ import annotations

import json
from typing import Any, Dict, Iterator, Optional

import requests


class RESTfulClientError(RuntimeError):
    """The server answered with an error; ``status_code`` and ``detail`` are the server's."""

    def __init__(self, action: str, status_code: int, detail: str):
        super().__init__(f"Failed to {action}, status {status_code}, detail: {detail}")
        self.status_code = status_code
        self.detail = detail


def raise_for(action: str, resp: requests.Response) -> None:
    """Raise :class:`RESTfulClientError` when ``resp`` is an error (status >= 400)."""
    if resp.status_code < 400:
        return
    try:
        body = resp.json()
        detail = body.get("detail") or (body.get("error") or {}).get("message") or resp.text
    except ValueError:
        detail = resp.text
    raise RESTfulClientError(action, resp.status_code, str(detail))


def iter_sse(action: str, resp: requests.Response) -> Iterator[Dict[str, Any]]:
    """Chunks of a ``text/event-stream`` response, until ``data: [DONE]``; an in-band
    error object raises :class:`RESTfulClientError`. The response is closed at the end."""
    try:
        for line in resp.iter_lines(decode_unicode=True):
            if not line or not line.startswith("data:"):
                continue
            data = line[5:].strip()
            if data == "[DONE]":
                return
            chunk = json.loads(data)
            if isinstance(chunk, dict) and "error" in chunk and "choices" not in chunk:
                err = chunk["error"] or {}
                raise RESTfulClientError(action, int(err.get("code") or 500),
                                         str(err.get("message") or chunk.get("detail")))
            yield chunk
    finally:
        resp.close()


class HTTPBase:
    """A ``requests`` session bound to a server's base URL and a timeout (seconds, None:
    wait forever); the base of the client and of the model handles."""

    def __init__(self, base_url: str, session: requests.Session, timeout: Optional[float]):
        self._base_url = base_url.rstrip("/")
        self._session = session
        self._timeout = timeout

    def _request(self, action: str, method: str, path: str, stream: bool = False, **kw):
        resp = self._session.request(method, self._base_url + path, stream=stream,
                                     timeout=self._timeout, **kw)
        raise_for(action, resp)
        return resp

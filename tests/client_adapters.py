"""Run the sync client's tests against both SDKs: ``RESTfulClient`` and
``AsyncRESTfulClient`` driven through :class:`Blocking`, which awaits each coroutine on an
event loop of the calling thread (tests call the client from several threads) and turns
async iterators into iterators.

``Blocking`` checks that every method call of the async client and of its handles returns
an awaitable: a method that answered synchronously would bypass the async transport and
fail the test.
"""

from __future__ import annotations

import asyncio
import inspect
import threading

import pytest

from xinference.client import AsyncRESTfulClient, RESTfulClient
from xinference.client.transport import HTTPBase


class Loops:
    """One event loop per calling thread, all closed by :meth:`close`."""

    def __init__(self):
        self._local = threading.local()
        self._all = []
        self._lock = threading.Lock()

    def get(self) -> asyncio.AbstractEventLoop:
        loop = getattr(self._local, "loop", None)
        if loop is None:
            loop = self._local.loop = asyncio.new_event_loop()
            with self._lock:
                self._all.append(loop)
        return loop

    def close(self) -> None:
        for loop in self._all:
            loop.close()


class Blocking:
    """A blocking view of an async client or handle (tests only)."""

    def __init__(self, target, loops: Loops):
        self._target = target
        self._loops = loops

    @property
    def __class__(self):  # isinstance() sees the handle's class, as with the sync client
        return type(self._target)

    def _wrap(self, value, loop):
        if isinstance(value, HTTPBase):
            return Blocking(value, self._loops)
        if hasattr(value, "__anext__"):
            return self._iterate(value, loop)
        return value

    @staticmethod
    def _iterate(it, loop):
        while True:
            try:
                yield loop.run_until_complete(it.__anext__())
            except StopAsyncIteration:
                return

    def __getattr__(self, name):
        attr = getattr(self._target, name)
        if not callable(attr):
            return attr

        def call(*args, **kwargs):
            result = attr(*args, **kwargs)
            assert inspect.isawaitable(result), f"{name} of the async client is not async"
            loop = self._loops.get()
            return self._wrap(loop.run_until_complete(result), loop)

        return call


def make_async_client(endpoint: str, loops: Loops, **kw) -> Blocking:
    return Blocking(AsyncRESTfulClient(endpoint, **kw), loops)


@pytest.fixture(params=["sync", "async"])
def make_client(request):
    """``make_client(endpoint, api_key=None, timeout=None)``: a ``RESTfulClient``, or an
    ``AsyncRESTfulClient`` behind :class:`Blocking`."""
    loops = Loops()

    def make(endpoint: str, **kw):
        if request.param == "sync":
            return RESTfulClient(endpoint, **kw)
        return make_async_client(endpoint, loops, **kw)

    yield make
    loops.close()

"""Python SDK: ``from xinference.client import Client, RESTfulClient`` (the same class), and
on asyncio ``AsyncClient`` / ``AsyncRESTfulClient`` (the same class) with the same methods
as coroutines."""

from .handles import (
    RESTfulChatModelHandle,
    RESTfulEmbeddingModelHandle,
    RESTfulGenerateModelHandle,
    RESTfulImageModelHandle,
    RESTfulModelHandle,
    RESTfulRerankModelHandle,
    RESTfulVideoModelHandle,
)
from .restful_client import AsyncClient, AsyncRESTfulClient, Client, RESTfulClient
from .transport import RESTfulClientError

__all__ = [
    "AsyncClient",
    "AsyncRESTfulClient",
    "Client",
    "RESTfulClient",
    "RESTfulClientError",
    "RESTfulModelHandle",
    "RESTfulGenerateModelHandle",
    "RESTfulChatModelHandle",
    "RESTfulEmbeddingModelHandle",
    "RESTfulRerankModelHandle",
    "RESTfulImageModelHandle",
    "RESTfulVideoModelHandle",
]

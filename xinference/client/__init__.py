"""Python SDK: ``from xinference.client import Client, RESTfulClient`` (the same class)."""

from .restful_client import (
    Client,
    RESTfulChatModelHandle,
    RESTfulClient,
    RESTfulClientError,
    RESTfulGenerateModelHandle,
    RESTfulModelHandle,
)
from .handles import RESTfulEmbeddingModelHandle, RESTfulRerankModelHandle
from .handles import RESTfulImageModelHandle, RESTfulVideoModelHandle

__all__ = [
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

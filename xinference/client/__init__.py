"""Python SDK: ``from xinference.client import Client, RESTfulClient`` (the same class)."""

from .handles import (
    RESTfulChatModelHandle,
    RESTfulEmbeddingModelHandle,
    RESTfulGenerateModelHandle,
    RESTfulImageModelHandle,
    RESTfulModelHandle,
    RESTfulRerankModelHandle,
    RESTfulVideoModelHandle,
)
from .restful_client import Client, RESTfulClient
from .transport import RESTfulClientError

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

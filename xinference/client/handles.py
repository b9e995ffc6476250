"""Handles for non-LLM model types (embedding, rerank ...), chosen by ``model_type``.

``RESTfulClient.get_model(uid)`` returns one of these for a non-LLM model::

    model = client.get_model("all-MiniLM-L6-v2")
    model.create_embedding("write a poem.")["data"][0]["embedding"]   # 384 floats

    reranker = client.get_model("bge-reranker-base")
    reranker.rerank(["doc a", "doc b"], "query", top_n=1)["results"]
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Union

from .restful_client import RESTfulClientError, RESTfulModelHandle


class RESTfulEmbeddingModelHandle(RESTfulModelHandle):
    """An embedding model (``POST /v1/embeddings``)."""

    def create_embedding(self, input: Union[str, List[str], List[int], List[List[int]]],
                         **kwargs) -> Dict[str, Any]:
        """Embed ``input`` (a string, a list of strings, or token arrays).

        Keyword arguments are OpenAI's (``encoding_format="float"|"base64"``,
        ``dimensions``, ``user``) or the engine's (``prompt_name``, ``prompt``).

        Returns:
            ``{"object": "list", "model", "data": [{"index", "object": "embedding",
            "embedding"}], "usage": {"prompt_tokens", "total_tokens"}}``.

        Raises:
            RESTfulClientError: the server refused the request (400 for empty input, 404 for
            an unknown model ...).
        """
        body = {"model": self._model_uid, "input": input, **kwargs}
        return self._post("create embedding", "/v1/embeddings", body)


class RESTfulRerankModelHandle(RESTfulModelHandle):
    """A rerank model (``POST /v1/rerank``)."""

    def rerank(self, documents: List[Union[str, Dict[str, Any]]], query: str,
               top_n: Optional[int] = None, max_chunks_per_doc: Optional[int] = None,
               return_documents: Optional[bool] = None, return_len: Optional[bool] = None,
               **kwargs) -> Dict[str, Any]:
        """Order ``documents`` by relevance to ``query``.

        Returns:
            ``{"id", "results": [{"index", "relevance_score", "document"}], "meta":
            {"tokens": {"input_tokens", "output_tokens"}, ...}}``, best first; ``document``
            is ``{"text": ...}`` when ``return_documents`` else None.

        Raises:
            RESTfulClientError: 422 for ``top_n`` < 1 or documents that are not a list, 400
            for an empty query or documents.
        """
        body: Dict[str, Any] = {"model": self._model_uid, "documents": documents,
                                "query": query, **kwargs}
        for k, v in (("top_n", top_n), ("max_chunks_per_doc", max_chunks_per_doc),
                     ("return_documents", return_documents), ("return_len", return_len)):
            if v is not None:
                body[k] = v
        return self._post("rerank", "/v1/rerank", body)


_HANDLES = {
    "embedding": RESTfulEmbeddingModelHandle,
    "rerank": RESTfulRerankModelHandle,
}


def handle_for(model_type: str, args) -> RESTfulModelHandle:
    """The handle class registered for ``model_type``.

    Raises:
        RESTfulClientError: no handle for that type.
    """
    cls = _HANDLES.get(model_type)
    if cls is None:
        raise RESTfulClientError("get model", 400,
                                 f"no client handle for model type {model_type!r}")
    return cls(*args)

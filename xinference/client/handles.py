"""Model handles, chosen by ``model_type`` (and, for LLMs, the ``chat`` ability).

``RESTfulClient.get_model(uid)`` returns one of these::

    model = client.get_model("all-MiniLM-L6-v2")
    model.create_embedding("write a poem.")["data"][0]["embedding"]   # 384 floats

    reranker = client.get_model("bge-reranker-base")
    reranker.rerank(["doc a", "doc b"], "query", top_n=1)["results"]
"""

from __future__ import annotations

import json
from typing import Any, Dict, Iterator, List, Optional, Union

import requests

from .transport import HTTPBase, RESTfulClientError, iter_sse


class RESTfulModelHandle(HTTPBase):
    """A running model, addressed by ``model_uid``."""

    def __init__(self, model_uid: str, base_url: str, session: requests.Session,
                 timeout: Optional[float] = None):
        super().__init__(base_url, session, timeout)
        self._model_uid = model_uid

    @property
    def model_uid(self) -> str:
        return self._model_uid

    def _post(self, action: str, path: str, body: Dict[str, Any]):
        stream = bool(body.get("stream"))
        resp = self._request(action, "POST", path, stream=stream, json=body)
        if stream:
            return iter_sse(action, resp)
        return resp.json()


class RESTfulGenerateModelHandle(RESTfulModelHandle):
    """An LLM with the ``generate`` ability (``POST /v1/completions``)."""

    def generate(self, prompt: str, generate_config: Optional[Dict[str, Any]] = None,
                 **kwargs) -> Union[Dict[str, Any], Iterator[Dict[str, Any]]]:
        """A ``text_completion`` dict, or with ``generate_config["stream"]`` an iterator of
        completion chunks."""
        body = {"model": self._model_uid, "prompt": prompt, **(generate_config or {}), **kwargs}
        return self._post("generate", "/v1/completions", body)


class RESTfulChatModelHandle(RESTfulGenerateModelHandle):
    """An LLM with the ``chat`` ability (``POST /v1/chat/completions``)."""

    def chat(self, messages: Union[List[Dict[str, Any]], str, None] = None,
             chat_history: Optional[List[Dict[str, Any]]] = None,
             system_prompt: Optional[str] = None,
             generate_config: Optional[Dict[str, Any]] = None,
             tools: Optional[List[Dict[str, Any]]] = None,
             enable_thinking: Optional[bool] = None,
             prompt: Optional[str] = None,
             **kwargs) -> Union[Dict[str, Any], Iterator[Dict[str, Any]]]:
        """A ``chat.completion`` dict, or with ``generate_config["stream"]`` an iterator of
        ``chat.completion.chunk`` dicts.

        Accepts the current form ``chat(messages, generate_config=...)`` and the older
        documented form ``chat(prompt, chat_history, system_prompt=..., generate_config=...)``.
        """
        if prompt is not None and messages is None:
            messages = prompt
        if isinstance(messages, str):
            msgs: List[Dict[str, Any]] = []
            if system_prompt:
                msgs.append({"role": "system", "content": system_prompt})
            msgs.extend(chat_history or [])
            msgs.append({"role": "user", "content": messages})
            messages = msgs
        body: Dict[str, Any] = {"model": self._model_uid, "messages": messages,
                                **(generate_config or {}), **kwargs}
        if tools is not None:
            body["tools"] = tools
        if enable_thinking is not None:
            body["enable_thinking"] = enable_thinking
        return self._post("chat", "/v1/chat/completions", body)


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


class RESTfulAudioModelHandle(RESTfulModelHandle):
    """An audio model: speech-to-text (``/v1/audio/transcriptions``,
    ``/v1/audio/translations``) or text-to-speech (``/v1/audio/speech``), by its
    abilities (``audio2text`` / ``text2audio``)."""

    def _upload(self, action: str, path: str, audio: Union[bytes, Any],
                fields: Dict[str, Any]) -> Union[Dict[str, Any], str]:
        data = {k: v for k, v in fields.items() if v is not None}
        if isinstance(data.get("kwargs"), dict):
            import json

            data["kwargs"] = json.dumps(data["kwargs"])
        content = audio if isinstance(audio, (bytes, bytearray)) else audio.read()
        resp = self._request(action, "POST", path, data=data,
                             files={"file": ("audio", bytes(content))})
        if resp.headers.get("content-type", "").startswith("application/json"):
            return resp.json()
        return resp.text

    def transcriptions(self, audio: Union[bytes, Any], language: Optional[str] = None,
                       prompt: Optional[str] = None, response_format: str = "json",
                       temperature: float = 0,
                       timestamp_granularities: Optional[List[str]] = None,
                       **kwargs) -> Union[Dict[str, Any], str]:
        """Transcribe ``audio`` (the bytes of any file FFmpeg reads, or a binary file).

        Args:
            language: ISO-639-1 code (None: detected).
            response_format: ``json`` | ``text`` | ``srt`` | ``vtt`` | ``verbose_json``.
            timestamp_granularities: ``["segment"]``, ``["word"]`` or both (with
                ``verbose_json``).
            kwargs: decoding options of the engine (``beam_size``, ``vad_filter`` ...).

        Returns:
            a dict for ``json`` (``{"text"}``) and ``verbose_json``; a string otherwise.

        Raises:
            RESTfulClientError: 400 for audio that cannot be decoded or a bad option, 413
            for a file over the server's upload limit.
        """
        return self._upload("transcribe", "/v1/audio/transcriptions", audio, {
            "model": self._model_uid, "language": language, "prompt": prompt,
            "response_format": response_format, "temperature": temperature,
            "timestamp_granularities[]": timestamp_granularities,
            "kwargs": kwargs or None})

    def translations(self, audio: Union[bytes, Any], prompt: Optional[str] = None,
                     response_format: str = "json", temperature: float = 0,
                     **kwargs) -> Union[Dict[str, Any], str]:
        """English text of the speech in ``audio``; arguments and result as
        :meth:`transcriptions`."""
        return self._upload("translate", "/v1/audio/translations", audio, {
            "model": self._model_uid, "prompt": prompt,
            "response_format": response_format, "temperature": temperature,
            "kwargs": kwargs or None})

    def speech(self, input: str, voice: str = "", response_format: str = "mp3",
               speed: float = 1.0, stream: bool = False,
               **kwargs) -> Union[bytes, Iterator[bytes]]:
        """Speak ``input``.

        Args:
            voice: one of the model's voices (``""``: its default).
            response_format: ``mp3`` | ``opus`` | ``aac`` | ``flac`` | ``wav`` | ``pcm``
                (raw 16-bit little-endian mono at 24 kHz).
            speed: 0.25 .. 4.0.
            stream: an iterator of byte chunks, sent as the sentences are synthesised.

        Returns:
            the audio file's bytes, or an iterator of its chunks when ``stream``.

        Raises:
            RESTfulClientError: 400 for empty input, an unknown voice or format, or a speed
            out of range.
        """
        body: Dict[str, Any] = {"model": self._model_uid, "input": input,
                                "voice": voice or None, "response_format": response_format,
                                "speed": speed, "stream": stream, **kwargs}
        resp = self._request("create speech", "POST", "/v1/audio/speech", stream=stream,
                             json={k: v for k, v in body.items() if v is not None})
        if not stream:
            return resp.content

        def chunks() -> Iterator[bytes]:
            try:
                for chunk in resp.iter_content(chunk_size=None):
                    if chunk:
                        yield chunk
            finally:
                resp.close()

        return chunks()


def _file_bytes(data: Any) -> bytes:
    """Upload bytes from bytes, a path, a binary file object or a PIL image (saved as
    PNG)."""
    import os

    if isinstance(data, (bytes, bytearray)):
        return bytes(data)
    if isinstance(data, (str, os.PathLike)):
        with open(data, "rb") as f:
            return f.read()
    if hasattr(data, "read"):
        return data.read()
    if hasattr(data, "save"):
        import io

        buf = io.BytesIO()
        data.save(buf, format="PNG")
        return buf.getvalue()
    raise TypeError(f"cannot upload a {type(data).__name__}; give bytes, a path, a file "
                    "or a PIL image")


class _MediaHandle(RESTfulModelHandle):
    def _media(self, action: str, path: str, fields: Dict[str, Any],
               files: Optional[Dict[str, Any]], kwargs: Dict[str, Any]) -> Dict[str, Any]:
        body = {k: v for k, v in fields.items() if v is not None}
        if kwargs:
            body["kwargs"] = json.dumps(kwargs)
        body["model"] = self._model_uid
        if files is None:
            return self._request(action, "POST", path, json=body).json()
        multipart = {k: (k, _file_bytes(v), "application/octet-stream")
                     for k, v in files.items()}
        form = {k: str(v) for k, v in body.items()}
        return self._request(action, "POST", path, data=form, files=multipart).json()

    def get_progress(self, request_id: str) -> Dict[str, Any]:
        """``{"request_id", "status", "progress"}`` of a request sent with
        ``request_id=...`` (``GET /v1/requests/{request_id}/progress``)."""
        return self._request("get progress", "GET",
                             f"/v1/requests/{request_id}/progress").json()


class RESTfulImageModelHandle(_MediaHandle):
    """An image model: text-to-image, image-to-image, inpainting (diffusers) or OCR.

    Images come back as ``{"created", "data": [{"url"} | {"b64_json"}]}``; a ``url`` is
    served by the server (fetch it with a GET) until it expires. Keyword arguments are
    generation options (``num_inference_steps``, ``guidance_scale``, ``seed``,
    ``request_id`` ...), sent as Xinference's ``kwargs``.
    """

    def text_to_image(self, prompt: str, n: int = 1, size: Optional[str] = "1024*1024",
                      response_format: str = "url", **kwargs) -> Dict[str, Any]:
        """``POST /v1/images/generations``; ``size`` ``"W*H"`` (None: the model's)."""
        fields = {"prompt": prompt, "n": n, "size": size, "response_format": response_format,
                  "negative_prompt": kwargs.pop("negative_prompt", None),
                  "request_id": kwargs.pop("request_id", None)}
        return self._media("text to image", "/v1/images/generations", fields, None, kwargs)

    def image_to_image(self, image: Any, prompt: Optional[str] = None,
                       negative_prompt: Optional[str] = None, n: int = 1,
                       size: Optional[str] = None, response_format: str = "url",
                       **kwargs) -> Dict[str, Any]:
        """``POST /v1/images/variations``: variations of ``image`` (bytes, a path, a file
        or a PIL image), of its size unless ``size`` is given."""
        fields = {"prompt": prompt, "negative_prompt": negative_prompt, "n": n,
                  "size": size, "response_format": response_format,
                  "request_id": kwargs.pop("request_id", None)}
        return self._media("image to image", "/v1/images/variations", fields,
                           {"image": image}, kwargs)

    def inpainting(self, image: Any, mask_image: Any, prompt: Optional[str] = None,
                   negative_prompt: Optional[str] = None, n: int = 1,
                   size: Optional[str] = None, response_format: str = "url",
                   **kwargs) -> Dict[str, Any]:
        """``POST /v1/images/inpainting``: repaint the white part of ``mask_image``
        (same size as ``image``)."""
        fields = {"prompt": prompt, "negative_prompt": negative_prompt, "n": n,
                  "size": size, "response_format": response_format,
                  "request_id": kwargs.pop("request_id", None)}
        return self._media("inpainting", "/v1/images/inpainting", fields,
                           {"image": image, "mask_image": mask_image}, kwargs)

    def ocr(self, image: Any, **kwargs) -> Dict[str, Any]:
        """``POST /v1/images/ocr``: ``{"created", "text", "data": [{"text", "box",
        "score"}]}``."""
        return self._media("ocr", "/v1/images/ocr", {}, {"image": image}, kwargs)


class RESTfulVideoModelHandle(_MediaHandle):
    """A video model (``POST /v1/video/generations``)."""

    def text_to_video(self, prompt: str, n: int = 1, **kwargs) -> Dict[str, Any]:
        """``n`` MP4 videos for ``prompt``: ``{"created", "data": [{"url"} |
        {"b64_json"}]}``. Keyword arguments: ``response_format``, ``size``,
        ``negative_prompt``, ``request_id``, and options (``num_frames``, ``fps``,
        ``num_inference_steps``, ``seed`` ...)."""
        fields = {"prompt": prompt, "n": n}
        for k in ("response_format", "size", "negative_prompt", "request_id"):
            fields[k] = kwargs.pop(k, None)
        return self._media("text to video", "/v1/video/generations", fields, None, kwargs)


_HANDLES = {
    "embedding": RESTfulEmbeddingModelHandle,
    "rerank": RESTfulRerankModelHandle,
    "audio": RESTfulAudioModelHandle,
    "image": RESTfulImageModelHandle,
    "video": RESTfulVideoModelHandle,
}


def handle_for(desc: Dict[str, Any], args) -> RESTfulModelHandle:
    """The handle for a running model described by ``desc`` (``describe_model``'s
    answer), made with ``args`` (``model_uid, base_url, session, timeout``): an LLM's by its
    ``chat`` ability, any other by ``model_type``.

    Raises:
        RESTfulClientError: no handle for that type.
    """
    model_type = desc.get("model_type", "LLM")
    if model_type == "LLM":
        if "chat" in desc.get("model_ability", []):
            return RESTfulChatModelHandle(*args)
        return RESTfulGenerateModelHandle(*args)
    cls = _HANDLES.get(model_type)
    if cls is None:
        raise RESTfulClientError("get model", 400,
                                 f"no client handle for model type {model_type!r}")
    return cls(*args)

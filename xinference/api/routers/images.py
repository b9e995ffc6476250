"""Images: text-to-image (``/v1/images/generations``, JSON), image-to-image
(``/v1/images/variations``), inpainting (``/v1/images/inpainting``), OpenAI's edits
(``/v1/images/edits``: inpainting with a ``mask``, image-to-image without), OCR
(``/v1/images/ocr``), the generated files, and the progress of image/video requests.

Multipart routes take the upload(s) and text fields as Xinference's client and the OpenAI
SDK send them: ``model``, ``prompt``, ``negative_prompt``, ``n``, ``size``,
``response_format``, ``kwargs`` (a JSON string); any other text field is a generation
option, read as JSON when it parses (``num_inference_steps=2`` is the number 2).
"""

from __future__ import annotations

from typing import Any, Dict

from fastapi import Request
from fastapi.responses import FileResponse

from ...errors import InvalidRequestError
from ..media import (
    MEDIA_TYPES,
    form_value,
    generated_path,
    media_service,
    read_form,
    read_upload,
    render,
)
from ..errors import OrjsonResponse
from ..limits import public_base_url
from ..schemas.images import CreateImageRequest, media_config
from ...model.image.params import check_response_format
from . import Route, Router


async def media_response(api, request: Request, method: str, model_uid: str, args: tuple,
                         config: Dict[str, Any], response_format: Any, kind: str,
                         ext: str):
    """Run a media request and answer ``{"created", "data": [{"url"|"b64_json"}]}`` with
    its request id in the ``X-Request-Id`` header. URLs start with the configured public
    URL or the address the connection reached, never the ``Host`` header (see
    :func:`~xinference.api.limits.public_base_url`)."""
    result, rid = await media_service(api).call(request, method, model_uid, args, config)
    body = render(result, check_response_format(response_format), public_base_url(request.scope),
                  kind, ext)
    return OrjsonResponse(body, headers={"X-Request-Id": rid})


def file_response(kind: str, file_name: str) -> FileResponse:
    path = generated_path(kind, file_name)
    return FileResponse(path, media_type=MEDIA_TYPES[path.suffix[1:]])


class ImagesRouter(Router):
    ROUTES = [
        Route("POST", "/v1/images/generations", "create_images", "models:read"),
        Route("POST", "/v1/images/variations", "create_variations", "models:read"),
        Route("POST", "/v1/images/inpainting", "create_inpainting", "models:read"),
        Route("POST", "/v1/images/edits", "create_edits", "models:read"),
        Route("POST", "/v1/images/ocr", "create_ocr", "models:read"),
        Route("GET", "/v1/images/files/{file_name}", "get_image_file", "models:read"),
        Route("GET", "/v1/requests/{request_id}/progress", "get_request_progress",
              "models:read"),
    ]

    async def create_images(self, body: CreateImageRequest, request: Request):
        """Text-to-image: ``n`` images of ``size`` for ``prompt``."""
        config = body.engine_config()
        return await media_response(self.api, request, "text_to_image", body.model,
                                    (body.prompt,), config, body.response_format,
                                    "images", "png")

    async def _form(self, request: Request):
        fields, files = await read_form(request)
        fields = {k: (form_value(v) if k not in ("model", "prompt", "negative_prompt",
                                                  "size", "response_format", "kwargs",
                                                  "request_id", "user") else v)
                  for k, v in fields.items()}
        if not fields.get("model"):
            raise InvalidRequestError("'model' is required")
        return fields, files

    async def _image_call(self, request: Request, fields, method: str, args: tuple):
        config = media_config(fields)
        if fields.get("prompt") is not None:
            config["prompt"] = fields["prompt"]
        return await media_response(self.api, request, method, fields["model"], args,
                                    config, fields.get("response_format"), "images", "png")

    async def create_variations(self, request: Request):
        """Image-to-image (multipart ``image``; ``prompt`` optional): images of the
        input's size unless ``size`` is given."""
        fields, files = await self._form(request)
        image = read_upload(files, "image")
        return await self._image_call(request, fields, "image_to_image", (image,))

    async def create_inpainting(self, request: Request):
        """Inpainting (multipart ``image`` and ``mask_image`` of the same size; white in
        the mask is repainted)."""
        fields, files = await self._form(request)
        image = read_upload(files, "image")
        mask = read_upload(files, "mask_image")
        return await self._image_call(request, fields, "inpainting", (image, mask))

    async def create_edits(self, request: Request):
        """OpenAI's image edit (multipart ``image``, ``prompt``, optional ``mask`` whose
        fully transparent pixels are edited): inpainting with a mask, image-to-image
        without."""
        fields, files = await self._form(request)
        if not fields.get("prompt"):
            raise InvalidRequestError("'prompt' is required")
        image = read_upload(files, "image")
        mask = read_upload(files, "mask", required=False)
        if mask is None:
            return await self._image_call(request, fields, "image_to_image", (image,))
        return await self._image_call(request, fields, "inpainting", (image, mask))

    async def create_ocr(self, request: Request):
        """OCR (multipart ``image``): ``{"created", "text", "data": [{"text", "box",
        "score"}]}``."""
        fields, files = await self._form(request)
        image = read_upload(files, "image")
        config = {k: v for k, v in fields.items() if k not in ("model", "kwargs", "user")}
        from ...model.image.params import parse_kwargs

        config.update(parse_kwargs(fields.get("kwargs")))
        result, rid = await media_service(self.api).call(request, "ocr", fields["model"],
                                                         (image,), config)
        return OrjsonResponse(result, headers={"X-Request-Id": rid})

    async def get_image_file(self, file_name: str):
        """A generated image (PNG), until it expires (see :mod:`xinference.api.media`)."""
        return file_response("images", file_name)

    async def get_request_progress(self, request_id: str, request: Request):
        """``{"request_id", "status", "progress"}`` of a recent image or video request:
        ``status`` queued | running | done | cancelling | cancelled | error, ``progress``
        steps done / total (0..1). 404 for an unknown id, or (auth on) another user's
        request unless the caller is an admin."""
        return await media_service(self.api).progress(request_id, request)


ROUTERS = [ImagesRouter]

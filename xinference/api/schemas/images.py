"""Request bodies of the image and video routes (JSON ones; the multipart routes read
their forms in :mod:`xinference.api.routers.images`).

Field names are OpenAI's Images API and Xinference's: ``kwargs`` is a JSON object (or a
JSON string of one) of extra generation options; unknown top-level fields are options too
(``num_inference_steps``, ``guidance_scale``, ``seed`` ... as the OpenAI SDK sends them
with ``extra_body``). ``n``, ``size`` and ``response_format`` are checked by
:mod:`xinference.model.image.params` (400 on a bad value).
"""

from __future__ import annotations

from typing import Any, Dict, Optional, Union

from pydantic import BaseModel, ConfigDict

from ...model.image.params import check_n, check_response_format, parse_kwargs, parse_size

#: fields of the media requests that are not generation options
MEDIA_FIELDS = {"model", "prompt", "n", "size", "response_format", "kwargs", "user",
                "negative_prompt", "request_id"}


class _MediaRequest(BaseModel):
    model_config = ConfigDict(extra="allow", protected_namespaces=())

    model: str
    prompt: str
    n: Optional[Any] = 1
    size: Optional[str] = None
    response_format: Optional[str] = "url"
    negative_prompt: Optional[str] = None
    kwargs: Optional[Union[str, Dict[str, Any]]] = None
    user: Optional[str] = None  # OpenAI's end-user id; not used here
    request_id: Optional[str] = None

    def engine_config(self) -> Dict[str, Any]:
        """``n``, ``size``, ``negative_prompt``, ``request_id`` and the options (extra
        fields, then ``kwargs`` over them) for the ModelActor.

        Raises:
            InvalidRequestError: bad ``n``, ``size``, ``response_format`` or ``kwargs``.
        """
        return media_config(self.model_dump(exclude_none=True))


def media_config(fields: Dict[str, Any]) -> Dict[str, Any]:
    """The ModelActor config of a media request's ``fields`` (JSON body or form): checks
    ``n``, ``size``, ``response_format``; extra fields and ``kwargs`` become options."""
    check_response_format(fields.get("response_format"))
    parse_size(fields.get("size"))
    config: Dict[str, Any] = {"n": check_n(fields.get("n", 1))}
    for k in ("size", "negative_prompt", "request_id"):
        if fields.get(k) is not None:
            config[k] = fields[k]
    config.update({k: v for k, v in fields.items() if k not in MEDIA_FIELDS})
    config.update(parse_kwargs(fields.get("kwargs")))
    return config


class CreateImageRequest(_MediaRequest):
    """``POST /v1/images/generations`` (OpenAI's create image; Xinference's
    text-to-image). ``size`` ``"W*H"`` or ``"WxH"``; default the model's own."""


class CreateVideoRequest(_MediaRequest):
    """``POST /v1/video/generations`` (Xinference's text-to-video): MP4 videos; options
    ``num_frames``, ``fps``, ``num_inference_steps``, ``seed`` ..."""

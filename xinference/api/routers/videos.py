"""Video: text-to-video (``POST /v1/video/generations``, MP4) and the generated files."""

from __future__ import annotations

from fastapi import Request

from ..schemas.images import CreateVideoRequest
from . import Route, Router
from .images import file_response, media_response


class VideosRouter(Router):
    ROUTES = [
        Route("POST", "/v1/video/generations", "create_videos", "models:read"),
        Route("GET", "/v1/video/files/{file_name}", "get_video_file", "models:read"),
    ]

    async def create_videos(self, body: CreateVideoRequest, request: Request):
        """``n`` MP4 videos for ``prompt``: ``{"created", "data": [{"url"|"b64_json"}]}``."""
        return await media_response(self.api, request, "text_to_video", body.model,
                                    (body.prompt,), body.engine_config(),
                                    body.response_format, "video", "mp4")

    async def get_video_file(self, file_name: str):
        """A generated video (MP4), until it expires (see :mod:`xinference.api.media`)."""
        return file_response("video", file_name)


ROUTERS = [VideosRouter]

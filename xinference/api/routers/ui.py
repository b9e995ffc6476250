"""The web UI: ``/`` and ``/ui`` answer its page, ``/ui/<file>`` its static files.

The files live in the package (``xinference/ui/``: HTML, CSS, ES modules; no build step) and
talk to the server only through the public REST API, like any other client. These routes are
public (listed in :data:`~xinference.api.routers.PUBLIC_PATHS`): the page itself holds no
data; with auth on, the UI asks for an API key and sends it with every API call.
"""

from __future__ import annotations

import mimetypes
from pathlib import Path

from fastapi.responses import FileResponse
from starlette.exceptions import HTTPException

from . import Route, Router

#: the UI's files, inside the package
UI_DIR = (Path(__file__).resolve().parent.parent.parent / "ui").resolve()

# ES modules must be served as JavaScript; some systems map .js to text/plain.
_TYPES = {".js": "text/javascript", ".css": "text/css", ".html": "text/html",
          ".svg": "image/svg+xml", ".json": "application/json"}

# Revalidate every time: a server upgrade must not leave a stale module in a browser cache.
_HEADERS = {"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"}


class UIRouter(Router):
    """The web UI's page and files; public routes (no scope), see the module docstring."""

    ROUTES = [
        Route("GET", "/", "index", None),
        Route("GET", "/ui", "index", None),
        Route("GET", "/ui/{path:path}", "static", None),
    ]

    async def index(self):
        """The single page; its views are chosen by the URL fragment (``#/running``)."""
        return FileResponse(UI_DIR / "index.html", media_type="text/html",
                            headers=_HEADERS)

    async def static(self, path: str):
        """A file under ``xinference/ui/``; ``/ui/`` itself is the page.

        Raises:
            HTTPException: 404 (JSON error body, as every route's) for no such file or a
                path leading outside the UI directory.
        """
        if path in ("", "index.html"):
            return await self.index()
        target = (UI_DIR / path).resolve()
        if not target.is_relative_to(UI_DIR) or not target.is_file():
            raise HTTPException(404, f"No UI file {path!r}")
        media = _TYPES.get(target.suffix) or mimetypes.guess_type(target.name)[0]
        return FileResponse(target, media_type=media or "application/octet-stream",
                            headers=_HEADERS)


ROUTERS = [UIRouter]

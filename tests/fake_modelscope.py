"""A local ModelScope hub for tests: the HTTP calls the ``modelscope`` library (1.40,
``modelscope_hub``) makes for ``snapshot_download``, answered from in-memory files.

* ``GET /api/v1/models/{org}/{repo}/repo/files?Revision=..&Recursive=True`` -> the file
  list (``{"Code": 200, "Data": {"Files": [{"Path", "Name", "Type", "Size", "Sha256"}]}}``);
* ``GET /api/v1/models/{org}/{repo}/repo?Revision=..&FilePath=..`` -> the bytes, honouring
  ``Range: bytes=N-`` (206), in paced chunks when ``chunk_delay`` is set;
* an unknown repository -> 404 with ModelScope's error body (``Code``, ``Message``);
* ``drop_first``: the first transfer of each file stops after a third of its bytes and the
  connection is closed (a dropped connection the client must resume).
"""

from __future__ import annotations

import hashlib
import http.server
import json
import threading
import time
from typing import Dict, List
from urllib.parse import parse_qs, unquote, urlparse


class FakeModelScope:
    """Start with :meth:`start`; ``endpoint`` is what ``MODELSCOPE_ENDPOINT`` takes."""

    def __init__(self, repos: Dict[str, Dict[str, bytes]], chunk_delay: float = 0.0,
                 drop_first: bool = False, chunk: int = 16384):
        self.repos = repos
        self.chunk_delay, self.drop_first, self.chunk = chunk_delay, drop_first, chunk
        self.ranges: List[str] = []  # Range headers of file requests
        self.transfers: Dict[str, int] = {}
        self._server = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> "FakeModelScope":
        hub = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def _json(self, code: int, obj) -> None:
                body = json.dumps(obj).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self):
                u = urlparse(self.path)
                q = {k: v[0] for k, v in parse_qs(u.query).items()}
                path = unquote(u.path)
                prefix = "/api/v1/models/"
                if not path.startswith(prefix):
                    return self._json(404, {"Code": 10010205001, "Message": "not found"})
                rest = path[len(prefix):]
                for suffix in ("/repo/files", "/repo"):
                    if rest.endswith(suffix):
                        repo = rest[:-len(suffix)]
                        break
                else:
                    return self._json(404, {"Code": 10010205001, "Message": "not found"})
                files = hub.repos.get(repo)
                if files is None:
                    return self._json(404, {"Code": 10010205001, "Success": False,
                                            "Message": f"model {repo} does not exist"})
                if suffix == "/repo/files":
                    return self._json(200, {"Code": 200, "Success": True, "Data": {"Files": [
                        {"Path": n, "Name": n.rsplit("/", 1)[-1], "Type": "blob",
                         "Size": len(b), "Sha256": hashlib.sha256(b).hexdigest(),
                         "Revision": "master"} for n, b in sorted(files.items())]}})
                name = q.get("FilePath", "")
                if name not in files:
                    return self._json(404, {"Code": 10010205001, "Message": f"{name} not found"})
                self._send_file(repo + "/" + name, files[name])

            def _send_file(self, key: str, data: bytes) -> None:
                rng = self.headers.get("Range")
                start = 0
                if rng:
                    hub.ranges.append(rng)
                    start = int(rng.split("=", 1)[1].split("-", 1)[0])
                n = hub.transfers[key] = hub.transfers.get(key, 0) + 1
                body = data[start:]
                self.send_response(206 if start else 200)
                self.send_header("Content-Type", "application/octet-stream")
                self.send_header("Content-Length", str(len(body)))
                if start:
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                self.end_headers()
                limit = len(body) // 3 if hub.drop_first and n == 1 else len(body)
                sent = 0
                try:
                    while sent < limit:
                        piece = body[sent:min(limit, sent + hub.chunk)]
                        self.wfile.write(piece)
                        self.wfile.flush()
                        sent += len(piece)
                        if hub.chunk_delay:
                            time.sleep(hub.chunk_delay)
                except (BrokenPipeError, ConnectionResetError):
                    return
                if limit < len(body):  # the dropped connection
                    self.close_connection = True
                    try:
                        self.connection.shutdown(2)
                    except OSError:
                        pass

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

"""A static file server for a built site, bound to 127.0.0.1 only.

The site works opened from files too; the preview server is for a browser that should see it as
published. The stdlib server is enough for one user previewing a report, and binding to the
loopback address keeps unpublished results off the network.
"""

from __future__ import annotations

import functools
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from pipeline.errors import DaydreamError

HOST = "127.0.0.1"


class _QuietHandler(SimpleHTTPRequestHandler):
    """Serves files without logging every request to stderr; with a ``live`` cache, also the
    live run view (``live.html``, ``live.json``)."""

    live = None   # a live.LiveCache, set per server (functools.partial)

    extensions_map = {**SimpleHTTPRequestHandler.extensions_map,
                      ".js": "text/javascript", ".json": "application/json", ".csv": "text/csv; charset=utf-8"}

    def log_message(self, format: str, *args) -> None:  # noqa: A002 (stdlib signature)
        pass

    def do_GET(self) -> None:  # noqa: N802 (stdlib name)
        path = self.path.split("?", 1)[0].split("#", 1)[0]
        if self.live is not None:
            if path == "/live.json":
                return self._send(200, "application/json", self.live.body())
            if path == "/live.html" or (path == "/" and not (Path(self.directory) / "index.html").is_file()):
                from pipeline.sitegen.live import live_page
                return self._send(200, "text/html; charset=utf-8", live_page().encode("utf-8"))
        super().do_GET()

    def _send(self, code: int, ctype: str, body: bytes) -> None:
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def end_headers(self) -> None:
        self.send_header("Cache-Control", "no-cache")
        super().end_headers()

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """A missing page gets the site's own 404 page (with the site's navigation), not the
        stdlib's bare error page. Its links are relative to the site root, where it lives, so a
        ``<base>`` points them there from any depth."""
        page = Path(self.directory) / "404.html"
        if code != 404 or self.command == "HEAD" or not page.is_file():
            super().send_error(code, message, explain)
            return
        try:
            html = page.read_text(encoding="utf-8")
        except OSError:
            super().send_error(code, message, explain)
            return
        html = html.replace("<head>", '<head><base href="/">', 1)
        body = html.encode("utf-8")
        self.send_response(404, message)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)


def serve(build_dir: Path, port: int = 0, live=None) -> tuple[ThreadingHTTPServer, str]:
    """Serve ``build_dir`` on 127.0.0.1:``port`` (0 = a free port) from a daemon thread.
    ``live``: the data root (``DataPaths``) whose runs ``live.html`` shows; with it, a data root
    without a built site yet is served too (the live view, while the first run goes).

    Returns ``(server, url)``; stop with ``server.shutdown(); server.server_close()``.
    """
    build_dir = Path(build_dir)
    if live is None and not (build_dir / "index.html").is_file():
        raise DaydreamError("site", "no built site here (run the report build first)", path=build_dir)
    if live is not None:
        from pipeline.sitegen.live import LiveCache

        build_dir.mkdir(parents=True, exist_ok=True)
        handler = functools.partial(type("_LiveHandler", (_QuietHandler,), {"live": LiveCache(live)}),
                                    directory=str(build_dir))
    else:
        handler = functools.partial(_QuietHandler, directory=str(build_dir))
    try:
        server = ThreadingHTTPServer((HOST, port), handler)
    except OSError as exc:
        raise DaydreamError("site", f"cannot listen on {HOST}:{port}: {exc.strerror or exc}") from None
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="daydream-site", daemon=True).start()
    return server, f"http://{HOST}:{server.server_address[1]}/"

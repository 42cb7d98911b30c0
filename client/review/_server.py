"""The review workstation's HTTP server (``veil review IN REC --serve``): the page
(``app/``: HTML, CSS, JavaScript, no build step, nothing fetched from elsewhere) and the
small JSON API it talks to, both over one ``ReviewSession``. The standard library's
threading HTTP server: the workstation runs on the reviewer's machine, for one reviewer.

Security: it listens on 127.0.0.1 unless told otherwise. Every request carries the
session's token, a random value made at start and printed in the app's URL (another local
user cannot read it): a change in its ``X-Veil-Token`` header (no other web page can add one),
a read in the header or in ``?token=``; only the page's script, style and icon are served
without it. On loopback, requests naming another host than the server's are refused (DNS
rebinding).
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import logging
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from veil.core import ConfigError, VeilError, split_address

from ._session import Problem, ReviewSession

logger = logging.getLogger(__name__)

#: The page's files (package data), by the only names they are served under.
ASSETS = {"/": "index.html", "/app.js": "app.js", "/app.css": "app.css", "/icon.svg": "icon.svg"}
#: Served without the token: they hold no secret and no picture.
PUBLIC = frozenset(ASSETS) - {"/"}
_TYPES = {
    ".html": "text/html",
    ".js": "text/javascript",
    ".css": "text/css",
    ".svg": "image/svg+xml",
}
_CSP = "default-src 'self'; img-src 'self'; style-src 'self'; script-src 'self'"
#: A request body larger than this is refused unread.
MAX_BODY = 1 << 20


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        logger.debug("%s %s", self.address_string(), format % args)

    # -- the checks every request passes -----------------------------------------------------

    def _allowed(self, path: str, query: dict[str, list[str]], *, changes: bool) -> None:
        host = self.headers.get("Host", "")
        if self.server.loopback and host not in self.server.hosts:  # DNS rebinding
            raise Problem(HTTPStatus.FORBIDDEN, f"requests for host {host!r} are not served here")
        if path in PUBLIC and not changes:
            return  # the page's script, style and icon: no secret, no face
        # a change carries the token in its header (no other page can add one); a read may
        # carry it in the URL (the page itself, pictures)
        given = self.headers.get("X-Veil-Token") or ""
        if not changes:
            given = given or (query.get("token") or [""])[0]
        if not hmac.compare_digest(given.encode(), self.server.session.token.encode()):
            raise Problem(HTTPStatus.FORBIDDEN, "this request needs the session's token")

    def _send(self, status: HTTPStatus, body: bytes, kind: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("Content-Security-Policy", _CSP)
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Referrer-Policy", "no-referrer")
        self.end_headers()
        self.wfile.write(body)

    def _json(self, value: Any, status: HTTPStatus = HTTPStatus.OK) -> None:
        self._send(status, json.dumps(value).encode(), "application/json")

    def _handle(self, method: str) -> None:
        url = urlsplit(self.path)
        query = parse_qs(url.query)
        try:
            self._allowed(url.path, query, changes=method == "POST")
            if method == "GET":
                self._get(url.path, query)
            else:
                self._post(url.path)
        except Problem as problem:
            self._json({"error": str(problem), **problem.extra}, problem.status)
        except VeilError as exc:  # refused by the edit functions, render or sign-off
            self._json({"error": str(exc)}, HTTPStatus.UNPROCESSABLE_ENTITY)
        except Exception as exc:  # a bug: say so, keep serving
            logger.exception("review app: %s %s failed", method, url.path)
            self._json({"error": f"internal error: {exc}"}, HTTPStatus.INTERNAL_SERVER_ERROR)

    def do_GET(self) -> None:
        self._handle("GET")

    def do_POST(self) -> None:
        self._handle("POST")

    def _get(self, path: str, query: dict[str, list[str]]) -> None:
        session = self.server.session
        if path in ASSETS:
            name = ASSETS[path]
            data = resources.files("veil.review").joinpath("app", name).read_bytes()
            if name == "index.html":
                data = data.replace(b"{{TOKEN}}", session.token.encode())
            self._send(HTTPStatus.OK, data, _TYPES[Path(name).suffix] + "; charset=utf-8")
            return

        def number(name: str) -> int:
            try:
                return int(query[name][0])
            except (KeyError, ValueError):
                raise Problem(HTTPStatus.BAD_REQUEST, f"{name}: a number is needed") from None

        with session.lock:
            if path == "/api/state":
                self._json(session.state())
            elif path == "/api/masks":
                self._json(session.masks(number("frame")))
            elif path == "/api/frame":
                view = (query.get("view") or ["original"])[0]
                self._send(HTTPStatus.OK, session.picture(number("frame"), view), "image/jpeg")
            elif path == "/api/thumb":
                self._send(HTTPStatus.OK, session.thumbnail(number("track")), "image/jpeg")
            else:
                raise Problem(HTTPStatus.NOT_FOUND, f"{path}: nothing is served there")

    def _post(self, path: str) -> None:
        session = self.server.session
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY:
            raise Problem(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, "request too large")
        try:
            body = json.loads(self.rfile.read(length) or b"{}")
        except ValueError:
            raise Problem(HTTPStatus.BAD_REQUEST, "the request is not JSON") from None
        if not isinstance(body, dict):
            raise Problem(HTTPStatus.BAD_REQUEST, "the request is not a JSON object")
        with session.lock:
            if path == "/api/edit":
                self._json({"edit": session.edit(body), "state": session.state()})
            elif path == "/api/render":
                manifest = session.render()
                self._json({"output": manifest["output"], "state": session.state()})
            elif path == "/api/signoff":
                self._json({"approval": session.sign_off(body), "state": session.state()})
            else:
                raise Problem(HTTPStatus.NOT_FOUND, f"{path}: nothing is served there")


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], session: ReviewSession) -> None:
        super().__init__(address, _Handler)
        self.session = session
        host, port = str(self.server_address[0]), int(self.server_address[1])
        self.loopback = ipaddress.ip_address(host).is_loopback
        names = {str(host), "localhost", "127.0.0.1"} if self.loopback else {str(host)}
        self.hosts = {f"{n}:{port}" for n in names}
        self.url = f"http://{host}:{port}/?token={session.token}"


def serve(session: ReviewSession, listen: str = "127.0.0.1:0") -> _Server:
    """A server for ``session`` on ``listen`` (HOST:PORT; port 0: any free one), not yet
    serving: call ``serve_forever`` (or run it in a thread); ``url`` says where to go."""
    host, port = split_address(listen, "--listen")
    try:
        ipaddress.ip_address(host)
    except ValueError:
        raise ConfigError(f"--listen {listen!r}: HOST must be an IP address") from None
    try:
        return _Server((host, port), session)
    except OSError as exc:
        raise ConfigError(f"--listen {listen}: {exc}") from exc

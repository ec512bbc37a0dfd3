"""`consolegw recordings serve`: a read-only web page over the recorder's index and files.

For a supervisor or an investigator at the console (or through an SSH tunnel): records per
channel and time, the filters of `recordings list`, playback in the browser, a TTY call's
transcript beside its audio, and the file itself for the chain of custody (its SHA-256 is
shown). It never writes the index or a file, so it runs beside the daemon.

Access: localhost by default, and every request needs the token (`?token=` once, then a
cookie the page sets; or `Authorization: Bearer`). Plain HTTP: bind another address only
on a network the center trusts, or tunnel it.
"""

from __future__ import annotations

import hmac
import json
import logging
import re
import secrets
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import parse_qs, urlsplit

from gateway.recorder import RecordingInfo
from gateway.recorder.store import Query, RecordingStore

log = logging.getLogger(__name__)

COOKIE = "consolegw_recordings"
MAX_LIMIT = 1000
"""The most records one page asks for (the index answers up to 10,000)."""

_STATIC = {
    "/": ("index.html", "text/html; charset=utf-8"),
    "/app.js": ("app.js", "text/javascript; charset=utf-8"),
    "/app.css": ("app.css", "text/css; charset=utf-8"),
    "/favicon.svg": ("favicon.svg", "image/svg+xml"),
    "/favicon.ico": ("favicon.svg", "image/svg+xml"),  # asked for whatever the page says
}
_AUDIO_TYPES = {".ogg": "audio/ogg", ".opus": "audio/ogg", ".flac": "audio/flac"}
_RANGE = re.compile(r"bytes=([0-9]*)-([0-9]*)")
_CHUNK = 64 * 1024
_HEADERS = {
    # The page's own script and style only, nothing framed, nothing sniffed, nothing cached
    # (a shared console PC must not keep a copy of the audio in a browser's cache).
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; media-src 'self'; "
        "connect-src 'self'; img-src 'self'; frame-ancestors 'none'; base-uri 'none'; "
        "form-action 'self'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


class BadRequest(Exception):
    """A request the page cannot answer: its status and what is wrong."""

    def __init__(self, status: HTTPStatus, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True, slots=True)
class Site:
    store: RecordingStore
    token: str
    title: str

    def allowed(self, offered: str | None) -> bool:
        return offered is not None and hmac.compare_digest(
            offered.encode("utf-8", "replace"), self.token.encode()
        )


def _one(params: dict[str, list[str]], name: str) -> str | None:
    values = params.get(name)
    if not values or values[-1] == "":
        return None
    return values[-1]


def query_of(params: dict[str, list[str]]) -> Query:
    """The page's filters as an index query; BadRequest naming the filter that is wrong."""
    direction = _one(params, "direction")
    if direction not in (None, "rx", "tx"):
        raise BadRequest(HTTPStatus.BAD_REQUEST, f"direction must be rx or tx, not {direction!r}")
    limit_text = _one(params, "limit") or "200"
    if not limit_text.isdigit() or not 1 <= int(limit_text) <= MAX_LIMIT:
        raise BadRequest(HTTPStatus.BAD_REQUEST, f"limit must be 1..{MAX_LIMIT}")
    try:
        return Query.of_text(
            channel=_one(params, "channel"),
            direction=direction,  # type: ignore[arg-type]  # checked above
            since=_one(params, "since"),
            until=_one(params, "until"),
            text=_one(params, "text"),
            limit=int(limit_text),
            # A browser's datetime-local field has no zone: the console's local time.
            naive_is_local=True,
        )
    except ValueError as exc:
        raise BadRequest(HTTPStatus.BAD_REQUEST, str(exc)) from None


def byte_range(header: str | None, size: int) -> tuple[int, int] | None:
    """The first range of a Range header as (first, last) inclusive, None for the whole
    file; BadRequest (416) for a range outside it. Only one range is served: a player asks
    for one."""
    if header is None:
        return None
    match = _RANGE.fullmatch(header.split(",")[0].strip())
    if match is None:
        return None  # an unknown unit or a malformed range: RFC 9110 lets us send it all
    first_text, last_text = match.groups()
    if first_text:
        first = int(first_text)
        last = min(int(last_text), size - 1) if last_text else size - 1
    elif last_text:
        first, last = max(0, size - int(last_text)), size - 1
    else:
        return None
    if first >= size or first > last:
        raise BadRequest(HTTPStatus.REQUESTED_RANGE_NOT_SATISFIABLE, f"bytes */{size}")
    return first, last


class Handler(BaseHTTPRequestHandler):
    site: ClassVar[Site]
    server_version = "consolegw-recordings"
    sys_version = ""

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s " + format, self.address_string(), *args)

    # -- routing ----------------------------------------------------------------------------

    def do_GET(self) -> None:
        self._answer(head=False)

    def do_HEAD(self) -> None:
        self._answer(head=True)

    def _answer(self, *, head: bool) -> None:
        try:
            url = urlsplit(self.path)
            params = parse_qs(url.query, keep_blank_values=True, max_num_fields=50)
            from_query = _one(params, "token")
            if not self._authorized(from_query):
                raise BadRequest(HTTPStatus.UNAUTHORIZED, "open the address with its token")
            self._route(url.path, params, head=head, set_cookie=from_query is not None)
        except BadRequest as exc:
            self._json(exc.status, {"error": str(exc)}, head=head)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the browser went away (a player seeking closes its first request)
        except Exception as exc:  # one bad request or file must not stop the server
            log.exception("recordings page: %s failed", self.path[:200])
            self._json(HTTPStatus.INTERNAL_SERVER_ERROR, {"error": type(exc).__name__}, head=head)

    def _authorized(self, from_query: str | None) -> bool:
        site = self.site
        if site.allowed(from_query):
            return True
        auth = self.headers.get("Authorization", "")
        if auth.startswith("Bearer ") and site.allowed(auth[7:].strip()):
            return True
        for part in self.headers.get("Cookie", "").split(";"):
            name, _, value = part.strip().partition("=")
            if name == COOKIE and site.allowed(value):
                return True
        return False

    def _route(
        self, path: str, params: dict[str, list[str]], *, head: bool, set_cookie: bool
    ) -> None:
        if path in _STATIC:
            name, content_type = _STATIC[path]
            body = resources.files(__package__).joinpath("static", name).read_bytes()
            cookie = {}
            if set_cookie:
                cookie["Set-Cookie"] = (
                    f"{COOKIE}={self.site.token}; Path=/; HttpOnly; SameSite=Strict"
                )
            self._send(HTTPStatus.OK, body, content_type, head=head, extra=cookie)
        elif path == "/api/recordings":
            found = self.site.store.query(query_of(params))
            self._json(
                HTTPStatus.OK,
                {"recordings": [self._info(r.id, RecordingInfo.of(r)) for r in found]},
                head=head,
            )
        elif path == "/api/channels":
            channels = [
                {"channel": name, "last_start": last} for name, last in self.site.store.channels()
            ]
            self._json(HTTPStatus.OK, {"title": self.site.title, "channels": channels}, head=head)
        elif (record_id := _record_id(path, "/api/recordings/")) is not None:
            rec = self.site.store.get(record_id)
            if rec is None:
                raise BadRequest(HTTPStatus.NOT_FOUND, f"no recording {record_id}")
            self._json(HTTPStatus.OK, self._info(rec.id, RecordingInfo.of(rec)), head=head)
        elif (record_id := _record_id(path, "/audio/")) is not None:
            self._audio(record_id, head=head)
        else:
            raise BadRequest(HTTPStatus.NOT_FOUND, "no such page")

    @staticmethod
    def _info(record_id: int, info: RecordingInfo) -> dict[str, Any]:
        data = info.model_dump(mode="json")
        data["audio_url"] = f"/audio/{record_id}"
        return data

    # -- audio ------------------------------------------------------------------------------

    def _audio(self, record_id: int, *, head: bool) -> None:
        rec = self.site.store.get(record_id)
        if rec is None:
            raise BadRequest(HTTPStatus.NOT_FOUND, f"no recording {record_id}")
        folder = self.site.store.folder.resolve()
        path = Path(rec.path).resolve()
        # The index names the file; serve it only from the recordings folder.
        if not path.is_relative_to(folder) or not path.is_file():
            raise BadRequest(HTTPStatus.NOT_FOUND, f"recording {record_id} has no file here")
        content_type = _AUDIO_TYPES.get(path.suffix.lower(), "application/octet-stream")
        with path.open("rb") as f:
            size = path.stat().st_size  # a record still open grows: serve what is there now
            wanted = byte_range(self.headers.get("Range"), size)
            first, last = wanted if wanted is not None else (0, size - 1)
            status = HTTPStatus.PARTIAL_CONTENT if wanted is not None else HTTPStatus.OK
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Accept-Ranges", "bytes")
            self.send_header("Content-Length", str(max(0, last - first + 1)))
            if wanted is not None:
                self.send_header("Content-Range", f"bytes {first}-{last}/{size}")
            self.send_header(
                "Content-Disposition", f'inline; filename="recording-{record_id}{path.suffix}"'
            )
            for name, value in _HEADERS.items():
                self.send_header(name, value)
            self.end_headers()
            if head:
                return
            f.seek(first)
            left = last - first + 1
            while left > 0:
                chunk = f.read(min(_CHUNK, left))
                if not chunk:
                    break
                self.wfile.write(chunk)
                left -= len(chunk)

    # -- answers ----------------------------------------------------------------------------

    def _json(self, status: HTTPStatus, data: Any, *, head: bool) -> None:
        body = json.dumps(data, separators=(",", ":")).encode()
        self._send(status, body, "application/json", head=head)

    def _send(
        self,
        status: HTTPStatus,
        body: bytes,
        content_type: str,
        *,
        head: bool,
        extra: dict[str, str] | None = None,
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in {**_HEADERS, **(extra or {})}.items():
            self.send_header(name, value)
        self.end_headers()
        if not head:
            self.wfile.write(body)


def _record_id(path: str, prefix: str) -> int | None:
    if not path.startswith(prefix):
        return None
    tail = path[len(prefix) :]
    if not tail.isascii() or not tail.isdigit() or len(tail) > 18:
        raise BadRequest(HTTPStatus.NOT_FOUND, "no such recording")
    return int(tail)


def make_server(
    store: RecordingStore, *, host: str, port: int, token: str | None, title: str
) -> tuple[ThreadingHTTPServer, str]:
    """The server, bound, and its token (a new random one unless given)."""
    token = token or secrets.token_urlsafe(18)
    handler = type("SiteHandler", (Handler,), {"site": Site(store, token, title)})
    server = ThreadingHTTPServer((host, port), handler)
    server.daemon_threads = True
    return server, token

"""``http``: a sub-task query ``METHOD /path`` is a request to the base URL.

``GET /api/users`` against ``--base-url http://127.0.0.1:8080`` requests
``http://127.0.0.1:8080/api/users``. The result reads like the seed's
``[200 OK] 5 items``: the status line plus a short summary of the body (the
item count of a JSON list, or of the first list in a JSON object; the keys
of another object; else the first line of text). A status of 400 or more,
a timeout or a refused connection fails the sub-task. Redirects are
followed only on the base URL's own scheme, host and port; one to another
host is refused.

The timeout bounds the whole request, not each read: connecting, sending,
the headers and the body, redirects included, end within
``request_timeout`` (default 10 s) or at the sub-task's deadline, whichever
comes first, however slowly the server answers. At that moment the
request's sockets are shut down (``_Deadline``). Name resolution and a TLS
handshake are bounded per step by the same timeout, not as a whole.
"""

import http.client
import json
import re
import socket
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from http.client import HTTPException, responses

from ..errors import InvalidInput
from .base import Executor as _Base, Failed, first_line

_REQUEST = re.compile(r"\s*([A-Za-z]+)\s+(/\S*)\s*")
METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")
MAX_BODY = 1 << 20
MAX_REDIRECTS = 5


class RedirectRefused(Exception):
    def __init__(self, code, target):
        super().__init__(target)
        self.code, self.target = code, target


def _origin(url):
    parts = urllib.parse.urlsplit(url)
    port = parts.port or {"http": 80, "https": 443}.get(parts.scheme)
    return parts.scheme, (parts.hostname or "").lower(), port


class _SameOriginRedirects(urllib.request.HTTPRedirectHandler):
    max_redirections = MAX_REDIRECTS

    def __init__(self, origin):
        self.origin = origin

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        if _origin(newurl) != self.origin:
            raise RedirectRefused(code, newurl)
        return super().redirect_request(req, fp, code, msg, headers, newurl)


class _Deadline:
    """The end of one request: when ``seconds`` have passed, every connection it opened is shut down.

    Shutting a socket down wakes a read or write blocked on it, so a
    server that sends one byte a second cannot hold the request; the
    request then fails, and ``expired`` says it was the deadline.
    """

    def __init__(self, seconds):
        self.seconds = seconds
        self.end = time.monotonic() + seconds
        self.expired = False
        self._sockets = []
        self._lock = threading.Lock()
        self._timer = threading.Timer(seconds, self._expire)
        self._timer.daemon = True

    def __enter__(self):
        self._timer.start()
        return self

    def __exit__(self, *exc):
        self._timer.cancel()

    def left(self) -> float:
        return self.end - time.monotonic()

    def watch(self, sock) -> None:
        """End ``sock`` with the request. (Its connection lets go of it once the headers are read;
        the response still reads the body through it.)"""
        with self._lock:
            self._sockets.append(sock)
            if self.expired:
                _shut(sock)

    def _expire(self):
        with self._lock:
            self.expired = True
            for sock in self._sockets:
                _shut(sock)


def _shut(sock) -> None:
    try:
        # The plain socket's shutdown, also under TLS: it wakes a blocked read or write at once.
        socket.socket.shutdown(sock, socket.SHUT_RDWR)
    except OSError:
        pass  # already closed


def _bounded(connection_class, deadline):
    """``connection_class`` whose connections ``deadline`` ends; connecting itself waits at most what is left."""

    class Bounded(connection_class):
        def connect(self):
            self.timeout = max(0.001, min(self.timeout, deadline.left()))
            super().connect()
            deadline.watch(self.sock)

    return Bounded


class _BoundedHTTP(urllib.request.HTTPHandler):
    def __init__(self, deadline):
        super().__init__()
        self.deadline = deadline

    def http_open(self, req):
        return self.do_open(_bounded(http.client.HTTPConnection, self.deadline), req)


class _BoundedHTTPS(urllib.request.HTTPSHandler):
    def __init__(self, deadline):
        super().__init__()
        self.deadline = deadline

    def https_open(self, req):
        return self.do_open(_bounded(http.client.HTTPSConnection, self.deadline), req, context=self._context)


def summarise(body: bytes, content_type: str) -> str:
    """A few words about a response body: ``5 items``, ``keys: a, b``, or its first line."""
    if not body.strip():
        return ""
    text = body.decode("utf-8", "replace")
    if "json" in (content_type or "") or text.lstrip()[:1] in "[{":
        try:
            data = json.loads(text)
        except ValueError:
            data = None
        else:
            if isinstance(data, list):
                return f"{len(data)} item{'s' * (len(data) != 1)}"
            if isinstance(data, dict):
                for key, value in data.items():
                    if isinstance(value, list):
                        return f"{len(value)} item{'s' * (len(value) != 1)} ({key})"
                return "keys: " + ", ".join(map(str, list(data)[:6])) if data else "{}"
            return json.dumps(data)[:80]
    return first_line(text)[:120]


class Executor(_Base):
    name = "http"

    @property
    def base_url(self):
        return self.ctx.settings.get("base_url")

    def check(self):
        if not self.base_url:
            raise InvalidInput("the http executor needs a base URL: pass --base-url http://host:port "
                               "(or set BRAIN_BASE_URL, or base_url in ~/.brain/config.yaml)")

    def run(self, query: str, task=None) -> str:
        match = _REQUEST.fullmatch(query)
        if not match or match.group(1).upper() not in METHODS:
            raise Failed("not an HTTP request: expected 'METHOD /path', e.g. 'GET /health'")
        method, path = match.group(1).upper(), match.group(2)
        url = self.base_url.rstrip("/") + path
        timeout = self.ctx.time_left(self.ctx.settings.get("request_timeout", 10.0))
        request = urllib.request.Request(url, method=method, headers={"User-Agent": "brain-jobs"},
                                         data=b"" if method in ("POST", "PUT", "PATCH") else None)
        with _Deadline(timeout) as deadline:
            try:
                line = self._request(request, deadline, f"{method} {path}")
            except Exception:
                if not deadline.expired:
                    raise
                line = None
            # Whatever the shut-down sockets made of the request (an error, or a body
            # cut short that looks complete), the deadline is what ended it.
            if deadline.expired:
                raise Failed(f"timed out after {timeout:g}s: {method} {path}")
        return line

    def _request(self, request, deadline, what):
        timeout = deadline.seconds
        opener = urllib.request.build_opener(_SameOriginRedirects(_origin(self.base_url)),
                                             _BoundedHTTP(deadline), _BoundedHTTPS(deadline))
        try:
            with opener.open(request, timeout=timeout) as resp:
                status, reason = resp.status, resp.reason
                body, ctype = resp.read(MAX_BODY), resp.headers.get("Content-Type", "")
        except RedirectRefused as exc:
            raise Failed(f"[{exc.code} {responses.get(exc.code, '')}] redirect to another host refused: "
                         f"{exc.target}") from None
        except urllib.error.HTTPError as exc:
            body = exc.read(MAX_BODY) if exc.fp else b""
            raise Failed(self._line(exc.code, exc.reason, body, exc.headers.get("Content-Type", ""))) from None
        except urllib.error.URLError as exc:
            reason = exc.reason
            if isinstance(reason, socket.timeout):
                raise Failed(f"timed out after {timeout:g}s: {what}") from None
            raise Failed(f"cannot reach {self.base_url}: {getattr(reason, 'strerror', None) or reason}") from None
        except (socket.timeout, TimeoutError):
            raise Failed(f"timed out after {timeout:g}s: {what}") from None
        except (HTTPException, OSError) as exc:
            raise Failed(f"{what}: {type(exc).__name__}: {exc}") from None
        return self._line(status, reason, body, ctype)

    @staticmethod
    def _line(status, reason, body, ctype):
        reason = reason or responses.get(status, "")
        summary = summarise(body, ctype)
        return f"[{status} {reason}]" + (f" {summary}" if summary else "")

"""A scripted fake of the Anthropic Messages API, served over HTTP on 127.0.0.1.

Stdlib only (http.server + threading), so any test can use it without extras.
It answers ``POST /v1/messages`` (query strings such as ``?beta=true`` are
ignored) with either a Server-Sent-Events stream (``"stream": true``, what the
Claude Code CLI always sends) or one JSON message (what the ``anthropic`` SDK's
``messages.create`` without ``stream`` expects). ``/v1/messages/count_tokens``
answers with a rough count; ``HEAD``/``GET`` of anything answer 200.

Replies are scripted per request, in this order:

1. ``server.enqueue(reply, ...)`` queues replies that are used first, one per
   request, in order (handy for 429 / 500 then success);
2. otherwise ``server.responder(request)`` -- a function you set -- returns a
   reply for the request; it may return ``None`` to fall back to
3. a plain text reply ``"ok"``.

A reply is built with ``text()``, ``tool_use()``, ``message()`` or
``error()``. Every request is appended to ``server.requests`` (a list of
``RecordedRequest``), with the reply that was sent, so a test can assert on
what the client sent and on how many bytes of context it carried.

Usage::

    with FakeAnthropic() as api:
        api.enqueue(error(429, "rate_limit_error", "slow down"),
                    tool_use("Bash", {"command": "brain job list"}),
                    text("done"))
        client = anthropic.Anthropic(base_url=api.url, api_key="dummy")
        ...
        assert api.requests[0].status == 429
"""

from __future__ import annotations

import itertools
import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Optional
from urllib.parse import urlsplit

__all__ = [
    "FakeAnthropic",
    "RecordedRequest",
    "Reply",
    "error",
    "message",
    "text",
    "tool_use",
    "system_text",
    "tool_results",
    "assistant_turns",
    "message_text",
]

_ids = itertools.count(1)


def _new_id(prefix: str) -> str:
    return f"{prefix}_fake{next(_ids):06d}"


@dataclass
class Reply:
    """One scripted answer: a message (content + stop reason) or an HTTP error."""

    content: list = field(default_factory=list)
    stop_reason: str = "end_turn"
    status: int = 200
    error_type: Optional[str] = None
    error_message: str = ""
    headers: dict = field(default_factory=dict)
    usage: Optional[dict] = None
    delay: float = 0.0  # seconds to wait before answering (timeouts, ordering)

    @property
    def is_error(self) -> bool:
        return self.status >= 400


def text(body: str, **kw: Any) -> Reply:
    """A reply with one text block that ends the turn."""
    return Reply(content=[{"type": "text", "text": body}], stop_reason="end_turn", **kw)


def tool_use(name: str, input: dict, id: Optional[str] = None, preamble: str = "", **kw: Any) -> Reply:
    """A reply that calls one tool (optionally after a short text block)."""
    blocks = [{"type": "text", "text": preamble}] if preamble else []
    blocks.append({"type": "tool_use", "id": id or _new_id("toolu"), "name": name, "input": input})
    return Reply(content=blocks, stop_reason="tool_use", **kw)


def message(content: list, stop_reason: Optional[str] = None, **kw: Any) -> Reply:
    """A reply with arbitrary content blocks (several tool calls in one turn, say).

    ``tool_use`` blocks without an ``id`` get one. The stop reason defaults to
    ``tool_use`` when any block is a tool call, else ``end_turn``.
    """
    blocks = []
    for block in content:
        block = dict(block)
        if block.get("type") == "tool_use":
            block.setdefault("id", _new_id("toolu"))
        blocks.append(block)
    if stop_reason is None:
        stop_reason = "tool_use" if any(b.get("type") == "tool_use" for b in blocks) else "end_turn"
    return Reply(content=blocks, stop_reason=stop_reason, **kw)


_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    529: "overloaded_error",
}


def error(status: int, error_type: Optional[str] = None, msg: str = "scripted error",
          retry_after: Optional[float] = 0, **kw: Any) -> Reply:
    """An HTTP error in the API's shape: ``{"type": "error", "error": {...}}``.

    ``retry_after`` sets the ``retry-after`` header (seconds; ``None`` omits
    it). The SDK honours it, so 0 keeps retry tests fast.
    """
    headers = dict(kw.pop("headers", {}))
    if retry_after is not None:
        headers.setdefault("retry-after", str(retry_after))
    return Reply(status=status, error_type=error_type or _ERROR_TYPES.get(status, "api_error"),
                 error_message=msg, headers=headers, **kw)


@dataclass
class RecordedRequest:
    """What one request carried and what it got back."""

    method: str
    path: str
    headers: dict
    body: Any  # parsed JSON, or None
    raw: bytes
    client: str  # peer address, to prove everything stayed on loopback
    at: float
    reply: Optional[Reply] = None

    @property
    def status(self) -> Optional[int]:
        return self.reply.status if self.reply else None

    @property
    def stream(self) -> bool:
        return bool(isinstance(self.body, dict) and self.body.get("stream"))


# --- helpers to read a Messages request --------------------------------------

def system_text(body: dict) -> str:
    """The system prompt as one string (it may be a string or a list of blocks)."""
    system = body.get("system") or ""
    if isinstance(system, str):
        return system
    return "\n".join(b.get("text", "") for b in system if isinstance(b, dict))


def message_text(msg: dict) -> str:
    """All text of one message: text blocks and tool_result contents."""
    content = msg.get("content")
    if isinstance(content, str):
        return content
    parts = []
    for block in content or []:
        if not isinstance(block, dict):
            continue
        if block.get("type") == "text":
            parts.append(block.get("text", ""))
        elif block.get("type") == "tool_result":
            parts.append(_tool_result_text(block))
    return "\n".join(parts)


def _tool_result_text(block: dict) -> str:
    content = block.get("content")
    if isinstance(content, str):
        return content
    return "\n".join(c.get("text", "") for c in content or [] if isinstance(c, dict))


def tool_results(body: dict) -> dict:
    """``{tool_use_id: text}`` of every tool_result in the conversation."""
    found = {}
    for msg in body.get("messages", []):
        if msg.get("role") != "user" or not isinstance(msg.get("content"), list):
            continue
        for block in msg["content"]:
            if isinstance(block, dict) and block.get("type") == "tool_result":
                found[block.get("tool_use_id")] = _tool_result_text(block)
    return found


def assistant_turns(body: dict) -> list:
    """The assistant messages already in the conversation, oldest first."""
    return [m for m in body.get("messages", []) if m.get("role") == "assistant"]


# --- the server ----------------------------------------------------------------

def _usage(body: Any, reply: Reply) -> dict:
    if reply.usage:
        return dict(reply.usage)
    size = len(json.dumps(body)) if body is not None else 0
    out = len(json.dumps(reply.content))
    return {"input_tokens": max(1, size // 4), "output_tokens": max(1, out // 4),
            "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0}


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: "_Server"

    def log_message(self, fmt: str, *args: Any) -> None:  # keep test output clean
        pass

    def _record(self, body: Any, raw: bytes) -> RecordedRequest:
        rec = RecordedRequest(
            method=self.command, path=self.path, headers={k.lower(): v for k, v in self.headers.items()},
            body=body, raw=raw, client=self.client_address[0], at=time.time())
        with self.server.fake._lock:
            self.server.fake.requests.append(rec)
        return rec

    def do_HEAD(self) -> None:
        self._record(None, b"")
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def do_GET(self) -> None:
        self._record(None, b"")
        self._send_json(200, {})

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = None
        rec = self._record(body, raw)
        path = urlsplit(self.path).path
        if path.endswith("/count_tokens"):
            rec.reply = text("")
            self._send_json(200, {"input_tokens": max(1, len(raw) // 4)})
            return
        if not path.endswith("/v1/messages") or not isinstance(body, dict):
            rec.reply = error(404, msg=f"fake API does not serve {self.command} {path}")
            self._send_error(rec.reply)
            return
        reply = self.server.fake._next_reply(rec)
        rec.reply = reply
        if reply.delay:
            time.sleep(reply.delay)
        if reply.is_error:
            self._send_error(reply)
        elif body.get("stream"):
            self._send_stream(body, reply)
        else:
            self._send_json(200, self._message(body, reply))

    # -- rendering --
    def _message(self, body: dict, reply: Reply) -> dict:
        return {
            "id": _new_id("msg"), "type": "message", "role": "assistant",
            "model": body.get("model", "claude-fake"), "content": reply.content,
            "stop_reason": reply.stop_reason, "stop_sequence": None, "usage": _usage(body, reply),
        }

    def _send_json(self, status: int, payload: Any, headers: Optional[dict] = None) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("request-id", _new_id("req"))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)

    def _send_error(self, reply: Reply) -> None:
        payload = {"type": "error", "error": {"type": reply.error_type, "message": reply.error_message}}
        self._send_json(reply.status, payload, reply.headers)

    def _send_stream(self, body: dict, reply: Reply) -> None:
        msg = self._message(body, reply)
        usage = msg["usage"]
        start = dict(msg, content=[], stop_reason=None,
                     usage=dict(usage, output_tokens=1))
        events = [("message_start", {"type": "message_start", "message": start})]
        for i, block in enumerate(reply.content):
            kind = block.get("type")
            if kind == "text":
                events.append(("content_block_start", {"type": "content_block_start", "index": i,
                                                       "content_block": {"type": "text", "text": ""}}))
                events.append(("content_block_delta", {"type": "content_block_delta", "index": i,
                                                       "delta": {"type": "text_delta", "text": block["text"]}}))
            elif kind == "tool_use":
                events.append(("content_block_start", {"type": "content_block_start", "index": i,
                                                       "content_block": {"type": "tool_use", "id": block["id"],
                                                                         "name": block["name"], "input": {}}}))
                events.append(("content_block_delta", {"type": "content_block_delta", "index": i,
                                                       "delta": {"type": "input_json_delta",
                                                                 "partial_json": json.dumps(block["input"])}}))
            else:  # thinking or anything else: send as-is at start
                events.append(("content_block_start", {"type": "content_block_start", "index": i,
                                                       "content_block": block}))
            events.append(("content_block_stop", {"type": "content_block_stop", "index": i}))
        events.append(("message_delta", {"type": "message_delta",
                                         "delta": {"stop_reason": reply.stop_reason, "stop_sequence": None},
                                         "usage": {"output_tokens": usage["output_tokens"]}}))
        events.append(("message_stop", {"type": "message_stop"}))
        data = b"".join(f"event: {name}\ndata: {json.dumps(payload)}\n\n".encode() for name, payload in events)
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("request-id", _new_id("req"))
        self.end_headers()
        self.wfile.write(data)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, addr: tuple, fake: "FakeAnthropic") -> None:
        self.fake = fake
        super().__init__(addr, _Handler)


class FakeAnthropic:
    """The fake API server. Start with ``start()`` or use as a context manager."""

    def __init__(self, responder: Optional[Callable[[RecordedRequest], Optional[Reply]]] = None,
                 host: str = "127.0.0.1", port: int = 0) -> None:
        self.responder = responder
        self.requests: list[RecordedRequest] = []
        self.errors: list[BaseException] = []  # exceptions raised by the responder
        self._queue: list[Reply] = []
        self._lock = threading.Lock()
        self._addr = (host, port)
        self._httpd: Optional[_Server] = None
        self._thread: Optional[threading.Thread] = None

    @property
    def url(self) -> str:
        assert self._httpd is not None, "server not started"
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> "FakeAnthropic":
        self._httpd = _Server(self._addr, self)
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="fake-anthropic", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> "FakeAnthropic":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def enqueue(self, *replies: Reply) -> None:
        """Queue replies for the next requests, used before the responder."""
        with self._lock:
            self._queue.extend(replies)

    def messages_requests(self) -> list:
        """Only the ``POST .../v1/messages`` requests, in arrival order."""
        with self._lock:
            return [r for r in self.requests
                    if r.method == "POST" and urlsplit(r.path).path.endswith("/v1/messages")]

    def dump_requests(self, path: str) -> None:
        """Write the request log as JSON lines (for a test in another process)."""
        with self._lock:
            records = list(self.requests)
        with open(path, "w", encoding="utf-8") as fh:
            for r in records:
                fh.write(json.dumps({
                    "method": r.method, "path": r.path, "client": r.client, "at": r.at,
                    "headers": r.headers, "body": r.body, "bytes": len(r.raw), "status": r.status,
                    "reply": None if r.reply is None else {"content": r.reply.content,
                                                           "stop_reason": r.reply.stop_reason},
                }) + "\n")

    def _next_reply(self, rec: RecordedRequest) -> Reply:
        with self._lock:
            if self._queue:
                return self._queue.pop(0)
        if self.responder is not None:
            try:
                reply = self.responder(rec)
            except Exception as exc:  # surface to the test, answer 500 to the client
                self.errors.append(exc)
                return error(500, "api_error", f"fake responder failed: {exc!r}")
            if reply is not None:
                return reply
        return text("ok")


def main() -> None:  # pragma: no cover - manual use: python -m tests.fakes.fake_anthropic
    import argparse

    parser = argparse.ArgumentParser(description="Serve a fake Messages API that answers 'ok'.")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    with FakeAnthropic(port=args.port) as api:
        print(api.url, flush=True)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":  # pragma: no cover
    main()

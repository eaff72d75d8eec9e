"""Helpers for the executor, runner and watch tests (this module holds no tests).

``LocalHTTP`` is a real HTTP server on loopback with the routes the tests
need: JSON lists and objects, errors, redirects, a slow answer and a gate
that holds requests until the test opens it, counting how many are in
flight at once.
"""

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from brain_jobs import jobs


def wait_until(predicate, timeout=15.0, interval=0.05, what="condition"):
    """Poll ``predicate`` until it returns something truthy; fail the test after ``timeout`` s."""
    end = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > end:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def finished(job_id, db=None):
    """The job row once every sub-task is completed or failed, else None."""
    row = jobs.get_job(job_id, db=db)
    return row if all(s["status"] in ("completed", "failed") for s in row["sub_tasks"]) else None


def dispatch_event(job_id, db=None):
    return [e for e in jobs.get_history(job_id, db=db) if e["event"] == "dispatch"][-1]


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def _send(self, status, body=b"", ctype="application/json", headers=()):
        if not isinstance(body, bytes):
            body = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for k, v in headers:
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _handle(self):
        srv = self.server.owner
        with srv.lock:
            srv.hits.append((self.command, self.path))
        path = self.path
        if path == "/api/users":
            return self._send(200, [{"id": i} for i in range(5)])
        if path == "/api/posts":
            return self._send(200, {"data": [1, 2, 3], "next": None})
        if path == "/health":
            return self._send(200, {"status": "ok"})
        if path == "/text":
            return self._send(200, b"hello there\nsecond line", "text/plain")
        if path == "/auth" and self.command == "POST":
            return self._send(201, {"token": "t"})
        if path == "/boom":
            return self._send(500, {"error": "boom"})
        if path == "/redirect-same":
            return self._send(302, headers=[("Location", "/api/users")])
        if path == "/redirect-away":
            return self._send(302, headers=[("Location", srv.away_url + "/stolen")])
        if path == "/slow":
            time.sleep(3)
            return self._send(200, {"late": True})
        if path.startswith("/gate"):
            with srv.lock:
                srv.inflight += 1
                srv.max_inflight = max(srv.max_inflight, srv.inflight)
            try:
                srv.gate.wait(srv.gate_timeout)
                time.sleep(srv.hold)
            finally:
                with srv.lock:
                    srv.inflight -= 1
            return self._send(200, [path])
        return self._send(404, {"error": "not found"})

    do_GET = do_POST = do_HEAD = do_PUT = do_DELETE = _handle


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def handle_error(self, request, client_address):
        pass  # a client that gave up (a timeout under test) is expected


class LocalHTTP:
    """A loopback HTTP server for a test; ``url``, ``hits``, ``gate``, ``max_inflight``."""

    def __init__(self, host="127.0.0.1", away_url="http://127.0.0.2:9"):
        self.hits = []
        self.lock = threading.Lock()
        self.gate = threading.Event()
        self.gate_timeout = 20.0
        self.hold = 0.0
        self.inflight = self.max_inflight = 0
        self.away_url = away_url
        self.httpd = _Server((host, 0), _Handler)
        self.httpd.owner = self
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    @property
    def url(self):
        host, port = self.httpd.server_address[:2]
        return f"http://{host}:{port}"

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.gate.set()
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(5)


def cli(*args, cwd=None, env=None, timeout=30):
    """Run ``brain`` as a subprocess from ``cwd`` (the fixture ``brain`` cannot change directory)."""
    import os
    import subprocess
    import sys

    from tests.conftest import BRAIN

    full_env = dict(os.environ)
    full_env.update(env or {})
    return subprocess.run([sys.executable, str(BRAIN), *map(str, args)], capture_output=True, text=True,
                          env=full_env, cwd=cwd, timeout=timeout)

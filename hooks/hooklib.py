"""Plumbing shared by the hook scripts.

A hook reads one JSON payload on stdin, calls the library, and prints at
most one JSON answer. Whatever goes wrong inside, the host must not be
disturbed: the error is appended to ``<data dir>/hooks.log`` and the script
exits 0 with no output, so the host carries on as if the hook were absent.

Every file a hook writes is 0600 and every directory it creates 0700
(``private_file``, ``write_private``, ``private_dirs``): the data directory
holds logs and session state that other users must not read.
"""

import json
import os
import sys
import time
import traceback

PLUGIN_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if PLUGIN_ROOT not in sys.path:
    sys.path.insert(0, PLUGIN_ROOT)

from brain_jobs.paths import private_dirs  # noqa: E402  (re-exported for the hooks)

LOG_LIMIT = 1_000_000  # bytes; the log is rotated once to hooks.log.1 past this


def data_dir() -> str:
    """The plugin's persistent data directory (the host's ``CLAUDE_PLUGIN_DATA``)."""
    return os.environ.get("CLAUDE_PLUGIN_DATA") or os.path.join(os.path.expanduser("~"), ".brain")


def private_file(path: str, flags: int = os.O_WRONLY | os.O_CREAT | os.O_APPEND) -> int:
    """Open ``path`` (created 0600) and return the descriptor; a file left readable by
    others (an older version wrote them with the umask's mode) is made 0600."""
    fd = os.open(path, flags | getattr(os, "O_CLOEXEC", 0), 0o600)
    try:
        if os.fstat(fd).st_mode & 0o077:
            os.fchmod(fd, 0o600)
    except OSError:
        os.close(fd)
        raise
    return fd


def write_private(path: str, text: str, mode: int = 0o600) -> None:
    """Replace ``path`` with ``text`` atomically, as a file of ``mode`` (0600, or 0700 for a script)."""
    tmp = f"{path}.{os.getpid()}"
    with os.fdopen(private_file(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC), "w", encoding="utf-8") as fh:
        fh.write(text)
        if mode != 0o600:
            os.fchmod(fh.fileno(), mode)
    os.replace(tmp, path)


def log(message: str) -> None:
    """Append one line to the debug log; never raises."""
    try:
        directory = data_dir()
        private_dirs(directory)
        path = os.path.join(directory, "hooks.log")
        try:
            if os.path.getsize(path) > LOG_LIMIT:
                os.replace(path, path + ".1")
        except OSError:
            pass
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime())
        with os.fdopen(private_file(path), "a", encoding="utf-8") as fh:
            fh.write(f"{stamp} [{os.getpid()}] {message}\n")
    except Exception:  # the log is best effort; the host must never see a failure
        pass


def debug(message: str) -> None:
    """Log only when ``BRAIN_HOOK_DEBUG`` is set (decisions, timings)."""
    if os.environ.get("BRAIN_HOOK_DEBUG"):
        log(message)


def _record(name: str, raw: str) -> None:
    """Keep the raw payload when ``BRAIN_HOOK_RECORD`` names a directory (to build test fixtures)."""
    directory = os.environ.get("BRAIN_HOOK_RECORD")
    if not directory:
        return
    private_dirs(directory)
    write_private(os.path.join(directory, f"{time.time():.6f}-{os.getpid()}-{name}.json"), raw)


def run(name: str, handler) -> None:
    """Run ``handler(payload) -> dict | None`` as hook ``name``; print its answer; always exit 0."""
    try:
        raw = sys.stdin.read()
        _record(name, raw)
        payload = json.loads(raw) if raw.strip() else {}
        if not isinstance(payload, dict):
            raise ValueError(f"payload is {type(payload).__name__}, expected an object")
        answer = handler(payload)
        if answer:
            sys.stdout.write(json.dumps(answer))
            sys.stdout.flush()
    except Exception as exc:
        log(f"{name}: {type(exc).__name__}: {exc}\n{traceback.format_exc()}")
    sys.exit(0)

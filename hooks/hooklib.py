"""Plumbing shared by the hook scripts.

A hook reads one JSON payload on stdin, calls the library, and prints at
most one JSON answer. Whatever goes wrong inside, the host must not be
disturbed: the error is appended to ``<data dir>/hooks.log`` and the script
exits 0 with no output, so the host carries on as if the hook were absent.
"""

import json
import os
import sys
import time
import traceback

PLUGIN_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LOG_LIMIT = 1_000_000  # bytes; the log is rotated once to hooks.log.1 past this


def data_dir() -> str:
    """The plugin's persistent data directory (the host's ``CLAUDE_PLUGIN_DATA``)."""
    return os.environ.get("CLAUDE_PLUGIN_DATA") or os.path.join(os.path.expanduser("~"), ".brain")


def log(message: str) -> None:
    """Append one line to the debug log; never raises."""
    try:
        directory = data_dir()
        os.makedirs(directory, mode=0o700, exist_ok=True)
        path = os.path.join(directory, "hooks.log")
        try:
            if os.path.getsize(path) > LOG_LIMIT:
                os.replace(path, path + ".1")
        except OSError:
            pass
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime())
        with open(path, "a", encoding="utf-8") as fh:
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
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, f"{time.time():.6f}-{os.getpid()}-{name}.json")
    with open(path, "w", encoding="utf-8") as fh:
        fh.write(raw)


def run(name: str, handler) -> None:
    """Run ``handler(payload) -> dict | None`` as hook ``name``; print its answer; always exit 0."""
    try:
        raw = sys.stdin.read()
        _record(name, raw)
        payload = json.loads(raw) if raw.strip() else {}
        if not isinstance(payload, dict):
            raise ValueError(f"payload is {type(payload).__name__}, expected an object")
        if PLUGIN_ROOT not in sys.path:
            sys.path.insert(0, PLUGIN_ROOT)
        answer = handler(payload)
        if answer:
            sys.stdout.write(json.dumps(answer))
            sys.stdout.flush()
    except Exception as exc:
        log(f"{name}: {type(exc).__name__}: {exc}\n{traceback.format_exc()}")
    sys.exit(0)

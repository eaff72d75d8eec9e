"""Time in UTC, with one seam for tests.

All stored times are ISO 8601 UTC strings of fixed width
(``2026-11-29T01:54:41.123Z``), so they sort and compare as text in every
backend. Tests move time forward without sleeping by setting
``BRAIN_NOW`` (epoch seconds, read on every call, so it also reaches CLI
subprocesses) or by calling :func:`set_clock`.
"""

import os
import time

_override = None


def set_clock(fn) -> None:
    """Use ``fn() -> epoch seconds`` as the clock; ``None`` restores real time."""
    global _override
    _override = fn


def now() -> float:
    """Current time in epoch seconds."""
    if _override is not None:
        return _override()
    fake = os.environ.get("BRAIN_NOW")
    if fake:
        return float(fake)
    return time.time()


_recent = {}


def iso(epoch: float) -> str:
    """Epoch seconds to the stored text form."""
    text = _recent.get(epoch)
    if text is None:  # one write formats the same few instants many times
        millis = int(epoch * 1000)
        text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(millis // 1000)) + f".{millis % 1000:03d}Z"
        if len(_recent) >= 8:
            _recent.clear()
        _recent[epoch] = text
    return text


def epoch(text: str) -> float:
    """The stored text form back to epoch seconds."""
    from datetime import datetime, timezone  # not on the report path

    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=timezone.utc).timestamp()


def now_iso() -> str:
    return iso(now())

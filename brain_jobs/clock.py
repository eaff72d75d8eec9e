"""Time in UTC, with one seam for tests.

All stored times are ISO 8601 UTC strings of fixed width
(``2026-11-29T01:54:41.123Z``), so they sort and compare as text in every
backend. Tests move time forward without sleeping by setting
``BRAIN_NOW`` (epoch seconds, read on every call, so it also reaches CLI
subprocesses) or by calling :func:`set_clock`.

The clock decides expiry for every job in the store, not only for the
caller's: a process whose clock runs ahead expires and purges other
people's jobs. A clock set by hand (``BRAIN_NOW``, :func:`set_clock`) is
therefore refused where it would do that from implausibly far ahead of the
store (``check_leap``). The system clock is trusted: on one machine every
process shares it; machines that share a PostgreSQL store must keep theirs
in step (NTP).
"""

import os
import time

from .errors import InvalidInput

_override = None
MAX_EPOCH = 253402300800  # 10000-01-01: the stored form has four digits of year
# How far ahead of the newest job in the store a clock set by hand may be when it expires
# or purges jobs: the longest TTL (validate.MAX_TTL). Past it, every job ever stored
# would be expired at once, the mark of a wrong clock rather than of time passing.
MAX_LEAP = 30 * 86400


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
        return _parse(fake)
    return time.time()


def _parse(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 <= value < MAX_EPOCH:  # also refuses nan and inf
        raise InvalidInput(f"BRAIN_NOW={text!r} is not a time in epoch seconds (0 to {MAX_EPOCH - 1}); "
                           "unset it: it is a test setting that moves the clock for every job")
    return value


def is_set_by_hand() -> bool:
    """True when the time comes from ``BRAIN_NOW`` or :func:`set_clock`, not from the system."""
    return _override is not None or bool(os.environ.get("BRAIN_NOW"))


def check_leap(now: float, newest) -> None:
    """Refuse a clock set by hand that is more than ``MAX_LEAP`` ahead of ``newest`` (the
    stored time of the newest job, or None for an empty store) before it expires or purges
    anything. Cheap to call: it does nothing for the system clock."""
    if newest is None or not is_set_by_hand():
        return
    ahead = now - epoch(newest)
    if ahead > MAX_LEAP:
        source = f"BRAIN_NOW={os.environ['BRAIN_NOW']}" if _override is None else "the clock given to set_clock"
        raise InvalidInput(
            f"{source} ({iso(now)}) is {ahead / 86400:.0f} days after the newest job in the store ({newest}): "
            "it would expire every job; unset BRAIN_NOW, which is a test setting, or set it near the store's time"
        )


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

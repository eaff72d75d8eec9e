"""JSON for the stored columns: the standard library first, orjson in a busy process.

Encoding and decoding a job's ``sub_tasks`` and ``history`` is most of what
a write does while it holds the lock. orjson does it several times faster,
but importing it (it pulls in ``dataclasses`` and ``inspect``) costs more
than a single report saves (figures: docs/benchmarks.md). So a process starts with the standard
library and switches to orjson, when it is installed, at its second write
transaction. A one-shot ``brain job update`` never pays the import; a
runner, a worker or any program making many writes gets the fast codec.
``BRAIN_JSON=stdlib`` keeps the standard library throughout.

Both produce compact JSON with keys in insertion order and non-ASCII text
as is, and each reads what the other wrote.

Reading never changes a value silently. orjson reads an integer beyond 64
bits as a float and refuses one beyond 1e308; the standard library reads
every integer exactly. So text holding a run of 19 digits or more (rare:
``validate.data`` keeps brain's own integers within 64 bits, but another
program may write any) and text orjson refuses are read by the standard
library. Either way a number that is not JSON (``NaN``, ``Infinity``) or
that overflows a float (``1e400``) raises ``ValueError``, as does an
integer of more than 4,300 digits (Python's limit): an error, never
another value.
"""

import json
import math
import os


def _finite(text: str) -> float:
    number = float(text)
    if not math.isfinite(number):
        raise ValueError(f"the number {text[:40]} is beyond the range of a float")
    return number


def _not_json(name: str):
    raise ValueError(f"{name} is not JSON")


_std_dumps = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode
_std_loads = json.JSONDecoder(parse_float=_finite, parse_constant=_not_json).decode


def _std_loads_bytes(data):
    """Text or UTF-8 bytes (what a driver hands over)."""
    return _std_loads(data if isinstance(data, str) else bytes(data).decode("utf-8", "surrogatepass"))


dumps = _std_dumps
loads = _std_loads
loads_bytes = _std_loads_bytes


def _std_dumpb(value) -> bytes:
    return _std_dumps(value).encode()


dumpb = _std_dumpb  # the same JSON as ``dumps``, as UTF-8 bytes
_writes = 0


def note_write() -> None:
    """Count one write transaction; the second one switches to orjson when it is installed."""
    global _writes
    _writes += 1
    if _writes == 2 and os.environ.get("BRAIN_JSON", "").lower() != "stdlib":
        use_orjson()


def use_orjson() -> bool:
    """Switch this process to orjson now; False when it is not installed."""
    global dumps, dumpb, loads, loads_bytes
    try:
        import orjson
    except ImportError:
        return False
    option = orjson.OPT_NON_STR_KEYS  # as json.dumps: {1: "a"} is stored as {"1": "a"}

    def fast_dumps(value):
        try:
            return orjson.dumps(value, option=option).decode()
        except (TypeError, orjson.JSONEncodeError):
            return _std_dumps(value)  # e.g. an integer beyond 64 bits, which json handles

    def fast_dumpb(value):
        try:
            return orjson.dumps(value, option=option)
        except (TypeError, orjson.JSONEncodeError):
            return _std_dumpb(value)

    def fast_loads(data):
        raw = data.encode("utf-8", "surrogatepass") if isinstance(data, str) else data
        if _LONG_NUMBER in raw.translate(_DIGITS):
            return _std_loads_bytes(data)  # maybe an integer orjson would turn into a float
        try:
            return orjson.loads(raw)
        except orjson.JSONDecodeError:
            return _std_loads_bytes(data)  # e.g. an integer beyond 1e308; invalid JSON raises there

    dumps, dumpb, loads, loads_bytes = fast_dumps, fast_dumpb, fast_loads, fast_loads
    return True


# ``raw.translate(_DIGITS)`` turns every digit into "0" and every other byte into a space, so
# a run of 19 digits is one substring search, cheaper than a regular expression.
_DIGITS = bytes(0x30 if 0x30 <= b <= 0x39 else 0x20 for b in range(256))
_LONG_NUMBER = b"0" * 19  # -2**63 has 19 digits; every integer of 18 digits fits in 64 bits


def use_stdlib() -> None:
    """Back to the standard library (tests)."""
    global dumps, dumpb, loads, loads_bytes, _writes
    dumps, dumpb, loads, loads_bytes, _writes = _std_dumps, _std_dumpb, _std_loads, _std_loads_bytes, 0

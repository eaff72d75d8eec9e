"""JSON for the stored columns: the standard library first, orjson in a busy process.

Encoding and decoding a job's ``sub_tasks`` and ``history`` is most of what
a write does while it holds the lock. orjson does it 4-5 times faster, but
importing it costs ~7 ms (it pulls in ``dataclasses`` and ``inspect``):
more than a single report saves. So a process starts with the standard
library and switches to orjson, when it is installed, at its second write
transaction. A one-shot ``brain job update`` never pays the import; a
runner, a worker or any program making many writes gets the fast codec.
``BRAIN_JSON=stdlib`` keeps the standard library throughout.

Both produce compact JSON with keys in insertion order and non-ASCII text
as is, and each reads what the other wrote.
"""

import json
import os

_std_dumps = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode
_std_loads = json.JSONDecoder().decode

dumps = _std_dumps
loads = _std_loads
loads_bytes = json.loads  # text or UTF-8 bytes (what a driver hands over)


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

    dumps, dumpb, loads, loads_bytes = fast_dumps, fast_dumpb, orjson.loads, orjson.loads
    return True


def use_stdlib() -> None:
    """Back to the standard library (tests)."""
    global dumps, dumpb, loads, loads_bytes, _writes
    dumps, dumpb, loads, loads_bytes, _writes = _std_dumps, _std_dumpb, _std_loads, json.loads, 0

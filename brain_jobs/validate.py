"""Input validation: every limit the design promises, in one place.

Each function returns the normalised value or raises
:class:`~brain_jobs.errors.InvalidInput` with a message that names the
limit. Nothing here touches the store, so a refused input changes nothing.
"""

import json
import math
import re

from .errors import InvalidInput
from .render import invisible, printable as _inert
from .vocabulary import STATUSES, truncate_result

MAX_QUERY = 500
MAX_TTL = 30 * 24 * 3600
MAX_PROMPT = 10_000
MAX_AGENT_ID = 100
MAX_SUBTASKS = 10_000
MAX_TOOLS = 100
MAX_TOOL_NAME = 100
MAX_DATA = 100_000  # characters of the job data as compact JSON
MAX_DATA_DEPTH = 32
# Numbers in job data: what every reader (json, orjson, PostgreSQL's jsonb) gives back unchanged.
# orjson reads integers beyond 64 bits as floats, and jsonb writes a float of 1e16 or more as
# integer digits (so it comes back an int) and -0.0 as 0.0.
MIN_INT, MAX_INT = -(2 ** 63), 2 ** 63 - 1
MAX_FLOAT = 1e16  # exclusive

_JOB_ID = re.compile(r"[A-Za-z0-9]{1,64}")
_SUB_ID = re.compile(r"sub_([1-9][0-9]{0,5})")
_AGENT_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:@-]{0,99}")
# In a prompt: C0 controls except tab and newline, DEL, and C1 controls (which include CSI).
_FORBIDDEN = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")
# Lone surrogates: what Python makes of bytes that are not UTF-8 (argv, files).
_SURROGATE = re.compile(r"[\ud800-\udfff]")


def _check_encoding(value: str, what: str) -> None:
    if _SURROGATE.search(value):
        raise InvalidInput(f"{what} contains bytes that are not valid UTF-8: fix its encoding")


def job_id(value) -> str:
    """Return the bare job id; accepts ``abc123`` and ``job_abc123``."""
    if not isinstance(value, str):
        raise InvalidInput(f"job id must be a string, got {type(value).__name__}")
    bare = value[4:] if value.startswith("job_") else value
    if not _JOB_ID.fullmatch(bare):
        raise InvalidInput(
            f"invalid job id {printable(value)!s}: use the letters and digits "
            "printed by `brain job create` (optionally prefixed with job_)"
        )
    return bare


def sub_task_id(value) -> str:
    """Return a well-formed ``sub_<n>`` id; whether the job has it is checked later."""
    if not isinstance(value, str) or not _SUB_ID.fullmatch(value):
        raise InvalidInput(
            f"invalid sub-task id {printable(value)}: expected sub_<n>, e.g. sub_1"
        )
    return value


def agent_id(value):
    """Return a valid agent id or None."""
    if value is None:
        return None
    if not isinstance(value, str) or not _AGENT_ID.fullmatch(value):
        raise InvalidInput(
            f"invalid agent id {printable(value)}: use letters, digits and _ . : @ - "
            f"(at most {MAX_AGENT_ID} characters)"
        )
    return value


def _text(value, what: str, limit: int, forbidden=_FORBIDDEN) -> str:
    if not isinstance(value, str):
        raise InvalidInput(f"{what} must be text, got {type(value).__name__}")
    if not value.strip():
        raise InvalidInput(f"{what} is empty")
    if len(value) > limit:
        raise InvalidInput(
            f"{what} is {len(value)} characters; the limit is {limit}: shorten it or split it"
        )
    _check_encoding(value, what)
    bad = forbidden.search(value)
    if bad:
        raise InvalidInput(f"{what} contains {_describe(bad.group())}: remove it")
    return value


def _describe(char: str) -> str:
    """``the control character U+0009`` or ``the invisible character U+202E (RIGHT-TO-LEFT OVERRIDE)``."""
    code = ord(char)
    if code < 0x20 or 0x7F <= code <= 0x9F:
        return f"the control character U+{code:04X}"
    import unicodedata  # only on this error path

    name = unicodedata.name(char, "")
    return f"the invisible character U+{code:04X}" + (f" ({name})" if name else "")


def query(value) -> str:
    """A sub-task query: 1 to 500 characters shown exactly as given. Never cut.

    Refused: every control character (tab and newline too: a query is one line
    of a worker's prompt) and every invisible or direction-changing character
    (``render.invisible()``), so what a person reads is what the worker gets.
    """
    return _text(value, "sub-task query", MAX_QUERY, invisible())


def prompt(value) -> str:
    """The job prompt: 1 to 10,000 characters, no control characters but tab and newline."""
    return _text(value, "prompt", MAX_PROMPT)


def tools_required(values) -> list:
    """The job's tool names: a list of at most 100 names of 1 to 100 characters, each one
    line of visible text (the rules of a query)."""
    if values is None:
        return []
    if isinstance(values, str) or not isinstance(values, list):
        raise InvalidInput("tools_required must be a list of names")
    if len(values) > MAX_TOOLS:
        raise InvalidInput(f"tools_required has {len(values)} names; the limit is {MAX_TOOLS}")
    return [_text(v, "tool name", MAX_TOOL_NAME, invisible()) for v in values]


def files(values) -> list:
    """The files a job's workers search (``--file``, ``data.files``): a list of paths, each one line
    of visible text of 1 to 500 characters (a query's rules: a path goes into a worker's prompt)."""
    if values is None:
        return []
    if isinstance(values, str) or not isinstance(values, list):
        raise InvalidInput('data.files must be a list of paths, e.g. {"files": ["src/"]}')
    return [_text(v, "file path", MAX_QUERY, invisible()) for v in values]


def subtasks(values) -> list:
    """A non-empty list of valid queries."""
    if isinstance(values, str) or not isinstance(values, (list, tuple)):
        raise InvalidInput("subtasks must be a list of queries")
    if not values:
        raise InvalidInput("a distributed job needs at least one --subtask")
    if len(values) > MAX_SUBTASKS:
        raise InvalidInput(f"{len(values)} sub-tasks; the limit is {MAX_SUBTASKS}")
    return [query(v) for v in values]


def result(value):
    """A result: None, or text cut to at most 200 characters with a visible mark.

    NUL is refused; other control characters are stored as given and
    neutralised on display (see ``render.printable``).
    """
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidInput(f"result must be text, got {type(value).__name__}")
    if "\x00" in value:
        raise InvalidInput("result contains a NUL character: remove it")
    _check_encoding(value, "result")
    return truncate_result(value)


def ttl(value) -> int:
    """TTL in whole seconds, from 1 second to 30 days."""
    if isinstance(value, bool):
        raise InvalidInput("ttl must be a whole number of seconds")
    if isinstance(value, str):
        if not re.fullmatch(r"[0-9]{1,9}", value.strip()):
            raise InvalidInput(f"ttl {printable(value)} is not a whole number of seconds")
        value = int(value)
    if not isinstance(value, int):
        raise InvalidInput("ttl must be a whole number of seconds")
    if not 1 <= value <= MAX_TTL:
        raise InvalidInput(f"ttl {value} is out of range: use 1 to {MAX_TTL} seconds (30 days)")
    return value


def positive_int(value, what: str) -> int:
    """A whole number of at least 1 (timeouts, attempts)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InvalidInput(f"{what} must be a whole number, at least 1")
    return value


def status(value) -> str:
    """One of the seed's four statuses."""
    if value not in STATUSES:
        raise InvalidInput(
            f"unknown status {printable(value)}: use one of {', '.join(STATUSES)}"
        )
    return value


def data(value) -> dict:
    """Job data: a JSON object, given as a dict or as JSON text, that every reader gives back
    unchanged after any number of writes (either codec, either backend).

    Accepted: objects with text keys, lists, text (no NUL, valid UTF-8), true,
    false, null, integers from -2**63 to 2**63-1, and finite floats below 1e16
    in magnitude other than -0.0; at most ``MAX_DATA_DEPTH`` deep and
    ``MAX_DATA`` characters as compact JSON. Anything else is refused, naming
    where it is, rather than stored changed.
    """
    if value is None:
        return {}
    if isinstance(value, str):
        value = _parse_data(value)
    if not isinstance(value, dict):
        raise InvalidInput("--data must be a JSON object, e.g. '{\"key\": \"value\"}'")
    _check_json(value)
    size = len(json.dumps(value, ensure_ascii=False, separators=(",", ":")))
    if size > MAX_DATA:
        raise InvalidInput(f"data is {size} characters as JSON; the limit is {MAX_DATA}: keep big inputs in files "
                           "(--file) and pass their paths")
    return value


def _parse_data(text: str):
    try:
        return json.loads(text, parse_int=_json_int, parse_constant=_json_constant)
    except json.JSONDecodeError as exc:
        raise InvalidInput(f"--data is not valid JSON ({exc.msg} at position {exc.pos})") from None
    except RecursionError:
        raise InvalidInput(f"--data is nested too deeply: the limit is {MAX_DATA_DEPTH} levels") from None


def _json_int(digits: str) -> int:
    # Checked before int(): Python refuses to convert more than 4,300 digits.
    if len(digits.lstrip("-")) > 19:
        raise InvalidInput(f"--data holds an integer of {len(digits.lstrip('-'))} digits, {_INT_RANGE}")
    return int(digits)


def _json_constant(name: str):
    raise InvalidInput(f"--data holds {name}, which is not JSON: use a number or null")


_INT_RANGE = f"outside the signed 64-bit range: use {MIN_INT} to {MAX_INT}, or write it as text"


def _check_json(value) -> None:
    """Refuse anything in ``value`` that would not read back unchanged (see ``data``).

    Iterative, so a structure nested too deep (or holding itself) is refused, not a
    RecursionError. Each item carries its place as ``(parent place, key)``, spelled out
    only for a message.
    """
    todo = [(value, 1, None)]
    while todo:
        item, depth, place = todo.pop()
        if isinstance(item, str):
            _json_text(item, place)
        elif item is None or isinstance(item, bool):
            continue
        elif isinstance(item, int):
            if not MIN_INT <= item <= MAX_INT:
                raise InvalidInput(f"{_where(place)} is an integer {_INT_RANGE}")
        elif isinstance(item, float):
            _json_float(item, place)
        elif isinstance(item, (dict, list)):
            if depth > MAX_DATA_DEPTH:
                raise InvalidInput(f"data is nested more than {MAX_DATA_DEPTH} levels deep at {_where(place)}: "
                                   "flatten it")
            if isinstance(item, list):
                todo.extend((v, depth + 1, (place, i)) for i, v in enumerate(item))
                continue
            for k, v in item.items():
                if not isinstance(k, str):
                    raise InvalidInput(f"{_where(place)} has the key {printable(k, 30)}: keys must be text")
                _json_text(k, place)
                todo.append((v, depth + 1, (place, k)))
        else:
            hint = " (use a list)" if isinstance(item, tuple) else ""
            raise InvalidInput(f"{_where(place)} is a {type(item).__name__}, which is not JSON{hint}")


def _where(place) -> str:
    """``data.files[2]`` for ``((None, "files"), 2)``; neutralised and cut for a message."""
    keys = []
    while place is not None:
        place, key = place
        keys.append(f"[{key}]" if isinstance(key, int) else f".{key}")
    text = _inert("data" + "".join(reversed(keys)))
    return text if len(text) <= 80 else text[:79] + "…"


def _json_text(text: str, place) -> None:
    if "\x00" in text:
        # SQLite would keep it and PostgreSQL's jsonb refuses it: refuse it on both.
        raise InvalidInput(f"{_where(place)} contains a NUL character: remove it")
    _check_encoding(text, "data")


def _json_float(number: float, place) -> None:
    if not math.isfinite(number):
        raise InvalidInput(f"{_where(place)} is {number}, which is not JSON: use a finite number or null")
    if abs(number) >= MAX_FLOAT:
        raise InvalidInput(f"{_where(place)} is the float {number!r}, which PostgreSQL would give back as an "
                           "integer: floats must be below 1e16 in magnitude; use an integer or text")
    if number == 0 and math.copysign(1, number) < 0:
        raise InvalidInput(f"{_where(place)} is -0.0, which PostgreSQL gives back as 0.0: use 0.0")


def printable(value, limit: int = 60) -> str:
    """A short, safe rendering of untrusted input for an error message: its ``repr``,
    neutralised by ``render.printable`` and cut to ``limit`` characters."""
    try:
        text = _inert(repr(value))
    except ValueError:  # an integer too long to spell (Python's 4,300-digit limit)
        text = f"<a {type(value).__name__}>"
    return text if len(text) <= limit else text[: limit - 1] + "…"

"""Input validation: every limit the design promises, in one place.

Each function returns the normalised value or raises
:class:`~scripts.memory.errors.InvalidInput` with a message that names the
limit. Nothing here touches the store, so a refused input changes nothing.
"""

import json
import re

from .errors import InvalidInput

MAX_QUERY = 500
MAX_RESULT = 200
MAX_TTL = 30 * 24 * 3600
MAX_PROMPT = 10_000
MAX_AGENT_ID = 100
MAX_SUBTASKS = 10_000
TRUNCATION_MARK = "…"

STATUSES = ("pending", "running", "completed", "failed")
FINAL = ("completed", "failed")

_JOB_ID = re.compile(r"[A-Za-z0-9]{1,64}")
_SUB_ID = re.compile(r"sub_([1-9][0-9]{0,5})")
_AGENT_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:@-]{0,99}")
# C0 controls except tab and newline, DEL, and C1 controls (which include CSI).
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


def _text(value, what: str, limit: int) -> str:
    if not isinstance(value, str):
        raise InvalidInput(f"{what} must be text, got {type(value).__name__}")
    if not value.strip():
        raise InvalidInput(f"{what} is empty")
    if len(value) > limit:
        raise InvalidInput(
            f"{what} is {len(value)} characters; the limit is {limit}: shorten it or split it"
        )
    bad = _FORBIDDEN.search(value)
    if bad:
        raise InvalidInput(
            f"{what} contains the control character U+{ord(bad.group()):04X}: remove it"
        )
    _check_encoding(value, what)
    return value


def query(value) -> str:
    """A sub-task query: 1 to 500 characters, no control characters. Never cut."""
    return _text(value, "sub-task query", MAX_QUERY)


def prompt(value) -> str:
    """The job prompt: 1 to 10,000 characters, no control characters."""
    return _text(value, "prompt", MAX_PROMPT)


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
    if len(value) > MAX_RESULT:
        value = value[: MAX_RESULT - len(TRUNCATION_MARK)] + TRUNCATION_MARK
    return value


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
    """Job data: a JSON object, given as a dict or as JSON text."""
    if value is None:
        return {}
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError as exc:
            raise InvalidInput(f"--data is not valid JSON ({exc.msg} at position {exc.pos})")
    if not isinstance(value, dict):
        raise InvalidInput("--data must be a JSON object, e.g. '{\"key\": \"value\"}'")
    try:
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise InvalidInput(f"data is not JSON-serialisable: {exc}")
    for text in _strings(value):
        if "\x00" in text:
            # SQLite would keep it and PostgreSQL's jsonb refuses it: refuse it on both.
            raise InvalidInput("data contains a NUL character: remove it")
        _check_encoding(text, "data")
    return value


def _strings(value):
    """Every string in a JSON value, keys included."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for k, v in value.items():
            yield from _strings(k)
            yield from _strings(v)
    elif isinstance(value, list):
        for v in value:
            yield from _strings(v)


def printable(value, limit: int = 60) -> str:
    """A short, safe rendering of untrusted input for an error message."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"

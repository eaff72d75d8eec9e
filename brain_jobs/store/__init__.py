"""Storage: ``open_store``, and the column names and lock timeout every store shares.

The storage contract (what ``Store`` and ``Transaction`` promise, with the
concurrency guarantees) is written once, as code, in ``contract.py``. The
stores: ``sqlite`` (the default: a file), ``postgres`` (a server shared by
many machines) and ``memory`` (a test double inside one process).
"""

import os

from ..errors import InvalidInput
from ..paths import default_target

COLUMNS = (
    "job_id", "created_at", "ttl", "expires_at", "data", "iteration", "status",
    "tools_required", "history", "type", "sub_tasks", "consolidated_result",
)
JSON_COLUMNS = ("data", "tools_required", "history", "sub_tasks", "consolidated_result")
MAX_LOCK_TIMEOUT = 3600


def env_lock_timeout() -> float:
    """``BRAIN_LOCK_TIMEOUT``: seconds a writer waits for the lock (0 = do not wait), read once here for every store.

    Raises ``InvalidInput`` unless it is a number of seconds from 0 to ``MAX_LOCK_TIMEOUT``.
    """
    raw = os.environ.get("BRAIN_LOCK_TIMEOUT") or "10"
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not 0 <= value <= MAX_LOCK_TIMEOUT:  # also refuses nan
        raise InvalidInput(
            f"BRAIN_LOCK_TIMEOUT={raw!r} is not a number of seconds from 0 to {MAX_LOCK_TIMEOUT}"
        )
    return value


def open_store(target=None):
    """Open the store at ``target``: a PostgreSQL URL, ``memory://NAME`` or a SQLite file path.

    ``None`` means the configured default (see ``paths``). ``memory://``
    stores live inside this process (see ``memory``).
    """
    target = target or default_target()
    if target.startswith(("postgresql://", "postgres://")):
        from .postgres import PostgresStore

        return PostgresStore(target)
    if target.startswith("memory://"):
        from .memory import MemoryStore

        return MemoryStore(target)
    if "://" in target:
        raise InvalidInput(
            f"unsupported database URL scheme in {target.split('://')[0]}://: use a file path for SQLite, "
            "postgresql://... for PostgreSQL or memory://NAME for an in-process test store"
        )
    from .sqlite import SQLiteStore

    return SQLiteStore(target)

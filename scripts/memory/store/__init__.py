"""Storage: ``open_store`` and the column names every store shares.

The storage contract (what ``Store`` and ``Transaction`` promise, with the
concurrency guarantees) is written once, as code, in ``contract.py``. The
stores: ``sqlite`` (the default: a file), ``postgres`` (a server shared by
many machines) and ``memory`` (a test double inside one process).
"""

from ..errors import InvalidInput
from ..paths import default_target

COLUMNS = (
    "job_id", "created_at", "ttl", "expires_at", "data", "iteration", "status",
    "tools_required", "history", "type", "sub_tasks", "consolidated_result",
)
JSON_COLUMNS = ("data", "tools_required", "history", "sub_tasks", "consolidated_result")


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

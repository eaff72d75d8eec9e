"""The storage contract, written down once.

Job logic (``scripts.memory.jobs``) talks to storage only through the two
classes below; it never imports a driver or writes SQL. Each backend
(``sqlite``, ``postgres``) implements them.

A *row* is a dict with exactly the seed's twelve columns::

    job_id str, created_at str (ISO UTC), ttl int, expires_at str (ISO UTC),
    data dict, iteration int, status str, tools_required list,
    history list, type str, sub_tasks list, consolidated_result dict | None

Times are the fixed-width text of ``clock.iso`` so they compare as text.

``Store``
    ``read(job_id) -> row | None``
        A committed snapshot, taken without the write lock.
    ``read_all(active_only) -> [row]``
        Every job (or only those not yet completed/failed), newest first.
    ``write() -> context manager yielding a Transaction``
        One exclusive write transaction. It cannot interleave with any
        other writer, in this process or another, on this machine or
        another. It commits when the block exits normally and rolls back
        when it raises. Waiting for it is bounded: past the lock timeout
        it raises ``StoreBusy``. (SQLite: one writer at a time, under the
        file lock. PostgreSQL: ``get`` locks the job's row until commit,
        so writers of one job take turns and writers of different jobs
        run side by side; ``housekeeping`` and ``claimable`` skip rows
        another writer holds rather than wait for them.)
    ``wait(timeout) -> bool``
        Block until another connection commits a write, or ``timeout``
        seconds pass (False). It may wake early; the first call returns
        True at once, when it starts listening, so callers look, wait,
        look again. One thread at a time. (PostgreSQL: ``LISTEN``/
        ``NOTIFY``, sent by every commit that changed a row. SQLite: a
        second connection polls ``PRAGMA data_version``.)
    ``close()``

``Transaction``
    ``get(job_id, lazy=False) -> row | None``
                                       the current row, locked until commit. With
                                       ``lazy`` the backend may give ``sub_tasks`` and
                                       ``history`` as the read-on-demand views of
                                       ``layout`` (list-like; ``replace`` writes back
                                       only what changed); only for writes whose
                                       caller never uses the row itself
    ``insert(row)``                    a new row (the id is new)
    ``replace(row)``                   store every column of an existing row
    ``delete(job_id) -> bool``
    ``housekeeping(now, cutoff) -> ([job_id], int)``
                                       the expiry sweep's two parts, in one statement
                                       where the backend can (writes run it often):
                                       the unfinished jobs with ``expires_at <= now``,
                                       each locked like ``get``; and how many finished
                                       jobs it deleted whose ``expires_at`` and
                                       ``consolidated_result.consolidated_at`` (when the
                                       job finished) are both before ``cutoff``
    ``newest() -> str | None``         the latest ``created_at`` of any job (None: no job);
                                       asked only when the clock is set by hand (``clock``)
    ``claimable(pool, now, limit, wait=False) -> [job_id]``
                                       the worker pool's one query (see ``pool``):
                                       unfinished jobs, oldest first, with a sub-task
                                       whose ``pool`` is ``pool`` and that is pending,
                                       or running with ``lease_until <= now``; each
                                       returned row is locked like ``get``. Rows held by
                                       another writer are skipped unless ``wait``.

Driver errors are translated at this boundary into ``StoreError`` /
``StoreBusy`` with a message that says what to do.
"""

from ..errors import InvalidInput
from ..paths import default_target

COLUMNS = (
    "job_id", "created_at", "ttl", "expires_at", "data", "iteration", "status",
    "tools_required", "history", "type", "sub_tasks", "consolidated_result",
)
JSON_COLUMNS = ("data", "tools_required", "history", "sub_tasks", "consolidated_result")


def open_store(target=None):
    """Open the store at ``target``: a PostgreSQL URL or a SQLite file path.

    ``None`` means the configured default (see ``paths``).
    """
    target = target or default_target()
    if target.startswith(("postgresql://", "postgres://")):
        from .postgres import PostgresStore

        return PostgresStore(target)
    if "://" in target:
        raise InvalidInput(
            f"unsupported database URL scheme in {target.split('://')[0]}://: "
            "use a file path for SQLite or postgresql://... for PostgreSQL"
        )
    from .sqlite import SQLiteStore

    return SQLiteStore(target)

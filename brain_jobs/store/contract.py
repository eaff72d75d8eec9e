"""The storage contract, written down once: what every store promises the job logic.

Job logic (``jobs``, ``pool`` and through them ``watch``, ``runner``,
``worker`` and the plugin's hooks) talks to storage only through the two
protocols below; it never imports a driver or writes SQL. Three stores
implement them: ``sqlite.SQLiteStore`` (the default), ``postgres.PostgresStore``
and ``memory.MemoryStore`` (a test double). ``tests/test_store_contract.py``
checks every promise on each of them, so a promise stated here is one that
test holds every store to. Nothing imports this module at run time: the
stores conform by shape (a ``Protocol`` needs no inheritance).

A *row* is a dict with exactly the seed's twelve columns (``COLUMNS``)::

    job_id str, created_at str (ISO UTC), ttl int, expires_at str (ISO UTC),
    data dict, iteration int, status str, tools_required list,
    history EventLog, type str, sub_tasks SubTaskRecord, consolidated_result dict | None

``history`` and ``sub_tasks`` are the job record of ``record.py`` (stored
as JSON arrays): reads hand its plain implementation (lists), a write's
``get`` may hand views; ``insert`` and ``replace`` take either, or plain
lists. A stored value that is not an array is handed as it is.
Times are the fixed-width text of ``clock.iso``, so they compare as text.
A row handed out is the caller's own: changing it changes nothing stored
until it is written back with ``Transaction.replace``.

Driver errors are translated at this boundary into ``StoreError`` /
``StoreBusy`` with a message that says what to do.
"""

from __future__ import annotations

from typing import ContextManager, Optional, Protocol, runtime_checkable


@runtime_checkable
class Transaction(Protocol):
    """One write transaction, handed out by ``Store.write``; valid only inside its ``with`` block.

    Reads inside it see its own writes. Nothing it does is visible to anyone
    else until the block exits normally, and nothing of it survives when
    the block raises.
    """

    def get(self, job_id: str) -> Optional[dict]:
        """The current row, or None; locked against every other writer until the transaction ends.

        Its ``sub_tasks`` and ``history`` are a job record (``record.py``),
        whichever implementation the store chooses: SQLite hands the views
        of ``layout`` for a job it keeps laid out (they decode only what the
        rules touch, and ``replace`` writes back only what changed); the
        others hand the plain record.
        """

    def insert(self, row: dict) -> None:
        """Store a new row. Its ``job_id`` must be new: an existing one is a ``StoreError``
        (raised here or when the transaction commits), and the transaction rolls back."""

    def replace(self, row: dict) -> None:
        """Store every column of an existing row (found by ``row["job_id"]``); a row that is
        not stored is not created."""

    def delete(self, job_id: str) -> bool:
        """Delete a row; True when there was one."""

    def housekeeping(self, now: str, cutoff: str) -> tuple[list[str], int]:
        """The expiry sweep's two parts, in one statement where the store can (writes run it often).

        Returns ``(due, purged)``: ``due`` the ids of unfinished jobs (status
        pending or running) with ``expires_at <= now``, each locked like
        ``get``, for the caller to expire; ``purged`` how many finished jobs
        (completed or failed) it deleted whose ``expires_at`` and
        ``consolidated_result.consolidated_at`` (when the job finished; the
        expiry when absent) are both before ``cutoff``. On PostgreSQL rows
        another writer holds are skipped rather than waited for.
        """

    def newest(self) -> Optional[str]:
        """The latest ``created_at`` of any job (None: no job). Asked only when the clock
        is set by hand (``clock``), to refuse one implausibly far ahead of the store."""

    def claimable(self, pool: str, now: str, limit: int = 1, wait: bool = False) -> list[str]:
        """The worker pool's one query (see ``pool``): at most ``limit`` job ids, oldest first
        (``created_at``, then ``job_id``).

        A job qualifies when it is unfinished and has a sub-task whose
        ``pool`` is ``pool`` and that is pending, or running with
        ``lease_until <= now``. Each returned row is locked like ``get``.
        Rows another writer holds are skipped unless ``wait`` (only
        PostgreSQL has rows held by others; the other stores lock the whole
        store for a write).
        """


@runtime_checkable
class Store(Protocol):
    """An open store: one connection's worth of a job table. Safe to share between threads."""

    def read(self, job_id: str) -> Optional[dict]:
        """The row as last committed, or None. It takes no write lock: a writer on another
        connection never delays it (threads sharing one store take turns on its connection)."""

    def read_all(self, active_only: bool = False) -> list[dict]:
        """Every committed row (only pending and running ones with ``active_only``), newest first:
        ``created_at`` descending, then ``job_id`` ascending."""

    def write(self) -> ContextManager[Transaction]:
        """``with store.write() as tx:`` one exclusive write transaction.

        It cannot interleave with any other writer: another thread, another
        process, another machine. It commits when the block exits normally
        and rolls back when it raises (the exception then propagates).
        Waiting for it is bounded: past the lock timeout
        (``BRAIN_LOCK_TIMEOUT``) it raises ``StoreBusy``. Transactions do not
        nest. How each store keeps this:

        - SQLite: one writer at a time, under the file lock ``<db>.lock``
          and ``BEGIN IMMEDIATE``.
        - PostgreSQL: ``get`` locks the job's row until commit, so writers of
          one job take turns and writers of different jobs run side by side;
          ``housekeeping`` and ``claimable`` skip rows another writer holds
          rather than wait for them.
        - memory: one writer at a time per database, under a thread lock.
        """

    def wait(self, timeout: float) -> bool:
        """Block until a write is committed to this store's data, or ``timeout`` seconds pass (False).

        The first call returns True at once: that is when listening starts,
        and a commit before it may have been missed. Later calls return True
        for any commit since the previous call, by another store, thread or
        process, or by this store's own ``write`` (the listener is a
        connection of its own). It may also wake early, so callers look,
        wait, look again. One thread at a time per store. (PostgreSQL:
        ``LISTEN``/``NOTIFY``, sent by every commit that changed a row.
        SQLite: a second connection looks at ``PRAGMA data_version``.
        memory: a ``threading.Condition`` notified by every commit.)
        """

    def close(self) -> None:
        """Release the store's connections and locks. Committed rows stay, for every other open
        store; the store is not used afterwards."""

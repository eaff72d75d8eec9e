"""A store inside one Python process: the storage contract's test double.

For tests of code built on brain-jobs, and for brain-jobs' own unit tests:
every ``jobs`` and ``pool`` function takes ``db="memory://NAME"``, and
``open_store("memory://NAME")`` opens one directly::

    from brain_jobs import jobs

    job = jobs.create_job_with_subtasks(60, {"prompt": "p"}, ["a", "b"], db="memory://t")
    jobs.update_subtask_status(job, "sub_1", "completed", "ok", db="memory://t")
    ...
    jobs.close_stores()   # in the test's teardown: the data goes with the last store

(``BRAIN_DATABASE_URL=memory://NAME`` makes it the default for calls
without ``db``.) It keeps every promise of ``contract`` that one process
can observe, and ``tests/test_store_contract.py`` runs the same checks on
it as on SQLite and PostgreSQL: one writer at a time (threads take turns,
a wait past ``BRAIN_LOCK_TIMEOUT`` is ``StoreBusy``), rollback when the
block raises, readers that see only committed rows, ``wait`` woken by
commits, and the same housekeeping and claim queries. Rows go in and come
out through JSON, as with the real stores, so a caller that changes a row
it was given changes nothing stored, and a value JSON cannot hold fails
here as it would there.

Lifetime, as SQLite's shared in-memory databases: every store opened on
``memory://NAME`` in this process shares one database, which lives while
at least one of them is open (``jobs.close_stores()`` closes the API's).
``memory://`` without a name is a database of that one store. Other
processes never see it: ``brain`` subprocesses, detached runners
(``dispatch --executor``) and the plugin's hooks need a SQLite file or a
PostgreSQL URL. Threads, ``cli.main([...])`` called in-process and
``worker.Worker`` all work on it.
"""

import threading

from .. import codec, record
from ..errors import StoreBusy, StoreError
from ..vocabulary import FINAL
from . import COLUMNS, env_lock_timeout

SCHEME = "memory://"
_UNFINISHED = ("pending", "running")

_databases = {}  # name -> _Database, while a store is open on it
_registry = threading.Lock()


class _Database:
    """What every store opened on one name shares."""

    def __init__(self):
        # job_id -> the row as JSON text. A commit replaces the whole dict, so a
        # reader that took it sees one committed state, never half a commit.
        self.rows = {}
        self.writer = threading.Lock()  # held for the whole of a write transaction
        self.writing = None  # the thread that holds ``writer``
        self.commits = 0  # commits that changed something; ``wait`` watches it
        self.committed = threading.Condition()  # notified at each of them
        self.stores = 0


def _encode(row: dict) -> str:
    return codec.dumps({c: row[c] for c in COLUMNS})


def _finished_at(row) -> str:
    """When a finished job's retention starts: its consolidation, else its expiry (as the SQL stores say)."""
    summary = row["consolidated_result"]
    at = summary.get("consolidated_at") if isinstance(summary, dict) else None
    return row["expires_at"] if at is None else at


def _claimable(sub, pool, now) -> bool:
    """The SQL stores' test, on one sub-task: queued for ``pool`` and pending, or on a lease run out."""
    if not isinstance(sub, dict) or sub.get("pool") != pool:
        return False
    lease = sub.get("lease_until")
    return sub.get("status") == "pending" or (sub.get("status") == "running" and lease is not None and lease <= now)


class _Transaction:
    def __init__(self, rows, target):
        self._rows = rows  # committed, as the transaction began (no one else commits meanwhile)
        self._target = target
        self.changes = {}  # job_id -> the new row's text, or None: deleted

    def _text(self, job_id):
        return self.changes[job_id] if job_id in self.changes else self._rows.get(job_id)

    def _decoded(self):
        """``(job_id, row)`` for every row as this transaction sees it."""
        view = dict(self._rows)
        view.update(self.changes)
        return [(job_id, codec.loads(text)) for job_id, text in view.items() if text is not None]

    def get(self, job_id):
        text = self._text(job_id)
        return None if text is None else record.plain(codec.loads(text))

    def insert(self, row):
        text = _encode(row)
        if self._text(row["job_id"]) is not None:
            raise StoreError(f"job store error on {self._target}: job {row['job_id']} already exists")
        self.changes[row["job_id"]] = text

    def replace(self, row):
        text = _encode(row)
        if self._text(row["job_id"]) is not None:  # as an UPDATE: a row that is not there stays absent
            self.changes[row["job_id"]] = text

    def delete(self, job_id):
        if self._text(job_id) is None:
            return False
        self.changes[job_id] = None
        return True

    def housekeeping(self, now, cutoff):
        due, purged = [], []
        for job_id, row in self._decoded():
            expires = row["expires_at"]
            if expires is None:
                continue  # NULL compares with nothing in SQL
            if row["status"] in _UNFINISHED and expires <= now:
                due.append(job_id)
            elif row["status"] in FINAL and expires < cutoff and _finished_at(row) < cutoff:
                purged.append(job_id)
        for job_id in purged:
            self.changes[job_id] = None
        return sorted(due), len(purged)

    def newest(self):
        return max((row["created_at"] for _, row in self._decoded()), default=None)

    def claimable(self, pool, now, limit=1, wait=False):
        # ``wait`` is PostgreSQL's concern: under the store's one write lock no row is held by anyone else.
        found = sorted((row["created_at"], job_id) for job_id, row in self._decoded()
                       if row["status"] in _UNFINISHED and isinstance(row["sub_tasks"], list)
                       and any(_claimable(s, pool, now) for s in row["sub_tasks"]))
        return [job_id for _, job_id in found[:limit]]


class _Writing:
    """One write transaction: the database's writer lock, then a commit of every change at once,
    or none of them when the block raised."""

    def __init__(self, store):
        self._store = store
        self._db = self._tx = None

    def __enter__(self) -> _Transaction:
        store = self._store
        db = store._open()
        if db.writing == threading.get_ident():
            raise StoreError(f"a write transaction on {store.target} is already open in this thread: "
                             "transactions do not nest; finish the first one")
        codec.note_write()  # as the other stores: a busy process switches to the fast codec
        if not db.writer.acquire(timeout=store.lock_timeout):
            raise StoreBusy(f"the job store {store.target} is busy: another thread held it for more than "
                            f"{store.lock_timeout:g} s; retry, or raise BRAIN_LOCK_TIMEOUT")
        db.writing = threading.get_ident()
        self._db = db
        self._tx = _Transaction(db.rows, store.target)
        return self._tx

    def __exit__(self, kind, exc, tb) -> bool:
        db = self._db
        try:
            changes = self._tx.changes
            if kind is None and changes:
                rows = dict(db.rows)
                for job_id, text in changes.items():
                    if text is None:
                        rows.pop(job_id, None)
                    else:
                        rows[job_id] = text
                with db.committed:
                    db.rows = rows
                    db.commits += 1
                    db.committed.notify_all()
        finally:
            db.writing = None
            db.writer.release()
        return False


class MemoryStore:
    """The storage contract (see ``contract``) on rows kept in this process (see the module doc)."""

    def __init__(self, target: str = SCHEME, lock_timeout: float = None):
        if not target.startswith(SCHEME):
            raise StoreError(f"not an in-memory store URL: {target!r} (use memory://NAME)")
        self.target = target
        self.name = target[len(SCHEME):]
        self.lock_timeout = lock_timeout if lock_timeout is not None else env_lock_timeout()
        self._seen = None  # the commit count ``wait`` last saw; None until it first listens
        self._wait_lock = threading.Lock()
        with _registry:
            db = _databases.get(self.name) if self.name else None
            if db is None:
                db = _Database()
                if self.name:
                    _databases[self.name] = db
            db.stores += 1
        self._db = db

    def _open(self) -> _Database:
        db = self._db
        if db is None:
            raise StoreError(f"the job store {self.target} is closed; open it again (open_store)")
        return db

    def read(self, job_id):
        text = self._open().rows.get(job_id)
        return None if text is None else record.plain(codec.loads(text))

    def read_all(self, active_only=False):
        rows = [record.plain(codec.loads(text)) for text in self._open().rows.values()]
        if active_only:
            rows = [r for r in rows if r["status"] in _UNFINISHED]
        rows.sort(key=lambda r: r["job_id"])
        rows.sort(key=lambda r: r["created_at"], reverse=True)  # stable: job_id order within one instant
        return rows

    def write(self) -> _Writing:
        """``with store.write() as tx``: one transaction under the database's writer lock."""
        return _Writing(self)

    def wait(self, timeout: float) -> bool:
        """Block until a commit on this database (any store's, this one's too) or ``timeout``."""
        with self._wait_lock:
            db = self._open()
            with db.committed:
                if self._seen is None:
                    self._seen = db.commits
                    return True  # listening starts now: a commit before it may have been missed
                seen = self._seen
                woke = db.committed.wait_for(lambda: db.commits != seen, max(0.0, timeout))
                self._seen = db.commits
                return bool(woke)

    def close(self):
        db, self._db = self._db, None
        if db is None:
            return
        with _registry:
            db.stores -= 1
            if db.stores == 0 and _databases.get(self.name) is db:
                del _databases[self.name]

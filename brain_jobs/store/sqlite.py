"""The embedded default: one SQLite file in WAL mode, guarded by a file lock.

Every write takes the lock file ``<db>.lock`` (see ``lock.py``) and then
``BEGIN IMMEDIATE``, so a read-modify-write of a job row cannot interleave
with another writer. Readers take no lock: WAL gives them the last
committed state, so ``sqlite3 jobs.db 'select sub_tasks from jobs'`` always
shows the truth.

``synchronous=FULL`` by default: a report that returned success survives a
crash of the process and of the machine. ``BRAIN_SYNCHRONOUS=NORMAL``
trades the latter for speed.

``sub_tasks`` and ``history`` are written as ``layout`` lays them out (JSON
with whitespace room), and ``job_tally`` keeps each job's counts, so that a
report rewrites a few pages of the row and decodes one sub-task, however
big the job.

The store's files must be ours alone: a store that another user can read,
change, own or swap is refused at open (``safety.prepare``). A store that
cannot be written (full disk, file size limit, read-only file) is opened
read-only, so reads still work; writes say why they cannot.
"""

import os
import sqlite3
import threading
import time
from contextlib import contextmanager

from .. import codec, record
from ..errors import StoreBusy, StoreError
from ..vocabulary import STATUSES
from . import COLUMNS, JSON_COLUMNS, env_lock_timeout, layout, safety
from .lock import WriteLock

WAIT_INTERVAL = 0.05  # seconds between two looks of ``wait`` (SQLite cannot notify)


def _migration_1(conn):
    """The seed's ``jobs`` table, plus indexes for the expiry sweep."""
    conn.execute(
        """CREATE TABLE IF NOT EXISTS jobs (
            job_id TEXT PRIMARY KEY,
            created_at TIMESTAMP,
            ttl INTEGER,
            expires_at TIMESTAMP,
            data JSON,
            iteration INTEGER,
            status TEXT,
            tools_required JSON,
            history JSON,
            type TEXT DEFAULT 'normal',
            sub_tasks JSON DEFAULT '[]',
            consolidated_result JSON DEFAULT 'null'
        )"""
    )
    conn.execute("CREATE INDEX IF NOT EXISTS jobs_status_expires ON jobs (status, expires_at)")


def _migration_2(conn):
    """``job_tally``: per job, sub-tasks by status and the earliest running deadline (see ``layout``).

    It is derived from ``jobs.sub_tasks`` and only trusted while it is there:
    the triggers drop it whenever anything, brain or another program,
    writes ``sub_tasks`` or deletes the job, and brain's writes put it back
    in the same transaction. A job without a tally is read the slow way.
    """
    conn.execute(
        """CREATE TABLE IF NOT EXISTS job_tally (
            job_id TEXT PRIMARY KEY,
            pending INTEGER NOT NULL, running INTEGER NOT NULL,
            completed INTEGER NOT NULL, failed INTEGER NOT NULL,
            next_deadline TEXT,
            width INTEGER NOT NULL
        )"""
    )
    conn.execute("""CREATE TRIGGER IF NOT EXISTS jobs_tally_stale AFTER UPDATE OF sub_tasks ON jobs
                    BEGIN DELETE FROM job_tally WHERE job_id = OLD.job_id; END""")
    conn.execute("""CREATE TRIGGER IF NOT EXISTS jobs_tally_gone AFTER DELETE ON jobs
                    BEGIN DELETE FROM job_tally WHERE job_id = OLD.job_id; END""")


# Named, ordered, idempotent steps; ``PRAGMA user_version`` records how many ran.
MIGRATIONS = (_migration_1, _migration_2)
OURS = ("jobs", "jobs_status_expires", "job_tally", "jobs_tally_stale", "jobs_tally_gone")
_LAID_OUT = ("history", "sub_tasks")  # written as ``layout`` lays them out
_HISTORY, _SUB_TASKS = _LAID_OUT
_ENCODING = tuple((c, c in JSON_COLUMNS) for c in COLUMNS)  # each column, and whether it is stored as JSON
_SMALL_JSON = tuple(c for c in JSON_COLUMNS if c not in _LAID_OUT)  # decoded whole on every read


def _encode(row: dict, edits: bool = False) -> "tuple[tuple, tuple | None]":
    """The column values to store, and the job's ``job_tally`` row (None: no tally; see ``layout``).

    With ``edits`` (the row was read in this transaction and the driver can
    write in place), a laid-out column may be ``layout.Edits`` of its stored text.
    """
    subs, tally = layout.encode_subtasks(row["sub_tasks"], edits)
    history = layout.encode_history(row["history"], compact=tally is None, edits=edits)
    dumps = codec.dumps
    values = tuple([subs if c == _SUB_TASKS else history if c == _HISTORY else dumps(row[c]) if json else row[c]
                    for c, json in _ENCODING])
    if tally is None:
        return values, None
    counts, earliest, width = tally
    return values, (row["job_id"], *(counts[s] for s in STATUSES), earliest, width)


def _decode(values) -> dict:
    """A committed row, read whole: the plain record (``record``)."""
    row = dict(zip(COLUMNS, values))
    for c in JSON_COLUMNS:
        if row[c] is not None:
            row[c] = codec.loads(row[c])
    return record.plain(row)


def _mark(c):
    return "CAST(? AS TEXT)" if c in _LAID_OUT else "?"  # bytes of UTF-8, stored as text


_SELECT = "SELECT " + ", ".join(COLUMNS) + " FROM jobs"
_INSERT = f"INSERT INTO jobs ({', '.join(COLUMNS)}) VALUES ({', '.join(_mark(c) for c in COLUMNS)})"
_UPDATE = f"UPDATE jobs SET {', '.join(f'{c} = {_mark(c)}' for c in COLUMNS[1:])} WHERE job_id = ?"
_SUB_TASKS_AT = COLUMNS.index("sub_tasks")
_TALLY = "INSERT OR REPLACE INTO job_tally VALUES (?, ?, ?, ?, ?, ?, ?)"
# A write's read: the laid-out columns as bytes, and the tally when there is one.
_SELECT_FOR_WRITE = (
    "SELECT " + ", ".join(f"CAST(j.{c} AS BLOB)" if c in _LAID_OUT else f"j.{c}" for c in COLUMNS)
    + ", t.pending, t.running, t.completed, t.failed, t.next_deadline, t.width, j.rowid"
    + " FROM jobs AS j LEFT JOIN job_tally AS t ON t.job_id = j.job_id WHERE j.job_id = ?"
)
# Python 3.11+ writes a laid-out column's edits in place (incremental blob I/O): SQLite then
# writes the page or two they touch, where an UPDATE re-serialises the whole record.
_IN_PLACE = hasattr(sqlite3.Connection, "blobopen")


def _decode_for_write(values) -> dict:
    """A row for the rules of a write: sub-tasks and history as ``layout``'s views where the
    stored text allows (a tally for the sub-tasks, an array for the history), which decode
    only what the rules touch; the plain record otherwise."""
    n = len(COLUMNS)
    *counts, earliest, width = values[n:n + 6]
    row = dict(zip(COLUMNS, values[:n]))
    for c in _SMALL_JSON:
        if row[c] is not None:
            row[c] = codec.loads(row[c])
    subs = None
    if width is not None:
        subs = layout.Slots.over(row["sub_tasks"], width, dict(zip(STATUSES, counts)), earliest)
    history = layout.History.over(row["history"])
    row["sub_tasks"] = subs if subs is not None else record.as_sub_tasks(_loads(row["sub_tasks"]))
    row["history"] = history if history is not None else record.as_events(_loads(row["history"]))
    return row


def _loads(value):
    return None if value is None else codec.loads_bytes(value)


def _translate(exc: sqlite3.Error, path: str) -> StoreError:
    """One place where driver errors become errors that say what to do."""
    msg = str(exc)
    if "locked" in msg or "busy" in msg:
        # Not only another program: a brain process that opens, checkpoints or closes the
        # store holds SQLite's lock for a moment, outside brain's own write lock.
        return StoreBusy(
            f"the job store {path} is busy: another process (a brain process opening or closing it, or "
            "another program) held it locked longer than BRAIN_LOCK_TIMEOUT allows; retry, or raise BRAIN_LOCK_TIMEOUT"
        )
    if "not a database" in msg or "malformed" in msg or "corrupt" in msg:
        return StoreError(
            f"{path} is not a usable SQLite database ({msg}); it was left untouched: "
            "move it aside or point BRAIN_DB elsewhere"
        )
    if "disk I/O error" in msg:
        # EFBIG past a file size limit, or EIO: the transaction was rolled back.
        return StoreError(
            f"could not write the job store {path} ({msg}): the disk may be full, over a file size "
            "limit or failing; free space and retry: nothing stored was lost"
        )
    if "full" in msg:
        return StoreError(f"no space left for the job store {path} ({msg}); free disk space and retry: nothing stored was lost")
    if "readonly" in msg or "read-only" in msg:
        return StoreError(f"the job store {path} is read-only ({msg}); fix its permissions or point BRAIN_DB elsewhere")
    if "unable to open" in msg:
        return StoreError(f"cannot open the job store {path} ({msg}); check the path and its permissions")
    return StoreError(f"job store error on {path}: {msg}")


def _cannot_write(exc: sqlite3.Error) -> bool:
    """True for the errors of a store that can be read but not written now: a full disk,
    a file size limit or I/O error while creating the WAL index, a read-only file or file system."""
    msg = str(exc)
    return "disk I/O error" in msg or "full" in msg or "readonly" in msg or "read-only" in msg


_UPDATES = {}  # the columns changed -> their UPDATE


def _update(changed: tuple) -> str:
    """The UPDATE of only the ``changed`` columns (by index in ``COLUMNS``).

    Why not every column: SQLite rewrites an index entry whenever its column
    is in the SET list, changed or not, so writing ``status`` and
    ``expires_at`` back unchanged costs a page of ``jobs_status_expires`` in
    every commit; and ``AFTER UPDATE OF sub_tasks`` fires only when named.
    """
    sql = _UPDATES.get(changed)
    if sql is None:
        sets = ", ".join(f"{COLUMNS[i]} = {_mark(COLUMNS[i])}" for i in changed)
        sql = _UPDATES[changed] = f"UPDATE jobs SET {sets} WHERE job_id = ?"
    return sql


# A sub-task queued for ``pool`` that is pending, or running on a lease that ran out.
_CLAIMING = """json_extract(s.value, '$.pool') = ?
                     AND (json_extract(s.value, '$.status') = 'pending'
                          OR (json_extract(s.value, '$.status') = 'running'
                              AND json_extract(s.value, '$.lease_until') <= ?))"""
_CLAIMABLE = f"""SELECT job_id FROM jobs WHERE status IN ('pending', 'running') AND EXISTS (
                   SELECT 1 FROM json_each(jobs.sub_tasks) AS s WHERE {_CLAIMING})
               ORDER BY created_at, job_id LIMIT ?"""
# The same, when some row's JSON is malformed: CASE (evaluated lazily, unlike AND) keeps the
# JSON functions off what they cannot parse, and such a row is returned as a candidate.
_CLAIMABLE_CAREFULLY = f"""SELECT job_id FROM jobs WHERE status IN ('pending', 'running') AND CASE
                   WHEN json_valid(jobs.sub_tasks) THEN EXISTS (
                       SELECT 1 FROM json_each(jobs.sub_tasks) AS s
                       WHERE CASE WHEN s.type = 'object' THEN {_CLAIMING} ELSE 0 END)
                   ELSE 1 END
               ORDER BY created_at, job_id LIMIT ?"""


class _Transaction:
    def __init__(self, conn):
        self._conn = conn
        # job_id -> (the column values ``get`` read, whether a tally was there, the rowid),
        # so that ``replace`` writes back only what changed
        self._stored = {}

    def get(self, job_id):
        values = self._conn.execute(_SELECT_FOR_WRITE, (job_id,)).fetchone()
        if not values:
            return None
        n = len(COLUMNS)
        self._stored[job_id] = (values[:n], values[n + 5] is not None, values[n + 6])
        return _decode_for_write(values)

    def insert(self, row):
        values, tally = _encode(row)
        self._conn.execute(_INSERT, values)
        if tally:
            self._conn.execute(_TALLY, tally)

    def replace(self, row):
        stored, tallied, rowid = self._stored.pop(row["job_id"], (None, False, None))
        values, tally = _encode(row, edits=_IN_PLACE and stored is not None)
        if stored is None:
            self._conn.execute(_UPDATE, values[1:] + values[:1])
        else:
            changed = [i for i in range(1, len(COLUMNS)) if values[i] != stored[i]]  # Edits differ: a tuple
            edited = [i for i in changed if isinstance(values[i], layout.Edits)]
            if edited:
                changed = [i for i in changed if i not in edited or values[i]]  # no edits: unchanged
                edited = [i for i in edited if values[i]]
            updated = tuple([i for i in changed if i not in edited])
            if updated:
                self._conn.execute(_update(updated), tuple(values[i] for i in updated) + values[:1])
            for i in edited:  # after the UPDATE, which would expire an open blob handle
                with self._conn.blobopen("jobs", COLUMNS[i], rowid) as blob:
                    for offset, data in values[i]:
                        blob.seek(offset)
                        blob.write(data)
            if tallied and _SUB_TASKS_AT not in changed:
                return  # the tally, derived from sub_tasks, is as stored
        # After the UPDATE, whose trigger dropped the old tally (a write in place fires
        # no trigger: the old one is replaced).
        if tally:
            self._conn.execute(_TALLY, tally)

    def delete(self, job_id):
        return self._conn.execute("DELETE FROM jobs WHERE job_id = ?", (job_id,)).rowcount > 0

    def housekeeping(self, now, cutoff):
        # Two statements: SQLite has no writable CTE. Both walk the (status, expires_at) index.
        due = [r[0] for r in self._conn.execute(
            "SELECT job_id FROM jobs WHERE status IN ('pending', 'running') AND expires_at <= ?", (now,)
        )]
        purged = self._conn.execute(
            "DELETE FROM jobs WHERE status IN ('completed', 'failed') AND expires_at < ?"
            # CASE keeps json_extract off text it cannot parse: no stored value can fail every write.
            " AND COALESCE(CASE WHEN json_valid(consolidated_result)"
            " THEN json_extract(consolidated_result, '$.consolidated_at') END, expires_at) < ?",
            (cutoff, cutoff),
        ).rowcount
        return due, purged

    def newest(self):
        return self._conn.execute("SELECT max(created_at) FROM jobs").fetchone()[0]

    def claimable(self, pool, now, limit=1, wait=False):
        # ``wait`` is PostgreSQL's concern: under the file lock no row is held by anyone else.
        try:
            rows = self._conn.execute(_CLAIMABLE, (pool, now, limit)).fetchall()
        except sqlite3.OperationalError as exc:
            if "malformed JSON" not in str(exc):
                raise
            # Some row's sub_tasks is not JSON SQLite can read (another program wrote it): the
            # careful query returns it too, and the worker says once that it cannot read it.
            rows = self._conn.execute(_CLAIMABLE_CAREFULLY, (pool, now, limit)).fetchall()
        return [r[0] for r in rows]


class _Writing:
    """One write transaction: the file lock, ``BEGIN IMMEDIATE``, then ``COMMIT``, or
    ``ROLLBACK`` if the block raised; driver errors become ``StoreError``.

    A class rather than a generator-based context manager because every
    report goes through it; under 16 contending writers the interpreter's
    steps cost several times what they cost alone (bench/, row 2).
    """

    __slots__ = ("_store",)

    def __init__(self, store):
        self._store = store

    def __enter__(self) -> "_Transaction":
        store = self._store
        codec.note_write()  # outside the lock: it may import the fast codec
        if store._unwritable is not None:
            store._reopen()
        store._acquire()
        try:
            store._conn.execute("BEGIN IMMEDIATE")
        except BaseException as exc:
            store._release()
            if isinstance(exc, sqlite3.Error):
                raise _translate(exc, store.path) from None
            raise
        return _Transaction(store._conn)

    def __exit__(self, kind, exc, tb) -> bool:
        store = self._store
        try:
            if kind is None:
                try:
                    store._conn.execute("COMMIT")
                except sqlite3.Error as error:
                    store._rollback()
                    raise _translate(error, store.path) from None
            else:
                store._rollback()
                if issubclass(kind, sqlite3.Error):
                    raise _translate(exc, store.path) from None
        finally:
            store._release()
        return False


class SQLiteStore:
    """The storage contract (see ``store/__init__``) on one SQLite file."""

    def __init__(self, path: str, lock_timeout: float = None):
        self.path = os.path.abspath(path)
        self.lock_timeout = lock_timeout if lock_timeout is not None else env_lock_timeout()
        safety.prepare(self.path)
        self._lock = WriteLock(self.path + ".lock")
        # One connection per store; threads of one process take turns on it
        # (the file lock alone does not exclude threads sharing its descriptor).
        self._mutex = threading.RLock()
        self._watcher = None  # the second connection of ``wait``, opened on first use
        self._seen = None
        self._wait_lock = threading.Lock()
        # Why the store could only be opened for reading (a StoreError), or None; see ``_open_for_reading``.
        self._unwritable = None
        try:
            self._conn = self._open()
        except sqlite3.Error as exc:
            if not _cannot_write(exc):
                raise _translate(exc, self.path) from None
            self._unwritable = _translate(exc, self.path)
            self._conn = self._open_for_reading()

    def _connect(self, read_only=False):
        if not read_only:
            return sqlite3.connect(self.path, timeout=self.lock_timeout, isolation_level=None,
                                   check_same_thread=False)
        from urllib.request import pathname2url  # only when the store cannot be written

        # readonly_shm: read the WAL without writing the -shm index it may need to create or grow.
        return sqlite3.connect(f"file:{pathname2url(self.path)}?mode=ro&readonly_shm=1", uri=True,
                               timeout=self.lock_timeout, isolation_level=None, check_same_thread=False)

    def _open(self):
        """The read-write connection, with the schema migrated."""
        self._conn = conn = self._connect()
        try:
            sync = os.environ.get("BRAIN_SYNCHRONOUS", "FULL").upper()
            if sync not in ("OFF", "NORMAL", "FULL", "EXTRA"):
                sync = "FULL"
            conn.execute(f"PRAGMA synchronous = {sync}")
            if conn.execute("PRAGMA user_version").fetchone()[0] < len(MIGRATIONS):
                self._refuse_foreign()
                self._migrate()
        except BaseException:
            conn.close()
            raise
        return conn

    def _open_for_reading(self):
        """A read-only connection, for a store that cannot be written now (full disk, read-only
        file or file system): reads need no write, so they still work. ``write`` tries the
        read-write connection again, and raises ``_unwritable`` if it still cannot."""
        try:
            self._conn = conn = self._connect(read_only=True)
            version = conn.execute("PRAGMA user_version").fetchone()[0]
        except sqlite3.Error:
            raise self._unwritable from None
        if version == 0:  # nothing to read yet: the store was never set up
            conn.close()
            raise self._unwritable
        if version < len(MIGRATIONS):
            self._refuse_foreign()
        return conn

    def _reopen(self):
        """Before a write on a store opened for reading: open it read-write again (the disk
        may have been freed since), or raise why it still cannot be written."""
        with self._mutex:
            if self._unwritable is None:
                return
            # Closed first: SQLite shares one WAL index per file among a process's connections,
            # and the reader's is read-only.
            self._conn.close()
            try:
                self._open()
            except sqlite3.Error as exc:
                self._unwritable = _translate(exc, self.path)
                self._conn = self._open_for_reading()
                raise self._unwritable from None
            self._unwritable = None

    def _refuse_foreign(self):
        """Before the first migration: refuse a file that is not ours to write.

        SQLite takes a file of a byte or two for an empty database, and would
        add our table to another program's database; either would overwrite
        something that is not a job store.
        """
        conn = self._conn
        if conn.execute("PRAGMA page_count").fetchone()[0] == 0:
            if os.stat(self.path).st_size == 0:
                return
            reason = "is not a SQLite database (or is truncated)"
        else:
            other = conn.execute(
                "SELECT name FROM sqlite_master WHERE name NOT LIKE 'sqlite_%' "
                f"AND name NOT IN ({', '.join(repr(n) for n in OURS)}) LIMIT 1"
            ).fetchone()
            if other is None:
                return
            reason = f"is another program's SQLite database (it has a table or index {other[0]!r})"
        conn.close()
        raise StoreError(f"{self.path} {reason}; it was left untouched: move it aside or point BRAIN_DB elsewhere")

    def _migrate(self):
        with self._locked():
            version = self._conn.execute("PRAGMA user_version").fetchone()[0]
            if self._conn.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
                self._conn.execute("PRAGMA journal_mode = WAL")
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                for step in MIGRATIONS[version:]:
                    step(self._conn)
                self._conn.execute(f"PRAGMA user_version = {len(MIGRATIONS)}")
                self._conn.execute("COMMIT")
            except BaseException:
                self._rollback()  # SQLite may have rolled back already: the error to report is this one
                raise

    def _acquire(self):
        """Take this process's turn (the mutex: threads share the connection), then the file lock."""
        self._mutex.acquire()
        try:
            self._lock.acquire(self.lock_timeout)
        except BaseException:
            self._mutex.release()
            raise

    def _release(self):
        try:
            self._lock.release()
        finally:
            self._mutex.release()

    @contextmanager
    def _locked(self):
        self._acquire()
        try:
            yield
        finally:
            self._release()

    def read(self, job_id):
        try:
            with self._mutex:
                row = self._conn.execute(_SELECT + " WHERE job_id = ?", (job_id,)).fetchone()
        except sqlite3.Error as exc:
            raise _translate(exc, self.path) from None
        return _decode(row) if row else None

    def read_all(self, active_only=False):
        where = " WHERE status IN ('pending', 'running')" if active_only else ""
        try:
            with self._mutex:
                rows = self._conn.execute(_SELECT + where + " ORDER BY created_at DESC, job_id").fetchall()
        except sqlite3.Error as exc:
            raise _translate(exc, self.path) from None
        return [_decode(r) for r in rows]

    def write(self) -> "_Writing":
        """``with store.write() as tx``: one transaction under the lock; see ``_Writing``."""
        return _Writing(self)

    def _rollback(self):
        try:
            self._conn.execute("ROLLBACK")
        except sqlite3.Error:
            pass  # the transaction is already gone (SQLite rolls back on some errors itself)

    def wait(self, timeout: float) -> bool:
        """Block until another connection commits or ``timeout`` passes.

        SQLite cannot notify: a second connection looks at ``PRAGMA
        data_version`` (which changes when any other connection commits)
        every ``WAIT_INTERVAL`` seconds, reading no data.
        """
        with self._wait_lock:
            try:
                if self._watcher is None:
                    self._watcher = self._connect(read_only=self._unwritable is not None)
                    self._seen = self._watcher.execute("PRAGMA data_version").fetchone()[0]
                    return True  # a fresh watcher may have missed a commit: look now
                deadline = time.monotonic() + max(0.0, timeout)
                while True:
                    version = self._watcher.execute("PRAGMA data_version").fetchone()[0]
                    if version != self._seen:
                        self._seen = version
                        return True
                    left = deadline - time.monotonic()
                    if left <= 0:
                        return False
                    time.sleep(min(WAIT_INTERVAL, left))
            except sqlite3.Error as exc:
                raise _translate(exc, self.path) from None

    def close(self):
        if self._watcher is not None:
            self._watcher.close()
            self._watcher = None
        self._conn.close()
        self._lock.close()

"""The shared backend: one PostgreSQL ``jobs`` table that any machine can reach.

Same contract as ``sqlite.py`` (see ``store/__init__``), same rows. What
differs underneath:

- JSON columns are ``jsonb`` and times are ``timestamptz``; both are
  converted at this boundary, so a row comes back equal to SQLite's, with
  times in the text form of ``clock.iso``. ``jsonb`` keeps keys in its own
  order, so ``_ordered`` puts back the order brain-jobs writes them in
  (the seed's order for sub-tasks, events and the consolidation).
- ``write()`` is one transaction; ``get`` locks the job row
  (``SELECT ... FOR UPDATE``) until commit, so writers of one job queue
  on its row while writers of different jobs run in parallel. Waits are
  bounded by ``lock_timeout`` / ``statement_timeout`` (``BRAIN_LOCK_TIMEOUT``)
  and surface as ``StoreBusy``. Housekeeping (``due``, ``purge``) and
  ``claimable`` skip rows another writer holds (``SKIP LOCKED``) instead
  of waiting for them.
- Every commit that changed a row sends ``NOTIFY`` on the schema's
  channel (a row trigger, ``_migration_3``); ``wait()`` ``LISTEN``s on a second connection, so idle workers
  and ``brain job watch`` wake without polling.
- Migrations are numbered, recorded in ``brain_migrations`` and run at open
  under an advisory lock, so many processes may open a fresh schema at once.

The schema: ``?schema=NAME`` in the URL (removed before it reaches libpq),
else ``BRAIN_PG_SCHEMA``, else the connection's search_path (``public``).
psycopg is imported only here, when a PostgreSQL URL is opened.
"""

import hashlib
import os
import re
import threading
from contextlib import contextmanager
from datetime import timezone
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from .. import codec, record
from ..errors import InvalidInput, StoreBusy, StoreError
from . import COLUMNS, JSON_COLUMNS, env_lock_timeout

_SCHEMA = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")
TIME_COLUMNS = ("created_at", "expires_at")

class _Rank(dict):
    """Position of each known key; unknown keys sort after them, in jsonb's order (the sort is stable).

    ``orders`` remembers the sorted order of each key layout seen: a job's
    sub-tasks and events share a few layouts, so a row is put back in order
    without sorting each of its dicts.
    """

    def __init__(self, *args):
        super().__init__(*args)
        self.orders = {}

    def __missing__(self, key):
        return len(self)


# Key order brain-jobs writes, restored on read (jsonb sorts keys by length).
# Keys not listed keep jsonb's order, after these.
_SUB_KEYS = record.SUB_KEYS
_EVENT_KEYS = ("at", "event", "type", "executor", "model", "session_id", "timeout", "sub_task_id", "sub_tasks",
               "status", "agent_id", "host_agent_id", "worker", "reason", "forced", "max_attempts", "runner",
               "files", "allow_shell", "result", "source")
_SUMMARY_KEYS = ("job_id", "total_tasks", "completed", "failed", "pending", "running", "complete", "status",
                 "results", "consolidated_at", "usage")
_RESULT_KEYS = ("sub_task_id", "query", "status", "result", "source")
_DATA_KEYS = ("prompt", "files", "skills")
_USAGE_KEYS = ("input_tokens", "output_tokens", "cost_usd")  # state.USAGE_KEYS
_SUB_KEYS, _EVENT_KEYS, _SUMMARY_KEYS, _RESULT_KEYS, _DATA_KEYS, _USAGE_KEYS = (
    _Rank((k, i) for i, k in enumerate(keys))
    for keys in (_SUB_KEYS, _EVENT_KEYS, _SUMMARY_KEYS, _RESULT_KEYS, _DATA_KEYS, _USAGE_KEYS)
)


def _migration_1(cur):
    """The seed's ``jobs`` table with ``jsonb`` and ``timestamptz``, plus the expiry index."""
    cur.execute(
        """CREATE TABLE IF NOT EXISTS jobs (
            job_id text PRIMARY KEY,
            created_at timestamptz,
            ttl integer,
            expires_at timestamptz,
            data jsonb,
            iteration integer,
            status text,
            tools_required jsonb,
            history jsonb,
            type text DEFAULT 'normal',
            sub_tasks jsonb DEFAULT '[]',
            consolidated_result jsonb DEFAULT 'null'
        )"""
    )
    cur.execute("CREATE INDEX IF NOT EXISTS jobs_status_expires ON jobs (status, expires_at)")


def _migration_2(cur):
    """lz4 for the big JSON columns where the server has it (PostgreSQL 14+ built with lz4).

    Every write rewrites a job's ``history`` and ``sub_tasks``; with lz4
    instead of pglz a big job drains measurably faster (docs/benchmarks.md).
    """
    cur.execute("SELECT 1 FROM pg_settings WHERE name = 'default_toast_compression' AND 'lz4' = ANY(enumvals)")
    if cur.fetchone():
        cur.execute("ALTER TABLE jobs ALTER COLUMN history SET COMPRESSION lz4, "
                    "ALTER COLUMN sub_tasks SET COMPRESSION lz4, ALTER COLUMN consolidated_result SET COMPRESSION lz4")


def _migration_3(cur):
    """``NOTIFY`` from a row trigger: every committed change of a job wakes the listeners.

    The channel is ``channel_for(schema)``, computed here from the table's
    schema, so a writer sends no statement of its own for it (a report is a
    round trip shorter), and a program writing the table directly wakes
    workers too. ``NOTIFY`` sends one message per distinct payload at commit.
    """
    cur.execute(
        """CREATE OR REPLACE FUNCTION brain_jobs_notify() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            PERFORM pg_notify(
                'brain_jobs_' || CASE WHEN length(TG_TABLE_SCHEMA) <= 40 THEN TG_TABLE_SCHEMA
                                      ELSE left(md5(TG_TABLE_SCHEMA), 16) END,
                CASE WHEN TG_OP = 'DELETE' THEN OLD.job_id ELSE NEW.job_id END);
            RETURN NULL;
        END $$"""
    )
    cur.execute("DROP TRIGGER IF EXISTS jobs_notify ON jobs")
    cur.execute("CREATE TRIGGER jobs_notify AFTER INSERT OR UPDATE OR DELETE ON jobs "
                "FOR EACH ROW EXECUTE PROCEDURE brain_jobs_notify()")


def channel_for(schema: str) -> str:
    """The ``LISTEN``/``NOTIFY`` channel of a schema (the trigger of ``_migration_3`` computes the same)."""
    if len(schema) > 40:  # a channel name is at most 63 bytes
        schema = hashlib.md5(schema.encode()).hexdigest()[:16]
    return f"brain_jobs_{schema}"


# Named, ordered, idempotent steps; ``brain_migrations`` records which ran.
MIGRATIONS = (_migration_1, _migration_2, _migration_3)


def _import_psycopg():
    try:
        import psycopg
    except ImportError:
        raise StoreError(
            "PostgreSQL support needs psycopg 3, which is not installed: "
            "pip install 'psycopg[binary]' (from a brain-jobs checkout: pip install '.[postgres]')"
        ) from None
    return psycopg


def split_url(url: str):
    """``(libpq_url, schema or None)``: the ``schema`` parameter is ours, not libpq's.

    A URL that cannot be parsed (``postgresql://[::1``, a port that is not a
    number) raises ``InvalidInput``, whose message never repeats the URL (it
    may hold a password).
    """
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 -- parsed on access: a bad port raises here, not later
    except ValueError as exc:
        raise InvalidInput(
            f"invalid PostgreSQL URL ({exc}): use postgresql://user[:password]@host[:port]/database "
            "(an IPv6 host in brackets: postgresql://user@[::1]:5432/database)"
        ) from None
    query = parse_qsl(parts.query, keep_blank_values=True)
    schema = None
    rest = []
    for key, value in query:
        if key == "schema":
            schema = value
        else:
            rest.append((key, value))
    schema = schema or os.environ.get("BRAIN_PG_SCHEMA") or None
    if schema is not None and not _SCHEMA.fullmatch(schema):
        raise InvalidInput(
            f"invalid PostgreSQL schema name {schema!r}: use letters, digits and _ (at most 63, not starting with a digit)"
        )
    rebuilt = urlunsplit(parts._replace(query=urlencode(rest)))
    if not parts.netloc and url.startswith(f"{parts.scheme}://"):
        # urlunsplit drops the empty host of postgresql:///db (a Unix socket), which libpq then cannot read.
        rebuilt = f"{parts.scheme}://{rebuilt[len(parts.scheme) + 1:]}"
    return rebuilt, schema


def _where(url: str) -> str:
    """Where the store is, for messages: never the password."""
    parts = urlsplit(url)
    host = parts.hostname or "localhost"
    port = f":{parts.port}" if parts.port else ""
    return f"postgresql://{host}{port}{parts.path}"


def _iso(value) -> str:
    value = value.astimezone(timezone.utc)
    return value.strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}Z"


def _ordered(value: dict, keys: "_Rank") -> dict:
    seen = tuple(value)  # jsonb's order
    order = keys.orders.get(seen)
    if order is None:
        if len(keys.orders) >= 512:  # user data may bring any keys: stay bounded
            keys.orders.clear()
        order = keys.orders[seen] = tuple(sorted(seen, key=keys.__getitem__))
    return {k: value[k] for k in order}


def _decode(values) -> dict:
    row = dict(zip(COLUMNS, values))
    for c in TIME_COLUMNS:
        if row[c] is not None:
            row[c] = _iso(row[c])
    if isinstance(row["data"], dict):
        row["data"] = _ordered(row["data"], _DATA_KEYS)
    if isinstance(row["sub_tasks"], list):
        row["sub_tasks"] = [_ordered(s, _SUB_KEYS) if isinstance(s, dict) else s for s in row["sub_tasks"]]
        for s in row["sub_tasks"]:
            if isinstance(s, dict) and isinstance(s.get("usage"), dict):
                s["usage"] = _ordered(s["usage"], _USAGE_KEYS)
    if isinstance(row["history"], list):
        row["history"] = [_ordered(e, _EVENT_KEYS) if isinstance(e, dict) else e for e in row["history"]]
    summary = row["consolidated_result"]
    if isinstance(summary, dict):
        summary = _ordered(summary, _SUMMARY_KEYS)
        if isinstance(summary.get("usage"), dict):
            summary["usage"] = _ordered(summary["usage"], _USAGE_KEYS)
        if isinstance(summary.get("results"), list):
            summary["results"] = [_ordered(r, _RESULT_KEYS) if isinstance(r, dict) else r for r in summary["results"]]
        row["consolidated_result"] = summary
    return record.plain(row)


def _encode(row: dict) -> tuple:
    return tuple(codec.dumps(row[c]) if c in JSON_COLUMNS else row[c] for c in COLUMNS)


_SELECT = "SELECT " + ", ".join(COLUMNS) + " FROM jobs"
_INSERT = "INSERT INTO jobs ({}) VALUES ({})".format(
    ", ".join(COLUMNS), ", ".join("%s::jsonb" if c in JSON_COLUMNS else "%s" for c in COLUMNS)
)
_UPDATE = "UPDATE jobs SET {} WHERE job_id = %s".format(
    ", ".join(f"{c} = %s::jsonb" if c in JSON_COLUMNS else f"{c} = %s" for c in COLUMNS[1:])
)
# A sub-task queued for ``pool`` that is pending, or running on a lease that ran out. No row
# content may make it fail, for every worker: ``sub_tasks`` that is not an array is returned
# (the worker finds it unreadable, says so once and passes it over), and ``lease_until`` is
# compared as the fixed-width text it is (as ``state.claimable`` does), never cast.
_CLAIMABLE = """SELECT job_id FROM jobs
    WHERE status IN ('pending', 'running')
      AND CASE WHEN jsonb_typeof(sub_tasks) = 'array' THEN EXISTS (
                  SELECT 1 FROM jsonb_array_elements(sub_tasks) AS s(v)
                  WHERE v->>'pool' = %(pool)s
                    AND (v->>'status' = 'pending'
                         OR (v->>'status' = 'running' AND v->>'lease_until' <= %(now)s::text COLLATE "C")))
          ELSE true END
    ORDER BY created_at, job_id COLLATE "C"
    LIMIT %(limit)s FOR UPDATE"""


_HOUSEKEEPING = """WITH purged AS (
        DELETE FROM jobs WHERE job_id IN (
            SELECT job_id FROM jobs
            WHERE status IN ('completed', 'failed') AND expires_at < %(cutoff)s
              -- compared as fixed-width text, never cast: no stored value can fail every write
              AND (consolidated_result->>'consolidated_at' IS NULL
                   OR consolidated_result->>'consolidated_at' < %(cutoff_text)s::text COLLATE "C")
            FOR UPDATE SKIP LOCKED)
        RETURNING 1)
    SELECT ARRAY(SELECT job_id FROM jobs WHERE status IN ('pending', 'running') AND expires_at <= %(now)s
                 ORDER BY job_id COLLATE "C" FOR UPDATE SKIP LOCKED),
           (SELECT count(*) FROM purged)"""


class _Transaction:
    def __init__(self, conn):
        self._conn = conn

    def get(self, job_id):
        row = self._conn.execute(_SELECT + " WHERE job_id = %s FOR UPDATE", (job_id,)).fetchone()
        return _decode(row) if row else None

    def insert(self, row):
        self._conn.execute(_INSERT, _encode(row))

    def replace(self, row):
        values = _encode(row)
        self._conn.execute(_UPDATE, values[1:] + values[:1])

    def delete(self, job_id):
        # RETURNING, not rowcount: in pipeline mode only fetching waits for the result.
        return self._conn.execute("DELETE FROM jobs WHERE job_id = %s RETURNING 1", (job_id,)).fetchone() is not None

    def housekeeping(self, now, cutoff):
        # One round trip: writes run it often, and on a busy server each statement costs CPU.
        # The cutoff twice: one parameter has one type, and it is compared with a timestamptz and with text.
        params = {"now": now, "cutoff": cutoff, "cutoff_text": cutoff}
        due, purged = self._conn.execute(_HOUSEKEEPING, params).fetchone()
        return due, purged

    def newest(self):
        (value,) = self._conn.execute("SELECT max(created_at) FROM jobs").fetchone()
        return None if value is None else _iso(value)

    def claimable(self, pool, now, limit=1, wait=False):
        sql = _CLAIMABLE if wait else _CLAIMABLE + " SKIP LOCKED"
        return [r[0] for r in self._conn.execute(sql, {"pool": pool, "now": now, "limit": limit})]


class PostgresStore:
    """The storage contract (see ``store/__init__``) on a PostgreSQL database."""

    def __init__(self, url: str, lock_timeout: float = None):
        self._psycopg = _import_psycopg()
        self.url, schema = split_url(url)
        self.where = _where(url)
        self.lock_timeout = lock_timeout if lock_timeout is not None else env_lock_timeout()
        self._requested_schema = schema
        self.schema = schema or "public"
        self._mutex = threading.RLock()
        self._wait_mutex = threading.Lock()
        self._conn = None
        self._listener = None
        with self._mutex:
            conn = self._connection()
            try:
                self.schema = self._migrate(conn)
            except self._psycopg.Error as exc:
                raise self._translate(exc) from None
        self.channel = channel_for(self.schema)

    # -- connections -------------------------------------------------------

    def _connect(self):
        # 0 means "do not wait" here but "no limit" to PostgreSQL: 1 ms is the nearest bound.
        # A statement may run longer than a lock wait, never without bound.
        lock_ms = max(1, int(self.lock_timeout * 1000))
        options = [f"-c lock_timeout={lock_ms}", f"-c statement_timeout={max(5000, 3 * lock_ms)}",
                   "-c TimeZone=UTC"]
        if self._requested_schema:
            options.append(f"-c search_path={self._requested_schema}")
        info = _conninfo(self._psycopg, self.url)
        if info.get("options"):
            options.insert(0, info["options"])
        info["options"] = " ".join(options)
        info.setdefault("connect_timeout", str(min(30, max(2, int(self.lock_timeout)))))
        info.setdefault("application_name", "brain-jobs")
        try:
            conn = self._psycopg.connect(autocommit=True, **info)
        except self._psycopg.Error as exc:
            raise StoreError(
                f"cannot connect to the job store {self.where} ({_first_line(exc)}): check that the server "
                "is running and BRAIN_DATABASE_URL (or --database-url)"
            ) from None
        # jsonb is read through the stored-JSON codec too (orjson once the process is busy).
        from psycopg.types.json import set_json_loads

        set_json_loads(lambda data: codec.loads_bytes(data), conn)
        return conn

    def _connection(self):
        if self._conn is None or self._conn.closed or self._conn.broken:
            if self._conn is not None:
                self._conn.close()
            self._conn = self._connect()
        return self._conn

    def _migrate(self, conn) -> str:
        """Create the schema and run missing migrations; return the schema in use."""
        schema = self._requested_schema
        if not self._current(conn, schema):
            with conn.transaction():
                key = f"brain-jobs migrate {schema or ''}"
                conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (key,))
                if schema:
                    conn.execute(self._psycopg.sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(
                        self._psycopg.sql.Identifier(schema)))
                if conn.execute("SELECT current_schema()").fetchone()[0] is None:
                    raise StoreError(
                        f"the job store {self.where} has no schema to create the jobs table in: "
                        "name one with ?schema=NAME or BRAIN_PG_SCHEMA"
                    )
                conn.execute(
                    """CREATE TABLE IF NOT EXISTS brain_migrations (
                        version integer PRIMARY KEY, name text NOT NULL,
                        applied_at timestamptz NOT NULL DEFAULT now())"""
                )
                done = {r[0] for r in conn.execute("SELECT version FROM brain_migrations")}
                with conn.cursor() as cur:
                    for version, step in enumerate(MIGRATIONS, 1):
                        if version not in done:
                            step(cur)
                            cur.execute("INSERT INTO brain_migrations (version, name) VALUES (%s, %s)",
                                        (version, step.__name__.lstrip("_")))
        return conn.execute("SELECT current_schema()").fetchone()[0]

    @staticmethod
    def _current(conn, schema) -> bool:
        """True when the migrations table exists and records every step (no lock taken)."""
        if schema and conn.execute("SELECT current_schema()").fetchone()[0] != schema:
            return False
        if conn.execute("SELECT to_regclass('brain_migrations')").fetchone()[0] is None:
            return False
        return conn.execute("SELECT count(*) FROM brain_migrations").fetchone()[0] >= len(MIGRATIONS)

    def _translate(self, exc) -> Exception:
        """One place where driver errors become errors that say what to do."""
        errors = self._psycopg.errors
        msg = _first_line(exc)
        if isinstance(exc, (errors.LockNotAvailable, errors.QueryCanceled)):
            return StoreBusy(
                f"the job store {self.where} is busy: another writer held a job for more than "
                f"{self.lock_timeout:g} s; retry, or raise BRAIN_LOCK_TIMEOUT"
            )
        if isinstance(exc, (errors.DeadlockDetected, errors.SerializationFailure)):
            return StoreBusy(f"the job store {self.where} detected a conflict with another writer ({msg}); retry")
        if isinstance(exc, (errors.UntranslatableCharacter, errors.CharacterNotInRepertoire)):
            return InvalidInput(f"PostgreSQL cannot store this text ({msg}): remove NUL characters (\\u0000)")
        if isinstance(exc, errors.UndefinedTable):
            return StoreError(
                f"the jobs table is missing from {self.where} (schema {self.schema}); was it dropped? "
                "open the store again to recreate it"
            )
        if isinstance(exc, errors.InsufficientPrivilege):
            return StoreError(f"no permission on the job store {self.where} ({msg}); grant the user access to the schema")
        if isinstance(exc, self._psycopg.OperationalError):
            return StoreError(f"lost the connection to the job store {self.where} ({msg}); retry")
        return StoreError(f"job store error on {self.where}: {msg}")

    # -- the contract --------------------------------------------------------

    def _query(self, sql, params=()):
        """A read in autocommit; a connection found dead is replaced once (reads are safe to repeat)."""
        with self._mutex:
            for attempt in (1, 2):
                try:
                    return self._connection().execute(sql, params).fetchall()
                except self._psycopg.OperationalError as exc:
                    if attempt == 2 or not self._conn.broken:
                        raise self._translate(exc) from None
                except self._psycopg.Error as exc:
                    raise self._translate(exc) from None

    def read(self, job_id):
        rows = self._query(_SELECT + " WHERE job_id = %s", (job_id,))
        return _decode(rows[0]) if rows else None

    def read_all(self, active_only=False):
        where = " WHERE status IN ('pending', 'running')" if active_only else ""
        return [_decode(r) for r in self._query(_SELECT + where + ' ORDER BY created_at DESC, job_id COLLATE "C"')]

    def _begin(self):
        """``BEGIN`` on a live connection: one found dead (server restart, dropped session) is replaced
        once, which is safe because nothing of the transaction has happened yet."""
        for attempt in (1, 2):
            conn = self._connection()
            try:
                conn.execute("BEGIN")
                return conn
            except self._psycopg.OperationalError:
                if attempt == 2 or not conn.broken:
                    raise

    @contextmanager
    def write(self):
        codec.note_write()  # outside the transaction: it may import the fast codec
        with self._mutex:
            try:
                conn = self._begin()
            except self._psycopg.Error as exc:
                raise self._translate(exc) from None
            try:
                with conn.pipeline():
                    yield _Transaction(conn)
                    conn.execute("COMMIT")  # the jobs_notify trigger's NOTIFYs go out now (see ``wait``)
            except self._psycopg.Error as exc:
                self._rollback(conn)
                raise self._translate(exc) from None
            except BaseException:
                self._rollback(conn)
                raise

    def _rollback(self, conn):
        try:
            conn.execute("ROLLBACK")
        except self._psycopg.Error:
            pass  # the connection is gone, and the server rolled the transaction back with it

    def wait(self, timeout: float) -> bool:
        """Block until another writer commits (``NOTIFY``) or ``timeout`` passes."""
        with self._wait_mutex:
            try:
                if self._listener is None or self._listener.closed or self._listener.broken:
                    self._listener = self._connect()
                    self._listener.execute(self._psycopg.sql.SQL("LISTEN {}").format(
                        self._psycopg.sql.Identifier(self.channel)))
                    return True  # a fresh listener may have missed a commit: look now
                woke = any(True for _ in self._listener.notifies(timeout=max(0.0, timeout), stop_after=1))
                if woke:  # drain what is already queued: one look serves them all
                    for _ in self._listener.notifies(timeout=0):
                        pass
                return woke
            except self._psycopg.Error as exc:
                raise self._translate(exc) from None

    def close(self):
        for conn in (self._conn, self._listener):
            if conn is not None:
                conn.close()
        self._conn = self._listener = None


def _conninfo(psycopg, url) -> dict:
    """libpq's reading of ``url``; ``InvalidInput`` when it cannot read it (a bad %-escape, a
    space, an unknown parameter, bytes that are not UTF-8), its message without the password."""
    try:
        return psycopg.conninfo.conninfo_to_dict(url)
    except (psycopg.Error, UnicodeError) as exc:
        why = "not valid UTF-8" if isinstance(exc, UnicodeError) else _first_line(exc)
        password = urlsplit(url).password
        if password:  # libpq quotes the part it could not read, which may be the password
            why = re.sub(r'"[^"]*"', lambda m: '"***"' if password in m.group() else m.group(), why)
            if password in why:
                why = "libpq cannot read it"
        raise InvalidInput(f"invalid PostgreSQL URL ({why}): use postgresql://user[:password]@host[:port]/database"
                           "[?schema=NAME], with %-escapes for special characters") from None


def _first_line(exc) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__

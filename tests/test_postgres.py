"""The PostgreSQL backend itself: what the shared suite cannot see from above the contract.

Everything else (the seed flow, the CLI, hostile input, concurrency,
deadlines, workers) runs on PostgreSQL through the ``[postgres]`` run of
the shared suite.
"""

import json
import os
import subprocess
import sys
import threading
import time

import pytest

from conftest import PG_URL, ROOT, postgres_url, store_snapshot
from brain_jobs import clock, credentials, jobs, pool
from brain_jobs.errors import InvalidInput, StoreBusy, StoreError
from brain_jobs.store import open_store
from brain_jobs.store.postgres import MIGRATIONS, split_url

pytestmark = pytest.mark.postgres_only


@pytest.fixture
def pg(db):
    """A plain psycopg connection to the test's schema."""
    import psycopg

    libpq_url, schema = split_url(db)
    open_store(db).close()  # create the schema and the table
    with psycopg.connect(libpq_url, autocommit=True, options=f"-c search_path={schema}") as conn:
        yield conn


def in_thread(call, timeout=60):
    """``call()`` in a thread: its result or its exception; fails the test if it is still waiting after
    ``timeout`` s (a bound for a hang, not a speed check: the caller may be holding what it waits for)."""
    out = {}

    def run():
        try:
            out["value"] = call()
        except BaseException as exc:  # noqa: BLE001 - handed to the caller
            out["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(timeout)
    assert not thread.is_alive(), f"still waiting after {timeout} s"
    if "error" in out:
        raise out["error"]
    return out["value"]


def _scenario(db):
    """The same operations on any store, on a frozen clock; returns the job id."""
    t = [1_900_000_000.0]
    clock.set_clock(lambda: t[0])
    job = jobs.create_job_with_subtasks(300, {"prompt": "Validar endpoints", "files": ["a.py"], "zeta": {"b": 1, "a": [1.5, None]},
                                              "ünïcode": "✓ 日本"}, ["GET /health", "POST /auth", "GET /users"], db=db)
    calls = jobs.dispatch_job(job, db=db)["agent_calls"]
    agents = [jobs.parse_subtask_prompt(c["prompt"])[2] for c in calls]
    t[0] += 1
    jobs.link_host_agent(job, "sub_1", "host-1", agents[0], db=db)
    jobs.recover_final_message(job, "sub_1", "host-1", "[200 OK] " + "x" * 300, db=db)
    jobs.update_subtask_status(job, "sub_2", "failed", "timeout", agent_id=agents[1], db=db)
    jobs.retry_subtasks(job, ["sub_2"], db=db)
    pool.queue_job(job, "http", db=db)
    t[0] += 1
    claim = pool.claim("http", "w:1", 30, db=db)
    jobs.update_subtask_status(job, claim["sub_task_id"], "completed", "ok", agent_id=claim["agent_id"], db=db)
    jobs.update_subtask_status(job, "sub_3", "completed", "[200 OK] 5 items", agent_id=agents[2], db=db)
    jobs.consolidate_subtask_results(job, db=db)
    return job


def test_rows_come_back_identical_to_sqlite_key_order_included(db, tmp_path, monkeypatch):
    for module in (jobs, jobs.state, credentials):  # the same ids and identities on both stores
        monkeypatch.setattr(module, "_token", lambda n: "ab" * n)
    lite = str(tmp_path / "twin" / "jobs.db")
    pg_row = jobs.get_job(_scenario(db), db=db)
    jobs.close_stores()
    lite_row = jobs.get_job(_scenario(lite), db=lite)
    assert pg_row == lite_row
    # Key order too, for everything brain-jobs writes (what `--json` prints). The user's own
    # ``data`` object is equal but keeps jsonb's key order (see docs/postgres.md).
    pg_text, lite_text = (json.dumps(dict(r, data=None), ensure_ascii=False) for r in (pg_row, lite_row))
    assert pg_text == lite_text
    assert list(pg_row["data"])[:2] == ["prompt", "files"]
    assert pg_row["status"] == "completed" and pg_row["consolidated_result"]["completed"] == 3


def test_the_table_has_the_seed_columns_with_jsonb_and_timestamptz(pg):
    types = dict(pg.execute("SELECT column_name, data_type FROM information_schema.columns "
                            "WHERE table_name = 'jobs' AND table_schema = current_schema()").fetchall())
    assert types == {
        "job_id": "text", "created_at": "timestamp with time zone", "ttl": "integer",
        "expires_at": "timestamp with time zone", "data": "jsonb", "iteration": "integer", "status": "text",
        "tools_required": "jsonb", "history": "jsonb", "type": "text", "sub_tasks": "jsonb",
        "consolidated_result": "jsonb",
    }


def test_psql_sees_the_state_as_json(pg, db):
    job = jobs.create_job_with_subtasks(60, {"prompt": "p"}, ["a", "b"])
    jobs.update_subtask_status(job, "sub_2", "completed", "done")
    status = pg.execute("SELECT s->>'status' FROM jobs, jsonb_array_elements(sub_tasks) s "
                        "WHERE job_id = %s ORDER BY s->>'sub_task_id'", (job,)).fetchall()
    assert [r[0] for r in status] == ["pending", "completed"]


def test_migrations_are_recorded_and_concurrent_opens_of_a_fresh_schema_agree(tmp_path):
    schema = f"brain_t_mig_{os.getpid()}_{time.monotonic_ns() % 10**8}"
    url = postgres_url(schema)
    script = "import sys; from brain_jobs.store import open_store; open_store(sys.argv[1]).close()"
    procs = [subprocess.Popen([sys.executable, "-c", script, url], cwd=ROOT, stderr=subprocess.PIPE, text=True)
             for _ in range(8)]
    errors = [p.communicate(timeout=60)[1] for p in procs]
    try:
        assert [p.returncode for p in procs] == [0] * 8, errors
        store = open_store(url)
        rows = store._conn.execute("SELECT version, name FROM brain_migrations ORDER BY version").fetchall()
        store.close()
        assert rows == [(i, step.__name__.lstrip("_")) for i, step in enumerate(MIGRATIONS, 1)]
    finally:
        import psycopg

        with psycopg.connect(PG_URL, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def test_schemas_are_isolated_and_the_cli_takes_database_url(brain, db):
    other = db.replace("schema=", "schema=x")
    try:
        job = brain.ok("job", "create", "--ttl", "60", "--prompt", "p", "--database-url", other).strip()[4:]
        assert brain.json("job", "get", job, "--database-url", other)["job_id"] == job
        assert brain("job", "get", job).returncode == 1  # not in BRAIN_DATABASE_URL's schema
        assert brain.json("job", "get", job, "--db", other)["job_id"] == job
    finally:
        jobs.close_stores()
        import psycopg

        with psycopg.connect(PG_URL, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{split_url(other)[1]}" CASCADE')


def test_a_missing_driver_says_how_to_install_it(db):
    code = ("import sys; sys.modules['psycopg'] = None\n"
            "from brain_jobs.cli import main\n"
            "sys.exit(main(['job', 'list']))")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1
    assert proc.stderr.strip() == ("brain: error: PostgreSQL support needs psycopg 3, which is not installed: "
                                   "pip install 'psycopg[binary]' (from a brain-jobs checkout: pip install '.[postgres]')")


def test_an_unreachable_server_is_one_clear_line_without_the_password(brain):
    proc = brain("job", "list", "--database-url", "postgresql://brain:s3cret@127.0.0.1:1/jobs",
                 env={"BRAIN_LOCK_TIMEOUT": "2"})
    assert proc.returncode == 1
    assert proc.stderr.startswith("brain: error: cannot connect to the job store postgresql://127.0.0.1:1/jobs")
    assert "BRAIN_DATABASE_URL" in proc.stderr and "s3cret" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1  # brain() bounds the wait: no retry loop hangs


@pytest.mark.parametrize("url, why", [
    ("postgresql://brain:s3c ret@127.0.0.1:1/jobs", 'unexpected spaces found in "***"'),
    ("postgresql://brain:s3%zzcret@127.0.0.1:1/jobs", "invalid percent-encoded token"),
    ("postgresql://brain:s3cret@127.0.0.1:1/jobs?bogus=1", 'invalid URI query parameter: "bogus"'),
    ("postgresql://brain:s3cret@127.0.0.1:1/jobs\udcff", "not valid UTF-8"),
], ids=["space", "percent", "parameter", "not UTF-8"])
def test_a_url_libpq_cannot_read_is_one_line_without_the_password(brain, url, why):
    """These were tracebacks of psycopg's (ProgrammingError, UnicodeEncodeError), one quoting the password."""
    proc = brain("job", "list", "--database-url", url)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith(f"brain: error: invalid PostgreSQL URL ({why}") and proc.stderr.count("\n") == 1
    assert "s3c" not in proc.stderr


def test_a_unix_socket_url_reaches_the_server(pg, db):
    """postgresql:///DB?host=/socket/dir: urlunsplit dropped its empty host, and libpq could not read the rest."""
    from urllib.parse import urlsplit

    directory = pg.execute("SHOW unix_socket_directories").fetchone()[0].split(",")[0].strip()
    if not directory or not os.path.exists(os.path.join(directory, f".s.PGSQL.{pg.info.port}")):
        pytest.skip("the server has no Unix socket here")
    parts = urlsplit(PG_URL)
    _, schema = split_url(db)
    url = f"postgresql://{parts.path}?host={directory}&port={pg.info.port}&user={parts.username}&schema={schema}"
    job = jobs.create_job(60, {"prompt": "p"}, db=db)
    assert split_url(url)[0].startswith("postgresql:///")
    assert [r["job_id"] for r in jobs.list_jobs(db=url)] == [job]


def test_a_bad_schema_name_is_invalid_input(brain):
    proc = brain("job", "list", "--database-url", "postgresql://postgres@127.0.0.1/test?schema=a;drop")
    assert proc.returncode == 2 and "invalid PostgreSQL schema name" in proc.stderr


def test_a_row_held_too_long_is_store_busy_within_the_lock_timeout(pg, db, monkeypatch):
    job = jobs.create_job_with_subtasks(60, {"prompt": "p"}, ["a"])
    jobs.close_stores()
    monkeypatch.setenv("BRAIN_LOCK_TIMEOUT", "0.5")
    with pg.transaction():
        pg.execute("SELECT 1 FROM jobs WHERE job_id = %s FOR UPDATE", (job,))
        # Given up while the row is still held (ordering), after the timeout it names.
        with pytest.raises(StoreBusy, match=r"held a job for more than 0\.5 s; retry, or raise BRAIN_LOCK_TIMEOUT"):
            in_thread(lambda: jobs.update_subtask_status(job, "sub_1", "completed", "x"))
    jobs.update_subtask_status(job, "sub_1", "completed", "x")  # the store is usable again at once
    assert jobs.get_job(job)["status"] == "completed"


def test_claims_skip_a_job_another_writer_holds(pg, db, monkeypatch):
    held = jobs.create_job_with_subtasks(60, {"prompt": "p"}, ["a"])
    free = jobs.create_job_with_subtasks(60, {"prompt": "p"}, ["b"])
    pool.queue_job(held, "http")
    pool.queue_job(free, "http")
    jobs.close_stores()
    monkeypatch.setenv("BRAIN_LOCK_TIMEOUT", "600")  # waiting for the held row would outlast in_thread
    with pg.transaction():
        pg.execute("SELECT 1 FROM jobs WHERE job_id = %s FOR UPDATE", (held,))
        claim = in_thread(lambda: pool.claim("http", "w", 30))
        assert claim["job_id"] == free  # the older job is held: skipped, not waited for
    assert pool.claim("http", "w", 30)["job_id"] == held


def test_nul_in_data_is_refused_and_nothing_is_stored(db):
    before = store_snapshot()
    with pytest.raises(InvalidInput, match="NUL"):
        jobs.create_job(60, {"prompt": "p", "note": "a\x00b"})
    assert store_snapshot() == before


def test_wait_wakes_on_a_commit_from_another_process(db):
    store = open_store(db)
    try:
        assert store.wait(5) is True  # starts listening
        assert store.wait(0.3) is False  # nothing committed: it returns when its timeout ends
        script = ("import sys; from brain_jobs import jobs; "
                  "jobs.create_job(60, {'prompt': 'p'}, db=sys.argv[1])")
        woke = {}

        def waiter():
            woke["value"] = store.wait(600)  # True: woken by a commit (its timeout says False)

        thread = threading.Thread(target=waiter)
        thread.start()
        subprocess.run([sys.executable, "-c", script, db], cwd=ROOT, check=True, timeout=60)
        thread.join(60)
        assert not thread.is_alive() and woke["value"] is True
    finally:
        store.close()


def test_a_program_writing_the_table_directly_wakes_waiting_workers(pg, db):
    """NOTIFY comes from a trigger on the table, not from our writers alone."""
    job = jobs.create_job_with_subtasks(60, {"prompt": "p"}, ["a"])
    store = open_store(db)
    try:
        assert store.wait(5) is True  # starts listening
        assert store.wait(0.2) is False  # nothing committed since
        with pg.transaction():
            pg.execute("UPDATE jobs SET iteration = iteration + 1 WHERE job_id = %s", (job,))
            pg.execute("SELECT 1")  # not committed yet: nothing is delivered
        assert store.wait(5) is True
        pg.execute("SELECT count(*) FROM jobs")  # a read changes nothing and wakes no one
        assert store.wait(0.2) is False
    finally:
        store.close()


def test_the_notify_channel_of_a_long_schema_name_matches_the_trigger(monkeypatch):
    import psycopg

    from brain_jobs.store.postgres import channel_for

    schema = "s" * 60
    url = postgres_url(schema)
    try:
        store = open_store(url)
        try:
            assert store.channel == channel_for(schema) and len(store.channel) <= 63
            assert store.wait(5) is True
            jobs.create_job(60, {"prompt": "p"}, db=url)
            assert store.wait(5) is True
        finally:
            store.close()
            jobs.close_stores()
    finally:
        with psycopg.connect(PG_URL, autocommit=True) as admin:
            admin.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")


def test_an_error_from_the_server_mid_transaction_rolls_back_and_the_store_goes_on(db):
    """Writes are pipelined: a statement's error arrives later than it was sent, and must
    still roll back the whole transaction and leave the connection usable."""
    job = jobs.create_job_with_subtasks(60, {"prompt": "p"}, ["a"])
    store = jobs.store_for(db)
    before = store.read(job)
    with pytest.raises(InvalidInput, match="NUL"):
        with store.write() as tx:
            row = tx.get(job)
            row["iteration"] += 1
            row["data"] = {"prompt": "p", "note": "a\x00b"}  # jsonb refuses it, at the server
            tx.replace(row)
    assert store.read(job) == before
    jobs.update_subtask_status(job, "sub_1", "completed", "after the error")
    assert jobs.get_job(job)["status"] == "completed"


def test_a_dropped_connection_is_replaced(db):
    job = jobs.create_job_with_subtasks(60, {"prompt": "p"}, ["a"])
    store = jobs.store_for(db)
    pid = store._conn.info.backend_pid
    import psycopg

    with psycopg.connect(PG_URL, autocommit=True) as admin:
        admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
    time.sleep(0.1)
    jobs.update_subtask_status(job, "sub_1", "completed", "after a server-side disconnect")
    assert store._conn.info.backend_pid != pid
    assert jobs.get_job(job)["status"] == "completed"


def test_the_store_refuses_to_open_when_the_schema_cannot_be_chosen(monkeypatch):
    monkeypatch.delenv("BRAIN_PG_SCHEMA", raising=False)
    url = PG_URL + ("&" if "?" in PG_URL else "?") + "options=-csearch_path%3Dno_such_schema_x"
    with pytest.raises(StoreError, match="no schema to create the jobs table in"):
        open_store(url)


def test_lock_timeout_zero_means_do_not_wait(pg, db, monkeypatch):
    job = jobs.create_job_with_subtasks(60, {"prompt": "p"}, ["a"])
    jobs.close_stores()
    monkeypatch.setenv("BRAIN_LOCK_TIMEOUT", "0")  # PostgreSQL's own 0 would mean "wait for ever"
    with pg.transaction():
        pg.execute("SELECT 1 FROM jobs WHERE job_id = %s FOR UPDATE", (job,))
        with pytest.raises(StoreBusy):  # while the row is still held: no wait for ever
            in_thread(lambda: jobs.update_subtask_status(job, "sub_1", "completed", "x"))
    monkeypatch.setenv("BRAIN_LOCK_TIMEOUT", "soon")
    jobs.close_stores()
    with pytest.raises(InvalidInput, match="BRAIN_LOCK_TIMEOUT"):
        jobs.get_job(job)


@pytest.mark.parametrize("ci", ["", "true"])
def test_without_a_server_the_postgres_run_skips_saying_why_except_in_ci(ci, tmp_path):
    env = dict(os.environ, BRAIN_TEST_DATABASE_URL="postgresql://postgres@127.0.0.1:1/test", CI=ci,
               BRAIN_TEST_BACKENDS="sqlite,postgres")
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-rsfE", "-p", "no:cacheprovider", "--rootdir", str(ROOT),
         str(ROOT / "tests" / "test_worker.py") + "::test_queue_refuses_what_it_cannot_queue"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
    )
    out = proc.stdout
    assert "cannot reach postgresql://postgres@127.0.0.1:1/test" in out, out
    if ci:
        assert proc.returncode == 1 and "1 passed, 1 error" in out and "PostgreSQL is required in CI" in out
    else:
        assert proc.returncode == 0 and "1 passed, 1 skipped" in out and "PostgreSQL run skipped" in out

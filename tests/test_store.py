"""The embedded SQLite store: schema, WAL, location, permissions, migrations."""

import os
import re
import sqlite3
import stat
import subprocess
import sys

import pytest

from conftest import ROOT
from brain_jobs import jobs, paths
from brain_jobs.store import COLUMNS
from brain_jobs.store.sqlite import MIGRATIONS, SQLiteStore

pytestmark = pytest.mark.sqlite_only

SEED_COLUMNS = ["job_id", "created_at", "ttl", "expires_at", "data", "iteration", "status",
                "tools_required", "history", "type", "sub_tasks", "consolidated_result"]


def test_the_table_has_exactly_the_seed_columns(db):
    jobs.create_job_with_subtasks(60, {"prompt": "p"}, ["a"])
    conn = sqlite3.connect(db)
    cols = [r[1] for r in conn.execute("PRAGMA table_info(jobs)")]
    assert cols == SEED_COLUMNS == list(COLUMNS)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_sqlite3_shell_shows_the_current_state_while_the_writer_is_open(db):
    job = jobs.create_job_with_subtasks(60, {"prompt": "p"}, ["GET /a", "GET /b"])
    jobs.update_subtask_status(job, "sub_2", "completed", "[200 OK] 5 items")
    # The API's connection stays open; an outside reader sees committed state.
    out = subprocess.run(["sqlite3", db, "select sub_tasks, consolidated_result from jobs"],
                         capture_output=True, text=True, timeout=30)
    if out.returncode != 0 and "not found" in out.stderr:
        conn = sqlite3.connect(db)
        text = str(conn.execute("select sub_tasks, consolidated_result from jobs").fetchall())
    else:
        text = out.stdout
    assert '"status":"completed","result":"[200 OK] 5 items"' in text
    jobs.update_subtask_status(job, "sub_1", "completed", "done")
    conn = sqlite3.connect(db)
    (consolidated,) = conn.execute("select consolidated_result from jobs").fetchone()
    assert '"completed":2' in consolidated


def test_directory_is_0700_and_file_0600(tmp_path):
    target = tmp_path / "fresh" / "deeper" / "jobs.db"
    old = os.umask(0)
    try:
        jobs.create_job(60, {"prompt": "p"}, db=str(target))
    finally:
        os.umask(old)
    assert stat.S_IMODE(target.parent.stat().st_mode) == 0o700
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert stat.S_IMODE((target.parent / "jobs.db.lock").stat().st_mode) == 0o600


def test_location_precedence(monkeypatch, tmp_path):
    home = tmp_path / "h"
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("BRAIN_DB")
    assert paths.default_db_path() == str(home / ".brain" / "jobs.db")
    # Inside Claude Code too: the plugin's data dir (named after the install) is not the store.
    monkeypatch.setenv("CLAUDE_PLUGIN_DATA", str(tmp_path / "plugin-data"))
    assert paths.default_db_path() == str(home / ".brain" / "jobs.db")
    monkeypatch.setenv("BRAIN_DB", str(tmp_path / "env.db"))
    assert paths.default_db_path() == str(tmp_path / "env.db")
    monkeypatch.setenv("BRAIN_DATABASE_URL", "postgresql://db/jobs")
    assert paths.default_target() == "postgresql://db/jobs"


def test_default_location_is_home_dot_brain_for_the_cli(brain, monkeypatch, tmp_path):
    monkeypatch.delenv("BRAIN_DB")
    out = brain.ok("job", "create", "--ttl", "60", "--prompt", "p")
    home_db = tmp_path / "home" / ".brain" / "jobs.db"
    assert home_db.exists()
    assert brain.json("job", "get", out.strip())["job_id"] == out.strip()[4:]
    monkeypatch.setenv("CLAUDE_PLUGIN_DATA", str(tmp_path / "pd"))
    second = brain.ok("job", "create", "--ttl", "60", "--prompt", "p").strip()[4:]
    assert not (tmp_path / "pd").exists()
    monkeypatch.delenv("CLAUDE_PLUGIN_DATA")
    assert brain.json("job", "get", second)["job_id"] == second


def test_migrations_are_versioned_and_idempotent(db):
    SQLiteStore(db).close()
    conn = sqlite3.connect(db)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)
    # Running every step again over an existing store changes nothing.
    conn.execute("PRAGMA user_version = 0")
    conn.commit()
    conn.close()
    job = jobs.create_job(60, {"prompt": "kept"}, db=db)
    jobs.close_stores()
    conn = sqlite3.connect(db)
    conn.execute("PRAGMA user_version = 0")
    conn.commit()
    conn.close()
    assert jobs.get_job(job, db=db)["data"] == {"prompt": "kept"}
    conn = sqlite3.connect(db)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)


def test_a_store_created_by_the_seed_schema_is_adopted(db):
    # A jobs table made with the seed's own DDL (and no user_version) opens fine.
    os.makedirs(os.path.dirname(db), exist_ok=True)
    conn = sqlite3.connect(db)
    conn.execute("""CREATE TABLE jobs (job_id TEXT PRIMARY KEY, created_at TIMESTAMP, ttl INTEGER,
        expires_at TIMESTAMP, data JSON, iteration INTEGER, status TEXT, tools_required JSON, history JSON,
        type TEXT DEFAULT 'normal', sub_tasks JSON DEFAULT '[]', consolidated_result JSON DEFAULT 'null')""")
    conn.commit()
    conn.close()
    os.chmod(db, 0o600)  # sqlite3 made it with the umask's mode; a store others can read is refused
    job = jobs.create_job_with_subtasks(60, {"prompt": "p"}, ["q"], db=db)
    assert jobs.get_job(job, db=db)["sub_tasks"][0]["query"] == "q"


def test_a_report_imports_no_heavy_module(db):
    job = jobs.create_job_with_subtasks(60, {"prompt": "p"}, ["q"], db=db)
    code = (
        "import sys; from brain_jobs import cli;"
        f"rc = cli.main(['job', 'update', '{job}', 'sub_1', '--status', 'completed', '--result', 'r']);"
        "rc |= cli.main(['job', 'subtasks', '{job}']);".replace("{job}", job) +
        "heavy = [m for m in ('anthropic', 'yaml', 'psycopg', 'filelock', 'httpx', 'orjson') if m in sys.modules];"
        "print(rc, heavy)"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=30)
    assert out.stdout.strip().splitlines()[-1] == "0 []", out.stderr


def test_a_write_stores_only_the_columns_it_changed(db):
    """SQLite rewrites an index entry for every indexed column named in an UPDATE, changed or
    not: a report that leaves ``status`` and ``expires_at`` alone must not name them."""
    job = jobs.create_job_with_subtasks(60, {"prompt": "p"}, ["a", "b"], db=db)
    jobs.update_subtask_status(job, "sub_1", "running", db=db)  # the job starts: status changes
    statements = []

    def updated():
        """The columns the UPDATEs traced since the last call set (values are bound, hex or quoted)."""
        names = {n for s in statements if s.startswith("UPDATE jobs SET ")
                 for n in re.findall(r"(?:SET |, )(\w+) = ", s.split(" WHERE job_id = ")[0])}
        statements.clear()
        return names

    jobs.store_for(db)._conn.set_trace_callback(statements.append)
    try:
        jobs.update_subtask_status(job, "sub_1", "completed", "r", db=db)
        mid = updated()
        jobs.update_subtask_status(job, "sub_2", "completed", "r", db=db)  # the last: completes the job
        last = updated()
    finally:
        jobs.store_for(db)._conn.set_trace_callback(None)
    assert mid == {"sub_tasks", "history"}
    assert {"sub_tasks", "history", "status", "consolidated_result"} <= last
    assert not {"expires_at", "data", "created_at"} & last
    row = jobs.get_job(job, db=db)
    assert row["status"] == "completed" and row["consolidated_result"]["completed"] == 2


def test_a_report_finds_its_sub_task_when_another_program_reordered_them(db):
    """Reports look at position n for sub_n first; a job stored in another order still works."""
    job = jobs.create_job_with_subtasks(60, {"prompt": "p"}, ["a", "b", "c"])
    with sqlite3.connect(db) as conn:
        conn.execute("UPDATE jobs SET sub_tasks = json_array(json_extract(sub_tasks, '$[2]'), "
                     "json_extract(sub_tasks, '$[0]'), json_extract(sub_tasks, '$[1]')) WHERE job_id = ?", (job,))
    assert [s["sub_task_id"] for s in jobs.get_job_subtasks(job)] == ["sub_3", "sub_1", "sub_2"]
    jobs.update_subtask_status(job, "sub_1", "completed", "first")
    jobs.update_subtask_status(job, "sub_3", "failed", "third")
    subs = {s["sub_task_id"]: (s["query"], s["status"], s["result"]) for s in jobs.get_job_subtasks(job)}
    assert subs == {"sub_1": ("a", "completed", "first"), "sub_2": ("b", "pending", None),
                    "sub_3": ("c", "failed", "third")}

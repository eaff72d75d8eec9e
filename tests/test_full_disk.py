"""A store that cannot be written is still read (issue 12, item 10).

With the disk at 100 %, ``subtasks``, ``get``, ``list``, ``consolidate``, ``stats`` and
``history`` answer from what is stored, swept in memory (a timed-out sub-task shows as
timed out) without storing anything; only writes fail, with one line.

For real: a 2 MB tmpfs filled to the last byte (root only), and, everywhere, a file size
limit (``RLIMIT_FSIZE``), under which SQLite cannot create the WAL index it opens with.
On PostgreSQL the same rule is checked with a read-only session
(``default_transaction_read_only``): a read never needs a write there either.
"""

import hashlib
import json
import os
import resource
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import BRAIN, PG_URL, store_snapshot
from brain_jobs import jobs

READS = {
    "subtasks": lambda j: ("job", "subtasks", j["overdue"], "--json"),
    "get": lambda j: ("job", "get", j["overdue"], "--json"),
    "history": lambda j: ("job", "history", j["overdue"], "--json"),
    "list": lambda j: ("job", "list", "--json"),
    "list --all": lambda j: ("job", "list", "--all", "--json"),
    "consolidate unread": lambda j: ("job", "consolidate", j["finished"], "--json"),
    "consolidate overdue": lambda j: ("job", "consolidate", j["overdue"], "--json"),
    "stats": lambda j: ("job", "stats", "--json"),
}


def _jobs(db, fake_clock):
    """Four jobs, three of which a read would normally write to once time has moved on."""
    made = {}
    made["overdue"] = jobs.create_job_with_subtasks(300, {"prompt": "overdue"}, ["a", "b"], db=db)
    calls = jobs.dispatch_job(made["overdue"], timeout=10, db=db)["agent_calls"]
    agent = jobs.parse_subtask_prompt(calls[0]["prompt"])[2]
    jobs.update_subtask_status(made["overdue"], "sub_1", "completed", "kept", agent_id=agent, db=db)
    made["finished"] = jobs.create_job_with_subtasks(300, {"prompt": "finished"}, ["c"], db=db)
    jobs.update_subtask_status(made["finished"], "sub_1", "completed", "done", db=db)  # its result never read
    made["expired"] = jobs.create_job_with_subtasks(5, {"prompt": "expired"}, ["d"], db=db)
    made["active"] = jobs.create_job_with_subtasks(600, {"prompt": "active"}, ["e"], db=db)
    jobs.close_stores()
    fake_clock.advance(11)  # sub_2 of "overdue" is past its deadline, "expired" past its TTL
    return made


def _check_reads(made, run):
    """Run every read; each exits 0 and shows the swept state."""
    out = {}
    for name, args in READS.items():
        proc = run(*args(made))
        assert proc.returncode == 0, (name, proc.stderr)
        out[name] = json.loads(proc.stdout)
    subs = out["subtasks"]
    assert [s["status"] for s in subs] == ["completed", "failed"]
    assert subs[0]["result"] == "kept" and subs[1]["result"].startswith("timed out")
    assert out["get"]["status"] == "failed" and out["get"]["sub_tasks"] == subs
    assert [e["event"] for e in out["history"]][-2:] == ["timeout", "consolidated"]
    assert [j["job_id"] for j in out["list"]] == [made["active"]]
    statuses = {j["job_id"]: j["status"] for j in out["list --all"]}
    assert statuses == {made["overdue"]: "failed", made["finished"]: "completed", made["expired"]: "failed",
                        made["active"]: "pending"}
    assert out["consolidate unread"]["completed"] == 1 and out["consolidate unread"]["complete"] is True
    assert [r["status"] for r in out["consolidate overdue"]["results"]] == ["completed", "failed"]
    assert out["stats"]["total_jobs"] == 4 and out["stats"]["jobs"]["failed"] == 2
    return out


def _stored(directory):
    """The store's content: the database file, and a WAL that holds no change (the failed
    read-write open may leave an empty one, and the WAL index, behind)."""
    wal = directory / "jobs.db-wal"
    assert not wal.exists() or wal.stat().st_size == 0
    return hashlib.sha256((directory / "jobs.db").read_bytes()).hexdigest()


def _run(env=None, preexec=None):
    def run(*args):
        return subprocess.run([sys.executable, str(BRAIN), *args], capture_output=True, text=True, timeout=60,
                              env=dict(os.environ, **(env or {})), preexec_fn=preexec)
    return run


@pytest.fixture
def tmpfs(tmp_path):
    """A 2 MB tmpfs, unmounted afterwards; skips where mounting is not allowed (not root)."""
    mount = tmp_path / "small"
    mount.mkdir(mode=0o700)
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m,mode=0700", "tmpfs", str(mount)],
                          capture_output=True, text=True, timeout=30)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({proc.stderr.strip()}); the RLIMIT_FSIZE test covers the rule")
    try:
        yield mount
    finally:
        jobs.close_stores()
        subprocess.run(["umount", "-l", str(mount)], check=True, timeout=30)


def _fill(directory):
    with open(directory / "filler", "wb") as fh:
        chunk = b"\0" * 65536
        for _ in range(10_000):  # bounded: 640 MB, far more than the mount holds
            try:
                fh.write(chunk)
                fh.flush()
            except OSError:
                break
        else:
            pytest.fail("the disk never filled")
    while True:  # the last bytes of the last page
        try:
            with open(directory / "filler", "ab") as fh:
                fh.write(b"\0" * 512)
        except OSError:
            return


@pytest.mark.sqlite_only
def test_a_full_disk_still_reads(tmpfs, fake_clock, monkeypatch):
    db = tmpfs / "store" / "jobs.db"
    monkeypatch.setenv("BRAIN_DB", str(db))
    made = _jobs(str(db), fake_clock)
    _fill(tmpfs)
    before = _stored(db.parent)
    run = _run()
    _check_reads(made, run)
    assert _stored(db.parent) == before  # nothing was written: the sweep was shown, not stored
    write = run("job", "update", made["active"], "sub_1", "--status", "completed", "--result", "r")
    assert write.returncode == 1 and write.stderr.count("\n") == 1
    assert write.stderr.startswith(f"brain: error: could not write the job store {db} (disk I/O error)")
    os.unlink(tmpfs / "filler")  # space again: the next read stores what it swept
    assert run("job", "list", "--all", "--json").returncode == 0
    jobs.close_stores()
    assert jobs.get_job(made["overdue"])["sub_tasks"][1]["status"] == "failed"


@pytest.mark.sqlite_only
def test_a_file_size_limit_still_reads(fake_clock, db):
    """The same reads when SQLite cannot create or grow the -shm index (32 KB) it needs to open."""
    made = _jobs(db, fake_clock)
    directory = Path(db).parent

    def limited():
        resource.setrlimit(resource.RLIMIT_FSIZE, (16384, 16384))

    before = _stored(directory)
    _check_reads(made, _run(preexec=limited))
    assert _stored(directory) == before
    write = _run(preexec=limited)("job", "create", "--ttl", "60", "--prompt", "p")
    assert write.returncode == 1 and "could not write the job store" in write.stderr


@pytest.mark.postgres_only
def test_a_read_only_postgres_session_still_reads(fake_clock, db):
    made = _jobs(db, fake_clock)
    read_only = db + "&options=--default_transaction_read_only%3Don"
    assert read_only.startswith(PG_URL)  # the test server, this test's schema
    before = store_snapshot(db)
    run = _run(env={"BRAIN_DATABASE_URL": read_only})
    _check_reads(made, run)
    write = run("job", "create", "--ttl", "60", "--prompt", "p")
    assert write.returncode == 1 and "read-only transaction" in write.stderr
    assert store_snapshot(db) == before  # the sweeps were shown, not stored

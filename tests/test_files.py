"""Files that are ours: a SQLite store that another user can read, change, own or swap is
refused with one line, and everything brain creates is 0700 (directories) or 0600 (files).

The suite runs as root here; another user is uid 65534 (``os.chown``), and "readable by
others" is a mode. Each refusal leaves the files as they were.
"""

import os
import resource
import sqlite3
import stat
import subprocess
import sys

import pytest

from conftest import BRAIN, run_brain
from brain_jobs import jobs, runner
from brain_jobs.store import sqlite as sqlite_store

pytestmark = pytest.mark.sqlite_only

OTHER_UID = 65534  # nobody


def _mode(path):
    return stat.S_IMODE(os.lstat(path).st_mode)


@pytest.fixture
def store(tmp_path):
    """A real store with one job, made by brain, closed; returns (path, job id)."""
    path = tmp_path / "shared" / "jobs.db"
    job = jobs.create_job_with_subtasks(60, {"prompt": "p"}, ["a"], db=str(path))
    jobs.close_stores()
    return path, job


def _refused(path, *args, env=None):
    """Every command on the store exits 1 with one line saying why, and changes nothing."""
    before = {p: p.read_bytes() for p in path.parent.iterdir() if p.is_file()}
    for command in (("job", "list", "--all"), ("job", "create", "--ttl", "60", "--prompt", "p"), *args):
        proc = run_brain("--db", path, *command, env=env)
        assert proc.returncode == 1, (command, proc.stdout, proc.stderr)
        assert proc.stdout == "" and proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr
        yield proc.stderr
    assert {p: p.read_bytes() for p in path.parent.iterdir() if p.is_file()} == before


def test_a_store_pre_created_by_another_user_in_a_shared_directory_is_refused(tmp_path):
    """Issue 12, item 9: another user makes the file 0666 in a world-writable (sticky) directory
    before us; using it would give them every job."""
    shared = tmp_path / "tmp"
    shared.mkdir()
    shared.chmod(0o1777)
    trap = shared / "jobs.db"
    trap.write_bytes(b"")
    trap.chmod(0o666)
    os.chown(trap, OTHER_UID, OTHER_UID)
    for err in _refused(trap):
        assert err == (f"brain: error: the job store file {trap} belongs to another user (uid {OTHER_UID}), who can "
                       "read and change every job; it was left untouched: point BRAIN_DB at a file of your own, "
                       "or set BRAIN_ALLOW_SHARED_STORE=1 if you share it on purpose\n")
    assert trap.stat().st_size == 0 and not (shared / "jobs.db-wal").exists()


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o666, 0o620])
def test_a_store_other_users_can_read_or_write_is_refused(store, mode):
    path, job = store
    path.chmod(mode)
    for err in _refused(path, ("job", "get", job)):
        assert err == (f"brain: error: the job store file {path} can be read or written by other users "
                       f"(mode {mode:04o}); it was left untouched: chmod 600 it, or point BRAIN_DB at a file of "
                       "your own, or set BRAIN_ALLOW_SHARED_STORE=1 if you share it on purpose\n")
    path.chmod(0o600)
    assert run_brain("--db", path, "job", "get", job).returncode == 0


@pytest.mark.parametrize("suffix", ["-wal", "-shm", ".lock"])
@pytest.mark.parametrize("problem", ["owned by another user", "readable by others"])
def test_a_companion_file_that_is_not_ours_is_refused(store, suffix, problem):
    """SQLite writes every change to -wal first and trusts -shm; brain's lock file decides who writes."""
    path, job = store
    companion = path.parent / (path.name + suffix)
    if not companion.exists():
        companion.write_bytes(b"")
    companion.chmod(0o600)
    if problem == "owned by another user":
        os.chown(companion, OTHER_UID, OTHER_UID)
        expected = f"{companion} belongs to another user (uid {OTHER_UID})"
    else:
        companion.chmod(0o644)
        expected = f"{companion} can be read or written by other users (mode 0644)"
    for err in _refused(path, ("job", "subtasks", job)):
        assert expected in err


@pytest.mark.parametrize("problem", ["owned by another user", "writable by others", "group-writable"])
def test_a_directory_others_can_change_is_refused(store, problem):
    """Whoever can write the directory (without the sticky bit) can swap the store for their own."""
    path, job = store
    directory = path.parent
    if problem == "owned by another user":
        os.chown(directory, OTHER_UID, OTHER_UID)
        expected = f"the job store's directory {directory} belongs to another user (uid {OTHER_UID})"
    else:
        mode = 0o777 if problem == "writable by others" else 0o770
        directory.chmod(mode)
        expected = f"the job store's directory {directory} is writable by other users (mode {mode:04o})"
    for err in _refused(path, ("job", "get", job)):
        assert err.startswith(f"brain: error: {expected}, who could swap the store: ")
        assert err.rstrip().endswith("or set BRAIN_ALLOW_SHARED_STORE=1 if you share it on purpose")
    directory.chmod(0o1777)  # the sticky bit: others may add files, not replace ours
    os.chown(directory, os.geteuid(), os.getegid())
    assert run_brain("--db", path, "job", "get", job).returncode == 0


def test_a_store_shared_on_purpose_is_used_with_the_override(store):
    path, job = store
    path.chmod(0o660)
    path.parent.chmod(0o2770)
    os.chown(path, OTHER_UID, os.getegid())
    proc = run_brain("--db", path, "job", "update", job, "sub_1", "--status", "completed", "--result", "r",
                     env={"BRAIN_ALLOW_SHARED_STORE": "1"})
    assert proc.returncode == 0, proc.stderr
    assert run_brain("--db", path, "job", "get", job).returncode == 1  # without it, still refused


def test_a_symlinked_store_is_checked_where_it_lives(tmp_path, store):
    path, job = store
    link = tmp_path / "mine" / "jobs.db"
    link.parent.mkdir(mode=0o700)
    link.symlink_to(path)
    assert run_brain("--db", link, "job", "get", job).returncode == 0
    path.chmod(0o644)
    proc = run_brain("--db", link, "job", "get", job)
    assert proc.returncode == 1 and f"the job store file {path} can be read or written by other users" in proc.stderr


def test_a_device_or_directory_is_not_a_store(tmp_path):
    for target in ("/dev/null", tmp_path):
        proc = run_brain("--db", target, "job", "list")
        assert proc.returncode == 1 and proc.stderr.count("\n") == 1, proc.stderr
    assert run_brain("--db", "/dev/null", "job", "list").stderr == (
        "brain: error: /dev/null is not a regular file; point BRAIN_DB at a file\n")


def test_every_directory_brain_creates_is_0700_and_every_file_0600(tmp_path, monkeypatch):
    """``os.makedirs(mode=0o700)`` gives the parents the umask's mode (0755 here): each one is
    made 0700 on purpose, for the store, its lock file, and the runners' logs."""
    old = os.umask(0o022)
    try:
        target = tmp_path / "a" / "b" / "c" / "jobs.db"
        job = jobs.create_job_with_subtasks(60, {"prompt": "p"}, ["a"], db=str(target))
        jobs.update_subtask_status(job, "sub_1", "running", db=str(target))
        logs = [runner._open_log(job, db) for db in (str(target), "postgresql://db/x")]
    finally:
        os.umask(old)
    for directory in (tmp_path / "a", tmp_path / "a" / "b", target.parent):
        assert _mode(directory) == 0o700, directory
    for name in ("jobs.db", "jobs.db.lock", "jobs.db-wal", "jobs.db-shm"):
        assert _mode(target.parent / name) == 0o600, name
    # A runner's log, beside the store, or under ~/.brain for a database URL.
    for (path, fd), base in zip(logs, (target.parent, tmp_path / "home" / ".brain")):
        os.close(fd)
        assert os.path.dirname(path) == str(base / "runners")
        assert _mode(base / "runners") == 0o700 and _mode(base) == 0o700 and _mode(path) == 0o600


def test_the_checks_cost_a_few_stats_and_no_import(store):
    """The report path opens a store in every process: the checks are path lookups
    (``lstat``), never a subprocess, an import or an open of the store file."""
    path, _ = store
    code = ("import sys; from brain_jobs.store.sqlite import SQLiteStore;"
            "before = set(sys.modules); SQLiteStore(sys.argv[1]).close();"
            "print(sorted(set(sys.modules) - before))")
    out = subprocess.run([sys.executable, "-c", code, str(path)], cwd=BRAIN.parent.parent, capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0 and out.stdout.strip() == "[]", out.stderr


def test_a_migration_that_fails_reports_its_own_error_not_the_rollback(tmp_path):
    """Issue 12, item 8: a failed migration whose rollback failed too said "cannot rollback - no
    transaction is active"; the real error is the write that failed (here a file size limit)."""
    def small_files():
        resource.setrlimit(resource.RLIMIT_FSIZE, (2048, 2048))  # less than a page

    path = tmp_path / "new" / "jobs.db"
    proc = subprocess.run([sys.executable, str(BRAIN), "--db", str(path), "job", "create", "--ttl", "60",
                           "--prompt", "p"], capture_output=True, text=True, timeout=60, preexec_fn=small_files)
    assert proc.returncode == 1 and proc.stderr.count("\n") == 1, proc.stderr
    assert proc.stderr.startswith(f"brain: error: could not write the job store {path} (disk I/O error)")
    assert "rollback" not in proc.stderr


def test_a_busy_sqlite_lock_is_not_blamed_on_another_program():
    """Issue 12, item 11: SQLite's own lock is also held, for a moment, by brain processes that
    open or close the store; the message says so instead of blaming "another program"."""
    error = sqlite_store._translate(sqlite3.OperationalError("database is locked"), "/x/jobs.db")
    assert str(error) == ("the job store /x/jobs.db is busy: another process (a brain process opening or closing "
                          "it, or another program) held it locked longer than BRAIN_LOCK_TIMEOUT allows; retry, "
                          "or raise BRAIN_LOCK_TIMEOUT")


HOLDER = """
import sys
from brain_jobs.store.sqlite import SQLiteStore
store = SQLiteStore(sys.argv[1])
with store.write():
    print("holding", flush=True)
    sys.stdin.read()
"""


def test_a_write_lock_held_by_brain_says_so_with_a_zero_timeout(store):
    path, job = store
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(path)], cwd=BRAIN.parent.parent,
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline() == "holding\n"
        proc = run_brain("--db", path, "job", "update", job, "sub_1", "--status", "completed", "--result", "r",
                         env={"BRAIN_LOCK_TIMEOUT": "0"})
        assert proc.returncode == 1
        assert proc.stderr == (f"brain: error: the job store is busy: another brain process is writing to it "
                               f"(it holds {path}.lock) and BRAIN_LOCK_TIMEOUT=0 says not to wait; retry, or "
                               "raise BRAIN_LOCK_TIMEOUT\n")
    finally:
        holder.stdin.close()
        holder.wait(timeout=30)

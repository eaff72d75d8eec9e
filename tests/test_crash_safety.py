"""Crash safety of the SQLite file: SIGKILL, broken files, full disk, read-only, a held lock.

Every test here is about the file itself, so it runs on SQLite only. A
trial kills real writer processes at a random moment after they started
writing; a writer acknowledges a report on its stdout only after the call
returned, so every acknowledged report must be in the store afterwards.
"""

import fcntl
import hashlib
import json
import os
import random
import resource
import shutil
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time

import pytest

from conftest import BRAIN, ROOT, run_brain, store_snapshot
from test_runner_support import wait_until
from brain_jobs import clock, jobs
from brain_jobs.errors import StoreError

pytestmark = pytest.mark.sqlite_only

# A writer: opens the store, says "ready", then reports and acknowledges each
# report on stdout after it returned. Modes: "worker" reports running then
# completed; "reporter" reports completed; "orchestrator" cycles dispatch,
# forced failure and retry on its own job.
WRITER = textwrap.dedent("""
    import os, sys
    sys.path.insert(0, {root!r})
    from brain_jobs import jobs
    mode, db, job = sys.argv[1:4]
    jobs.store_for(db)
    os.write(1, b"ready\\n")
    if mode == "orchestrator":
        while True:
            jobs.dispatch_job(job, timeout=5, db=db)
            os.write(1, b"dispatched\\n")
            for sub in jobs.get_job_subtasks(job, db=db):
                jobs.update_subtask_status(job, sub["sub_task_id"], "failed", "again", force=True, db=db)
            jobs.retry_subtasks(job, db=db)
            os.write(1, b"retried\\n")
    for pair in sys.argv[4:]:
        sub, agent = pair.split("=")
        if mode == "worker":
            jobs.update_subtask_status(job, sub, "running", agent_id=agent, db=db)
        jobs.update_subtask_status(job, sub, "completed", "result of " + sub, agent_id=agent, db=db)
        os.write(1, (sub + "\\n").encode())
    os.write(1, b"done\\n")
""").format(root=str(ROOT))


def integrity(path):
    conn = sqlite3.connect(path)
    try:
        return conn.execute("PRAGMA integrity_check").fetchall()
    finally:
        conn.close()


def sha256(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def agents(out):
    return {jobs.parse_subtask_prompt(c["prompt"])[1]: jobs.parse_subtask_prompt(c["prompt"])[2]
            for c in out["agent_calls"]}


def check_invariants(rows):
    """What must hold in any committed state: nothing half-finished."""
    for row in rows:
        final = all(s["status"] in ("completed", "failed") for s in row["sub_tasks"])
        if row["type"] == "distributed_search":
            assert (row["consolidated_result"] is not None) == final, row["job_id"]
            assert (row["status"] in ("completed", "failed")) == final, row["job_id"]
        for s in row["sub_tasks"]:
            if s["status"] == "running":  # claimed by a worker's report (no deadline) or dispatched (one)
                assert s["agent_id"], (row["job_id"], s)


def kill_at_random(procs, rng, low=0.005, high=0.060):
    """SIGKILL each process at its own random moment, 5-60 ms after it said ready."""
    for p in procs:
        assert p.stdout.readline() == b"ready\n", p.stderr.read()
    start = time.monotonic()
    for when, p in sorted(((rng.uniform(low, high), p) for p in procs), key=lambda x: x[0]):
        time.sleep(max(0.0, start + when - time.monotonic()))
        p.send_signal(signal.SIGKILL)
    acks = []
    for p in procs:
        p.wait()
        acks.append(p.stdout.read().decode().split())
        err = p.stderr.read().decode()
        p.stdout.close()
        p.stderr.close()
        # Killed, or finished: a writer that died of an error would pass for a kill.
        assert p.returncode in (-signal.SIGKILL, 0), err[-2000:]
    return acks


def spawn(mode, db, job, pairs=()):
    return subprocess.Popen([sys.executable, "-c", WRITER, mode, db, job, *pairs],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


# -- SIGKILL ------------------------------------------------------------------------

def test_sigkilled_writers_never_corrupt_the_store_or_lose_an_acknowledged_report(db):
    """40 trials: two workers and one reporter on one job, and an orchestrator on
    another, all SIGKILLed mid-write. The workers claim their sub-tasks (running,
    then completed, under their own ids); the reporter reports completed."""
    rng = random.Random(4)
    acknowledged = killed_mid_run = 0
    for trial in range(40):
        job = jobs.create_job_with_subtasks(600, {"prompt": f"trial {trial}"},
                                            [f"GET /t{trial}/{i}" for i in range(24)], db=db)
        pairs = [f"sub_{i}=w{trial}-{i}" for i in range(1, 25)]
        orchestrated = jobs.create_job_with_subtasks(600, {"prompt": "o"}, ["a", "b", "c"], db=db)
        procs = [spawn("worker", db, job, pairs[0:8]), spawn("worker", db, job, pairs[8:16]),
                 spawn("reporter", db, job, pairs[16:24]), spawn("orchestrator", db, orchestrated)]
        acks = kill_at_random(procs, rng, low=0.002, high=0.030)

        assert integrity(db) == [("ok",)], f"trial {trial}"
        rows = store_snapshot(db)
        check_invariants(rows)
        row = next(r for r in rows if r["job_id"] == job)
        by_id = {s["sub_task_id"]: s for s in row["sub_tasks"]}
        for ack in acks[:3]:
            killed_mid_run += "done" not in ack
            for sub in (a for a in ack if a.startswith("sub_")):
                acknowledged += 1
                assert (by_id[sub]["status"], by_id[sub]["result"]) == ("completed", f"result of {sub}"), trial
        # The orchestrator's job is still finishable: deadlines pass, a retry and a
        # dispatch restart it, its workers' reports finish it.
        _finish(orchestrated, db)
    print(f"\nSIGKILL: {killed_mid_run} of 120 reporting writers killed mid-run, {acknowledged} acknowledged reports kept")
    assert killed_mid_run >= 40  # many kills landed while writing, not after the last report
    assert acknowledged > 0


def test_sigkilled_writers_of_a_big_job_leave_its_slots_and_tally_true(db):
    """20 trials on a 96-sub-task job, laid out in slots and written in place: three
    workers SIGKILLed mid-write. The text stays JSON of the same layout, the tally
    matches the sub-tasks, and every acknowledged report is there."""
    rng = random.Random(96)
    acknowledged = 0
    for trial in range(20):
        job = jobs.create_job_with_subtasks(600, {"prompt": f"big {trial}"},
                                            [f"GET /big{trial}/{i}" for i in range(96)], db=db)
        pairs = [f"sub_{i}=w{trial}-{i}" for i in range(1, 97)]
        procs = [spawn("worker", db, job, pairs[k::3]) for k in range(3)]
        acks = kill_at_random(procs, rng, low=0.01, high=0.08)

        assert integrity(db) == [("ok",)], f"trial {trial}"
        conn = sqlite3.connect(db)
        try:
            text, history = conn.execute("SELECT sub_tasks, history FROM jobs WHERE job_id = ?", (job,)).fetchone()
            tally = conn.execute("SELECT pending, running, completed, failed FROM job_tally WHERE job_id = ?",
                                 (job,)).fetchall()
        finally:
            conn.close()
        subs, events = json.loads(text), json.loads(history)
        counted = tuple(sum(s["status"] == status for s in subs) for status in ("pending", "running", "completed",
                                                                                "failed"))
        assert tally == [counted], f"trial {trial}"
        assert len({len(s.encode()) for s in text[1:-1].split("},")}) <= 2  # still fixed-width slots
        by_id = {s["sub_task_id"]: s for s in subs}
        reported = {e["sub_task_id"] for e in events if e["event"] == "report" and e["status"] == "completed"}
        for ack in acks:
            for sub in (a for a in ack if a.startswith("sub_")):
                acknowledged += 1
                assert (by_id[sub]["status"], by_id[sub]["result"]) == ("completed", f"result of {sub}"), trial
                assert sub in reported, trial
    assert acknowledged > 0


def _finish(job, db):
    real = clock.now()
    clock.set_clock(lambda: real + 10)  # past the orchestrator's 5 s deadlines, well within the TTL
    try:
        row = jobs.get_job(job, db=db)
        assert not [s for s in row["sub_tasks"] if s["status"] == "running"]
        if any(s["status"] == "failed" for s in row["sub_tasks"]):
            jobs.retry_subtasks(job, db=db)
        ids = agents(jobs.dispatch_job(job, db=db))
        for sub, agent in ids.items():
            jobs.update_subtask_status(job, sub, "completed", "ok", agent_id=agent, db=db)
        assert jobs.consolidate_subtask_results(job, db=db)["complete"] is True
    finally:
        clock.set_clock(None)


def test_sigkilled_cli_reporters_lose_no_report_that_exited_zero(db):
    """12 trials of 6 concurrent `brain job update` processes, SIGKILLed 5-60 ms after start."""
    rng = random.Random(7)
    landed = 0
    for trial in range(12):
        job = jobs.create_job_with_subtasks(600, {"prompt": "p"}, [f"q{i}" for i in range(6)], db=db)
        ids = agents(jobs.dispatch_job(job, db=db))
        procs = {sub: subprocess.Popen([sys.executable, str(BRAIN), "job", "update", job, sub, "--status",
                                        "completed", "--result", f"r {sub}", "--agent-id", agent],
                                       stdout=subprocess.PIPE, stderr=subprocess.PIPE)
                 for sub, agent in ids.items()}
        time.sleep(rng.uniform(0.005, 0.060))
        for p in procs.values():
            p.send_signal(signal.SIGKILL)
        ok = []
        for sub, p in procs.items():
            out, err = p.communicate()
            assert p.returncode in (0, -signal.SIGKILL), err
            if p.returncode == 0:
                assert out == f"{sub}: completed\n".encode()
                ok.append(sub)
        assert integrity(db) == [("ok",)]
        rows = store_snapshot(db)
        check_invariants(rows)
        by_id = {s["sub_task_id"]: s for s in next(r for r in rows if r["job_id"] == job)["sub_tasks"]}
        for sub in ok:
            assert by_id[sub]["result"] == f"r {sub}"
        landed += len(ok)
    # The kills are real: some reporters died, and the store kept working for the rest.
    assert jobs.create_job(60, {"prompt": "still writable"}, db=db)


def test_a_second_store_in_one_process_keeps_the_first_one_working(db):
    """Regression: opening the file to read its header dropped this process's
    POSIX locks, so a CLI writer deleted the WAL under the open store
    ("disk I/O error", and commits could be lost)."""
    job = jobs.create_job_with_subtasks(300, {"prompt": "p"}, [f"q{i}" for i in range(6)], db=db)
    for i in range(1, 6):
        store_snapshot(db)  # a second store opened and closed in this process
        assert run_brain("job", "update", job, f"sub_{i}", "--status", "running").returncode == 0
        store_snapshot(db)
        jobs.update_subtask_status(job, f"sub_{i}", "completed", f"r{i}", db=db)
    assert [s["status"] for s in jobs.get_job_subtasks(job, db=db)] == ["completed"] * 5 + ["pending"]
    assert integrity(db) == [("ok",)]


# -- broken files ---------------------------------------------------------------------

def _good_database(path):
    proc = run_brain("--db", path, "job", "create", "--distributed", "--ttl", "300", "--prompt", "p",
                     *sum((["--subtask", f"{i} " + "x" * 400] for i in range(30)), []))
    assert proc.returncode == 0, proc.stderr
    with open(path, "rb") as f:
        return f.read(), proc.stdout.strip()[4:]


def _foreign(path):
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE notes (body TEXT)")
    conn.execute("INSERT INTO notes VALUES ('mine')")
    conn.commit()
    conn.close()
    with open(path, "rb") as f:
        return f.read()


BROKEN = {
    "text": lambda good: b"these are my notes, not a database\n",
    "json": lambda good: b'{"jobs": []}',
    "one byte": lambda good: b"\x00",
    "random bytes": lambda good: random.Random(1).randbytes(8192),
    "header only": lambda good: good[:100],
    "truncated to 1500 bytes": lambda good: good[:1500],
    "truncated by half": lambda good: good[: len(good) // 2],
    "last page missing": lambda good: good[:-4096],
    "header overwritten": lambda good: b"\xff" * 100 + good[100:],
    "pages zeroed": lambda good: good[:4096] + b"\x00" * (len(good) - 4096),
}


@pytest.mark.parametrize("kind", [*BROKEN, "another program's database"])
def test_a_broken_file_gives_a_clear_error_and_is_never_overwritten(tmp_path, kind):
    good, job = _good_database(tmp_path / "good.db")
    path = tmp_path / "broken" / "jobs.db"
    path.parent.mkdir()
    if kind == "another program's database":
        content = _foreign(path)
    else:
        content = BROKEN[kind](good)
        path.write_bytes(content)
    path.chmod(0o600)  # readable by others (the umask's mode), it would be refused for that first
    env = {"BRAIN_DB": str(path)}
    commands = [("job", "list", "--all"), ("job", "get", job), ("job", "subtasks", job),
                ("job", "create", "--ttl", "60", "--prompt", "p"),
                ("job", "update", job, "sub_1", "--status", "completed", "--result", "x"),
                ("job", "consolidate", job), ("job", "cleanup"), ("job", "stats")]
    procs = [subprocess.Popen([sys.executable, str(BRAIN), *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True, env=dict(os.environ, **env)) for args in commands]
    for args, p in zip(commands, procs):
        out, err = p.communicate(timeout=60)
        proc = subprocess.CompletedProcess(p.args, p.returncode, out, err)
        assert proc.returncode == 1, (kind, args, proc.stdout, proc.stderr)
        assert proc.stdout == "" and proc.stderr.count("\n") == 1, (kind, args, proc.stderr)
        assert proc.stderr.startswith(f"brain: error: {path} is ")
        assert "it was left untouched: move it aside or point BRAIN_DB elsewhere" in proc.stderr
    with pytest.raises(StoreError, match="left untouched"):
        jobs.get_job(job, db=str(path))
    jobs.close_stores()
    assert path.read_bytes() == content, kind
    wal = path.parent / "jobs.db-wal"
    assert not wal.exists() or wal.stat().st_size == 0  # nothing waits to be checkpointed into it


def test_an_empty_file_is_a_new_store(tmp_path, brain):
    path = tmp_path / "empty.db"
    path.write_bytes(b"")
    path.chmod(0o600)
    assert brain.ok("--db", path, "job", "create", "--ttl", "60", "--prompt", "p").startswith("job_")


# -- full disk and read-only file --------------------------------------------------------

def _big_job(db, n=100):
    return jobs.create_job_with_subtasks(300, {"prompt": "p"}, [f"{i} " + "y" * 450 for i in range(n)], db=db)


def test_a_file_size_limit_gives_a_clear_error_and_loses_nothing(db, brain_home):
    job = _big_job(db)
    jobs.update_subtask_status(job, "sub_1", "completed", "kept", db=db)
    jobs.close_stores()  # no WAL left open: every write below starts one from scratch
    before = store_snapshot(db)
    digest = sha256(db)

    def limit():  # 32 KiB: the shared-memory index fits, a rewrite of the 45 KB row does not
        resource.setrlimit(resource.RLIMIT_FSIZE, (32768, 32768))

    # A result of 400 bytes does not fit the room its slot keeps (store/layout.py), so this
    # report lays the whole row out again; a short result would rewrite a page or two.
    writes = [("job", "update", job, "sub_2", "--status", "completed", "--result", "é" * 200),
              ("job", "create", "--distributed", "--ttl", "60", "--prompt", "p",
               *sum((["--subtask", "z" * 450] for _ in range(100)), [])),
              ("job", "cancel", job)]
    for args in writes:
        proc = subprocess.run([sys.executable, str(BRAIN), *args], capture_output=True, text=True,
                              preexec_fn=limit)
        assert proc.returncode == 1, (args, proc.stderr)
        assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr
        assert "the disk may be full, over a file size limit or failing; free space and retry" in proc.stderr
        assert "nothing stored was lost" in proc.stderr
    # Reads still work under the limit.
    proc = subprocess.run([sys.executable, str(BRAIN), "job", "subtasks", job, "--json"], capture_output=True,
                          text=True, preexec_fn=limit)
    assert proc.returncode == 0, proc.stderr
    assert store_snapshot(db) == before and sha256(db) == digest
    assert integrity(db) == [("ok",)]
    # Without the limit the same write succeeds.
    assert run_brain(*writes[0]).returncode == 0


@pytest.fixture
def small_tmpfs(tmp_path):
    """A 256 KiB tmpfs (root only): a real ENOSPC."""
    if os.geteuid() != 0 or not shutil.which("mount"):
        pytest.skip("mounting a tmpfs needs root; the RLIMIT_FSIZE test covers a full disk")
    mnt = tmp_path / "full"
    mnt.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mnt)],
                      capture_output=True).returncode != 0:
        pytest.skip("cannot mount a tmpfs here")
    yield mnt
    jobs.close_stores()
    subprocess.run(["umount", str(mnt)], check=True)


def test_a_full_disk_gives_a_clear_error_and_loses_nothing(small_tmpfs):
    path = small_tmpfs / "jobs.db"
    env = {"BRAIN_DB": str(path)}
    args = ("job", "create", "--distributed", "--ttl", "300", "--prompt", "p",
            *sum((["--subtask", "w" * 450] for _ in range(50)), []))
    created = []
    for _ in range(40):
        proc = run_brain(*args, env=env)
        if proc.returncode != 0:
            break
        created.append(proc.stdout.strip()[4:])
    else:
        pytest.fail("the disk never filled")
    assert proc.returncode == 1 and proc.stderr.count("\n") == 1
    assert "no space left for the job store" in proc.stderr and "nothing stored was lost" in proc.stderr
    listed = run_brain("job", "list", "--json", env=env)
    assert listed.returncode == 0
    assert sorted(j["job_id"] for j in json.loads(listed.stdout)) == sorted(created)
    assert integrity(path) == [("ok",)]


def _make_read_only(path):
    """Make ``path`` read-only for this process's children; returns the undo."""
    if os.geteuid() != 0:
        os.chmod(path, 0o444)
        return lambda: os.chmod(path, 0o600)
    # Root ignores file modes: the immutable attribute stops it too.
    if subprocess.run(["chattr", "+i", str(path)], capture_output=True).returncode != 0:
        pytest.skip("running as root and chattr +i is not available: cannot make a read-only file")
    return lambda: subprocess.run(["chattr", "-i", str(path)], check=True)


def test_a_read_only_file_gives_a_clear_error_and_loses_nothing(db, brain):
    job = jobs.create_job_with_subtasks(300, {"prompt": "p"}, ["a", "b"], db=db)
    jobs.update_subtask_status(job, "sub_1", "completed", "kept", db=db)
    jobs.close_stores()
    before = store_snapshot(db)
    digest = sha256(db)
    undo = _make_read_only(db)
    try:
        for args in [("job", "update", job, "sub_2", "--status", "completed", "--result", "new"),
                     ("job", "create", "--ttl", "60", "--prompt", "p"), ("job", "cancel", job)]:
            proc = brain(*args)
            assert proc.returncode == 1, (args, proc.stderr)
            assert proc.stderr == (f"brain: error: the job store {db} is read-only (attempt to write a readonly "
                                   "database); fix its permissions or point BRAIN_DB elsewhere\n")
        # Reading needs no write.
        assert [r["result"] for r in brain.json("job", "consolidate", job)["results"]] == ["kept", None]
        assert sha256(db) == digest
    finally:
        undo()
    assert store_snapshot(db) == before
    brain.ok("job", "update", job, "sub_2", "--status", "completed", "--result", "new")


def test_an_overdue_job_in_a_read_only_store_can_still_be_read(db, brain, fake_clock):
    job = jobs.create_job_with_subtasks(300, {"prompt": "p"}, ["a", "b"], db=db)
    agent = jobs.parse_subtask_prompt(jobs.dispatch_job(job, timeout=10, db=db)["agent_calls"][0]["prompt"])[2]
    jobs.update_subtask_status(job, "sub_1", "completed", "kept", agent_id=agent, db=db)
    jobs.close_stores()
    digest = sha256(db)
    fake_clock.advance(11)  # sub_2 is overdue: a read would normally store the timeout
    undo = _make_read_only(db)
    try:
        shown = brain.json("job", "consolidate", job)
        assert [r["status"] for r in shown["results"]] == ["completed", "failed"]
        assert shown["results"][0]["result"] == "kept" and shown["results"][1]["result"].startswith("timed out")
        assert sha256(db) == digest
    finally:
        undo()


# -- a held lock ----------------------------------------------------------------------------

def test_a_held_lock_times_out_with_advice_and_does_not_hang(db, brain):
    job = jobs.create_job_with_subtasks(300, {"prompt": "p"}, ["a"], db=db)
    before = store_snapshot(db)
    fd = os.open(db + ".lock", os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX)  # another writer that never lets go
    try:
        for timeout in ("0.5", "0"):  # brain() bounds each run: a writer that waited for ever would fail it
            proc = brain("job", "update", job, "sub_1", "--status", "completed", "--result", "x",
                         env={"BRAIN_LOCK_TIMEOUT": timeout})
            assert proc.returncode == 1
            waited = "and BRAIN_LOCK_TIMEOUT=0 says not to wait" if timeout == "0" else \
                f"for more than {timeout} s (BRAIN_LOCK_TIMEOUT)"
            assert proc.stderr == (f"brain: error: the job store is busy: another brain process is writing to it "
                                   f"(it holds {db}.lock) {waited}; retry, or raise BRAIN_LOCK_TIMEOUT\n")
        # Readers do not need the lock.
        assert brain.json("job", "subtasks", job, env={"BRAIN_LOCK_TIMEOUT": "0.5"})[0]["status"] == "pending"
        assert store_snapshot(db) == before
        # A writer with time to spare waits for the lock: it has the lock file open while the lock is
        # still held here, and its update lands once the lock is let go.
        waiter = subprocess.Popen([sys.executable, str(BRAIN), "job", "update", job, "sub_1", "--status", "completed",
                                   "--result", "x"], env={**os.environ, "BRAIN_LOCK_TIMEOUT": "600"},
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        wait_until(lambda: _holds_open(waiter.pid, db + ".lock") or waiter.poll() is not None, timeout=60,
                   what="the writer to open the lock file")
        assert waiter.poll() is None, waiter.communicate()
    finally:
        os.close(fd)
    assert waiter.communicate(timeout=60)[1] == "" and waiter.returncode == 0
    assert jobs.get_job(job, db=db)["sub_tasks"][0]["status"] == "completed"


def _holds_open(pid, path):
    """Whether process ``pid`` has ``path`` open (its /proc fd links)."""
    try:
        return any(os.readlink(f"/proc/{pid}/fd/{fd}") == path for fd in os.listdir(f"/proc/{pid}/fd"))
    except OSError:  # it exited, or an fd closed while we looked
        return False


@pytest.mark.parametrize("value", ["abc", "-1", "nan", "inf", "1e9", ""])
def test_a_bad_lock_timeout_is_a_usage_error(brain, value):
    proc = brain("job", "list", env={"BRAIN_LOCK_TIMEOUT": value})
    if value == "":
        assert proc.returncode == 0  # unset in effect: the default
        return
    assert proc.returncode == 2
    assert proc.stderr == f"brain: error: BRAIN_LOCK_TIMEOUT={value!r} is not a number of seconds from 0 to 3600\n"

"""`brain job wait`: one compact answer when every sub-task has finished, and nothing before.

The waiter runs as a real CLI subprocess while the test reports sub-tasks
through the API, like workers would.
"""

import json
import os
import signal
import subprocess
import sys
import threading

from brain_jobs import jobs, state, watch
from tests.conftest import BRAIN
from tests.test_runner_support import wait_until
from tests.test_watch import _as_in_a_terminal, dispatched, report, start, waiting_job


def start_wait(job, *extra, **kw):
    return subprocess.Popen([sys.executable, str(BRAIN), "job", "wait", job, *extra], text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kw)


def test_wait_prints_only_the_joined_answer_once_every_subtask_has_finished(db):
    job, agents = dispatched(db)
    proc = start_wait(job)
    try:
        report(db, job, agents, "sub_1", "completed", "[200 OK] 5 items")
        report(db, job, agents, "sub_2", "completed", "[201 Created]")
        assert proc.poll() is None  # sub_3 is still running: it waits
        report(db, job, agents, "sub_3", "completed", "[200 OK] keys: status")
        out, err = proc.communicate(timeout=15)
    finally:
        proc.kill()
    assert proc.returncode == 0 and err == ""
    assert out == (f"job {job} completed: 3 completed, 0 failed\n"
                   "✓ sub_1: [200 OK] 5 items\n✓ sub_2: [201 Created]\n✓ sub_3: [200 OK] keys: status\n")


def test_some_failed_is_exit_1_and_a_result_not_an_error_line(db, brain):
    job, agents = dispatched(db, ["x", "y"])
    report(db, job, agents, "sub_1", "completed", "fine")
    report(db, job, agents, "sub_2", "failed", "[500 Internal Server Error]")
    proc = brain("job", "wait", job)
    assert proc.returncode == 1 and proc.stderr == ""
    assert proc.stdout.splitlines() == [f"job {job} failed: 1 completed, 1 failed",
                                        "✓ sub_1: fine", "✗ sub_2: [500 Internal Server Error]"]


def test_json_is_the_consolidation_and_reading_it_marks_it_read(db, brain):
    job, agents = dispatched(db, ["x", "y"])
    for sub in agents:
        report(db, job, agents, sub, "completed", f"r {sub}")
    assert state.unread(jobs.get_job(job, db=db))  # the Stop hook would remind the agent
    joined = brain.json("job", "wait", job)
    assert joined == jobs.get_job(job, db=db)["consolidated_result"] == brain.json("job", "consolidate", job)
    assert not state.unread(jobs.get_job(job, db=db))
    assert [e["event"] for e in jobs.get_history(job, db=db)].count("consolidate_read") == 1


def test_a_timeout_prints_what_is_there_and_exits_124(db, brain):
    job, agents = waiting_job(db, n=4)
    report(db, job, agents, "sub_1", "completed", "one")
    start(db, job, agents, "sub_2")
    proc = brain("job", "wait", job, "--timeout", "0.2")
    assert proc.returncode == watch.TIMED_OUT == 124 and proc.stderr == ""
    assert proc.stdout.splitlines() == [
        f"job {job} running: 1 completed, 0 failed, 1 running, 2 waiting, 0 pending (wait timed out after 0.2s)",
        "✓ sub_1: one", "◉ sub_2", "◌ sub_3", "◌ sub_4"]
    assert state.unread(jobs.get_job(job, db=db)) is False  # nothing final was read
    partial = brain("job", "wait", job, "--timeout", "0.2", "--json")
    assert partial.returncode == 124 and json.loads(partial.stdout)["complete"] is False
    for bad in ("0", "-1", "soon", "nan"):
        proc = brain("job", "wait", job, "--timeout", bad)
        assert proc.returncode == 2 and proc.stderr.startswith("brain: error: argument --timeout")


def test_results_are_neutralised(db, brain):
    job, agents = dispatched(db, ["x"])
    report(db, job, agents, "sub_1", "completed", "ok\x1b[2J\u202eevil\nnext")
    out = brain.ok("job", "wait", job)
    assert "\x1b" not in out and "\u202e" not in out and out.count("\n") == 2
    assert "✓ sub_1: ok\\x1b[2J\\u202eevil\\x0anext" in out


def test_ctrl_c_is_130_and_says_how_to_follow_again(db):
    job, _ = dispatched(db)
    proc = start_wait(job, preexec_fn=_as_in_a_terminal)
    try:
        wait_until(lambda: _has_opened_the_store(proc.pid, db), what="the waiter to read the job")
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=10)
    finally:
        proc.kill()
    assert proc.returncode == 130 and out == ""
    assert "Traceback" not in err and f"brain job wait {job}" in err and "goes on in the background" in err


def _has_opened_the_store(pid, db):
    """Whether ``pid`` has the SQLite file (or, for PostgreSQL, a socket) open: it is past its start."""
    links = []
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            links.append(os.readlink(f"/proc/{pid}/fd/{fd}"))
        except OSError:
            pass
    return any(link.startswith("socket:") if "://" in db else link == db for link in links)


def test_it_wakes_at_a_deadline_though_nothing_is_committed(db):
    """A lost worker: no write will ever come. The waiter wakes at the deadline by itself."""
    job = jobs.create_job_with_subtasks(300, {"prompt": "p"}, ["x"], db=db)
    jobs.dispatch_job(job, timeout=1, db=db)
    proc = start_wait(job)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 1, err
    assert out.splitlines()[1].startswith("✗ sub_1: timed out: no report by ")


def test_waiting_costs_nothing(db, monkeypatch):
    """No busy loop: while nothing changes, the job is read again only when a commit or a
    deadline could have changed it (here: neither, until the wait's own timeout)."""
    job, agents = dispatched(db, ["x"])
    reads = []
    real = jobs.get_job
    monkeypatch.setattr(jobs, "get_job", lambda *a, **kw: reads.append(1) or real(*a, **kw))
    row, timed_out = watch.join(job, timeout=2.0, db=db)
    assert timed_out and row["sub_tasks"][0]["status"] == "running"
    assert len(reads) <= 3  # the first look, one once the store listens, one at the timeout

    # A commit wakes it at once, however far the deadline.
    threading.Timer(0.2, report, args=(db, job, agents, "sub_1", "completed", "z")).start()
    row, timed_out = watch.join(job, timeout=60, db=db)
    assert not timed_out and row["sub_tasks"][0]["result"] == "z"


def test_next_due_is_the_earliest_deadline_or_the_expiry(db, fake_clock):
    job = jobs.create_job_with_subtasks(300, {"prompt": "p"}, ["x", "y"], db=db)
    row = jobs.get_job(job, db=db)
    assert state.next_due(row) == row["expires_at"]
    jobs.dispatch_job(job, timeout=30, db=db)
    row = jobs.get_job(job, db=db)
    assert state.next_due(row) == row["sub_tasks"][0]["deadline"] < row["expires_at"]
    jobs.cancel_job(job, db=db)
    assert state.next_due(jobs.get_job(job, db=db)) is None

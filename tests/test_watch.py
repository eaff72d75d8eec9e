"""`brain job watch`: one line per change on a pipe, a progress bar on a terminal, exit codes.

The watcher runs as a real CLI subprocess (a pty for the terminal mode)
while the test reports sub-tasks through the API, like workers would.
"""

import io
import json
import os
import pty
import re
import signal
import subprocess
import sys
import threading
import time

import pytest

from brain_jobs import clock, jobs, watch
from tests.conftest import BRAIN
from tests.test_runner_support import wait_until

ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def dispatched(db, queries=("GET /a", "GET /b", "GET /c")):
    job = jobs.create_job_with_subtasks(300, {"prompt": "Validate endpoints"}, list(queries), db=db)
    calls = jobs.dispatch_job(job, db=db)["agent_calls"]
    agents = {sub: credential for _, sub, credential in (jobs.parse_subtask_prompt(c["prompt"]) for c in calls)}
    return job, agents


def report(db, job, agents, sub, status, result):
    jobs.update_subtask_status(job, sub, status, result, agent_id=agents[sub], db=db)


def start_watch(job, *extra, **kw):
    return subprocess.Popen([sys.executable, str(BRAIN), "job", "watch", job, *extra], text=True,
                            stderr=subprocess.PIPE, **kw)


SCRIPT = [("sub_1", "completed", "[200 OK] 5 items"), ("sub_2", "failed", "[500 Internal Server Error]"),
          ("sub_3", "completed", "[200 OK] keys: status")]


def test_pipe_mode_prints_one_line_per_change_and_exits_1_when_one_failed(db):
    job, agents = dispatched(db)
    proc = start_watch(job, stdout=subprocess.PIPE)
    try:
        assert proc.stdout.readline() == f"job {job}: 3 sub-tasks (0 completed, 0 failed, 3 running, 0 pending)\n"
        for sub, status, result in SCRIPT:
            report(db, job, agents, sub, status, result)
            time.sleep(0.15)
        out, err = proc.communicate(timeout=15)
    finally:
        proc.kill()
    assert proc.returncode == 1
    assert out.splitlines() == [
        "✓ sub_1 completed: [200 OK] 5 items",
        "✗ sub_2 failed: [500 Internal Server Error]",
        "✓ sub_3 completed: [200 OK] keys: status",
        f"job {job} failed: 2 completed, 1 failed",
    ]
    assert "\x1b" not in out and "\r" not in out
    assert err == ""  # a job that finished with failures is a result (exit 1), not an error line


def test_exit_0_when_every_subtask_completed(db, brain):
    job, agents = dispatched(db, ["x", "y"])
    for sub in agents:
        report(db, job, agents, sub, "completed", f"done {sub}")
    proc = brain("job", "watch", f"job_{job}", timeout=15)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == [
        f"job {job}: 2 sub-tasks (2 completed, 0 failed, 0 running, 0 pending)",
        "✓ sub_1 completed: done sub_1", "✓ sub_2 completed: done sub_2",
        f"job {job} completed: 2 completed, 0 failed"]


def test_terminal_mode_draws_a_progress_bar_with_counts_and_glyphs(db):
    job, agents = dispatched(db)
    master, slave = pty.openpty()
    proc = start_watch(job, stdout=slave, env=dict(os.environ, TERM="xterm"))
    os.close(slave)
    chunks = []

    def read():
        while True:
            try:
                data = os.read(master, 4096)
            except OSError:  # EIO: the watcher closed the terminal
                return
            if not data:
                return
            chunks.append(data)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    def shown():
        return ANSI.sub("", b"".join(chunks).decode("utf-8", "replace"))

    try:
        for n, (sub, status, result) in enumerate(SCRIPT):
            # Each state is drawn before the next report (the watcher may skip states it polls past).
            wait_until(lambda: f"] {n}/3" in shown(), timeout=10, what=f"the bar at {n}/3")
            if status == "failed":
                status, result = "completed", "[200 OK] recovered"
            report(db, job, agents, sub, status, result)
        assert proc.wait(timeout=15) == 0
        reader.join(5)
    finally:
        proc.kill()
        os.close(master)
    raw = b"".join(chunks).decode()
    assert "\r\x1b[K" in raw  # the bar is redrawn in place
    assert "\x1b[32m✓\x1b[0m" in raw  # coloured glyphs on a terminal
    text = ANSI.sub("", raw).replace("\r\n", "\n")
    assert f"[{'░' * 24}] 0/3  ✓ 0  ✗ 0  ◉ 3  ○ 0" in text
    assert f"[{'█' * 8}{'░' * 16}] 1/3  ✓ 1  ✗ 0  ◉ 2  ○ 0" in text
    assert f"[{'█' * 24}] 3/3  ✓ 3  ✗ 0  ◉ 0  ○ 0" in text
    assert "✓ sub_2 completed: [200 OK] recovered" in text
    assert text.rstrip().endswith(f"job {job} completed: 3 completed, 0 failed")


def test_json_mode_streams_changes_then_the_consolidation(db):
    job, agents = dispatched(db, ["x", "y"])
    proc = start_watch(job, "--json", stdout=subprocess.PIPE)
    try:
        first = [json.loads(proc.stdout.readline()) for _ in agents]
        assert [e["status"] for e in first] == ["running", "running"]
        report(db, job, agents, "sub_1", "completed", "a")
        report(db, job, agents, "sub_2", "completed", "b")
        out, _ = proc.communicate(timeout=15)
    finally:
        proc.kill()
    events = [json.loads(line) for line in out.splitlines()]
    assert {(e["sub_task_id"], e["result"]) for e in events[:-1]} == {("sub_1", "a"), ("sub_2", "b")}
    assert events[-1]["complete"] is True and events[-1]["completed"] == 2
    assert proc.returncode == 0


def _as_in_a_terminal():
    # Ctrl-C reaches a foreground command with SIGINT at its default. A test run started in the
    # background by a non-interactive shell (`./run-tests &`) inherits SIGINT ignored, and so
    # would the watch (Python keeps an ignored SIGINT ignored), which is right for a background job.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_ctrl_c_stops_watching_with_exit_130_and_says_the_work_goes_on(db):
    job, _ = dispatched(db)
    proc = start_watch(job, stdout=subprocess.PIPE, preexec_fn=_as_in_a_terminal)
    try:
        proc.stdout.readline()
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=10) == 130
    finally:
        proc.kill()
    err = proc.stderr.read()
    assert "Traceback" not in err and err.count("\n") == 1
    assert "goes on in the background" in err
    assert f"brain job watch {job}" in err and f"brain job wait {job}" in err


def waiting_job(db, n=3):
    """A job dispatched to a runner (none runs it): every sub-task waits for a slot; sub_1 starts.

    Returns the job and each sub-task's credential (``agents``); ``labels(job, db)`` gives what reads show.
    """
    job = jobs.create_job_with_subtasks(300, {"prompt": "p"}, [f"q{i}" for i in range(1, n + 1)], db=db)
    agents = {s["sub_task_id"]: s["agent_id"] for s in jobs.start_subtasks(job, "grep", db=db)}
    start(db, job, agents, "sub_1")
    return job, agents


def labels(job, db):
    """Each sub-task's public label (what watch and subtasks show as its agent)."""
    return {s["sub_task_id"]: s["agent_id"] for s in jobs.get_job(job, db=db)["sub_tasks"]}


def start(db, job, agents, sub):
    jobs.update_subtasks(job, [], starts=[{"sub_task_id": sub, "agent_id": agents[sub],
                                           "started_at": clock.now()}], db=db)


def test_watch_tells_started_subtasks_from_those_waiting_for_a_slot(db):
    job, agents = waiting_job(db)
    proc = start_watch(job, stdout=subprocess.PIPE)
    try:
        assert proc.stdout.readline() == (f"job {job}: 3 sub-tasks "
                                          "(0 completed, 0 failed, 1 running, 2 waiting, 0 pending)\n")
        report(db, job, agents, "sub_1", "completed", "one")
        start(db, job, agents, "sub_2")
        assert proc.stdout.readline() == "✓ sub_1 completed: one\n"
        assert proc.stdout.readline() == f"◉ sub_2 running: {labels(job, db)['sub_2']}\n"
        report(db, job, agents, "sub_2", "completed", "two")
        start(db, job, agents, "sub_3")
        report(db, job, agents, "sub_3", "completed", "three")
        out, _ = proc.communicate(timeout=15)
    finally:
        proc.kill()
    assert proc.returncode == 0
    assert out.splitlines()[-1] == f"job {job} completed: 3 completed, 0 failed"


def test_watch_json_and_bar_show_the_waiting(db):
    job, agents = waiting_job(db)
    out = io.StringIO()
    view = watch._Json(out, False)
    view.start(jobs.get_job(job, db=db))
    events = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [e["started_at"] is None for e in events] == [False, True, True]
    assert [e["status"] for e in events] == ["running"] * 3
    bar = watch._Bar(io.StringIO(), False).bar(jobs.get_job(job, db=db))
    assert bar.endswith("0/3  ✓ 0  ✗ 0  ◉ 1  ◌ 2  ○ 0")


def test_subtasks_shows_a_waiting_subtask_apart(db, brain):
    job, agents = waiting_job(db, n=2)
    out = brain.ok("job", "subtasks", job)
    shown = labels(job, db)
    assert out.splitlines()[2:] == [
        "  ◉ sub_1: q1", f"      Agent: {shown['sub_1']}",
        "  ◌ sub_2: q2", f"      Agent: {shown['sub_2']} (waiting for a slot)"]
    assert not any(credential in out for credential in agents.values())
    assert brain.json("job", "subtasks", job)[1]["started_at"] is None


def test_a_lost_worker_ends_the_watch_at_its_deadline(db, fake_clock):
    job = jobs.create_job_with_subtasks(300, {"prompt": "p"}, ["x"], db=db)
    jobs.dispatch_job(job, timeout=10, db=db)
    timer = threading.Timer(0.3, fake_clock.advance, args=(11,))
    timer.start()
    out, ended = io.StringIO(), {}
    thread = threading.Thread(target=lambda: ended.update(code=watch.watch(job, out, db=db, tty=False)), daemon=True)
    thread.start()
    try:
        thread.join(60)  # a bound for a hang: the watch must see the deadline pass with nothing committed
    finally:
        timer.cancel()
    assert not thread.is_alive() and ended["code"] == 1
    assert "✗ sub_1 failed: timed out: no report by" in out.getvalue()


def test_the_wait_is_one_bounded_function(db, monkeypatch):
    job, agents = dispatched(db, ["x"])
    row = jobs.get_job(job, db=db)
    sleeps, reads = [], []
    real_wait, real_get = jobs.wait_for_commit, jobs.get_job
    monkeypatch.setattr(jobs, "wait_for_commit", lambda t, db=None: sleeps.append(t) or real_wait(t, db=db))
    monkeypatch.setattr(jobs, "get_job", lambda *a, **k: reads.append(1) or real_get(*a, **k))
    again = watch.wait_for_change(job, watch.fingerprint(row), db=db, max_wait=0.3)
    monkeypatch.undo()
    # Nothing changed: the unchanged row once max_wait is spent, read once after each sleep (no busy loop),
    # each sleep within what is left of max_wait.
    assert watch.fingerprint(again) == watch.fingerprint(row)
    assert sleeps and len(reads) == len(sleeps) + 1 and all(0 < t <= 0.3 for t in sleeps)
    threading.Timer(0.1, report, args=(db, job, agents, "sub_1", "completed", "z")).start()
    changed = watch.wait_for_change(job, watch.fingerprint(row), db=db, max_wait=5)
    assert changed["sub_tasks"][0]["result"] == "z"


def test_a_normal_job_is_watched_until_its_own_status_is_final(db):
    job = jobs.create_job(300, {"prompt": "p"}, db=db)
    threading.Timer(0.2, jobs.set_job_status, args=(job, "running"), kwargs={"db": db}).start()
    threading.Timer(0.4, jobs.set_job_status, args=(job, "failed"), kwargs={"db": db}).start()
    out = io.StringIO()
    assert watch.watch(job, out, db=db, tty=False) == 1
    assert out.getvalue().splitlines()[-1] == f"job {job} failed: 0 completed, 0 failed"


def test_watch_of_an_unknown_job_is_an_error(brain):
    proc = brain("job", "watch", "nosuchjob")
    assert proc.returncode == 1 and "not found" in proc.stderr


@pytest.mark.sqlite_only
def test_watch_is_documented_in_help(brain):
    out = brain.ok("job", "watch", "--help")
    assert "exit 0 all completed, 1 some failed, 130 Ctrl-C" in " ".join(out.split())

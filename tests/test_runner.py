"""The headless runner: detached, bounded in parallelism, isolated failures, lost runners time out.

Real processes and a real HTTP server on loopback; the sub-tasks use the
http executor because a test can hold its requests at a gate.
"""

import os
import signal
import stat
import threading
import time

import pytest

from scripts.memory import config, executors, jobs, runner
from tests.test_runner_support import LocalHTTP, cli, dispatch_event, finished, wait_until


def proc_stat(pid):
    """``(state, ppid, pgrp, session)`` of a live process, or None once it is gone (or a zombie)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except FileNotFoundError:
        return None
    if fields[0] == "Z":
        return None
    return fields[0], int(fields[1]), int(fields[2]), int(fields[3])


@pytest.fixture
def server():
    with LocalHTTP() as srv:
        yield srv


def create(db, queries, ttl=300):
    return jobs.create_job_with_subtasks(ttl, {"prompt": "p"}, queries, db=db)


def test_the_runner_detaches_and_outlives_the_process_that_started_it(server, brain, db, brain_home, tmp_path):
    job = create(db, ["GET /gate/1", "GET /gate/2"])
    proc = cli("job", "dispatch", job, "--executor", "http", "--base-url", server.url, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr  # dispatch returned while the work is held at the gate
    event = dispatch_event(job, db)
    pid, log = event["runner"]["pid"], event["runner"]["log"]
    assert f"runner pid {pid}" in proc.stdout and f"log: {log}" in proc.stdout
    wait_until(lambda: server.inflight == 2, what="both requests at the gate")
    state = proc_stat(pid)
    assert state is not None, "the runner died with its parent"
    _, ppid, pgrp, session = state
    assert session == pid and pgrp == pid  # its own session and process group
    assert session != os.getsid(0) and ppid != os.getpid()
    assert [s["status"] for s in jobs.get_job(job, db=db)["sub_tasks"]] == ["running", "running"]
    server.gate.set()
    row = wait_until(lambda: finished(job, db), what="the detached runner's reports")
    assert [s["result"] for s in row["sub_tasks"]] == ["[200 OK] 1 item"] * 2
    wait_until(lambda: proc_stat(pid) is None, what="the runner to exit")
    # The log lives next to the store (under ~/.brain for a database URL), private to the user.
    store_dir = os.path.dirname(str(brain_home)) if "://" not in db else os.path.join(os.environ["HOME"], ".brain")
    assert os.path.dirname(log) == os.path.join(store_dir, "runners")
    assert stat.S_IMODE(os.stat(log).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(os.path.dirname(log)).st_mode) == 0o700
    text = open(log).read()
    assert f"runner {pid}: job {job}, executor http, 2 sub-tasks, concurrency 2" in text
    assert "sub_1 completed: [200 OK] 1 item" in text and f"runner {pid}: done" in text


@pytest.mark.parametrize("flag, queries, expected", [
    (["--concurrency", "2"], 4, 2),
    ([], 6, config.DEFAULTS["concurrency"]),
])
def test_concurrency_bounds_the_subtasks_in_flight(server, db, tmp_path, flag, queries, expected):
    server.gate.set()
    server.hold = 0.3
    job = create(db, [f"GET /gate/{i}" for i in range(queries)])
    proc = cli("job", "dispatch", job, "--executor", "http", "--base-url", server.url, *flag, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    row = wait_until(lambda: finished(job, db), what="all sub-tasks")
    assert all(s["status"] == "completed" for s in row["sub_tasks"])
    assert server.max_inflight == expected


class _Buggy(executors.Executor):
    def run(self, query, task=None):
        if query == "bug":
            return 1 / 0
        if query == "fail":
            raise executors.Failed("not found")
        return f"ok {query}"


def test_a_failing_subtask_fails_alone(db, tmp_path, monkeypatch):
    monkeypatch.setattr(executors, "get", lambda name: _Buggy)
    job = create(db, ["a", "bug", "fail", "b"])
    failed = runner.run_here(job, "grep", settings=config.resolve(), workdir=str(tmp_path), db=db)
    assert failed == 2
    subs = jobs.get_job(job, db=db)["sub_tasks"]
    assert [(s["status"], s["result"]) for s in subs] == [
        ("completed", "ok a"), ("failed", "ZeroDivisionError: division by zero"),
        ("failed", "not found"), ("completed", "ok b")]
    assert dispatch_event(job, db)["runner"] == {"pid": os.getpid(), "foreground": True}


def test_a_dead_runner_leaves_its_subtasks_to_time_out(server, db, tmp_path, fake_clock):
    job = create(db, ["GET /gate/1", "GET /gate/2"])
    proc = cli("job", "dispatch", job, "--executor", "http", "--base-url", server.url, "--timeout", "30", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    pid = dispatch_event(job, db)["runner"]["pid"]
    wait_until(lambda: server.inflight == 2, what="both requests at the gate")
    os.kill(pid, signal.SIGKILL)
    wait_until(lambda: proc_stat(pid) is None, what="the runner to die")
    fake_clock.advance(29)
    assert [s["status"] for s in jobs.get_job(job, db=db)["sub_tasks"]] == ["running", "running"]
    fake_clock.advance(2)
    row = jobs.get_job(job, db=db)
    assert [s["status"] for s in row["sub_tasks"]] == ["failed", "failed"]
    assert all(s["result"].startswith("timed out: no report by") for s in row["sub_tasks"])
    assert row["status"] == "failed" and row["consolidated_result"]["failed"] == 2


def test_the_runner_skips_work_that_is_no_longer_its_own(server, db, tmp_path):
    job = create(db, ["GET /gate/1", "GET /gate/2"])
    proc = cli("job", "dispatch", job, "--executor", "http", "--base-url", server.url, "--concurrency", "1",
               cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    event = dispatch_event(job, db)
    wait_until(lambda: server.inflight == 1, what="the first request at the gate")
    jobs.cancel_job(job, db=db)
    server.gate.set()
    pid = event["runner"]["pid"]
    wait_until(lambda: proc_stat(pid) is None, what="the runner to exit")
    text = open(event["runner"]["log"]).read()
    assert "sub_1: report not stored" in text
    assert "sub_2: skipped: it is failed" in text
    assert [h for h in server.hits if h[1] == "/gate/2"] == []  # never requested
    assert [s["result"] for s in jobs.get_job(job, db=db)["sub_tasks"]] == ["cancelled", "cancelled"]


def test_a_refused_dispatch_starts_no_runner(server, db, tmp_path, brain_home):
    job = create(db, ["GET /health"])
    jobs.cancel_job(job, db=db)  # nothing pending any more: dispatch is refused by the core
    proc = cli("job", "dispatch", job, "--executor", "http", "--base-url", server.url, cwd=tmp_path)
    assert proc.returncode == 1 and "no pending sub-tasks" in proc.stderr
    logs = os.path.join(runner.log_dir(db))
    time.sleep(0.2)
    for name in os.listdir(logs):  # a runner was started and stopped: it did nothing
        assert "executor" not in open(os.path.join(logs, name)).read()
    assert server.hits == []


def test_reports_of_one_batch_are_applied_one_by_one_in_one_transaction(db):
    """update_subtasks: each report checked alone; a refused one does not stop the others."""
    job = jobs.create_job_with_subtasks(300, {"prompt": "p"}, ["a", "b", "c"], db=db)
    out = jobs.dispatch_job(job, db=db)
    ids = {s: a for _, s, a in (jobs.parse_subtask_prompt(c["prompt"]) for c in out["agent_calls"])}
    before = len(jobs.get_history(job, db=db))
    outcomes = jobs.update_subtasks(job, [
        {"sub_task_id": "sub_1", "status": "completed", "result": "one", "agent_id": ids["sub_1"]},
        {"sub_task_id": "sub_2", "status": "completed", "result": "stolen", "agent_id": "agent_x_000000"},
        {"sub_task_id": "sub_9", "status": "completed", "result": "nope", "agent_id": ids["sub_3"]},
        {"sub_task_id": "../x", "status": "completed"},
        {"sub_task_id": "sub_3", "status": "failed", "result": "three", "agent_id": ids["sub_3"]},
    ], db=db)
    assert outcomes[0]["status"] == "completed" and outcomes[4]["result"] == "three"
    assert [type(o).__name__ for o in outcomes[1:4]] == ["Refusal", "NotFound", "InvalidInput"]
    row = jobs.get_job(job, db=db)
    assert [s["status"] for s in row["sub_tasks"]] == ["completed", "running", "failed"]
    assert [e["event"] for e in row["history"][before:]] == ["report", "report"]
    # The last report of a batch still decides the fan-in in the same transaction.
    jobs.update_subtasks(job, [{"sub_task_id": "sub_2", "status": "completed", "result": "two",
                                "agent_id": ids["sub_2"]}], db=db)
    assert jobs.get_job(job, db=db)["consolidated_result"]["completed"] == 2


class _Deaf(executors.Executor):
    """Ignores its deadline: runs until the test lets it go."""

    release = None

    def run(self, query, task=None):
        self.release.wait(60)
        return "too late"


def test_an_executor_that_ignores_its_deadline_does_not_hold_the_runner(db, tmp_path, monkeypatch):
    monkeypatch.setattr(executors, "get", lambda name: _Deaf)
    _Deaf.release = threading.Event()
    job = create(db, ["a"])
    done = []
    thread = threading.Thread(target=lambda: done.append(runner.run_here(
        job, "grep", settings=config.resolve(), timeout=1, workdir=str(tmp_path), db=db)), daemon=True)
    thread.start()
    try:
        thread.join(30)
        assert not thread.is_alive(), "the runner waited for an executor past its deadline"
    finally:
        _Deaf.release.set()
    sub = jobs.get_job(job, db=db)["sub_tasks"][0]
    assert sub["status"] == "failed" and sub["result"].startswith("timed out: no report by")


def test_a_row_nobody_can_read_never_stops_a_runner(db, tmp_path):
    """Expired, it meets the housekeeping of every write: dispatch's and the runner's reports."""
    from tests.test_worker import write_with_sql

    (tmp_path / "f.txt").write_text("hello\n")
    bad = create(db, ["x"])
    write_with_sql(db, bad, "sub_tasks", '[{"sub_task_id": "sub_1", "status": 1}, 7]')
    write_with_sql(db, bad, "expires_at", "2001-01-01T00:00:00.000Z")
    job = create(db, ["hello", "nope"])
    proc = cli("job", "dispatch", job, "--executor", "grep", "--file", "f.txt", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    row = wait_until(lambda: finished(job, db), what="the runner's reports")
    assert [s["status"] for s in row["sub_tasks"]] == ["completed", "completed"]
    pid = dispatch_event(job, db)["runner"]["pid"]
    wait_until(lambda: proc_stat(pid) is None, what="the runner to exit")
    assert "Traceback" not in open(dispatch_event(job, db)["runner"]["log"]).read()

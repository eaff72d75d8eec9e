"""The headless runner: detached, bounded in parallelism, isolated failures, lost runners time out.

Real processes and a real HTTP server on loopback; the sub-tasks use the
http executor because a test can hold its requests at a gate.
"""

import errno
import os
import signal
import stat
import threading
import time

import pytest

from brain_jobs import config, executors, jobs, runner
from brain_jobs.clock import iso
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
    # One line for whoever reads it (an agent pays for every byte); the log is in the history.
    assert proc.stdout == f"job_{job}: 2 sub-tasks running with the http executor (runner pid {pid})\n"
    assert proc.stderr == "" and log.startswith(runner.log_dir(db))
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
    # Started (and the start stored): each deadline counts from there. A sub-task still
    # waiting for a slot would keep the job's expiry as its deadline (see the next tests).
    wait_until(lambda: all(s["started_at"] for s in jobs.get_job(job, db=db)["sub_tasks"]), what="both starts")
    os.kill(pid, signal.SIGKILL)
    wait_until(lambda: proc_stat(pid) is None, what="the runner to die")
    fake_clock.advance(29)
    assert [s["status"] for s in jobs.get_job(job, db=db)["sub_tasks"]] == ["running", "running"]
    fake_clock.advance(2)
    row = jobs.get_job(job, db=db)
    assert [s["status"] for s in row["sub_tasks"]] == ["failed", "failed"]
    assert all(s["result"].startswith("timed out: no report by") for s in row["sub_tasks"])
    assert row["status"] == "failed" and row["consolidated_result"]["failed"] == 2


def _gates(tmp_path, n):
    """One FIFO per sub-task: its shell command blocks reading it until the test opens it."""
    paths = [tmp_path / f"gate{i}" for i in range(1, n + 1)]
    for path in paths:
        os.mkfifo(path)
    return paths


def _open_gate(path):
    """Let the command reading ``path`` finish. Opening a FIFO without blocking succeeds only
    once a reader has it open: so this also waits until that command has started."""
    def writer():
        try:
            return os.open(path, os.O_WRONLY | os.O_NONBLOCK)
        except OSError as exc:
            if exc.errno != errno.ENXIO:  # no reader yet
                raise
            return None

    fd = wait_until(writer, what=f"the command reading {path.name} to start")
    os.write(fd, b"go\n")
    os.close(fd)


def _subs(job, db):
    return {s["sub_task_id"]: s for s in jobs.get_job(job, db=db)["sub_tasks"]}


def test_a_subtask_waiting_for_a_slot_does_not_time_out_for_waiting(db, tmp_path, fake_clock):
    """Concurrency 1, timeout 7: each sub-task's deadline counts from its own start."""
    gates = _gates(tmp_path, 4)
    job = create(db, [f"read line < {gate}; echo done {i}" for i, gate in enumerate(gates, 1)])
    t0 = fake_clock()
    expires = jobs.get_job(job, db=db)["expires_at"]
    settings = config.resolve({"concurrency": 1})
    run = threading.Thread(target=runner.run_here, args=(job, "shell"), daemon=True,
                           kwargs={"settings": settings, "timeout": 7, "allow_shell": True,
                                   "workdir": str(tmp_path), "db": db})
    run.start()
    try:
        subs = wait_until(lambda: (lambda s: s if s["sub_1"].get("started_at") else None)(_subs(job, db)),
                          what="sub_1 to start")
        assert (subs["sub_1"]["started_at"], subs["sub_1"]["deadline"]) == (iso(t0), iso(t0 + 7))
        for sub in ("sub_2", "sub_3", "sub_4"):  # running (dispatched), not started: no timeout yet
            assert subs[sub]["status"] == "running" and subs[sub]["started_at"] is None
            assert subs[sub]["deadline"] == expires and subs[sub]["timeout"] == 7

        fake_clock.advance(5)
        _open_gate(gates[0])
        subs = wait_until(lambda: (lambda s: s if s["sub_2"]["started_at"] else None)(_subs(job, db)),
                          what="sub_2 to start")
        assert subs["sub_1"]["result"] == "exit 0: done 1"
        assert (subs["sub_2"]["started_at"], subs["sub_2"]["deadline"]) == (iso(t0 + 5), iso(t0 + 12))

        fake_clock.advance(5)  # t0 + 10: past t0 + 7, where every deadline used to be
        subs = _subs(job, db)
        assert [subs[s]["status"] for s in subs] == ["completed", "running", "running", "running"]
        assert [subs[s]["started_at"] for s in ("sub_3", "sub_4")] == [None, None]

        _open_gate(gates[1])
        subs = wait_until(lambda: (lambda s: s if s["sub_3"]["started_at"] else None)(_subs(job, db)),
                          what="sub_3 to start")
        assert subs["sub_3"]["deadline"] == iso(t0 + 17)
        fake_clock.advance(8)  # t0 + 18: sub_3 ran past its own deadline; sub_4 still waits
        subs = _subs(job, db)
        assert subs["sub_3"]["status"] == "failed" and subs["sub_3"]["result"].startswith("timed out")
        assert subs["sub_4"]["status"] == "running" and subs["sub_4"]["started_at"] is None

        _open_gate(gates[2])
        _open_gate(gates[3])
        run.join(30)
        assert not run.is_alive()
    finally:
        for gate in gates:  # never leave a command blocked on its FIFO
            try:
                os.close(os.open(gate, os.O_WRONLY | os.O_NONBLOCK))
            except OSError:
                pass
    subs = _subs(job, db)
    assert [subs[s]["result"] for s in ("sub_1", "sub_2", "sub_4")] == ["exit 0: done 1", "exit 0: done 2",
                                                                        "exit 0: done 4"]
    assert subs["sub_4"]["started_at"] == iso(t0 + 18)
    late = [e for e in jobs.get_history(job, db=db) if e["event"] == "late_report"]
    assert [e["sub_task_id"] for e in late] == ["sub_3"]  # its answer came after its deadline: kept apart


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


def test_a_person_at_a_terminal_is_shown_the_log_and_what_comes_next(server, db, tmp_path):
    import pty
    import subprocess
    import sys

    from tests.conftest import BRAIN

    job = create(db, ["GET /health"])
    leader, follower = pty.openpty()
    try:
        proc = subprocess.run([sys.executable, str(BRAIN), "job", "dispatch", job, "--executor", "http",
                               "--base-url", server.url], stdout=subprocess.PIPE, stderr=follower, cwd=tmp_path,
                              timeout=30)
        os.close(follower)
        follower = None
        shown = b""
        while True:
            try:
                chunk = os.read(leader, 4096)
            except OSError:  # EIO: the terminal's other end is closed and drained
                break
            if not chunk:
                break
            shown += chunk
    finally:
        if follower is not None:
            os.close(follower)
        os.close(leader)
    assert proc.returncode == 0
    log = dispatch_event(job, db)["runner"]["log"]
    assert f"log: {log}" in shown.decode() and f"brain job wait {job}" in shown.decode()


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

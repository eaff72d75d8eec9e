"""Unit tier: the one execution engine (brain_jobs/engine.py) on the in-memory store.

The runner (``runner.run_here``: the sub-tasks run in this process) and
``brain worker`` (``worker.Worker`` in this process) run the same tiny
executors here and must store the same thing; the engine alone shows what
becomes of a stop under each policy and of a task given back. Every wait is
bounded; nothing here starts a process.
"""

import io
import threading
import time

import pytest

from brain_jobs import clock, config, engine, executors, jobs, pool, runner
from brain_jobs.errors import InvalidInput
from brain_jobs.worker import Worker

pytestmark = pytest.mark.backends("memory")

WAIT = 10  # seconds: the bound of every wait below (none is ever reached when all is well)


class _Ladder(executors.Executor):
    """Each query names what happens: an answer, a BrainError, Failed with usage, a bug."""

    name = "ladder"

    def run(self, query, task=None):
        if query == "brain":
            raise InvalidInput("no such file: notes.txt")
        if query == "failed":
            raise executors.Failed("nothing found", {"input_tokens": 3, "output_tokens": 1})
        if query == "silent":
            raise executors.Failed()
        if query == "bug":
            raise ValueError("boom")
        return executors.Answer(f"{query} done", {"input_tokens": 1, "output_tokens": 2})


LADDER = ["answer", "brain", "failed", "silent", "bug"]
LADDER_STORED = [
    ("completed", "answer done", {"input_tokens": 1, "output_tokens": 2}),
    ("failed", "no such file: notes.txt", None),
    ("failed", "nothing found", {"input_tokens": 3, "output_tokens": 1}),
    ("failed", "failed", None),
    ("failed", "ValueError: boom", None),
]


def until(predicate) -> bool:
    """Whether ``predicate`` came true within WAIT seconds."""
    end = time.monotonic() + WAIT
    while not predicate() and time.monotonic() < end:
        threading.Event().wait(0.01)
    return predicate()


def stored(job, db):
    return [(s["status"], s["result"], s.get("usage")) for s in jobs.get_job_subtasks(job, db=db)]


def run_on_the_runner(job, executor, db, tmp_path, monkeypatch, concurrency=2):
    monkeypatch.setattr(executors, "get", lambda name: executor)
    return runner.run_here(job, "grep", settings=config.resolve({"concurrency": concurrency}),
                           workdir=str(tmp_path), db=db)


def run_on_a_worker(job, executor_path, db, tmp_path, concurrency=2):
    pool.queue_job(job, executor_path, db=db)
    log = io.StringIO()
    w = Worker(executor_path, concurrency=concurrency, poll=0.1, drain=True, workdir=str(tmp_path), db=db, stream=log)
    assert w.run() == 0, log.getvalue()
    return w, log.getvalue()


def test_the_runner_and_a_worker_store_the_same_outcome_for_the_same_executor(db, tmp_path, monkeypatch, capsys):
    by_runner = jobs.create_job_with_subtasks(300, {"prompt": "p"}, LADDER, db=db)
    assert run_on_the_runner(by_runner, _Ladder, db, tmp_path, monkeypatch) == 4
    by_worker = jobs.create_job_with_subtasks(300, {"prompt": "p"}, LADDER, db=db)
    w, log = run_on_a_worker(by_worker, "test_unit_engine:_Ladder", db, tmp_path)
    assert stored(by_runner, db) == stored(by_worker, db) == LADDER_STORED
    assert (w.counts["completed"], w.counts["failed"]) == (1, 4)
    # An executor's bug is logged by both, with the sub-task it failed.
    assert "sub_5: ValueError: boom" in capsys.readouterr().out
    assert f"job {by_worker} sub_5: ValueError: boom" in log


# -- batches -------------------------------------------------------------------

N = 4
_finished = threading.Semaphore(0)


class _Quick(executors.Executor):
    """Answers at once, and counts its answers for the gate below."""

    name = "quick"

    def run(self, query, task=None):
        try:
            return f"{query} done"
        finally:
            _finished.release()


@pytest.fixture
def report_calls(monkeypatch):
    """The sizes of the report lists of each ``jobs.update_subtasks`` call (a spy: the real
    call is made). The first call waits until every task has answered, so the others are told
    while it is stored: what arrives meanwhile must go in one commit."""
    real, sizes = jobs.update_subtasks, []

    def spy(job_id, reports, db=None, starts=()):
        if reports and not sizes:
            for _ in range(N):
                _finished.acquire(timeout=WAIT)
        if reports:
            sizes.append(len(reports))
        return real(job_id, reports, db=db, starts=starts)

    while _finished.acquire(blocking=False):
        pass
    monkeypatch.setattr(jobs, "update_subtasks", spy)
    return sizes


def test_the_runner_stores_finishes_told_together_in_one_commit(db, tmp_path, monkeypatch, report_calls):
    job = jobs.create_job_with_subtasks(300, {"prompt": "p"}, [f"q{i}" for i in range(N)], db=db)
    assert run_on_the_runner(job, _Quick, db, tmp_path, monkeypatch, concurrency=N) == 0
    assert {s[0] for s in stored(job, db)} == {"completed"}
    assert sum(report_calls) == N and max(report_calls) > 1, report_calls


def test_a_worker_stores_finishes_told_together_in_one_commit(db, tmp_path, report_calls):
    job = jobs.create_job_with_subtasks(300, {"prompt": "p"}, [f"q{i}" for i in range(N)], db=db)
    w, log = run_on_a_worker(job, "test_unit_engine:_Quick", db, tmp_path, concurrency=N)
    assert {s[0] for s in stored(job, db)} == {"completed"} and w.counts["completed"] == N, log
    assert sum(report_calls) == N and max(report_calls) > 1, report_calls


class _Staggered(executors.Executor):
    """``first`` answers at once; ``second`` a moment after ``first`` has answered."""

    name = "staggered"
    first_done = None

    def run(self, query, task=None):
        if query == "first":
            self.first_done.set()
            return "first done"
        self.first_done.wait(WAIT)
        threading.Event().wait(0.2)  # by then the recorder has been told of ``first``
        return "second done"


def test_a_report_lingers_for_the_others_in_flight_and_shares_their_commit(db, tmp_path, monkeypatch):
    """Without the linger, ``first`` is stored alone the moment it is told, ``second`` in a
    commit of its own: one commit per quick task, each making the runner's ownership check
    read the job again. With it, ``first`` waits for ``second`` (still in flight) and both
    go in one commit; the last one in flight goes at once."""
    monkeypatch.setattr(engine, "LINGER", WAIT)  # long: the test does not race the clock
    monkeypatch.setattr(engine, "START_DELAY", WAIT)  # nor do the starts, which would take the report along
    _Staggered.first_done = threading.Event()
    real, sizes = jobs.update_subtasks, []

    def spy(job_id, reports, db=None, starts=()):
        if reports:
            sizes.append(len(reports))
        return real(job_id, reports, db=db, starts=starts)

    monkeypatch.setattr(jobs, "update_subtasks", spy)
    job = jobs.create_job_with_subtasks(300, {"prompt": "p"}, ["first", "second"], db=db)
    assert run_on_the_runner(job, _Staggered, db, tmp_path, monkeypatch, concurrency=2) == 0
    assert stored(job, db) == [("completed", "first done", None), ("completed", "second done", None)]
    assert sizes == [2]


# -- the engine alone: stop policies and tasks given back ---------------------------------

class _Held(executors.Executor):
    """Says it started, then answers once the test lets it (or after WAIT seconds)."""

    name = "held"
    started = None
    gate = None

    def run(self, query, task=None):
        self.started.release()
        self.gate.wait(WAIT)
        return f"{query} done"


@pytest.fixture
def held():
    _Held.started, _Held.gate = threading.Semaphore(0), threading.Event()
    yield _Held
    _Held.gate.set()  # whatever the test did, no thread stays behind


class _Released(engine.Policy):
    """A worker's stop: hand the tasks back to the pool, report none."""

    def __init__(self, db):
        self.db = db

    def stopped(self, tasks, killed, reason):
        for task in tasks:
            pool.release(task["job_id"], task["sub_task_id"], task["agent_id"], self.stop_text(reason), db=self.db)
        return []


def make_engine(policy, db, lines, stop=None):
    def context_of(task, deadline):
        return engine.context(task["job_id"], workdir="/", deadline=deadline, db=db)

    return engine.Engine(engine.ExecutorPerTask(_Held, context_of), policy, db=db, log=lambda *m: lines.extend(m),
                         stop=stop)


def dispatched(db, n):
    job = jobs.create_job_with_subtasks(300, {"prompt": "p"}, [f"q{i}" for i in range(n)], db=db)
    return job, [dict(t, job_id=job) for t in jobs.start_subtasks(job, "grep", db=db)]


def test_a_stop_fails_every_unfinished_task_under_the_default_policy(db, held):
    job, tasks = dispatched(db, 3)
    stop, lines = engine.Stop(), []
    run = make_engine(engine.Policy(), db, lines, stop)
    run.submit_all(tasks, 1)  # one runs, two wait for the thread
    assert held.started.acquire(timeout=WAIT)
    stop.reason = "SIGTERM"
    run.record()  # returns once nothing is in flight
    run.shutdown()
    assert stored(job, db) == [("failed", "engine stopped (SIGTERM)", None)] * 3
    held.gate.set()
    assert not held.started.acquire(timeout=0.5)  # the waiting ones never started


def claimed(db, n):
    job = jobs.create_job_with_subtasks(300, {"prompt": "p"}, [f"q{i}" for i in range(n)], db=db)
    pool.queue_job(job, "held", db=db)
    return job, [pool.claim("held", "w1", 30, db=db) for _ in range(n)]


def test_a_stop_under_a_release_policy_reports_nothing_and_a_late_finish_is_not_reported(db, held):
    job, tasks = claimed(db, 2)
    stop, lines = engine.Stop(), []
    run = make_engine(_Released(db), db, lines, stop)
    recorder = threading.Thread(target=run.record, daemon=True)
    recorder.start()
    for task in tasks:
        assert run.submit(task)
    for _ in tasks:
        assert held.started.acquire(timeout=WAIT)
    stop.reason = "SIGTERM"
    assert run.freed.wait(WAIT) and not run.running()  # handed to the policy: released
    assert [(s["status"], s["agent_id"]) for s in jobs.get_job_subtasks(job, db=db)] == [("pending", None)] * 2
    held.gate.set()  # the executors finish after their sub-tasks were given back
    late = "finished after it was given back (completed); not reported"
    assert until(lambda: sum(late in line for line in lines) == 2), lines
    run.close()
    recorder.join(WAIT)
    assert not recorder.is_alive()
    history = jobs.get_history(job, db=db)
    assert [e["reason"] for e in history if e["event"] == "release"] == ["engine stopped (SIGTERM)"] * 2
    assert not [e for e in history if e["event"] == "report"]


def test_a_task_past_its_deadline_is_left_behind_and_its_late_finish_not_reported(db, held, fake_clock):
    job, tasks = dispatched(db, 1)
    lines = []
    run = make_engine(engine.Policy(), db, lines)
    recorder = threading.Thread(target=run.record, daemon=True)
    recorder.start()
    run.submit(tasks[0])
    assert held.started.acquire(timeout=WAIT)
    fake_clock.advance(clock.epoch(tasks[0]["deadline"]) - fake_clock() + engine.OVERDUE_GRACE + 1)
    assert run.freed.wait(WAIT) and not run.running()
    assert run.abandoned == 1 and any("left behind, the store times it out" in line for line in lines), lines
    held.gate.set()
    assert until(lambda: any("finished after it was given back (completed)" in line for line in lines)), lines
    run.close()
    recorder.join(WAIT)
    assert not recorder.is_alive()
    assert not [e for e in jobs.get_history(job, db=db) if e["event"] == "report"]


def test_a_claim_of_a_sub_task_already_in_flight_takes_its_new_identity_and_is_not_run_twice(db, held):
    job, tasks = dispatched(db, 1)
    lines = []
    run = make_engine(engine.Policy(), db, lines)
    recorder = threading.Thread(target=run.record, daemon=True)
    recorder.start()
    assert run.submit(tasks[0])
    assert held.started.acquire(timeout=WAIT)
    again = dict(tasks[0], agent_id="agent_grep_new")
    assert not run.submit(again)
    assert [t["agent_id"] for t in run.running()] == ["agent_grep_new"]
    held.gate.set()
    run.close()
    recorder.join(WAIT)
    assert not held.started.acquire(timeout=0.5)  # one run only
    # Its report carries the identity it runs under now (here refused: the store never gave it).
    assert jobs.get_job_subtasks(job, db=db)[0]["status"] == "running"
    assert any("sub_1: report not stored" in line for line in lines), lines


def test_context_makes_file_paths_absolute_from_the_working_directory(tmp_path):
    ctx = engine.context("j", workdir=str(tmp_path), files=["a.txt", "sub/../b.txt", "/etc/hosts"], allow_shell=1)
    assert ctx.files == [str(tmp_path / "a.txt"), str(tmp_path / "b.txt"), "/etc/hosts"]
    assert ctx.allow_shell is True and ctx.settings == {} and ctx.deadline is None


def test_one_shell_opt_in_message_whichever_opt_in_is_missing(db, tmp_path):
    job = jobs.create_job_with_subtasks(300, {"prompt": "p"}, ["true"], db=db)
    refusals = []
    for refuse in (lambda: pool.queue_job(job, "shell", db=db),  # dispatch --pool
                   lambda: executors.create("shell", engine.context(job, workdir=str(tmp_path))).check(),  # headless
                   lambda: Worker("shell", workdir=str(tmp_path), db=db).check()):  # brain worker
        with pytest.raises(InvalidInput) as refused:
            refuse()
        refusals.append(str(refused.value))
    assert len(set(refusals)) == 1 and "--allow-shell" in refusals[0] and "brain worker" in refusals[0], refusals

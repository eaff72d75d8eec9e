"""Deadlines and partial consolidation: a stuck sub-task never holds a job hostage.

Time is moved with the injectable clock (``fake_clock``: the API in this
process, ``BRAIN_NOW`` for CLI subprocesses); nothing here sleeps.
"""

import re

import pytest

from conftest import store_snapshot
from brain_jobs import jobs, state
from brain_jobs.clock import epoch, iso
from brain_jobs.errors import InvalidTransition

SEED_KEYS = {"job_id", "total_tasks", "completed", "failed", "results", "consolidated_at"}


def new_job(db, n=3, ttl=300):
    return jobs.create_job_with_subtasks(ttl, {"prompt": "p"}, [f"GET /q{i}" for i in range(1, n + 1)], db=db)


def agents(out):
    """Sub-task id -> worker identity, from a dispatch result."""
    ids = {}
    for call in out["agent_calls"]:
        job, sub, agent = jobs.parse_subtask_prompt(call["prompt"])
        ids[sub] = agent
    return ids


def raw(job_id, db):
    """The stored row as it is, without the sweep a read through the API applies."""
    return next(r for r in store_snapshot(db) if r["job_id"] == job_id)


def subs(row):
    """Sub-task id -> sub-task, from a row or a list of sub-tasks."""
    return {s["sub_task_id"]: s for s in (row["sub_tasks"] if isinstance(row, dict) else row)}


# -- deadlines ------------------------------------------------------------------

def test_default_deadline_is_four_fifths_of_the_remaining_ttl(db, fake_clock):
    job = new_job(db, ttl=300)
    t0 = fake_clock()
    jobs.dispatch_job(job, db=db)
    row = jobs.get_job(job, db=db)
    assert {s["deadline"] for s in row["sub_tasks"]} == {iso(t0 + 240)}
    assert row["history"][-1]["event"] == "dispatch" and row["history"][-1]["timeout"] == 240

    # Later dispatches derive the deadline from what is left of the TTL.
    jobs.update_subtask_status(job, "sub_1", "failed", "x", force=True, db=db)
    jobs.retry_subtasks(job, ["sub_1"], db=db)
    fake_clock.advance(100)
    jobs.dispatch_job(job, db=db)
    assert subs(jobs.get_job(job, db=db))["sub_1"]["deadline"] == iso(t0 + 100 + 160)


def test_deadline_is_never_beyond_the_ttl(db, fake_clock, brain):
    job = new_job(db, n=2, ttl=300)
    expires = jobs.get_job(job, db=db)["expires_at"]
    brain.json("job", "dispatch", job, "--timeout", "100000")
    assert {s["deadline"] for s in brain.json("job", "subtasks", job)} == {expires}
    # History records the timeout that applies, not the one asked for.
    assert brain.json("job", "history", job)[-1]["timeout"] == 300

    # With less than a second of TTL left, the default still stops at the TTL.
    other = new_job(db, n=1, ttl=10)
    fake_clock.advance(9.5)
    jobs.dispatch_job(other, db=db)
    row = jobs.get_job(other, db=db)
    assert row["sub_tasks"][0]["deadline"] == row["expires_at"]


def test_dispatch_timeout_sets_the_deadline(db, fake_clock, brain):
    job = new_job(db, n=2)
    brain.json("job", "dispatch", job, "--timeout", "30")
    assert {s["deadline"] for s in brain.json("job", "subtasks", job)} == {iso(fake_clock() + 30)}


def test_overdue_subtask_fails_at_the_next_read_without_a_daemon(db, fake_clock, brain):
    job = new_job(db, n=2)
    ids = agents(jobs.dispatch_job(job, timeout=30, db=db))
    jobs.update_subtask_status(job, "sub_2", "completed", "done", agent_id=ids["sub_2"], db=db)

    fake_clock.advance(29.999)  # one millisecond early: still running
    assert subs(brain.json("job", "subtasks", job))["sub_1"]["status"] == "running"

    fake_clock.advance(0.001)  # the deadline itself is overdue
    assert subs(raw(job, db))["sub_1"]["status"] == "running"  # nothing ran in the background
    sub1 = subs(brain.json("job", "subtasks", job))["sub_1"]
    assert sub1["status"] == "failed"
    assert re.fullmatch(r"timed out: no report by \S+Z", sub1["result"]) and sub1["deadline"] in sub1["result"]
    # The read stored what it found, with a history event naming the worker.
    stored = raw(job, db)
    assert subs(stored)["sub_1"]["status"] == "failed"
    timeout = [e for e in stored["history"] if e["event"] == "timeout"]
    assert timeout == [{"at": iso(fake_clock()), "event": "timeout", "sub_task_id": "sub_1",
                        "status": "failed", "agent_id": subs(stored)["sub_1"]["agent_id"]}]


@pytest.mark.parametrize("reader", ["get", "consolidate", "list", "history", "stats", "cleanup"])
def test_every_read_applies_the_deadline(db, fake_clock, brain, reader):
    job = new_job(db, n=1)
    jobs.dispatch_job(job, timeout=5, db=db)
    fake_clock.advance(6)
    args = {"get": ("get", job), "consolidate": ("consolidate", job), "list": ("list", "--all"),
            "history": ("history", job), "stats": ("stats",), "cleanup": ("cleanup",)}[reader]
    brain.json("job", *args)
    assert raw(job, db)["sub_tasks"][0]["result"].startswith("timed out")


def test_a_write_applies_the_deadline_in_the_same_transaction(db, fake_clock):
    """The last live report arrives after a sibling's deadline: one write fails
    the sibling, stores the report and the final consolidation."""
    job = new_job(db, n=2)
    ids = agents(jobs.dispatch_job(job, timeout=30, db=db))
    # sub_2 gets a second attempt with a later deadline.
    jobs.update_subtask_status(job, "sub_2", "failed", "flaky", force=True, db=db)
    jobs.retry_subtasks(job, ["sub_2"], db=db)
    fake_clock.advance(20)
    ids.update(agents(jobs.dispatch_job(job, timeout=60, db=db)))
    fake_clock.advance(11)
    store = jobs.store_for(db)
    writes = []
    real_write = store.write

    def counting_write():
        writes.append(1)
        return real_write()

    store.write = counting_write
    try:
        jobs.update_subtask_status(job, "sub_2", "completed", "late but alive", agent_id=ids["sub_2"], db=db)
    finally:
        del store.write
    assert len(writes) == 1
    row = raw(job, db)
    assert [s["status"] for s in row["sub_tasks"]] == ["failed", "completed"]
    final = row["consolidated_result"]
    assert final["complete"] is True and (final["completed"], final["failed"]) == (1, 1)
    assert final["results"][0]["result"].startswith("timed out")


def test_late_report_after_the_deadline_is_refused_and_kept_only_in_history(db, fake_clock, brain):
    job = new_job(db, n=1)
    ids = agents(jobs.dispatch_job(job, timeout=5, db=db))
    fake_clock.advance(5)
    brain.json("job", "get", job)  # the sweep happens here
    before = store_snapshot(db)
    proc = brain("job", "update", job, "sub_1", "--status", "completed", "--result", "too late",
                 "--agent-id", ids["sub_1"])
    assert proc.returncode == 1
    assert proc.stderr.startswith("brain: error: sub_1 is already failed (timed out: no report by ")
    assert "kept in the job's history only" in proc.stderr
    after = store_snapshot(db)
    # Nothing changed but one history event that keeps the late answer.
    assert [dict(r, history=r["history"][:-1]) for r in after] == before
    late = after[0]["history"][-1]
    assert (late["event"], late["result"], late["agent_id"]) == ("late_report", "too late",
                                                                 after[0]["sub_tasks"][0]["agent_id"])
    assert after[0]["sub_tasks"][0]["status"] == "failed"
    # Without a result there is nothing to keep: a plain refusal that changes nothing.
    proc = brain("job", "update", job, "sub_1", "--status", "completed", "--agent-id", ids["sub_1"])
    assert proc.returncode == 1 and "already failed" in proc.stderr
    assert store_snapshot(db) == after


def test_consolidation_never_waits_on_a_stuck_subtask(db, fake_clock, brain):
    job = new_job(db, n=3)
    ids = agents(jobs.dispatch_job(job, timeout=60, db=db))
    for sub in ("sub_1", "sub_3"):
        jobs.update_subtask_status(job, sub, "completed", f"ok {sub}", agent_id=ids[sub], db=db)
    early = brain.json("job", "consolidate", job)
    assert (early["complete"], early["running"], early["completed"]) == (False, 1, 2)
    assert raw(job, db)["consolidated_result"] is None

    fake_clock.advance(60)
    final = brain.json("job", "consolidate", job)
    assert final["complete"] is True and final["status"] == "failed"
    assert (final["completed"], final["failed"], final["running"], final["pending"]) == (2, 1, 0, 0)
    assert final["results"][1]["result"].startswith("timed out")
    assert raw(job, db)["consolidated_result"] == final


def test_expiry_fails_what_is_left_and_keeps_what_was_reported(db, fake_clock, brain):
    job = new_job(db, n=3, ttl=60)
    ids = agents(jobs.dispatch_job(job, timeout=1000, db=db))  # deadline clamped to the TTL
    jobs.update_subtask_status(job, "sub_2", "completed", "kept", agent_id=ids["sub_2"], db=db)
    fake_clock.advance(60)
    final = brain.json("job", "consolidate", job)
    assert [r["result"] for r in final["results"]] == ["expired", "kept", "expired"]
    assert final["complete"] is True
    proc = brain("job", "update", job, "sub_1", "--status", "completed", "--agent-id", ids["sub_1"])
    assert proc.returncode == 1 and "expired" in proc.stderr


# -- partial consolidation -------------------------------------------------------

def test_partial_consolidation_at_every_moment(db, fake_clock):
    job = new_job(db, n=4)
    seen = []

    def look():
        c = jobs.consolidate_subtask_results(job, db=db)
        assert SEED_KEYS | {"pending", "running", "complete"} <= set(c)
        assert c["total_tasks"] == c["pending"] + c["running"] + c["completed"] + c["failed"] == 4
        seen.append((c["pending"], c["running"], c["completed"], c["failed"], c["complete"]))
        return c

    look()
    jobs.update_subtask_status(job, "sub_4", "failed", "no route", db=db)  # never dispatched: no owner
    look()
    ids = agents(jobs.dispatch_job(job, timeout=10, db=db))
    look()
    jobs.update_subtask_status(job, "sub_1", "completed", "a", agent_id=ids["sub_1"], db=db)
    look()
    jobs.update_subtask_status(job, "sub_2", "completed", "b", agent_id=ids["sub_2"], db=db)
    look()
    assert raw(job, db)["consolidated_result"] is None  # nothing final stored before the end
    fake_clock.advance(10)
    final = look()
    assert seen == [
        (4, 0, 0, 0, False),
        (3, 0, 0, 1, False),
        (0, 3, 0, 1, False),
        (0, 2, 1, 1, False),
        (0, 1, 2, 1, False),
        (0, 0, 2, 2, True),
    ]
    assert final["results"][3] == {"sub_task_id": "sub_4", "query": "GET /q4", "status": "failed", "result": "no route",
                                   "source": "report"}


def test_final_consolidation_is_stored_once_with_the_last_report(db, fake_clock):
    job = new_job(db, n=2)
    ids = agents(jobs.dispatch_job(job, db=db))
    jobs.update_subtask_status(job, "sub_1", "completed", "one", agent_id=ids["sub_1"], db=db)
    fake_clock.advance(1)
    store = jobs.store_for(db)
    writes = []
    real_write = store.write
    store.write = lambda: (writes.append(1), real_write())[1]
    try:
        jobs.update_subtask_status(job, "sub_2", "completed", "two", agent_id=ids["sub_2"], db=db)
    finally:
        del store.write
    assert len(writes) == 1  # the last report's own transaction, and no other
    row = raw(job, db)  # straight from the store: no consolidate call has run
    final = row["consolidated_result"]
    assert final is not None and final["consolidated_at"] == iso(fake_clock())
    assert (final["completed"], final["complete"], row["status"]) == (2, True, "completed")
    consolidated = [e for e in row["history"] if e["event"] == "consolidated"]
    report = [e for e in row["history"] if e["event"] == "report"][-1]
    assert len(consolidated) == 1 and consolidated[0]["at"] == report["at"]

    # Reading it later returns the stored result, not a new one.
    for _ in range(3):
        fake_clock.advance(50)
        assert jobs.consolidate_subtask_results(job, db=db) == final
    row = raw(job, db)
    assert row["consolidated_result"] == final
    assert [e["event"] for e in row["history"]].count("consolidated") == 1
    assert [e["event"] for e in row["history"]].count("consolidate_read") == 1


def test_a_finished_job_takes_no_more_reports(db, fake_clock):
    job = new_job(db, n=1)
    jobs.update_subtask_status(job, "sub_1", "completed", "done", agent_id="agent_x", db=db)
    final = raw(job, db)["consolidated_result"]
    with pytest.raises(InvalidTransition, match="already completed"):
        jobs.update_subtask_status(job, "sub_1", "failed", "again", agent_id="agent_x", db=db)
    assert raw(job, db)["consolidated_result"] == final
    assert epoch(final["consolidated_at"]) == fake_clock()


def test_a_refused_write_still_keeps_the_deadlines_it_applied(db, fake_clock):
    """The sweep that ran in a write's transaction is committed even when the write is refused."""
    job = new_job(db, n=2)
    ids = agents(jobs.dispatch_job(job, timeout=5, db=db))
    jobs.update_subtask_status(job, "sub_1", "completed", "on time", agent_id=ids["sub_1"], db=db)
    fake_clock.advance(6)  # sub_2 is overdue; nothing has looked at the job yet
    with pytest.raises(InvalidTransition, match="already completed"):
        jobs.update_subtask_status(job, "sub_1", "failed", "again", agent_id=ids["sub_1"], db=db)
    stored = raw(job, db)  # the stored row, with no sweep of its own
    assert [s["status"] for s in stored["sub_tasks"]] == ["completed", "failed"]
    assert stored["sub_tasks"][1]["result"].startswith("timed out")
    assert stored["consolidated_result"]["complete"] is True


# -- started and waiting sub-tasks ------------------------------------------------

def test_the_host_starts_every_subtask_at_dispatch(db, fake_clock):
    job = new_job(db, n=2)
    jobs.dispatch_job(job, timeout=30, db=db)
    for sub in jobs.get_job(job, db=db)["sub_tasks"]:
        assert (sub["started_at"], sub["deadline"]) == (iso(fake_clock()), iso(fake_clock() + 30))
        assert not state.waiting(sub)


def test_a_pool_claim_is_a_start(db, fake_clock):
    from brain_jobs import pool

    job = new_job(db, n=2)
    pool.queue_job(job, "grep", timeout=20, db=db)
    fake_clock.advance(3)
    claimed = pool.claim("grep", "w1", 30, db=db)
    sub = subs(jobs.get_job(job, db=db))[claimed["sub_task_id"]]
    assert (sub["started_at"], sub["deadline"]) == (iso(fake_clock()), iso(fake_clock() + 20))
    assert not state.waiting(sub)


def test_a_runner_dispatch_waits_until_each_start_and_times_out_from_there(db, fake_clock):
    """Dispatched to a runner: running and waiting (deadline: the job's expiry) until the runner
    records the start; then ``min(start + timeout, expiry)``."""
    job = new_job(db, n=3, ttl=300)
    t0 = fake_clock()
    started = {s["sub_task_id"]: s for s in jobs.start_subtasks(job, "grep", timeout=10, db=db)}
    row = jobs.get_job(job, db=db)
    assert all(state.waiting(s) and s["deadline"] == row["expires_at"] and s["timeout"] == 10
               for s in row["sub_tasks"])
    fake_clock.advance(4)
    jobs.update_subtasks(job, [], starts=[{"sub_task_id": "sub_1", "agent_id": started["sub_1"]["agent_id"],
                                           "started_at": t0 + 3}], db=db)
    sub1 = subs(jobs.get_job(job, db=db))["sub_1"]
    assert (sub1["started_at"], sub1["deadline"]) == (iso(t0 + 3), iso(t0 + 13)) and not state.waiting(sub1)

    # A start that is not the waiting owner's changes nothing: another identity, a second start.
    before = raw(job, db)
    jobs.update_subtasks(job, [], starts=[{"sub_task_id": "sub_2", "agent_id": "agent_grep_000000", "started_at": t0},
                                          {"sub_task_id": "sub_1", "agent_id": started["sub_1"]["agent_id"],
                                           "started_at": t0 + 4}], db=db)
    assert raw(job, db) == before

    fake_clock.advance(290)  # t0 + 294: sub_1 is long overdue; the waiting ones only expire with the job
    row = jobs.get_job(job, db=db)
    assert [(s["status"], s["result"] and s["result"][:9]) for s in row["sub_tasks"]] == [
        ("failed", "timed out"), ("running", None), ("running", None)]
    fake_clock.advance(6)
    assert [s["result"] for s in jobs.get_job(job, db=db)["sub_tasks"]] == ["timed out: no report by "
                                                                          + iso(t0 + 13), "expired", "expired"]


def test_a_start_never_goes_beyond_the_expiry(db, fake_clock):
    job = new_job(db, n=1, ttl=60)
    agent = jobs.start_subtasks(job, "grep", timeout=50, db=db)[0]["agent_id"]
    fake_clock.advance(30)
    jobs.update_subtasks(job, [], starts=[{"sub_task_id": "sub_1", "agent_id": agent, "started_at": fake_clock()}],
                         db=db)
    row = jobs.get_job(job, db=db)
    assert row["sub_tasks"][0]["deadline"] == row["expires_at"]


def test_a_retried_subtask_is_not_left_waiting(db, fake_clock):
    """A waiting sub-task that was cancelled and retried, then reported running by a worker, has started."""
    job = new_job(db, n=1)
    jobs.start_subtasks(job, "grep", db=db)
    jobs.update_subtask_status(job, "sub_1", "failed", "stop", force=True, db=db)
    jobs.retry_subtasks(job, db=db)
    jobs.update_subtask_status(job, "sub_1", "running", agent_id="agent_me", db=db)
    assert not state.waiting(jobs.get_job(job, db=db)["sub_tasks"][0])


@pytest.mark.sqlite_only
def test_the_tally_of_a_big_job_finds_deadlines_that_count_from_each_start(db, fake_clock):
    """Starts move deadlines; the tally's bound stays a lower bound and is made exact by a full look."""
    job = new_job(db, n=70)
    t0 = fake_clock()
    agents = {s["sub_task_id"]: s["agent_id"] for s in jobs.start_subtasks(job, "grep", timeout=10, db=db)}

    def start(sub):
        jobs.update_subtasks(job, [], starts=[{"sub_task_id": sub, "agent_id": agents[sub],
                                               "started_at": fake_clock()}], db=db)

    def report(sub):
        return jobs.update_subtask_status(job, sub, "completed", "ok", agent_id=agents[sub], db=db)

    def tally():
        import sqlite3

        with sqlite3.connect(db) as conn:
            return conn.execute("SELECT next_deadline FROM job_tally WHERE job_id = ?", (job,)).fetchone()

    start("sub_1")
    report("sub_1")
    fake_clock.advance(5)
    start("sub_2")
    assert tally() == (iso(t0 + 10),)  # sub_1's deadline: finished, but still a lower bound
    fake_clock.advance(7)  # t0 + 12: that bound has passed and nothing is due
    start("sub_3")
    assert tally() == (iso(t0 + 15),)  # the write looked at every sub-task and kept the exact earliest
    assert subs(raw(job, db))["sub_2"]["status"] == "running"
    fake_clock.advance(2.999)
    report("sub_3")
    assert subs(raw(job, db))["sub_2"]["status"] == "running"
    fake_clock.advance(0.001)  # t0 + 15: sub_2's own deadline
    start("sub_4")
    stored = subs(raw(job, db))
    assert stored["sub_2"]["status"] == "failed" and stored["sub_2"]["result"].startswith("timed out")

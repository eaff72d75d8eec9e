"""TTL: expiry consolidates first; purge comes only after the retention period."""

import pytest

from conftest import store_snapshot
from brain_jobs import clock, jobs
from brain_jobs.errors import Expired, InvalidInput, NotFound


def test_expires_at_is_created_at_plus_ttl(fake_clock):
    job = jobs.create_job_with_subtasks(300, {"prompt": "p"}, ["a"])
    row = jobs.get_job(job)
    assert clock.epoch(row["expires_at"]) - clock.epoch(row["created_at"]) == 300
    assert row["ttl"] == 300


def test_expiry_fails_unfinished_subtasks_and_consolidates_keeping_results(fake_clock):
    job = jobs.create_job_with_subtasks(60, {"prompt": "p"}, ["a", "b", "c"])
    jobs.update_subtask_status(job, "sub_1", "completed", "kept result")
    jobs.dispatch_job(job)
    fake_clock.advance(61)
    row = jobs.get_job(job)  # a read is enough: no daemon
    assert row["status"] == "failed"
    assert [s["status"] for s in row["sub_tasks"]] == ["completed", "failed", "failed"]
    assert [s["result"] for s in row["sub_tasks"]] == ["kept result", "expired", "expired"]
    final = row["consolidated_result"]
    assert final["complete"] is True and final["completed"] == 1 and final["failed"] == 2
    assert any(e["event"] == "expired" for e in row["history"])
    with pytest.raises(Expired, match="expired at"):
        jobs.update_subtask_status(job, "sub_2", "completed", "too late")
    assert jobs.consolidate_subtask_results(job)["results"][0]["result"] == "kept result"


def test_purge_waits_for_the_retention_period(fake_clock, monkeypatch):
    monkeypatch.setenv("BRAIN_RETENTION", "100")
    job = jobs.create_job_with_subtasks(10, {"prompt": "p"}, ["a"])
    jobs.update_subtask_status(job, "sub_1", "completed", "r")
    fake_clock.advance(10 + 99)
    assert jobs.cleanup_jobs()["purged"] == 0
    assert jobs.consolidate_subtask_results(job)["results"][0]["result"] == "r"
    fake_clock.advance(2)
    assert jobs.cleanup_jobs()["purged"] == 1
    with pytest.raises(NotFound):
        jobs.get_job(job)


def test_any_write_expires_and_purges_other_jobs(fake_clock, monkeypatch):
    monkeypatch.setenv("BRAIN_RETENTION", "0")
    old = jobs.create_job_with_subtasks(5, {"prompt": "p"}, ["a"])
    done = jobs.create_job_with_subtasks(5, {"prompt": "p"}, ["a"])
    jobs.update_subtask_status(done, "sub_1", "completed", "r")
    fake_clock.advance(6)
    jobs.create_job(60, {"prompt": "unrelated write"})
    # `done` was final and past retention: purged. `old` was unfinished: expired
    # and consolidated in that write, so it is kept for one more retention period.
    assert [j["job_id"] for j in jobs.list_jobs(include_finished=True) if j["job_id"] in (old, done)] == [old]
    assert jobs.get_job(old)["consolidated_result"]["failed"] == 1
    fake_clock.advance(1)
    jobs.create_job(60, {"prompt": "another write"})
    with pytest.raises(NotFound):
        jobs.get_job(old)


def test_cleanup_command_reports_counts(brain, fake_clock):
    job = brain.ok("job", "create", "--distributed", "--ttl", "5", "--prompt", "p", "--subtask", "a").strip()
    fake_clock.advance(6)
    assert brain.json("job", "cleanup") == {"expired": 1, "timed_out": 0, "purged": 0}
    assert brain.json("job", "get", job)["sub_tasks"][0]["result"] == "expired"


def test_normal_job_expires_to_failed(fake_clock):
    job = jobs.create_job(5, {"prompt": "p"})
    jobs.set_job_status(job, "running")
    fake_clock.advance(5)
    assert jobs.get_job(job)["status"] == "failed"
    with pytest.raises(Expired):
        jobs.set_job_status(job, "completed")


def test_a_busy_process_housekeeps_at_most_once_a_second_but_always_sweeps_what_it_touches(fake_clock):
    """Housekeeping (expiring other due jobs, purging) runs at a process's first write and then at
    most once every ``HOUSEKEEPING_INTERVAL``; the job a call touches is swept whatever the interval."""
    assert jobs.HOUSEKEEPING_INTERVAL == 1.0
    first = jobs.create_job_with_subtasks(2, {"prompt": "p"}, ["a"])  # t=0: housekeeps; due at t=2
    second = jobs.create_job_with_subtasks(2, {"prompt": "p"}, ["a"])
    fake_clock.advance(1.5)
    jobs.create_job(60, {"prompt": "busy"})  # t=1.5: housekeeps
    fake_clock.advance(0.7)
    jobs.create_job(60, {"prompt": "busy"})  # t=2.2: both due, but housekept 0.7 s ago
    store = jobs.store_for()
    assert [store.read(j)["status"] for j in (first, second)] == ["pending", "pending"]
    assert jobs.get_job(first)["status"] == "failed"  # what a call touches is always swept
    assert store.read(second)["status"] == "pending"
    fake_clock.advance(0.3)
    jobs.create_job(60, {"prompt": "busy"})  # t=2.5: a second after the last: housekeeps
    assert store.read(second)["status"] == "failed"
    assert store.read(second)["consolidated_result"]["failed"] == 1


# -- the clock ------------------------------------------------------------------------------

@pytest.mark.sqlite_only
@pytest.mark.parametrize("value", ["abc", "nan", "inf", "-inf", "1e20", "-1", "253402300800"])
def test_a_bad_brain_now_is_one_line_and_exit_2(brain, value):
    """Issue 12, item 8: these gave tracebacks (float(), then the time formatting)."""
    for args in (("job", "list"), ("job", "create", "--ttl", "60", "--prompt", "p")):
        proc = brain(*args, env={"BRAIN_NOW": value})
        assert proc.returncode == 2, proc.stderr
        assert proc.stderr == (f"brain: error: BRAIN_NOW={value!r} is not a time in epoch seconds (0 to 253402300799); "
                               "unset it: it is a test setting that moves the clock for every job\n")
    assert brain.json("job", "list") == []


def test_a_clock_set_far_ahead_is_refused_before_it_expires_every_job(brain, fake_clock, db):
    """Issue 12, item 11: one process with BRAIN_NOW a year ahead expired (and then purged)
    everyone's jobs. A clock set by hand more than 30 days (the longest TTL) past the newest
    job is refused, by reads and writes alike; within that, time passes as usual."""
    running = jobs.create_job_with_subtasks(3600, {"prompt": "p"}, ["a", "b"])
    jobs.dispatch_job(running)
    kept = jobs.create_job_with_subtasks(30 * 86400, {"prompt": "long"}, ["c"])
    jobs.close_stores()
    before = store_snapshot(db)
    year = {"BRAIN_NOW": repr(fake_clock() + 365 * 86400)}
    for args in (("job", "list"), ("job", "subtasks", running), ("job", "cleanup"), ("job", "stats"),
                 ("job", "create", "--ttl", "60", "--prompt", "p"),
                 ("job", "update", kept, "sub_1", "--status", "completed", "--result", "r")):
        proc = brain(*args, env=year)
        assert proc.returncode == 2, (args, proc.stdout, proc.stderr)
        assert proc.stderr.count("\n") == 1 and proc.stderr.startswith(f"brain: error: BRAIN_NOW={year['BRAIN_NOW']} (")
        assert "is 365 days after the newest job in the store" in proc.stderr and "unset BRAIN_NOW" in proc.stderr
    assert store_snapshot(db) == before
    # The API refuses a clock given to set_clock the same way.
    clock.set_clock(lambda: fake_clock() + 31 * 86400)
    with pytest.raises(InvalidInput, match="the clock given to set_clock .* is 31 days after the newest job"):
        jobs.list_jobs()
    # 29 days on is time passing: the one-hour job expires, the 30-day one stays.
    clock.set_clock(lambda: fake_clock() + 29 * 86400)
    assert [j["job_id"] for j in jobs.list_jobs()] == [kept]
    assert jobs.get_job(running)["status"] == "failed"


def test_the_system_clock_is_trusted_after_a_long_idle_time(db):
    """Only a clock set by hand is checked: an idle store's first write in two months, on the
    system clock, expires what is due, as it should."""
    import time

    clock.set_clock(lambda: time.time() - 60 * 86400)
    old = jobs.create_job_with_subtasks(600, {"prompt": "p"}, ["a"])
    clock.set_clock(None)
    assert jobs.list_jobs() == []
    assert jobs.get_job(old)["sub_tasks"][0]["result"] == "expired"

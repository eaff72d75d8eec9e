"""TTL: expiry consolidates first; purge comes only after the retention period."""

import pytest

from scripts.memory import clock, jobs
from scripts.memory.errors import Expired, NotFound


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
    store = jobs._store()
    assert [store.read(j)["status"] for j in (first, second)] == ["pending", "pending"]
    assert jobs.get_job(first)["status"] == "failed"  # what a call touches is always swept
    assert store.read(second)["status"] == "pending"
    fake_clock.advance(0.3)
    jobs.create_job(60, {"prompt": "busy"})  # t=2.5: a second after the last: housekeeps
    assert store.read(second)["status"] == "failed"
    assert store.read(second)["consolidated_result"]["failed"] == 1

"""Unit tier: the worker pool's transactions (queue, claim, renew, release) on the in-memory store.

Leases run out only when the injected clock says so. The last test runs a
real ``worker.Worker`` with the grep executor in this process: threads
report while the main thread sleeps in ``wait_for_commit``, which the
in-memory store wakes like the real ones.
"""

import io
import re

import pytest

from brain_jobs import jobs, pool, state
from brain_jobs.clock import iso
from brain_jobs.errors import InvalidInput, InvalidTransition, Refused
from brain_jobs.worker import Worker

pytestmark = pytest.mark.backends("memory")

LEASE = 30


def queued(n=2, ttl=600, executor="grep", **kw):
    job = jobs.create_job_with_subtasks(ttl, {"prompt": "p"}, [f"q{i}" for i in range(1, n + 1)])
    pool.queue_job(job, executor, **kw)
    return job


def sub(job, sub_task_id):
    return next(s for s in jobs.get_job_subtasks(job) if s["sub_task_id"] == sub_task_id)


def test_queueing_marks_the_pending_sub_tasks_and_claims_take_them_one_by_one(fake_clock):
    job = queued(n=2, files=["src"])
    assert [s.get("pool") for s in jobs.get_job_subtasks(job)] == ["grep", "grep"]
    assert pool.backlog("grep") == {"pending": 2, "running": 0}
    first = pool.claim("grep", "w1", LEASE)
    assert (first["job_id"], first["sub_task_id"], first["attempt"], first["files"]) == (job, "sub_1", 1, ["src"])
    assert first["lease_until"] == iso(fake_clock() + LEASE) and first["label"].startswith("agent_grep_")
    assert first["label"] == sub(job, "sub_1")["agent_id"]  # reads show the label
    assert re.fullmatch(r"[0-9a-f]{32}", first["agent_id"])  # the worker alone gets its credential
    assert pool.claim("grep", "w2", LEASE)["sub_task_id"] == "sub_2"
    assert pool.claim("grep", "w3", LEASE) is None
    assert pool.claim("http", "w3", LEASE) is None
    assert pool.backlog("grep") == {"pending": 0, "running": 2}
    assert jobs.get_job(job)["status"] == "running"


def test_the_oldest_job_is_claimed_first(fake_clock):
    older = queued(n=1)
    fake_clock.advance(1)
    queued(n=1)
    assert pool.claim("grep", "w1", LEASE)["job_id"] == older


def test_a_claimed_sub_task_is_reported_like_any_other(fake_clock):
    job = queued(n=1)
    claim = pool.claim("grep", "w1", LEASE)
    with pytest.raises(Refused):
        jobs.update_subtask_status(job, "sub_1", "completed", "r", agent_id="agent_grep_stranger")
    with pytest.raises(Refused, match=f"{claim['label']} does not own sub_1"):
        jobs.update_subtask_status(job, "sub_1", "completed", "r", agent_id=claim["label"])
    jobs.update_subtask_status(job, "sub_1", "completed", "3 matches", agent_id=claim["agent_id"])
    assert jobs.consolidate_subtask_results(job)["status"] == "completed"


def test_renewing_keeps_the_lease_and_a_lost_lease_goes_to_the_next_worker(fake_clock):
    job = queued(n=1)
    lost = pool.claim("grep", "w1", LEASE)
    fake_clock.advance(LEASE - 1)
    assert pool.renew(job, {"sub_1": lost["agent_id"]}, LEASE) == []
    assert sub(job, "sub_1")["lease_until"] == iso(fake_clock() + LEASE)
    fake_clock.advance(LEASE - 1)
    assert pool.claim("grep", "w2", LEASE) is None  # renewed: still held
    fake_clock.advance(1)
    again = pool.claim("grep", "w2", LEASE)  # the lease ran out: claimed anew
    assert (again["sub_task_id"], again["attempt"]) == ("sub_1", 2) and again["agent_id"] != lost["agent_id"]
    assert pool.renew(job, {"sub_1": lost["agent_id"]}, LEASE) == ["sub_1"]
    with pytest.raises(Refused, match="superseded attempt"):
        jobs.update_subtask_status(job, "sub_1", "completed", "late", agent_id=lost["agent_id"])
    jobs.update_subtask_status(job, "sub_1", "completed", "fresh", agent_id=again["agent_id"])
    assert [e["event"] for e in jobs.get_history(job)][-5:] == \
        ["lease_expired", "claim", "refused", "report", "consolidated"]


def test_a_sub_task_whose_workers_keep_dying_fails_instead_of_looping(fake_clock):
    job = queued(n=1)
    for _ in range(state.MAX_CLAIMS):
        assert pool.claim("grep", "w", LEASE) is not None
        fake_clock.advance(LEASE)
    assert pool.claim("grep", "w", LEASE) is None
    failed = sub(job, "sub_1")
    assert failed["status"] == "failed" and failed["result"].startswith(f"abandoned: {state.MAX_CLAIMS} workers")


def test_release_gives_the_sub_task_back_under_a_new_identity(fake_clock):
    job = queued(n=1)
    claim = pool.claim("grep", "w1", LEASE)
    with pytest.raises(Refused, match="does not hold"):
        pool.release(job, "sub_1", "agent_grep_other", "stopping")
    with pytest.raises(Refused, match="does not hold"):
        pool.release(job, "sub_1", claim["label"], "stopping")  # the public label holds nothing
    released = pool.release(job, "sub_1", claim["agent_id"], "worker stopped (SIGTERM)")
    assert (released["status"], released["pool"], released["agent_id"]) == ("pending", "grep", None)
    again = pool.claim("grep", "w2", LEASE)
    assert again["sub_task_id"] == "sub_1" and again["agent_id"] != claim["agent_id"]
    with pytest.raises(Refused, match="superseded"):
        jobs.update_subtask_status(job, "sub_1", "completed", "r", agent_id=claim["agent_id"])


def test_queue_refuses_what_it_cannot_queue():
    job = queued(n=1)
    with pytest.raises(InvalidTransition, match="already queued for the grep pool"):
        pool.queue_job(job, "grep")
    with pytest.raises(InvalidInput, match="host is the Claude Code Agent tool"):
        pool.queue_job(job, "host")
    with pytest.raises(InvalidInput, match="--allow-shell"):
        pool.queue_job(job, "shell")


def test_a_worker_in_this_process_drains_the_pool(tmp_path, db):
    (tmp_path / "notes.txt").write_text("alpha\nbeta\nalpha beta\n")
    job = jobs.create_job_with_subtasks(600, {"prompt": "p"}, ["alpha", "gamma"])
    pool.queue_job(job, "grep", files=["notes.txt"])
    log = io.StringIO()
    worker = Worker("grep", concurrency=2, lease=LEASE, poll=1, drain=True, workdir=str(tmp_path), db=db, stream=log)
    assert worker.run() == 0, log.getvalue()
    results = [(s["status"], s["result"]) for s in jobs.get_job_subtasks(job)]
    assert results == [("completed", "2 matches in 1 file, first: notes.txt:1"), ("completed", "no matches in 1 file")]
    assert worker.counts["completed"] == 2 and "the pool is empty" in log.getvalue()

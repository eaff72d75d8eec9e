"""Retries, ownership and cancel: every report lands on the attempt it belongs to."""

import pytest

from conftest import store_snapshot
from scripts.memory import jobs
from scripts.memory.errors import InvalidTransition, Refused


def new_job(db, n=3, ttl=600):
    return jobs.create_job_with_subtasks(ttl, {"prompt": "p"}, [f"GET /q{i}" for i in range(1, n + 1)], db=db)


def agents(out):
    return {jobs.parse_subtask_prompt(c["prompt"])[1]: jobs.parse_subtask_prompt(c["prompt"])[2]
            for c in out["agent_calls"]}


def raw(job_id, db):
    return next(r for r in store_snapshot(db) if r["job_id"] == job_id)


def sub(job_id, sub_task_id, db):
    return next(s for s in raw(job_id, db)["sub_tasks"] if s["sub_task_id"] == sub_task_id)


def events(job_id, db, name):
    return [e for e in raw(job_id, db)["history"] if e["event"] == name]


def one_line_error(proc, code=1):
    assert proc.returncode == code, proc.stderr
    assert proc.stdout == "" and proc.stderr.startswith("brain: error: ") and proc.stderr.count("\n") == 1
    return proc.stderr


# -- retry -------------------------------------------------------------------------

def test_retry_puts_failed_and_timed_out_back_to_pending(db, fake_clock, brain):
    job = new_job(db)
    ids = agents(jobs.dispatch_job(job, timeout=30, db=db))
    assert raw(job, db)["iteration"] == 1
    jobs.update_subtask_status(job, "sub_1", "failed", "HTTP 500", agent_id=ids["sub_1"], db=db)
    jobs.update_subtask_status(job, "sub_3", "completed", "fine", agent_id=ids["sub_3"], db=db)
    fake_clock.advance(30)  # sub_2 times out
    out = brain.json("job", "retry", job)
    assert out == {"job_id": job, "retried": ["sub_1", "sub_2"]}
    row = raw(job, db)
    by_id = {s["sub_task_id"]: s for s in row["sub_tasks"]}
    for sid in ("sub_1", "sub_2"):
        s = by_id[sid]
        assert (s["status"], s["attempt"], s["agent_id"], s["result"], s["deadline"]) == ("pending", 2, None, None, None)
        assert s["past_agents"] == [ids[sid]]
    assert by_id["sub_3"]["status"] == "completed" and by_id["sub_3"]["attempt"] == 1
    assert row["iteration"] == 2 and row["status"] == "running" and row["consolidated_result"] is None
    retry = [e for e in row["history"] if e["event"] == "retry"]
    assert retry == [{"at": retry[0]["at"], "event": "retry", "sub_tasks": ["sub_1", "sub_2"]}]

    # The second attempt runs to the end and the job consolidates again.
    ids2 = agents(jobs.dispatch_job(job, db=db))
    assert set(ids2) == {"sub_1", "sub_2"} and not set(ids2.values()) & set(ids.values())
    for sid, agent in ids2.items():
        jobs.update_subtask_status(job, sid, "completed", f"ok {sid}", agent_id=agent, db=db)
    row = raw(job, db)
    assert row["status"] == "completed" and row["iteration"] == 3
    assert row["consolidated_result"]["completed"] == 3
    assert len(events(job, db, "consolidated")) == 2  # once per completion


def test_retry_only_the_named_subtasks(db, brain):
    job = new_job(db)
    for sid in ("sub_1", "sub_2"):
        jobs.update_subtask_status(job, sid, "failed", "x", db=db)
    assert brain.json("job", "retry", job, "sub_2") == {"job_id": job, "retried": ["sub_2"]}
    row = raw(job, db)
    assert [s["status"] for s in row["sub_tasks"]] == ["failed", "pending", "pending"]
    assert "next: brain job dispatch" in brain("job", "retry", job, "sub_1").stderr


def test_max_attempts_is_honoured(db, brain):
    job = new_job(db, n=2)
    for attempt in (1, 2):
        jobs.update_subtask_status(job, "sub_1", "failed", f"try {attempt}", db=db)
        assert jobs.retry_subtasks(job, ["sub_1"], max_attempts=3, db=db) == ["sub_1"]
    jobs.update_subtask_status(job, "sub_1", "failed", "try 3", db=db)
    jobs.update_subtask_status(job, "sub_2", "failed", "first", db=db)
    before = store_snapshot(db)
    err = one_line_error(brain("job", "retry", job, "--max-attempts", "3"))
    assert "sub_1 has used 3 of at most 3 attempts; not retried" in err
    assert store_snapshot(db) == before  # all or nothing: sub_2 was not retried either
    assert brain.json("job", "retry", job, "sub_2", "--max-attempts", "3")["retried"] == ["sub_2"]
    assert sub(job, "sub_2", db)["attempt"] == 2 and sub(job, "sub_1", db)["attempt"] == 3


def test_retry_refuses_what_is_not_failed(db, brain):
    job = new_job(db, n=2)
    jobs.update_subtask_status(job, "sub_1", "completed", "x", db=db)
    before = store_snapshot(db)
    assert "sub_1 is completed; only failed sub-tasks can be retried" in one_line_error(brain("job", "retry", job, "sub_1"))
    assert "has no failed sub-tasks to retry" in one_line_error(brain("job", "retry", job))
    assert "has no sub-task sub_9" in one_line_error(brain("job", "retry", job, "sub_9"))
    assert store_snapshot(db) == before


# -- superseded attempts -------------------------------------------------------------

def test_late_report_from_a_superseded_attempt_never_overwrites_the_newer(db, fake_clock, brain):
    job = new_job(db, n=1)
    old = agents(jobs.dispatch_job(job, timeout=10, db=db))["sub_1"]
    fake_clock.advance(10)  # the first worker is stuck: timed out
    jobs.retry_subtasks(job, db=db)

    # While pending again, the old worker is already refused.
    err = one_line_error(brain("job", "update", job, "sub_1", "--status", "completed", "--result", "stale",
                               "--agent-id", old))
    assert f"report refused: {old} belongs to a superseded attempt of sub_1 (now attempt 2)" in err
    assert sub(job, "sub_1", db)["status"] == "pending"

    new = agents(jobs.dispatch_job(job, db=db))["sub_1"]
    jobs.update_subtask_status(job, "sub_1", "completed", "fresh", agent_id=new, db=db)
    final = raw(job, db)["consolidated_result"]
    with pytest.raises(Refused, match="superseded attempt"):
        jobs.update_subtask_status(job, "sub_1", "completed", "stale again", agent_id=old, db=db)
    row = raw(job, db)
    assert row["sub_tasks"][0]["result"] == "fresh" and row["sub_tasks"][0]["agent_id"] == new
    assert row["consolidated_result"] == final
    refused = [e for e in row["history"] if e["event"] == "refused"]
    assert len(refused) == 2
    assert all(e["agent_id"] == old and e["sub_task_id"] == "sub_1" and "superseded" in e["reason"] for e in refused)


def test_superseded_identities_accumulate_across_retries(db, fake_clock):
    job = new_job(db, n=1)
    seen = []
    for _ in range(3):
        agent = agents(jobs.dispatch_job(job, timeout=5, db=db))["sub_1"]
        jobs.link_host_agent(job, "sub_1", f"host-{agent}", db=db)
        seen += [agent, f"host-{agent}"]
        fake_clock.advance(5)
        jobs.retry_subtasks(job, db=db)
    current = agents(jobs.dispatch_job(job, db=db))["sub_1"]
    for stale in seen:
        with pytest.raises(Refused, match="superseded"):
            jobs.update_subtask_status(job, "sub_1", "completed", "stale", agent_id=stale, db=db)
    assert sub(job, "sub_1", db)["past_agents"] == seen
    jobs.update_subtask_status(job, "sub_1", "completed", "current", agent_id=current, db=db)
    assert sub(job, "sub_1", db)["attempt"] == 4


# -- ownership -----------------------------------------------------------------------

def test_dispatch_identity_and_linked_host_id_are_the_same_worker(db, brain):
    job = new_job(db, n=2)
    ids = agents(brain.json("job", "dispatch", job))
    assert sub(job, "sub_1", db)["agent_id"] == ids["sub_1"]
    jobs.link_host_agent(job, "sub_2", "a1b2c3d4", db=db)
    assert events(job, db, "link")[0]["host_agent_id"] == "a1b2c3d4"
    brain.ok("job", "update", job, "sub_1", "--status", "completed", "--result", "by dispatch id",
             "--agent-id", ids["sub_1"])
    brain.ok("job", "update", job, "sub_2", "--status", "completed", "--result", "by host id",
             "--agent-id", "a1b2c3d4")
    results = [r["result"] for r in brain.json("job", "consolidate", job)["results"]]
    assert results == ["by dispatch id", "by host id"]


@pytest.mark.parametrize("agent, message", [
    ("agent_haiku_intruder", "report refused: agent_haiku_intruder does not own sub_1"),
    (None, "report refused: sub_1 was dispatched to a worker; report with the --agent-id from its prompt"),
])
def test_a_report_from_another_or_no_identity_is_refused(db, brain, agent, message):
    job = new_job(db, n=2)
    ids = agents(jobs.dispatch_job(job, db=db))
    jobs.link_host_agent(job, "sub_1", "host1", db=db)
    jobs.update_subtask_status(job, "sub_2", "completed", "other", agent_id=ids["sub_2"], db=db)
    before = store_snapshot(db)
    args = ["job", "update", job, "sub_1", "--status", "completed", "--result", "hijack"]
    # The other sub-task's worker is not this one's owner either.
    for who in ([agent] if agent else []) + [ids["sub_2"]] if agent else [None]:
        proc = brain(*args, *(["--agent-id", who] if who else []))
        err = one_line_error(proc)
        assert (message if who == agent else f"{who} does not own sub_1") in err
        assert "--force" in err
    assert store_snapshot(db) == before


def test_a_never_dispatched_subtask_has_no_owner_yet(db):
    """The seed's Python example reports on a sub-task nobody dispatched."""
    job = new_job(db, n=3)
    assert all(s["agent_id"] is None for s in raw(job, db)["sub_tasks"])
    jobs.update_subtask_status(job_id=job, sub_task_id="sub_1", status="completed",
                               result="Encontrados 42 users", agent_id="agent_haiku_001", db=db)
    jobs.update_subtask_status(job, "sub_2", "failed", "anonymous is fine too", db=db)
    assert sub(job, "sub_1", db)["agent_id"] == "agent_haiku_001"
    # The first claim makes an owner: from then on the rules apply.
    jobs.update_subtask_status(job, "sub_3", "running", agent_id="agent_a", db=db)
    with pytest.raises(Refused, match="agent_b does not own sub_3"):
        jobs.update_subtask_status(job, "sub_3", "completed", "x", agent_id="agent_b", db=db)
    jobs.update_subtask_status(job, "sub_3", "completed", "mine", agent_id="agent_a", db=db)


def test_force_overrides_ownership_and_history_says_so(db, fake_clock, brain):
    job = new_job(db, n=2)
    ids = agents(jobs.dispatch_job(job, timeout=10, db=db))
    brain.ok("job", "update", job, "sub_1", "--status", "failed", "--result", "killed by hand", "--force")
    brain.ok("job", "update", job, "sub_2", "--status", "completed", "--result", "checked by a person",
             "--agent-id", "human", "--force")
    row = raw(job, db)
    forced = [e for e in row["history"] if e.get("forced")]
    assert [(e["sub_task_id"], e["status"], e.get("agent_id")) for e in forced] == [
        ("sub_1", "failed", None), ("sub_2", "completed", "human")]
    assert [s["agent_id"] for s in row["sub_tasks"]] == [ids["sub_1"], ids["sub_2"]]  # ownership is kept
    # --force overrides ownership, not the transition table.
    err = one_line_error(brain("job", "update", job, "sub_2", "--status", "failed", "--force"))
    assert "already completed" in err
    # ... and a superseded worker can be overridden only by a person.
    jobs.retry_subtasks(job, ["sub_1"], db=db)
    brain.ok("job", "update", job, "sub_1", "--status", "completed", "--result", "late, accepted by hand",
             "--agent-id", ids["sub_1"], "--force")
    assert raw(job, db)["history"][-2]["forced"] is True


# -- cancel --------------------------------------------------------------------------

def test_cancel_fails_what_is_unfinished_and_consolidates(db, brain):
    job = new_job(db, n=4)
    jobs.update_subtask_status(job, "sub_4", "completed", "kept", db=db)
    jobs.update_subtask_status(job, "sub_3", "failed", "broken", db=db)
    ids = agents(jobs.dispatch_job(job, db=db))  # sub_1 and sub_2 running
    assert set(ids) == {"sub_1", "sub_2"}
    final = brain.json("job", "cancel", job)
    assert [r["result"] for r in final["results"]] == ["cancelled", "cancelled", "broken", "kept"]
    assert final["complete"] is True and final["status"] == "failed" and (final["completed"], final["failed"]) == (1, 3)
    row = raw(job, db)
    assert row["consolidated_result"] == final
    assert [e["event"] for e in row["history"]][-2:] == ["cancel", "consolidated"]

    # A worker that reports after the cancel changes nothing.
    before = store_snapshot(db)
    err = one_line_error(brain("job", "update", job, "sub_1", "--status", "completed", "--agent-id", ids["sub_1"]))
    assert "sub_1 is already failed" in err
    assert "nothing to cancel" in one_line_error(brain("job", "cancel", job))
    assert store_snapshot(db) == before


def test_cancel_a_pending_job_and_a_normal_job(db):
    job = new_job(db, n=2)
    out = jobs.cancel_job(job, db=db)
    assert [r["result"] for r in out["results"]] == ["cancelled", "cancelled"]
    normal = jobs.create_job(60, {"prompt": "one thing"}, db=db)
    jobs.cancel_job(normal, db=db)
    assert raw(normal, db)["status"] == "failed"
    with pytest.raises(InvalidTransition, match="nothing to cancel"):
        jobs.cancel_job(normal, db=db)

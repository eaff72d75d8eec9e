"""Unit tier: the job rules through the Python API, on the in-memory store.

No file, no server, no subprocess: each test runs in milliseconds, and
time moves only with the injected clock (``fake_clock``). The same rules
run on SQLite and PostgreSQL in the integration tier; the store behind
them keeps one contract (tests/test_store_contract.py).
"""

import re

import pytest

from conftest import store_snapshot
from brain_jobs import cli, jobs, state
from brain_jobs.clock import iso
from brain_jobs.errors import Expired, InvalidInput, InvalidTransition, NotFound, Refused

pytestmark = pytest.mark.backends("memory")


def new_job(n=3, ttl=300):
    return jobs.create_job_with_subtasks(ttl, {"prompt": "p"}, [f"GET /q{i}" for i in range(1, n + 1)])


def dispatched(n=3, ttl=300, **kw):
    """A job dispatched to the host: its id and each sub-task's credential, taken from
    its launch prompt as the worker gets it (only dispatch's answer carries it)."""
    job = new_job(n, ttl)
    out = jobs.dispatch_job(job, **kw)
    return job, {sub: agent for _, sub, agent in (jobs.parse_subtask_prompt(c["prompt"]) for c in out["agent_calls"])}


def labels(job):
    """Sub-task id -> its worker's public label (what every read shows as ``agent_id``)."""
    return {s["sub_task_id"]: s["agent_id"] for s in jobs.get_job_subtasks(job)}


def subs(job):
    return {s["sub_task_id"]: s for s in jobs.get_job_subtasks(job)}


def events(job):
    return [e["event"] for e in jobs.get_history(job)]


def test_the_store_is_the_in_memory_one(db):
    assert db.startswith("memory://")
    assert jobs.store_for(db).__class__.__name__ == "MemoryStore"


# -- the seed's flow ----------------------------------------------------------

def test_the_seed_flow_create_dispatch_report_consolidate(fake_clock):
    job, agents = dispatched()
    assert sorted(agents) == ["sub_1", "sub_2", "sub_3"]
    assert all(re.fullmatch(r"[0-9a-f]{32}", a) for a in agents.values())  # the credentials
    assert sorted(labels(job)) == sorted(agents)
    assert all(a.startswith("agent_haiku_") for a in labels(job).values())  # the public labels
    assert jobs.get_job(job)["status"] == "running"
    for sub, agent in agents.items():
        jobs.update_subtask_status(job, sub, "completed", f"[200 OK] {sub}", agent_id=agent)
    result = jobs.consolidate_subtask_results(job)
    assert {k: result[k] for k in ("job_id", "total_tasks", "completed", "failed", "complete", "status")} == \
        {"job_id": job, "total_tasks": 3, "completed": 3, "failed": 0, "complete": True, "status": "completed"}
    assert [r["result"] for r in result["results"]] == ["[200 OK] sub_1", "[200 OK] sub_2", "[200 OK] sub_3"]
    assert [r["source"] for r in result["results"]] == ["report"] * 3
    assert events(job) == ["created", "dispatch", "report", "report", "report", "consolidated", "consolidate_read"]


def test_the_last_report_stores_the_consolidation_once_and_reading_it_is_noted_once(fake_clock):
    job, agents = dispatched(n=2)
    jobs.update_subtask_status(job, "sub_1", "completed", "one", agent_id=agents["sub_1"])
    assert jobs.get_job(job)["consolidated_result"] is None
    fake_clock.advance(5)
    jobs.update_subtask_status(job, "sub_2", "failed", "two", agent_id=agents["sub_2"])
    stored = jobs.get_job(job)["consolidated_result"]
    assert stored["status"] == "failed" and stored["consolidated_at"] == iso(fake_clock())
    fake_clock.advance(5)
    assert jobs.consolidate_subtask_results(job) == stored == jobs.consolidate_subtask_results(job)
    assert events(job).count("consolidate_read") == 1


def test_a_partial_consolidation_at_any_moment_counts_every_state(fake_clock):
    job, agents = dispatched(n=3)
    jobs.update_subtask_status(job, "sub_2", "completed", "ok", agent_id=agents["sub_2"])
    partial = jobs.consolidate_subtask_results(job)
    assert (partial["completed"], partial["running"], partial["complete"]) == (1, 2, False)
    assert partial["consolidated_at"] == iso(fake_clock())
    assert jobs.get_job(job)["consolidated_result"] is None  # a partial one is never stored


# -- reports ----------------------------------------------------------------------

def test_a_long_result_is_stored_cut_with_a_visible_mark():
    job = new_job(n=1)
    sub = jobs.update_subtask_status(job, "sub_1", "completed", "x" * 500)
    assert len(sub["result"]) == 200 and sub["result"].endswith("…")


def test_a_report_without_dispatch_claims_the_sub_task_for_its_agent():
    job = new_job(n=1)
    jobs.update_subtask_status(job, "sub_1", "running", agent_id="agent_own_1")
    with pytest.raises(Refused, match="does not own"):
        jobs.update_subtask_status(job, "sub_1", "completed", "r", agent_id="agent_other")
    assert jobs.update_subtask_status(job, "sub_1", "completed", "r", agent_id="agent_own_1")["status"] == "completed"


def test_a_refused_report_changes_nothing(db):
    job, agents = dispatched(n=2)
    before = store_snapshot(db)
    with pytest.raises(InvalidTransition, match="cannot go from running to pending"):
        jobs.update_subtask_status(job, "sub_1", "pending", agent_id=agents["sub_1"])
    with pytest.raises(NotFound, match="no sub-task sub_9"):
        jobs.update_subtask_status(job, "sub_9", "completed", agent_id=agents["sub_1"])
    with pytest.raises(InvalidInput):
        jobs.update_subtask_status(job, "sub_1", "done", agent_id=agents["sub_1"])
    assert store_snapshot(db) == before


def test_a_batch_applies_each_report_on_its_own():
    job, agents = dispatched(n=3)
    outcomes = jobs.update_subtasks(job, [
        {"sub_task_id": "sub_1", "status": "completed", "result": "a", "agent_id": agents["sub_1"]},
        {"sub_task_id": "sub_2", "status": "completed", "result": "b", "agent_id": "agent_intruder"},
        {"sub_task_id": "sub_3", "status": "failed", "result": "c", "agent_id": agents["sub_3"]},
    ])
    assert outcomes[0]["status"] == "completed" and outcomes[2]["status"] == "failed"
    assert isinstance(outcomes[1], Refused)
    assert [s["status"] for s in subs(job).values()] == ["completed", "running", "failed"]


# -- ownership -----------------------------------------------------------------------

def test_a_dispatched_sub_task_takes_reports_only_from_its_credential_not_its_label_or_host_agent(db):
    """The credential reports; the public label and the linked host agent id do not (the host
    id only lets the SubagentStop hook save a final message, ``jobs.recover_final_message``)."""
    job, agents = dispatched(n=2)
    label = labels(job)["sub_2"]
    before = store_snapshot(db)
    with pytest.raises(Refused, match="report with the --agent-id"):
        jobs.update_subtask_status(job, "sub_1", "completed", "r")
    with pytest.raises(Refused, match="agent_stranger does not own sub_1"):
        jobs.update_subtask_status(job, "sub_1", "completed", "r", agent_id="agent_stranger")
    with pytest.raises(Refused, match=f"{label} does not own sub_2"):
        jobs.update_subtask_status(job, "sub_2", "completed", "by the label", agent_id=label)
    with pytest.raises(Refused, match="not linked to sub_2"):
        jobs.link_host_agent(job, "sub_2", "host-agent-7", label)  # the label links nothing either
    assert store_snapshot(db) == before
    jobs.link_host_agent(job, "sub_2", "host-agent-7", agents["sub_2"])
    assert jobs.find_subtask_by_agent("host-agent-7") == (job, "sub_2")
    linked = store_snapshot(db)
    with pytest.raises(Refused, match="host-agent-7 does not own sub_2"):
        jobs.update_subtask_status(job, "sub_2", "completed", "by the host id", agent_id="host-agent-7")
    assert store_snapshot(db) == linked
    jobs.update_subtask_status(job, "sub_2", "completed", "by the credential", agent_id=agents["sub_2"])
    assert subs(job)["sub_2"]["result"] == "by the credential"
    assert jobs.get_history(job)[-1]["agent_id"] == label  # the history records the label, never the credential


def test_force_overrides_ownership_and_the_history_says_so():
    job, _ = dispatched(n=1)
    jobs.update_subtask_status(job, "sub_1", "failed", "killed by hand", force=True)
    assert jobs.get_history(job)[-2]["forced"] is True  # the report; then the consolidation
    with pytest.raises(InvalidInput, match="force must be True or False"):
        jobs.update_subtask_status(job, "sub_1", "failed", force="yes")


# -- retry and cancel -------------------------------------------------------------

def test_retry_starts_a_new_attempt_and_the_superseded_worker_is_refused_and_recorded(fake_clock):
    job, agents = dispatched(n=2)
    old_label = labels(job)["sub_1"]
    jobs.update_subtask_status(job, "sub_1", "failed", "broken", agent_id=agents["sub_1"])
    assert jobs.retry_subtasks(job) == ["sub_1"]
    sub = subs(job)["sub_1"]
    assert (sub["status"], sub["attempt"], sub["agent_id"], sub["past_agents"]) == \
        ("pending", 2, None, [old_label])
    _, _, fresh = jobs.parse_subtask_prompt(jobs.dispatch_job(job)["agent_calls"][0]["prompt"])
    with pytest.raises(Refused, match="superseded attempt"):
        jobs.update_subtask_status(job, "sub_1", "completed", "stale", agent_id=agents["sub_1"])
    refused = jobs.get_history(job)[-1]  # recorded under its label, and nothing else changed
    assert (refused["event"], refused["agent_id"]) == ("refused", old_label)
    jobs.update_subtask_status(job, "sub_1", "completed", "fresh", agent_id=fresh)
    assert subs(job)["sub_1"]["result"] == "fresh"


def test_retry_refuses_what_is_not_failed_and_honours_max_attempts():
    job, agents = dispatched(n=2)
    jobs.update_subtask_status(job, "sub_1", "completed", "ok", agent_id=agents["sub_1"])
    with pytest.raises(InvalidTransition, match="only failed sub-tasks can be retried"):
        jobs.retry_subtasks(job, "sub_1")
    with pytest.raises(InvalidTransition, match="no failed sub-tasks"):
        jobs.retry_subtasks(job)
    jobs.update_subtask_status(job, "sub_2", "failed", "x", agent_id=agents["sub_2"])
    with pytest.raises(InvalidTransition, match="used 1 of at most 1 attempts"):
        jobs.retry_subtasks(job, ["sub_2"], max_attempts=1)
    assert jobs.retry_subtasks(job, ["sub_2"], max_attempts=2) == ["sub_2"]


def test_cancel_fails_the_unfinished_keeps_the_finished_and_consolidates():
    job, agents = dispatched(n=3)
    jobs.update_subtask_status(job, "sub_1", "completed", "kept", agent_id=agents["sub_1"])
    final = jobs.cancel_job(job)
    assert [(r["status"], r["result"]) for r in final["results"]] == \
        [("completed", "kept"), ("failed", "cancelled"), ("failed", "cancelled")]
    assert final["complete"] and jobs.get_job(job)["status"] == "failed"
    with pytest.raises(InvalidTransition, match="nothing to cancel"):
        jobs.cancel_job(job)


# -- deadlines and expiry (the injected clock) --------------------------------

def test_an_overdue_sub_task_fails_at_the_next_read_and_its_late_answer_is_kept_in_history(fake_clock):
    job, agents = dispatched(n=2, timeout=30)
    assert subs(job)["sub_1"]["deadline"] == iso(fake_clock() + 30)
    fake_clock.advance(29)
    assert subs(job)["sub_1"]["status"] == "running"
    fake_clock.advance(1)
    sub = subs(job)["sub_1"]
    assert (sub["status"], sub["result"]) == ("failed", f"timed out: no report by {iso(fake_clock())}")
    with pytest.raises(Refused, match="kept in the job's history only"):
        jobs.update_subtask_status(job, "sub_1", "completed", "too late", agent_id=agents["sub_1"])
    assert jobs.get_history(job)[-1] == {"at": iso(fake_clock()), "event": "late_report", "sub_task_id": "sub_1",
                                         "status": "completed", "agent_id": labels(job)["sub_1"],
                                         "result": "too late", "source": "report"}


def test_the_default_deadline_is_four_fifths_of_the_ttl_left(fake_clock):
    job = new_job(n=1, ttl=100)
    fake_clock.advance(50)
    jobs.dispatch_job(job)
    assert subs(job)["sub_1"]["deadline"] == iso(fake_clock() + 40)


def test_expiry_fails_what_is_left_consolidates_and_freezes_the_job(fake_clock):
    job, agents = dispatched(n=2, ttl=60)
    jobs.update_subtask_status(job, "sub_1", "completed", "kept", agent_id=agents["sub_1"])
    fake_clock.advance(60)
    row = jobs.get_job(job)
    assert row["status"] == "failed"
    assert [(s["status"], s["result"]) for s in row["sub_tasks"]] == [("completed", "kept"), ("failed", "expired")]
    assert row["consolidated_result"]["failed"] == 1
    with pytest.raises(Expired, match="results are frozen"):
        jobs.retry_subtasks(job)


def test_a_finished_job_is_purged_only_after_the_retention_period(fake_clock, monkeypatch):
    monkeypatch.setenv("BRAIN_RETENTION", "100")
    job = new_job(n=1, ttl=10)
    other = new_job(n=1, ttl=1000)
    fake_clock.advance(10)
    assert jobs.cleanup_jobs() == {"expired": 1, "timed_out": 0, "purged": 0}
    fake_clock.advance(99)
    assert jobs.cleanup_jobs()["purged"] == 0
    fake_clock.advance(2)
    assert jobs.cleanup_jobs()["purged"] == 1
    with pytest.raises(NotFound, match="purged after expiry"):
        jobs.get_job(job)
    assert [r["job_id"] for r in jobs.list_jobs()] == [other]


def test_a_write_on_one_job_expires_the_others_that_are_due(fake_clock):
    due = new_job(n=1, ttl=5)
    busy = new_job(n=1, ttl=1000)
    fake_clock.advance(5)
    jobs.update_subtask_status(busy, "sub_1", "running")
    stored = {r["job_id"]: r for r in store_snapshot()}  # as stored: no read swept it
    assert stored[due]["status"] == "failed" and stored[due]["history"][-2]["event"] == "expired"


# -- normal jobs, lists, stats -----------------------------------------------------

def test_a_normal_job_moves_along_the_transition_table():
    job = jobs.create_job(60, {"prompt": "p"})
    assert jobs.set_job_status(job, "running")["status"] == "running"
    with pytest.raises(InvalidTransition, match="from running it can go to: completed, failed"):
        jobs.set_job_status(job, "pending")
    jobs.set_job_status(job, "completed")
    assert jobs.get_job(job)["consolidated_result"]["status"] == "completed"


def test_lists_and_stats_count_every_job_and_sub_task(fake_clock):
    first = new_job(n=2)
    fake_clock.advance(1)
    second, agents = dispatched(n=1)
    jobs.update_subtask_status(second, "sub_1", "completed", "ok", agent_id=agents["sub_1"])
    assert [r["job_id"] for r in jobs.list_jobs()] == [first]
    assert [r["job_id"] for r in jobs.list_jobs(include_finished=True)] == [second, first]
    stats = jobs.job_stats()
    assert stats["total_jobs"] == 2 and stats["sub_tasks"] == {"pending": 2, "running": 0, "completed": 1, "failed": 0}
    jobs.delete_job(first)
    with pytest.raises(NotFound):
        jobs.delete_job(first)


def test_the_command_line_runs_in_process_on_the_memory_store(capsys):
    """``cli.main`` in-process reads the store ``BRAIN_DATABASE_URL`` names, here ``memory://``."""
    job, agents = dispatched(n=2)
    assert cli.main(["job", "update", job, "sub_1", "--status", "completed", "--result", "[200 OK] 5 items",
                     "--agent-id", agents["sub_1"]]) == 0
    assert cli.main(["job", "subtasks", job]) == 0
    out = capsys.readouterr().out
    assert "✓ sub_1: GET /q1\n      Result: [200 OK] 5 items" in out
    assert f"◉ sub_2: GET /q2\n      Agent: {labels(job)['sub_2']}" in out
    assert not [c for c in agents.values() if c in out]  # a read never shows a credential


def test_state_rules_refuse_before_they_change_anything():
    """The rules check first: a refused transition leaves the row as it was (no store involved)."""
    row = state.new_row("abc123", 60, {"prompt": "p"}, state.DISTRIBUTED, ["a"], [], 1_900_000_000.0)
    before = repr(row)
    with pytest.raises(InvalidTransition):
        state.retry(row, [], None, 1_900_000_000.0)
    assert repr(row) == before

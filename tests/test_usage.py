"""What a headless worker cost: stored on its sub-task, added up in the consolidation.

An executor returns ``executors.Answer(text, usage)`` (or raises ``Failed(text,
usage)``); the runner passes the usage with its report through
``jobs.update_subtasks``, which stores it on the sub-task, even when the worker
had reported itself, and keeps the consolidation's totals right.
"""

import pytest

from brain_jobs import config, executors, jobs, pool, runner, worker
from brain_jobs.errors import InvalidInput


def create(db, queries, n=None):
    return jobs.create_job_with_subtasks(300, {"prompt": "p"}, queries, db=db)


class _Priced(executors.Executor):
    """Answers ``<query> done`` at a price that depends on the query; ``fail`` fails, still paid."""

    name = "priced"

    def run(self, query, task=None):
        usage = {"input_tokens": 100 * len(query), "output_tokens": 7, "cost_usd": 0.001}
        if query == "fail":
            raise executors.Failed("nothing found", usage)
        return executors.Answer(f"{query} done", usage)


class _Unpriced(executors.Executor):
    name = "plain"

    def run(self, query, task=None):
        return f"{query} done"


def test_each_subtask_keeps_its_usage_and_the_consolidation_adds_them_up(db, tmp_path, monkeypatch):
    monkeypatch.setattr(executors, "get", lambda name: _Priced)
    job = create(db, ["a", "bb", "fail"])
    assert runner.run_here(job, "grep", settings=config.resolve(), workdir=str(tmp_path), db=db) == 1
    row = jobs.get_job(job, db=db)
    assert [(s["status"], s["result"], s["usage"]) for s in row["sub_tasks"]] == [
        ("completed", "a done", {"input_tokens": 100, "output_tokens": 7, "cost_usd": 0.001}),
        ("completed", "bb done", {"input_tokens": 200, "output_tokens": 7, "cost_usd": 0.001}),
        ("failed", "nothing found", {"input_tokens": 400, "output_tokens": 7, "cost_usd": 0.001}),
    ]
    totals = {"input_tokens": 700, "output_tokens": 21, "cost_usd": 0.003}
    assert row["consolidated_result"]["usage"] == totals  # stored with the fan-in
    assert jobs.consolidate_subtask_results(job, db=db)["usage"] == totals


def test_no_usage_key_where_nothing_was_measured(db, tmp_path, monkeypatch):
    """The seed's consolidation stays as it was for executors and workers that measure nothing."""
    monkeypatch.setattr(executors, "get", lambda name: _Unpriced)
    job = create(db, ["a"])
    runner.run_here(job, "grep", settings=config.resolve(), workdir=str(tmp_path), db=db)
    row = jobs.get_job(job, db=db)
    assert "usage" not in row["sub_tasks"][0] and "usage" not in row["consolidated_result"]


def _dispatched(db, queries):
    job = create(db, queries)
    started = jobs.start_subtasks(job, "claude", db=db)
    return job, {s["sub_task_id"]: s["agent_id"] for s in started}


def test_usage_after_the_worker_reported_itself_is_kept_and_totals_follow(db):
    """A claude worker runs `brain job update` itself; the runner's usage comes after the fan-in."""
    job, ids = _dispatched(db, ["a", "b"])
    for sub in ("sub_1", "sub_2"):
        jobs.update_subtask_status(job, sub, "completed", f"{sub} by worker", agent_id=ids[sub], db=db)
    assert "usage" not in jobs.get_job(job, db=db)["consolidated_result"]
    outcomes = jobs.update_subtasks(job, [
        {"sub_task_id": "sub_1", "status": "completed", "result": "runner's copy", "agent_id": ids["sub_1"],
         "usage": {"input_tokens": 10, "output_tokens": 2, "cost_usd": 0.5}},
        {"sub_task_id": "sub_2", "status": "completed", "result": "runner's copy", "agent_id": ids["sub_2"],
         "usage": {"input_tokens": 5, "output_tokens": 1}},
    ], db=db)
    assert [type(o).__name__ for o in outcomes] == ["InvalidTransition", "InvalidTransition"]  # reports stand
    row = jobs.get_job(job, db=db)
    assert [s["result"] for s in row["sub_tasks"]] == ["sub_1 by worker", "sub_2 by worker"]
    assert [s["usage"] for s in row["sub_tasks"]] == [{"input_tokens": 10, "output_tokens": 2, "cost_usd": 0.5},
                                                      {"input_tokens": 5, "output_tokens": 1}]
    assert row["consolidated_result"]["usage"] == {"input_tokens": 15, "output_tokens": 3, "cost_usd": 0.5}
    assert [e["event"] for e in row["history"]].count("report") == 2  # usage is no report


def test_usage_from_anyone_but_the_owner_is_not_stored(db):
    job, ids = _dispatched(db, ["a"])
    outcome, = jobs.update_subtasks(job, [{"sub_task_id": "sub_1", "status": "completed", "result": "x",
                                           "agent_id": "agent_claude_000000", "usage": {"input_tokens": 1}}], db=db)
    assert type(outcome).__name__ == "Refusal"
    assert "usage" not in jobs.get_job(job, db=db)["sub_tasks"][0]


@pytest.mark.parametrize("usage", [
    {"input_tokens": -1}, {"input_tokens": "12"}, {"output_tokens": True}, {"tokens": 3}, [1, 2],
    {"cost_usd": float("nan")}, {"cost_usd": float("inf")},
])
def test_a_bad_usage_refuses_its_report_and_changes_nothing(db, usage):
    job, ids = _dispatched(db, ["a"])
    before = jobs.get_job(job, db=db)
    outcome, = jobs.update_subtasks(job, [{"sub_task_id": "sub_1", "status": "completed", "result": "x",
                                           "agent_id": ids["sub_1"], "usage": usage}], db=db)
    assert isinstance(outcome, InvalidInput) and "usage" in str(outcome)
    assert jobs.get_job(job, db=db) == before


def test_usage_on_a_big_slotted_job(db):
    """Jobs of 64 sub-tasks and more are written in place (store/layout.py): usage fits or is laid out again."""
    job, ids = _dispatched(db, [f"q{i}" for i in range(80)])
    reports = [{"sub_task_id": sub, "status": "completed", "result": "r" * 200, "agent_id": agent,
                "usage": {"input_tokens": 123456789, "output_tokens": 98765, "cost_usd": 12.345678}}
               for sub, agent in ids.items()]
    assert all(isinstance(o, dict) for o in jobs.update_subtasks(job, reports, db=db))
    row = jobs.get_job(job, db=db)
    assert all(s["usage"]["input_tokens"] == 123456789 for s in row["sub_tasks"])
    assert row["consolidated_result"]["usage"] == {"input_tokens": 80 * 123456789, "output_tokens": 80 * 98765,
                                                   "cost_usd": round(80 * 12.345678, 6)}


def test_a_pool_worker_stores_usage_like_a_runner(db, tmp_path):
    """``brain worker`` reports what its executor measured, as the runner does."""
    job = create(db, ["a", "fail"])
    pool.queue_job(job, "test_usage:_Priced", db=db)
    w = worker.Worker("test_usage:_Priced", concurrency=1, poll=0.1, drain=True, workdir=str(tmp_path), db=db)
    assert w.run() == 0
    row = jobs.get_job(job, db=db)
    assert [(s["status"], s["usage"]) for s in row["sub_tasks"]] == [
        ("completed", {"input_tokens": 100, "output_tokens": 7, "cost_usd": 0.001}),
        ("failed", {"input_tokens": 400, "output_tokens": 7, "cost_usd": 0.001}),
    ]
    assert row["consolidated_result"]["usage"] == {"input_tokens": 500, "output_tokens": 14, "cost_usd": 0.002}

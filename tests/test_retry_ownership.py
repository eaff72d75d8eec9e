"""Retries, ownership and cancel: every report lands on the attempt it belongs to."""

import json
import re
import time
from pathlib import Path

import pytest

from conftest import run_brain, store_snapshot
from brain_jobs import jobs
from brain_jobs.errors import InvalidTransition, Refused


def new_job(db, n=3, ttl=600):
    return jobs.create_job_with_subtasks(ttl, {"prompt": "p"}, [f"GET /q{i}" for i in range(1, n + 1)], db=db)


def agents(out):
    """Sub-task id -> the credential its launch prompt carries (only dispatch's answer has it)."""
    return {jobs.parse_subtask_prompt(c["prompt"])[1]: jobs.parse_subtask_prompt(c["prompt"])[2]
            for c in out["agent_calls"]}


def labels(job_id, db):
    """Sub-task id -> its public label (what every read shows as agent_id)."""
    return {s["sub_task_id"]: s["agent_id"] for s in jobs.get_job_subtasks(job_id, db=db)}


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
    names = labels(job, db)
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
        assert s["past_agents"] == [names[sid]]
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
    old_label = labels(job, db)["sub_1"]
    fake_clock.advance(10)  # the first worker is stuck: timed out
    jobs.retry_subtasks(job, db=db)

    # While pending again, the old worker is already refused.
    err = one_line_error(brain("job", "update", job, "sub_1", "--status", "completed", "--result", "stale",
                               "--agent-id", old))
    assert f"report refused: {old_label} belongs to a superseded attempt of sub_1 (now attempt 2)" in err
    assert sub(job, "sub_1", db)["status"] == "pending"

    new = agents(jobs.dispatch_job(job, db=db))["sub_1"]
    jobs.update_subtask_status(job, "sub_1", "completed", "fresh", agent_id=new, db=db)
    final = raw(job, db)["consolidated_result"]
    with pytest.raises(Refused, match="superseded attempt"):
        jobs.update_subtask_status(job, "sub_1", "completed", "stale again", agent_id=old, db=db)
    row = raw(job, db)
    assert row["sub_tasks"][0]["result"] == "fresh" and row["sub_tasks"][0]["agent_id"] == labels(job, db)["sub_1"]
    assert row["consolidated_result"] == final
    refused = [e for e in row["history"] if e["event"] == "refused"]
    assert len(refused) == 2
    assert all(e["agent_id"] == old_label and e["sub_task_id"] == "sub_1" and "superseded" in e["reason"]
               for e in refused)


def test_superseded_identities_accumulate_across_retries(db, fake_clock):
    job = new_job(db, n=1)
    credentials, seen = [], []
    for _ in range(3):
        credential = agents(jobs.dispatch_job(job, timeout=5, db=db))["sub_1"]
        label = labels(job, db)["sub_1"]
        jobs.link_host_agent(job, "sub_1", f"host-{label}", credential, db=db)
        credentials.append(credential)
        seen += [label, f"host-{label}"]
        fake_clock.advance(5)
        jobs.retry_subtasks(job, db=db)
    current = agents(jobs.dispatch_job(job, db=db))["sub_1"]
    # Each old credential is recognised as superseded, and recorded under its label; a label
    # or host id is refused the same way but never recorded (anyone can read them).
    for stale in credentials + seen:
        with pytest.raises(Refused, match="superseded"):
            jobs.update_subtask_status(job, "sub_1", "completed", "stale", agent_id=stale, db=db)
    assert [e["agent_id"] for e in events(job, db, "refused")] == seen[::2]
    assert sub(job, "sub_1", db)["past_agents"] == seen
    jobs.update_subtask_status(job, "sub_1", "completed", "current", agent_id=current, db=db)
    assert sub(job, "sub_1", db)["attempt"] == 4


# -- ownership -----------------------------------------------------------------------

def _outputs(brain, job):
    """Everything the auto-approved read commands print about a job."""
    return [brain.ok("job", "subtasks", job), brain.ok("job", "subtasks", job, "--json"),
            brain.ok("job", "get", job), brain.ok("job", "get", job, "--json"),
            brain.ok("job", "history", job), brain.ok("job", "history", job, "--json"),
            brain.ok("job", "consolidate", job), brain.ok("job", "consolidate", job, "--json"),
            brain.ok("job", "list", "--all"), brain.ok("job", "list", "--all", "--json")]


def test_what_a_worker_can_read_never_lets_it_report_for_another(db, brain):
    job = new_job(db, n=3)
    ids = agents(brain.json("job", "dispatch", job))  # what only the orchestrator reads
    jobs.link_host_agent(job, "sub_2", "a4f6a4b9bd0e0a7f7", ids["sub_2"], db=db)
    brain.ok("job", "update", job, "sub_3", "--status", "completed", "--result", "done", "--agent-id", ids["sub_3"])
    printed = "\n".join(_outputs(brain, job))
    stored = raw(job, db)["sub_tasks"]
    # No credential, and no hash of one, is printed by a read.
    assert not [c for c in ids.values() if c in printed]
    assert [s for s in stored if s.get("secret_hash")] and not [s for s in stored if s["secret_hash"] in printed]
    assert "secret_hash" not in printed and "past_secrets" not in printed
    # Every word the reads printed (labels, the host id, ids, times, ...) tried as sub_1's
    # identity is refused, and nothing changes: the likely ones through the CLI (exit 1).
    words = set(re.findall(r"[A-Za-z0-9][A-Za-z0-9_.:@-]{0,99}", printed))
    likely = {w for w in words if w.startswith("agent_") or re.fullmatch(r"[0-9a-f]{8,}", w)}
    assert labels(job, db)["sub_1"] in likely and "a4f6a4b9bd0e0a7f7" in likely
    before = store_snapshot(db)
    for word in sorted(likely):
        proc = run_brain("job", "update", job, "sub_1", "--status", "completed", "--result", "hijack",
                         "--agent-id", word)
        assert proc.returncode == 1 and "brain: error: report refused" in proc.stderr, (word, proc.stderr)
    for word in sorted(words):
        with pytest.raises(Refused):
            jobs.update_subtask_status(job, "sub_1", "completed", "hijack", agent_id=word, db=db)
    assert store_snapshot(db) == before
    # Its own credential works; neither its answer nor the history shows the credential or its hash.
    answer = brain.json("job", "update", job, "sub_1", "--status", "completed", "--result", "mine",
                        "--agent-id", ids["sub_1"])
    assert answer["agent_id"] == labels(job, db)["sub_1"] and not set(answer) & {"secret_hash", "past_secrets"}
    report = events(job, db, "report")[-1]
    assert report["agent_id"] == labels(job, db)["sub_1"]
    assert not [c for c in ids.values() if c in json.dumps(raw(job, db))]


def test_a_linked_host_agent_id_is_not_a_credential(db, brain):
    job = new_job(db, n=1)
    ids = agents(brain.json("job", "dispatch", job))
    jobs.link_host_agent(job, "sub_1", "a1b2c3d4", ids["sub_1"], db=db)
    assert events(job, db, "link")[0]["host_agent_id"] == "a1b2c3d4"
    before = store_snapshot(db)
    err = one_line_error(brain("job", "update", job, "sub_1", "--status", "completed", "--result", "by host id",
                               "--agent-id", "a1b2c3d4"))
    assert "a1b2c3d4 does not own sub_1" in err
    assert store_snapshot(db) == before
    brain.ok("job", "update", job, "sub_1", "--status", "completed", "--result", "by credential",
             "--agent-id", ids["sub_1"])
    assert [r["result"] for r in brain.json("job", "consolidate", job)["results"]] == ["by credential"]


def test_a_credential_reports_only_for_its_own_sub_task(db, brain):
    """Even on a sub-task nobody owns yet, or forced: storing or recording it there would publish it."""
    job = new_job(db, n=2)
    ids = agents(jobs.dispatch_job(job, db=db))
    other = new_job(db, n=1)  # its sub_1 has no owner yet
    before = store_snapshot(db)
    for target, sub_task_id in ((other, "sub_1"), (job, "sub_2")):
        for force in ([], ["--force"]):
            err = one_line_error(brain("job", "update", target, sub_task_id, "--status", "completed",
                                       "--agent-id", ids["sub_1"], *force))
            assert "report refused" in err
    assert store_snapshot(db) == before


def test_the_credential_works_for_the_runner_and_the_pool(db, brain, tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "app.py").write_text("def health():\n    return 'ok'\n")
    # The headless runner: dispatch hands it the credentials, and its reports are accepted.
    job = new_job(db, n=2)
    proc = run_brain("job", "dispatch", job, "--executor", "grep", "--file", str(src / "app.py"), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert not re.search(r"[0-9a-f]{32}", proc.stdout + proc.stderr)  # its output names no credential
    row = _wait_finished(job, db)
    assert [(s["status"], s["source"]) for s in row["sub_tasks"]] == [("completed", "report")] * 2
    assert sorted(e["agent_id"] for e in row["history"] if e["event"] == "report") == \
        sorted(s["agent_id"] for s in row["sub_tasks"])
    log = Path(next(e["runner"]["log"] for e in row["history"] if e["event"] == "dispatch"))
    _wait(lambda: ": done," in log.read_text(), "the runner's last log line")
    assert not re.search(r"[0-9a-f]{32}", log.read_text())
    # The pool: a claim hands out its credential, which works through the CLI (its public label
    # does not), and a `brain worker` reports the rest with the credentials of its claims.
    from brain_jobs import pool

    job = new_job(db, n=3)
    brain.ok("job", "dispatch", job, "--executor", "grep", "--pool", "--file", str(src / "app.py"))
    claim = pool.claim("grep", "test:1", 30, db=db)
    assert claim["label"] == labels(job, db)[claim["sub_task_id"]] != claim["agent_id"]
    one_line_error(brain("job", "update", job, claim["sub_task_id"], "--status", "completed", "--agent-id",
                         claim["label"]))
    brain.ok("job", "update", job, claim["sub_task_id"], "--status", "completed", "--result", "by hand",
             "--agent-id", claim["agent_id"])
    worker = run_brain("worker", "--executor", "grep", "--drain", "--poll", "0.2", "--workdir", tmp_path, timeout=120)
    assert worker.returncode == 0, worker.stderr
    row = raw(job, db)
    assert [s["status"] for s in row["sub_tasks"]] == ["completed"] * 3
    assert sorted(e["sub_task_id"] for e in row["history"] if e["event"] == "report") == ["sub_1", "sub_2", "sub_3"]


def _wait(check, what, timeout=60):
    """``check()``'s first true value (bounded: fails the test if it hangs)."""
    deadline = time.monotonic() + timeout
    while not (value := check()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)
    return value


def _wait_finished(job, db):
    def finished():
        row = jobs.get_job(job, db=db)
        return row if row["status"] in ("completed", "failed") else None

    return _wait(finished, f"job {job} to finish")


@pytest.mark.parametrize("agent, message", [
    ("agent_haiku_intruder", "report refused: agent_haiku_intruder does not own sub_1"),
    (None, "report refused: sub_1 was dispatched to a worker; report with the --agent-id from its prompt"),
])
def test_a_report_from_another_or_no_identity_is_refused(db, brain, agent, message):
    job = new_job(db, n=2)
    ids = agents(jobs.dispatch_job(job, db=db))
    jobs.link_host_agent(job, "sub_1", "host1", ids["sub_1"], db=db)
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


def test_a_subtask_queued_for_a_pool_takes_no_report_until_a_worker_claims_it(db, brain):
    """A queued sub-task was pending with no owner, so any worker could complete it with any id
    (and the plugin approves such a report): only the claim's credential reports now."""
    from brain_jobs import pool

    job = new_job(db, n=2)
    brain.ok("job", "dispatch", job, "--executor", "grep", "--pool", "--file", "src/")
    before = store_snapshot(db)
    for agent in (["--agent-id", "evil"], ["--agent-id", "0" * 32], []):
        for status in ("completed", "failed", "running"):
            error = one_line_error(brain("job", "update", job, "sub_1", "--status", status, "--result", "forged",
                                         *agent))
            assert "sub_1 is queued for the grep worker pool" in error
    assert store_snapshot(db) == before
    claim = pool.claim("grep", "test:1", 30, db=db)
    brain.ok("job", "update", job, claim["sub_task_id"], "--status", "completed", "--result", "ok",
             "--agent-id", claim["agent_id"])
    brain.ok("job", "update", job, "sub_2", "--status", "completed", "--result", "by hand", "--force")
    assert [(s["status"], s["result"]) for s in raw(job, db)["sub_tasks"]] == [("completed", "ok"),
                                                                               ("completed", "by hand")]


def test_force_overrides_ownership_and_history_says_so(db, fake_clock, brain):
    job = new_job(db, n=2)
    ids = agents(jobs.dispatch_job(job, timeout=10, db=db))
    names = labels(job, db)
    brain.ok("job", "update", job, "sub_1", "--status", "failed", "--result", "killed by hand", "--force")
    brain.ok("job", "update", job, "sub_2", "--status", "completed", "--result", "checked by a person",
             "--agent-id", "human", "--force")
    row = raw(job, db)
    forced = [e for e in row["history"] if e.get("forced")]
    assert [(e["sub_task_id"], e["status"], e.get("agent_id")) for e in forced] == [
        ("sub_1", "failed", None), ("sub_2", "completed", "human")]
    assert [s["agent_id"] for s in row["sub_tasks"]] == list(names.values())  # ownership is kept
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


# -- where each result came from ----------------------------------------------------

def test_the_consolidation_says_where_each_result_came_from(db, fake_clock, brain):
    job = new_job(db, n=4)
    ids = agents(jobs.dispatch_job(job, timeout=30, db=db))
    jobs.update_subtask_status(job, "sub_1", "completed", "reported", agent_id=ids["sub_1"], db=db)
    jobs.link_host_agent(job, "sub_2", "host2", ids["sub_2"], db=db)
    assert jobs.recover_final_message(job, "sub_2", "host2", "said at the end", db=db) == "completed"
    fake_clock.advance(30)  # sub_3 and sub_4 time out; sub_4 runs again and is cancelled
    jobs.retry_subtasks(job, ["sub_4"], db=db)
    jobs.dispatch_job(job, db=db)
    assert sub(job, "sub_4", db).get("source") is None  # a retry forgets the old source
    brain.ok("job", "cancel", job)
    expiring = new_job(db, n=1, ttl=60)
    jobs.dispatch_job(expiring, db=db)
    fake_clock.advance(60)
    results = brain.json("job", "consolidate", job)["results"] + brain.json("job", "consolidate", expiring)["results"]
    assert [list(r) for r in results] == [["sub_task_id", "query", "status", "result", "source"]] * 5
    assert [(r["status"], r["source"]) for r in results] == [
        ("completed", "report"), ("completed", "final_message"), ("failed", "timeout"), ("failed", "cancelled"),
        ("failed", "expired")]
    assert [s["source"] for s in raw(job, db)["sub_tasks"]] == ["report", "final_message", "timeout", "cancelled"]
    text = brain.ok("job", "consolidate", job).splitlines()
    assert text[1].endswith("-> reported  (report)") and text[2].endswith("-> said at the end  (final_message)")
    assert text[3].endswith("(timeout)") and text[4].endswith("-> cancelled  (cancelled)")
    # While a sub-task is unfinished, its result has no source yet.
    fresh = new_job(db, n=1)
    assert brain.json("job", "consolidate", fresh)["results"][0]["source"] is None

"""Hostile input to retry, cancel, ownership and --force.

Each row is refused with its one-line error and exit code and leaves the
store as it was (``store_snapshot``). The one deliberate exception: a report
from a superseded worker is refused *and* recorded, so the only change is one
``refused`` history event.
"""

import pytest

from conftest import store_snapshot
from brain_jobs import jobs
from brain_jobs.errors import Expired, InvalidInput, InvalidTransition, NotFound, Refused


def agents(out):
    return {jobs.parse_subtask_prompt(c["prompt"])[1]: jobs.parse_subtask_prompt(c["prompt"])[2]
            for c in out["agent_calls"]}


@pytest.fixture
def scene(db, fake_clock):
    """Jobs in every state a lifecycle command meets.

    ``main``: sub_1 failed (attempt 1), sub_2 completed, sub_3 running,
    sub_4 pending again after a retry (its dispatch and host ids superseded).
    ``done``: completed. ``gone``: expired (already swept). ``plain``: a normal pending job.
    """
    gone = jobs.create_job_with_subtasks(5, {"prompt": "short"}, ["x"], db=db)
    main = jobs.create_job_with_subtasks(600, {"prompt": "p"}, ["GET /1", "GET /2", "GET /3", "GET /4"], db=db)
    ids = agents(jobs.dispatch_job(main, db=db))
    jobs.update_subtask_status(main, "sub_1", "failed", "boom", agent_id=ids["sub_1"], db=db)
    jobs.update_subtask_status(main, "sub_2", "completed", "fine", agent_id=ids["sub_2"], db=db)
    labels = {x["sub_task_id"]: x["agent_id"] for x in jobs.get_job_subtasks(main, db=db)}
    jobs.link_host_agent(main, "sub_4", "host4", ids["sub_4"], db=db)
    jobs.update_subtask_status(main, "sub_4", "failed", "stuck", force=True, db=db)
    jobs.retry_subtasks(main, ["sub_4"], db=db)
    done = jobs.create_job_with_subtasks(600, {"prompt": "p"}, ["y"], db=db)
    jobs.update_subtask_status(done, "sub_1", "completed", "ok", db=db)
    plain = jobs.create_job(600, {"prompt": "normal"}, db=db)
    fake_clock.advance(10)
    jobs.get_job(gone, db=db)  # the sweep that expires it is stored now, not by a row below
    return {"main": main, "done": done, "gone": gone, "plain": plain,
            "A1": ids["sub_1"], "A2": ids["sub_2"], "A3": ids["sub_3"], "A4": ids["sub_4"],
            "L3": labels["sub_3"], "L4": labels["sub_4"]}


# (name, argv with {placeholders}, exit code, text in the one-line error)
CASES = [
    # retry
    ("retry unknown job", ["job", "retry", "abc123"], 1, "job abc123 not found"),
    ("retry traversal job id", ["job", "retry", "../../etc"], 2, "invalid job id"),
    ("retry traversal sub id", ["job", "retry", "{main}", "../sub_1"], 2, "invalid sub-task id '../sub_1'"),
    ("retry unknown sub", ["job", "retry", "{main}", "sub_9"], 1, "has no sub-task sub_9"),
    ("retry completed sub", ["job", "retry", "{main}", "sub_2"], 1,
     "sub_2 is completed; only failed sub-tasks can be retried"),
    ("retry running sub", ["job", "retry", "{main}", "sub_3"], 1, "sub_3 is running; only failed"),
    ("retry pending sub", ["job", "retry", "{main}", "sub_4"], 1, "sub_4 is pending; only failed"),
    ("retry all or nothing", ["job", "retry", "{main}", "sub_1", "sub_2"], 1, "sub_2 is completed"),
    ("retry max attempts used", ["job", "retry", "{main}", "--max-attempts", "1"], 1,
     "sub_1 has used 1 of at most 1 attempts; not retried"),
    ("retry max attempts zero", ["job", "retry", "{main}", "--max-attempts", "0"], 2, "at least 1"),
    ("retry max attempts negative", ["job", "retry", "{main}", "--max-attempts", "-1"], 2, "--max-attempts"),
    ("retry max attempts text", ["job", "retry", "{main}", "--max-attempts", "many"], 2, "whole number"),
    ("retry max attempts float", ["job", "retry", "{main}", "--max-attempts", "2.5"], 2, "whole number"),
    ("retry finished job", ["job", "retry", "{done}"], 1, "has no failed sub-tasks to retry"),
    ("retry expired job", ["job", "retry", "{gone}"], 1, "expired at"),
    ("retry pending normal job", ["job", "retry", "{plain}"], 1, "only a failed job can be retried"),
    # cancel
    ("cancel unknown job", ["job", "cancel", "abc123"], 1, "not found"),
    ("cancel empty job id", ["job", "cancel", "job_"], 2, "invalid job id"),
    ("cancel injection", ["job", "cancel", "{main};rm -rf ~"], 2, "invalid job id"),
    ("cancel finished job", ["job", "cancel", "{done}"], 1, "already completed; nothing to cancel"),
    ("cancel expired job", ["job", "cancel", "{gone}"], 1, "already failed; nothing to cancel"),
    ("cancel one sub", ["job", "cancel", "{main}", "sub_3"], 2, "unrecognized arguments: sub_3"),
    # ownership
    ("stranger", ["job", "update", "{main}", "sub_3", "--status", "completed", "--agent-id", "agent_evil"], 1,
     "report refused: agent_evil does not own sub_3"),
    ("no identity", ["job", "update", "{main}", "sub_3", "--status", "completed", "--result", "x"], 1,
     "report refused: sub_3 was dispatched to a worker"),
    ("a sibling's worker", ["job", "update", "{main}", "sub_3", "--status", "completed", "--agent-id", "{A2}"], 1,
     "does not own sub_3"),
    ("a sibling's host id", ["job", "update", "{main}", "sub_3", "--status", "failed", "--agent-id", "host4"], 1,
     "report refused: host4 does not own sub_3"),
    ("its public label", ["job", "update", "{main}", "sub_3", "--status", "completed", "--agent-id", "{L3}"], 1,
     "report refused: {L3} does not own sub_3"),
    ("a superseded label", ["job", "update", "{main}", "sub_4", "--status", "completed", "--agent-id", "{L4}"], 1,
     "report refused: {L4} belongs to a superseded attempt of sub_4"),
    ("a superseded host id", ["job", "update", "{main}", "sub_4", "--status", "completed", "--agent-id", "host4"], 1,
     "report refused: host4 belongs to a superseded attempt of sub_4"),
    ("owner, illegal move", ["job", "update", "{main}", "sub_3", "--status", "pending", "--agent-id", "{A3}"], 1,
     "sub_3 cannot go from running to pending"),
    ("owner of a finished sub", ["job", "update", "{main}", "sub_1", "--status", "completed", "--agent-id", "{A1}"],
     1, "sub_1 is already failed; nothing leaves failed except a retry"),
    ("agent id with space", ["job", "update", "{main}", "sub_3", "--status", "completed", "--agent-id", "a b"], 2,
     "invalid agent id"),
    ("agent id escape", ["job", "update", "{main}", "sub_3", "--status", "completed", "--agent-id", "\x1b[2Jx"], 2,
     "invalid agent id"),
    ("agent id empty", ["job", "update", "{main}", "sub_3", "--status", "completed", "--agent-id", ""], 2,
     "invalid agent id"),
    ("agent id too long", ["job", "update", "{main}", "sub_3", "--status", "completed", "--agent-id", "a" * 101], 2,
     "at most 100 characters"),
    ("report on expired job", ["job", "update", "{gone}", "sub_1", "--status", "completed", "--agent-id", "x"], 1,
     "expired at"),
    # --force
    ("force past the transition table", ["job", "update", "{main}", "sub_2", "--status", "failed", "--force"], 1,
     "sub_2 is already completed"),
    ("force pending to pending", ["job", "update", "{main}", "sub_4", "--status", "pending", "--force"], 1,
     "cannot go from pending to pending"),
    ("force unknown sub", ["job", "update", "{main}", "sub_7", "--status", "failed", "--force"], 1,
     "has no sub-task sub_7"),
    ("force bad status", ["job", "update", "{main}", "sub_3", "--status", "cancelled", "--force"], 2,
     "unknown status 'cancelled'"),
    ("force with a value", ["job", "update", "{main}", "sub_3", "--status", "failed", "--force=yes"], 2,
     "ignored explicit argument"),
    ("force on expired job", ["job", "update", "{gone}", "sub_1", "--status", "completed", "--force"], 1,
     "expired at"),
    ("force on finished job", ["job", "update", "{done}", "sub_1", "--status", "failed", "--force"], 1,
     "already completed"),
]


def _fill(arg, scene):
    for key, value in scene.items():
        arg = arg.replace("{" + key + "}", value)
    return arg


@pytest.mark.parametrize("name,argv,code,text", CASES, ids=[c[0] for c in CASES])
def test_hostile_lifecycle_input_is_refused_and_changes_nothing(brain, scene, name, argv, code, text):
    before = store_snapshot()
    proc = brain(*[_fill(a, scene) for a in argv])
    assert proc.returncode == code, proc.stderr
    assert proc.stdout == ""
    assert proc.stderr.startswith("brain: error: ") and proc.stderr.count("\n") == 1, proc.stderr
    assert _fill(text, scene) in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr
    assert store_snapshot() == before


def test_a_superseded_worker_is_refused_and_only_that_is_recorded(brain, scene, fake_clock):
    agent = scene["A4"]  # its credential: a label or host id is refused unrecorded (CASES)
    before = {r["job_id"]: r for r in store_snapshot()}
    proc = brain("job", "update", scene["main"], "sub_4", "--status", "completed", "--result", "stale",
                 "--agent-id", agent)
    assert proc.returncode == 1
    assert proc.stderr == (f"brain: error: report refused: {scene['L4']} belongs to a superseded attempt of sub_4 "
                           "(now attempt 2); the newer attempt was kept\n")
    after = {r["job_id"]: r for r in store_snapshot()}
    main = scene["main"]
    assert {k: v for k, v in after.items() if k != main} == {k: v for k, v in before.items() if k != main}
    assert {k: v for k, v in after[main].items() if k != "history"} == \
        {k: v for k, v in before[main].items() if k != "history"}
    assert after[main]["history"][:-1] == before[main]["history"]
    assert after[main]["history"][-1] == {
        "at": after[main]["history"][-1]["at"], "event": "refused", "sub_task_id": "sub_4", "status": "completed",
        "agent_id": scene["L4"], "reason": "superseded attempt (now attempt 2)"}


API_CASES = [
    ("retry max_attempts bool", lambda s, db: jobs.retry_subtasks(s["main"], max_attempts=True, db=db),
     InvalidInput, "max attempts"),
    ("retry max_attempts text", lambda s, db: jobs.retry_subtasks(s["main"], max_attempts="3", db=db),
     InvalidInput, "max attempts"),
    ("retry max_attempts zero", lambda s, db: jobs.retry_subtasks(s["main"], max_attempts=0, db=db),
     InvalidInput, "at least 1"),
    ("retry bad sub id", lambda s, db: jobs.retry_subtasks(s["main"], ["sub_1", "x/../y"], db=db),
     InvalidInput, "invalid sub-task id"),
    ("retry one id as text", lambda s, db: jobs.retry_subtasks(s["main"], "sub_2", db=db),
     InvalidTransition, "sub_2 is completed"),
    ("retry unknown job", lambda s, db: jobs.retry_subtasks("nope", db=db), NotFound, "not found"),
    ("cancel expired", lambda s, db: jobs.cancel_job(s["gone"], db=db), InvalidTransition, "nothing to cancel"),
    ("cancel bad id type", lambda s, db: jobs.cancel_job(123, db=db), InvalidInput, "job id must be a string"),
    ("link bad host id", lambda s, db: jobs.link_host_agent(s["main"], "sub_3", "../x", s["A3"], db=db),
     InvalidInput, "invalid agent id"),
    ("link unknown sub", lambda s, db: jobs.link_host_agent(s["main"], "sub_8", "h", s["A3"], db=db), NotFound, "sub_8"),
    ("link expired job", lambda s, db: jobs.link_host_agent(s["gone"], "sub_1", "h", s["A3"], db=db), Expired,
     "expired"),
    ("link with the label", lambda s, db: jobs.link_host_agent(s["main"], "sub_3", "h", s["L3"], db=db), Refused,
     "does not carry the credential"),
    ("link with a sibling's credential", lambda s, db: jobs.link_host_agent(s["main"], "sub_3", "h", s["A2"], db=db),
     Refused, "does not carry the credential"),
    ("stranger", lambda s, db: jobs.update_subtask_status(s["main"], "sub_3", "completed", agent_id="x", db=db),
     Refused, "x does not own sub_3"),
    ("force that is not a bool", lambda s, db: jobs.update_subtask_status(
        s["main"], "sub_3", "completed", agent_id="x", force="no", db=db), InvalidInput, "force must be True or False"),
]


@pytest.mark.parametrize("name,call,error,text", API_CASES, ids=[c[0] for c in API_CASES])
def test_hostile_lifecycle_api_input_raises_and_changes_nothing(db, scene, name, call, error, text):
    before = store_snapshot()
    with pytest.raises(error, match=text):
        call(scene, db)
    assert store_snapshot() == before

"""Job state and its transitions, as pure functions on a row dict.

Nothing here does I/O: ``jobs.py`` runs these functions inside one write
transaction. Each function checks everything first and only then changes
the row, so a refused request leaves the row as it was. The one exception
is a refused report from a known worker, which appends a history event
before raising ``Refusal(recorded=True)``, so the refusal is auditable.

``row["sub_tasks"]`` and ``row["history"]`` are the job record of
``record.py``: find, iterate and change a sub-task in place, append an
event, counts by status, the earliest deadline. Every rule here keeps the
constraints stated there (never replace either value, never insert, remove
or reorder a sub-task, never change an event once appended), whichever
store handed the row over.

Sub-task fields: the seed's ``sub_task_id, query, agent_id, status,
result`` plus ``attempt`` (1 on the first try), ``deadline`` (ISO UTC, set
by dispatch), ``updated_at``, ``host_agent_id`` (the host's id for the same
worker, linked by the plugin), ``past_agents`` (public identities of
superseded attempts) and, once finished, ``source`` (where its result came
from, see ``SOURCES``). A dispatched sub-task also has ``started_at``
(when its worker started it; None while it waits for a runner's free slot,
see ``waiting``), and a runner's has its ``timeout`` in seconds. A headless
executor that measures what its worker cost stores it as ``usage``
(``input_tokens, output_tokens`` and, where known, ``cost_usd``); the
consolidation adds up the totals (``usage_totals``).

Credentials: ``agent_id`` is a public label (``agent_haiku_3f9a1c``), shown
by every read; the secret credential each worker reports with, and what
the store keeps of it, are ``credentials.py``'s business.
"""

from . import validate
from .clock import epoch, iso
from .credentials import issue, owns, past_label, public, public_id, supersede, verifies, worker_view
from .errors import Expired, InvalidInput, InvalidTransition, NotFound, Refusal
from .ids import token as _token
from .record import SUB_KEYS, Events, SubTasks
from .vocabulary import FINAL, HOST, MODEL_ALIASES

DISTRIBUTED = "distributed_search"
NORMAL = "normal"
TRANSITIONS = {
    "pending": ("running", "completed", "failed"),
    "running": FINAL,
    "completed": (),
    "failed": (),
}
# Where a finished sub-task's result came from: a worker's report (or a person's, forced),
# a worker's final message saved by the SubagentStop hook, a passed deadline, the job's
# expiry, a cancel, or a pool sub-task whose workers were lost MAX_CLAIMS times.
SOURCES = ("report", "final_message", "timeout", "expired", "cancelled", "abandoned")
_SUB_RANK = {k: i for i, k in enumerate(SUB_KEYS)}


def _in_order(sub) -> None:
    """Put ``sub``'s keys in ``SUB_KEYS`` order, in place (unknown keys after, as they were)."""
    items = sorted(sub.items(), key=lambda kv: _SUB_RANK.get(kv[0], len(_SUB_RANK)))
    if [k for k, _ in items] != list(sub):
        sub.clear()
        sub.update(items)


def new_subtask(n: int, query: str) -> dict:
    return {
        "sub_task_id": f"sub_{n}",
        "query": query,
        "agent_id": None,
        "status": "pending",
        "result": None,
        "attempt": 1,
        "deadline": None,
        "updated_at": None,
    }


def new_row(job_id, ttl, data, job_type, queries, tools_required, now) -> dict:
    return {
        "job_id": job_id,
        "created_at": iso(now),
        "ttl": ttl,
        "expires_at": iso(now + ttl),
        "data": data,
        "iteration": 0,
        "status": "pending",
        "tools_required": tools_required,
        "history": Events([event(now, "created", type=job_type, sub_tasks=len(queries) or None)]),
        "type": job_type,
        "sub_tasks": SubTasks(new_subtask(i, q) for i, q in enumerate(queries, 1)),
        "consolidated_result": None,
    }


def event(now, name, **fields) -> dict:
    """A history event: UTC time, what happened, and the fields that apply."""
    ev = {"at": iso(now), "event": name}
    for k, v in fields.items():
        if v is not None:
            ev[k] = v
    return ev


def find_subtask(row, sub_task_id) -> dict:
    sub = row["sub_tasks"].find(sub_task_id)
    if sub is None:
        raise NotFound(
            f"job {row['job_id']} has no sub-task {sub_task_id} "
            f"(it has sub_1..sub_{len(row['sub_tasks'])}); see brain job subtasks {row['job_id']}"
        )
    return sub


def is_expired(row, now) -> bool:
    return iso(now) >= row["expires_at"]


def derived_status(row) -> str:
    """A distributed job's status follows its sub-tasks."""
    if row["type"] != DISTRIBUTED:
        return row["status"]
    c = counts(row)
    if c["pending"] + c["running"] == 0:
        return "failed" if c["failed"] else "completed"
    if c["pending"] == len(row["sub_tasks"]):
        return "pending"
    return "running"


def counts(row) -> dict:
    """Sub-tasks by status."""
    return row["sub_tasks"].counts()


def summary(row, now) -> dict:
    """The seed's consolidation dict, plus pending/running counts and completeness,
    and ``usage`` totals when any sub-task recorded its usage."""
    c = counts(row)
    complete = row["status"] in FINAL
    out = {
        "job_id": row["job_id"],
        "total_tasks": len(row["sub_tasks"]),
        "completed": c["completed"],
        "failed": c["failed"],
        "pending": c["pending"],
        "running": c["running"],
        "complete": complete,
        "status": row["status"],
        "results": [
            {"sub_task_id": s["sub_task_id"], "query": s["query"], "status": s["status"], "result": s["result"],
             "source": s.get("source")}
            for s in row["sub_tasks"]
        ],
        "consolidated_at": iso(now),
    }
    totals = usage_totals(row)
    if totals is not None:
        out["usage"] = totals
    return out


USAGE_KEYS = ("input_tokens", "output_tokens", "cost_usd")


def usage_totals(row):
    """The sum of the sub-tasks' ``usage``, or None when none recorded any. ``cost_usd``
    adds up only the costs that were reported (None when no executor reported one)."""
    found = [s["usage"] for s in row["sub_tasks"] if s.get("usage")]
    if not found:
        return None
    totals = {"input_tokens": 0, "output_tokens": 0, "cost_usd": None}
    for usage in found:
        for key in USAGE_KEYS:
            if usage.get(key) is not None:
                totals[key] = (totals[key] or 0) + usage[key]
    if totals["cost_usd"] is not None:
        totals["cost_usd"] = round(totals["cost_usd"], 6)
    return totals


def add_usage(row, sub_task_id, agent_id, usage, now) -> dict:
    """Store ``usage`` on a sub-task that ``agent_id`` owns, whatever its status (a worker
    that reported itself was paid for all the same); return the sub-task. A stored
    consolidation gets its totals again. No history event: usage is not a report."""
    sub = find_subtask(row, sub_task_id)
    if not owns(sub, agent_id):
        raise Refusal(f"usage refused: that --agent-id does not own {sub_task_id}")
    sub["usage"] = usage
    _in_order(sub)
    if row["consolidated_result"] is not None:
        row["consolidated_result"] = dict(row["consolidated_result"], usage=usage_totals(row))
    return sub


def settle(row, now) -> None:
    """Recompute the job status; store the consolidation once, when the job is final.

    Its ``consolidated_at`` is also when the retention period starts.
    """
    row["status"] = derived_status(row)
    if row["status"] in FINAL:
        if row["consolidated_result"] is None:
            row["consolidated_result"] = summary(row, now)
            row["history"].append(event(now, "consolidated", status=row["status"]))
    else:
        row["consolidated_result"] = None


def needs_sweep(row, now) -> bool:
    """True when expiry or a passed deadline is due to change this job."""
    if row["status"] in FINAL:
        return False
    if is_expired(row, now):
        return True
    stamp = iso(now)
    earliest = row["sub_tasks"].earliest_deadline()
    if earliest is None or earliest > stamp:
        return False
    # A lower bound (``record``): confirm with the sub-tasks themselves.
    return any(s["status"] == "running" and s.get("deadline") and s["deadline"] <= stamp for s in row["sub_tasks"])


def sweep(row, now) -> bool:
    """Apply expiry and deadlines; return whether anything changed."""
    if not needs_sweep(row, now):
        return False
    if is_expired(row, now):
        _fail_unfinished(row, "expired", "expired", "expired", now)
    else:
        stamp = iso(now)
        for sub in row["sub_tasks"]:
            if sub["status"] == "running" and sub.get("deadline") and sub["deadline"] <= stamp:
                _finish(sub, "failed", f"timed out: no report by {sub['deadline']}", now, "timeout")
                row["history"].append(
                    event(now, "timeout", sub_task_id=sub["sub_task_id"], status="failed", agent_id=sub["agent_id"])
                )
    settle(row, now)
    return True


def _fail_unfinished(row, result, name, source, now):
    """Fail what is not finished yet (the job itself, for a normal job) and record ``name``."""
    for sub in row["sub_tasks"]:
        if sub["status"] not in FINAL:
            _finish(sub, "failed", result, now, source)
    if row["type"] != DISTRIBUTED:
        row["status"] = "failed"
    row["history"].append(event(now, name))


def _finish(sub, status, result, now, source):
    """End ``sub`` with ``result``, which came from ``source`` (one of ``SOURCES``)."""
    sub["status"] = status
    sub["result"] = result
    sub["updated_at"] = iso(now)
    sub["source"] = source
    if "usage" in sub:  # a runner stores usage before its report
        _in_order(sub)


def _check_live(row, now, action):
    if is_expired(row, now):
        raise Expired(
            f"job {row['job_id']} expired at {row['expires_at']}; cannot {action}: "
            f"its results are frozen (brain job consolidate {row['job_id']})"
        )


def report(row, sub_task_id, status, result, agent_id, force, now) -> dict:
    """A worker's report on one sub-task; returns the sub-task (``public``).

    Ownership: once a sub-task has an owner, only the owner may report: the
    credential dispatch or a claim issued (see ``credentials.owns``), or the id of the
    first reporter that claimed an undispatched sub-task as running. One
    queued for a worker pool has no owner yet, and takes no report until a
    worker claims it. A
    public label or a linked host agent id is not enough. ``force``
    overrides, and the history says so. A superseded attempt's credential is
    refused with a history event; any other stranger is refused unrecorded,
    so a label read from ``brain job subtasks`` cannot fill the history.
    """
    sub = find_subtask(row, sub_task_id)
    _check_live(row, now, f"report on {sub_task_id}")
    owner = owns(sub, agent_id)
    if not force:
        past = None if owner else past_label(sub, agent_id)
        if past is not None:
            row["history"].append(
                event(now, "refused", sub_task_id=sub_task_id, status=status, agent_id=past,
                      reason=f"superseded attempt (now attempt {sub['attempt']})")
            )
            raise Refusal(
                f"report refused: {past} belongs to a superseded attempt of {sub_task_id} "
                f"(now attempt {sub['attempt']}); the newer attempt was kept",
                recorded=True,
            )
        if agent_id is not None and not owner and agent_id in sub.get("past_agents", ()):
            # A superseded attempt's public label or host id: refused, but not recorded
            # (anyone can read these; only a credential is worth an event).
            raise Refusal(
                f"report refused: {agent_id} belongs to a superseded attempt of {sub_task_id} "
                f"(now attempt {sub['attempt']}); the newer attempt was kept"
            )
        if sub.get("pool") and sub["status"] == "pending":
            # Queued for a pool: its worker will be the one that claims it, with a credential.
            raise Refusal(
                f"report refused: {sub_task_id} is queued for the {sub['pool']} worker pool; only the "
                "worker that claims it reports, with the credential of its claim (a person may override "
                "with --force)"
            )
        if sub["agent_id"] is not None and agent_id is None:
            raise Refusal(
                f"report refused: {sub_task_id} was dispatched to a worker; report with the "
                "--agent-id from its prompt (a person may override with --force)"
            )
        if sub["agent_id"] is not None and not owner:
            raise Refusal(
                f"report refused: {agent_id} does not own {sub_task_id}; report with the "
                "--agent-id from its prompt (a person may override with --force)"
            )
    who = public_id(sub, agent_id)
    if status not in TRANSITIONS[sub["status"]]:
        if sub["status"] == "failed" and owner and result is not None:
            _late_report(row, sub, status, result, "report", now)
            raise Refusal(
                f"{sub_task_id} is already failed ({sub['result']}); your result was kept in the job's "
                "history only (brain job history); a retry runs the sub-task again",
                recorded=True,
            )
        raise InvalidTransition(_transition_message(sub_task_id, sub["status"], status))
    sub["status"] = status
    if result is not None:
        sub["result"] = result
    if who is not None and who == agent_id and sub["agent_id"] is None:
        sub["agent_id"] = who  # a plain id claims an undispatched sub-task (a credential never does)
    sub["updated_at"] = iso(now)
    if status in FINAL:
        sub["source"] = "report"
        if "usage" in sub:  # a runner stores usage before its report
            _in_order(sub)
    row["history"].append(
        event(now, "report", sub_task_id=sub_task_id, status=status, agent_id=who, forced=True if force else None)
    )
    settle(row, now)
    return public(sub)


def _late_report(row, sub, status, result, source, now) -> None:
    """The owner answered after its sub-task failed (deadline, cancel): keep the answer
    where a person can find it, without reopening the sub-task."""
    row["history"].append(
        event(now, "late_report", sub_task_id=sub["sub_task_id"], status=status, agent_id=sub["agent_id"],
              result=result, source=source)
    )


def recover_final_message(row, sub_task_id, host_agent_id, message, credential, now):
    """Save what a host worker said last, when it ended without reporting (SubagentStop).

    The worker is recognised by the host agent id linked to the sub-task
    (``link_host_agent``) or, before the link exists, by the credential of
    its launch prompt. A running sub-task ends with the message as its
    result (``source`` final_message), or failed when there is none; a
    failed one keeps the message as a ``late_report`` event. Returns what
    was done: ``"completed"``, ``"failed"``, ``"late_report"``, or None when
    the worker had reported already.
    """
    sub = find_subtask(row, sub_task_id)
    _check_live(row, now, f"save the final message of {sub_task_id}")
    linked = host_agent_id is not None and sub.get("host_agent_id") == host_agent_id
    if not (linked or verifies(sub, credential)):
        raise Refusal(f"{host_agent_id} is not the worker of {sub_task_id}: its final message was not saved")
    if sub["status"] == "failed" and message:
        _late_report(row, sub, "completed", message, "final_message", now)
        return "late_report"
    if sub["status"] != "running":
        return None
    if message:
        _finish(sub, "completed", message, now, "final_message")
    else:
        _finish(sub, "failed", "worker ended without a report or a final message", now, "final_message")
    row["history"].append(
        event(now, "report", sub_task_id=sub_task_id, status=sub["status"], agent_id=sub["agent_id"],
              host_agent_id=host_agent_id, source="final_message")
    )
    settle(row, now)
    return sub["status"]


def _transition_message(what, current, wanted):
    if current in FINAL:
        return f"{what} is already {current}; nothing leaves {current} except a retry (brain job retry)"
    allowed = ", ".join(TRANSITIONS[current])
    return f"{what} cannot go from {current} to {wanted}; from {current} it can go to: {allowed}"


def _check_dispatchable(row, model, now) -> None:
    """What dispatching to the host, a runner or a pool all require."""
    if row["type"] != DISTRIBUTED:
        raise InvalidTransition(f"job {row['job_id']} is a normal job: only distributed jobs have sub-tasks to dispatch")
    _check_live(row, now, "dispatch")
    if model not in MODEL_ALIASES:
        raise InvalidInput(f"unknown model {validate.printable(model)}: use one of {', '.join(MODEL_ALIASES)}")


def _nothing_pending(row) -> InvalidTransition:
    return InvalidTransition(
        f"job {row['job_id']} has no pending sub-tasks to dispatch; see brain job subtasks "
        f"{row['job_id']} (failed ones can be retried with brain job retry)"
    )


def default_timeout(row, now) -> int:
    """Four fifths of the TTL that remains: a stuck worker fails while the job can still be retried."""
    return max(1, int((epoch(row["expires_at"]) - now) * 0.8))


def dispatch(row, model, timeout, session_id, executor, now, runner=None) -> list:
    """Mark every pending sub-task running with a fresh identity and deadline.

    The host starts every sub-task at once (``started_at``: now, deadline:
    now + timeout). A headless runner starts them as its slots free up, so
    they wait: ``started_at`` None, the ``timeout`` kept for :func:`start`,
    and a provisional deadline at the job's expiry, so that no sub-task
    times out for waiting. Returns what each worker is handed
    (``worker_view``: ``agent_id`` is its credential), in sub-task order.
    ``runner`` (``{"pid", "log"}`` of a headless runner) is recorded in the
    history event.
    """
    _check_dispatchable(row, model, now)
    pending = [s for s in row["sub_tasks"] if s["status"] == "pending"]
    if not pending:
        raise _nothing_pending(row)
    # Never beyond the TTL: the effective timeout is what history records.
    timeout = min(timeout or default_timeout(row, now), max(1, int(epoch(row["expires_at"]) - now)))
    host = executor == HOST
    deadline = iso(min(now + timeout, epoch(row["expires_at"]))) if host else row["expires_at"]
    prefix = f"agent_{model}" if host else f"agent_{executor}"
    credentials = []
    for sub in pending:
        _leave_pool(sub)
        sub["status"] = "running"
        credentials.append(issue(sub, f"{prefix}_{_token(3)}"))
        sub["deadline"] = deadline
        sub["updated_at"] = iso(now)
        if host:
            sub["started_at"] = iso(now)
        else:
            sub.update(started_at=None, timeout=timeout)
        _in_order(sub)
    row["iteration"] += 1
    row["history"].append(
        event(now, "dispatch", executor=executor, model=model, session_id=session_id, timeout=timeout,
              sub_tasks=[s["sub_task_id"] for s in pending], runner=runner)
    )
    settle(row, now)
    return [worker_view(sub, credential) for sub, credential in zip(pending, credentials)]


def waiting(sub) -> bool:
    """Running, but not started yet: dispatched to a runner whose slots are all busy.

    ``started_at`` is None only between a headless dispatch and :func:`start`;
    a sub-task without the field (an older row, a worker's own report) has started.
    """
    return sub["status"] == "running" and "started_at" in sub and sub["started_at"] is None


def start(row, sub_task_id, agent_id, started, now) -> dict:
    """A runner started a waiting sub-task at ``started`` (epoch seconds); return the sub-task.

    Its real deadline counts from then: ``min(started + timeout, expiry)``.
    Refused (nothing changes) unless the sub-task is waiting for ``agent_id``.
    """
    sub = find_subtask(row, sub_task_id)
    if not waiting(sub) or not owns(sub, agent_id):
        raise Refusal(f"{sub_task_id} is not waiting for this worker (it is {sub['status']}); not started")
    started = min(started, now)
    timeout = sub.get("timeout") or default_timeout(row, started)
    sub["started_at"] = iso(started)
    sub["deadline"] = min(iso(started + timeout), row["expires_at"])  # fixed-width ISO: compared as text
    sub["updated_at"] = iso(now)
    return sub


def next_due(row):
    """When expiry or a deadline can next change this job (ISO UTC), or None when it is final.

    A deadline passing commits nothing: whoever waits on a job wakes then and looks
    (the earliest deadline is a lower bound, see ``record``: at worst it wakes early).
    """
    if row["status"] in FINAL:
        return None
    earliest = row["sub_tasks"].earliest_deadline()
    return row["expires_at"] if earliest is None else min(earliest, row["expires_at"])


def retry(row, sub_task_ids, max_attempts, now) -> list:
    """Put failed sub-tasks (all, or the named ones) back to pending; return their ids."""
    _check_live(row, now, "retry")
    if row["type"] != DISTRIBUTED:
        if row["status"] != "failed":
            raise InvalidTransition(f"job {row['job_id']} is {row['status']}; only a failed job can be retried")
        row["status"] = "pending"
        row["iteration"] += 1
        row["history"].append(event(now, "retry", status="pending"))
        settle(row, now)
        return []
    if sub_task_ids:
        targets = [find_subtask(row, s) for s in dict.fromkeys(sub_task_ids)]
        for sub in targets:
            if sub["status"] != "failed":
                raise InvalidTransition(f"{sub['sub_task_id']} is {sub['status']}; only failed sub-tasks can be retried")
    else:
        targets = [s for s in row["sub_tasks"] if s["status"] == "failed"]
        if not targets:
            raise InvalidTransition(f"job {row['job_id']} has no failed sub-tasks to retry")
    if max_attempts is not None:
        for sub in targets:
            if sub["attempt"] >= max_attempts:
                raise InvalidTransition(
                    f"{sub['sub_task_id']} has used {sub['attempt']} of at most {max_attempts} attempts; not retried"
                )
    for sub in targets:
        supersede(sub)
        sub.update(status="pending", agent_id=None, result=None, deadline=None, updated_at=iso(now))
        sub.pop("source", None)
        _leave_pool(sub)
        sub.pop("started_at", None)  # the next attempt starts anew (see ``waiting``)
        sub["attempt"] += 1
    row["iteration"] += 1
    ids = [s["sub_task_id"] for s in targets]
    row["history"].append(event(now, "retry", sub_tasks=ids, max_attempts=max_attempts))
    settle(row, now)
    return ids


def cancel(row, now) -> None:
    """Fail every pending or running sub-task with the result "cancelled"."""
    if row["status"] in FINAL:
        raise InvalidTransition(f"job {row['job_id']} is already {row['status']}; nothing to cancel")
    _fail_unfinished(row, "cancelled", "cancel", "cancelled", now)
    settle(row, now)


def set_status(row, status, now) -> None:
    """Move a normal job through the transition table."""
    if row["type"] == DISTRIBUTED:
        raise InvalidTransition(
            f"job {row['job_id']} is distributed: its status follows its sub-tasks (use brain job update)"
        )
    _check_live(row, now, "change its status")
    if status not in TRANSITIONS[row["status"]]:
        raise InvalidTransition(_transition_message(f"job {row['job_id']}", row["status"], status))
    row["status"] = status
    row["history"].append(event(now, "status", status=status))
    settle(row, now)


def link_host_agent(row, sub_task_id, host_agent_id, credential, now) -> dict:
    """Record the host's id for the worker of a sub-task; return the sub-task (``public``).

    Only with the credential dispatch issued for the sub-task (the one its
    launch prompt carries): a prompt that merely looks like a worker's links
    nothing. The link lets the SubagentStop hook save the worker's final
    message (``recover_final_message``); it is not a credential for reports.
    """
    sub = find_subtask(row, sub_task_id)
    _check_live(row, now, f"link a host agent to {sub_task_id}")
    if not verifies(sub, credential):
        raise Refusal(f"{host_agent_id} not linked to {sub_task_id}: its prompt does not carry the credential "
                      "that dispatch issued for it")
    sub["host_agent_id"] = host_agent_id
    row["history"].append(event(now, "link", sub_task_id=sub_task_id, agent_id=sub["agent_id"], host_agent_id=host_agent_id))
    return public(sub)


def launched_worker(row, sub_task_id, credential):
    """The sub-task (``public``) whose worker a launch with ``credential`` starts, or None.

    Only a sub-task that is running and started (not waiting for a runner's
    slot), with the credential dispatch issued for it: what lets the PreToolUse
    hook approve the launch of exactly the workers dispatch printed. ``row``
    must be swept, so that a sub-task past its deadline is no longer running.
    """
    try:
        sub = find_subtask(row, sub_task_id)
    except NotFound:
        return None
    if sub["status"] != "running" or waiting(sub) or not verifies(sub, credential):
        return None
    return public(sub)


def unread(row) -> bool:
    """True when the job's final consolidation has not been read since it was stored."""
    for ev in reversed(row["history"]):
        if ev["event"] == "consolidate_read":
            return False
        if ev["event"] == "consolidated":
            return True
    return False


def mark_read(row, now) -> None:
    """Note that the final consolidation was read (once per completion)."""
    if unread(row):
        row["history"].append(event(now, "consolidate_read"))


# -- the worker pool ----------------------------------------------------------
#
# ``brain job dispatch JOB --pool`` queues pending sub-tasks for the workers
# of one executor (``sub["pool"]``); ``brain worker`` processes claim them one
# at a time. A claim gives the sub-task a fresh identity, a deadline and a
# lease (``lease_until``) that the worker extends while it works. A sub-task
# running on a lease that ran out is claimed again under a new identity; the
# old identity joins ``past_agents``, so the lost worker's late report is
# refused as superseded. After MAX_CLAIMS lost workers it fails instead.
# Releasing (a worker shutting down) puts it back to pending, still queued.

MAX_CLAIMS = 3
_POOL_KEYS = ("pool", "timeout", "worker", "lease_until")


def _leave_pool(sub) -> None:
    for key in _POOL_KEYS:
        sub.pop(key, None)


def queue(row, pool, model, timeout, order, now) -> list:
    """Queue every pending sub-task for the workers of ``pool``; return them.

    ``order`` (what the workers need besides the query: files, allow_shell)
    is recorded in the history event that workers read back.
    """
    _check_dispatchable(row, model, now)
    pending = [s for s in row["sub_tasks"] if s["status"] == "pending" and s.get("pool") != pool]
    if not pending:
        if any(s["status"] == "pending" for s in row["sub_tasks"]):
            raise InvalidTransition(
                f"job {row['job_id']}'s pending sub-tasks are already queued for the {pool} pool: "
                f"start workers with brain worker --executor {pool}"
            )
        raise _nothing_pending(row)
    for sub in pending:
        _leave_pool(sub)
        sub["pool"] = pool
        if timeout:
            sub["timeout"] = timeout
        sub["updated_at"] = iso(now)
    row["iteration"] += 1
    row["history"].append(event(now, "queue", executor=pool, model=model, timeout=timeout,
                                sub_tasks=[s["sub_task_id"] for s in pending], **(order or {})))
    settle(row, now)
    return pending


def queue_order(row) -> dict:
    """The last ``queue`` event of the job: what its workers need besides the query."""
    for ev in reversed(row["history"]):
        if ev["event"] == "queue":
            return ev
    return {}


def claimable(sub, pool, now) -> bool:
    """Queued for ``pool`` and pending, or running on a lease that ran out."""
    if sub.get("pool") != pool:
        return False
    if sub["status"] == "pending":
        return True
    lease = sub.get("lease_until")
    return sub["status"] == "running" and lease is not None and lease <= iso(now)


def claim(row, pool, worker, lease, now):
    """Give the first claimable sub-task of ``pool`` to ``worker`` for ``lease`` seconds; None if none.

    Returns what the worker is handed (``worker_view``: ``agent_id`` is its credential).

    Lost workers' sub-tasks come back here: each is either claimed again or,
    after MAX_CLAIMS lost workers, failed. Both are written in the history.
    """
    if is_expired(row, now):
        return None
    stamp = iso(now)
    for sub in row["sub_tasks"]:
        if not claimable(sub, pool, now):
            continue
        if sub["status"] == "running":
            lost = sub["agent_id"]
            row["history"].append(event(now, "lease_expired", sub_task_id=sub["sub_task_id"], agent_id=lost,
                                        worker=sub.get("worker"), reason=f"no lease renewal since {sub['lease_until']}"))
            supersede(sub)
            if sub["attempt"] >= MAX_CLAIMS:
                _finish(sub, "failed", f"abandoned: {sub['attempt']} workers stopped while running it", now,
                        "abandoned")
                sub["lease_until"] = None
                row["history"].append(event(now, "abandoned", sub_task_id=sub["sub_task_id"], status="failed"))
                continue
            sub["attempt"] += 1
        timeout = sub.get("timeout") or default_timeout(row, now)
        credential = issue(sub, f"agent_{pool}_{_token(3)}")
        sub.update(status="running", worker=worker,
                   lease_until=iso(now + lease), deadline=iso(min(now + timeout, epoch(row["expires_at"]))),
                   updated_at=stamp)
        sub["started_at"] = stamp  # a claim is a start: the worker runs it now
        _in_order(sub)
        row["history"].append(event(now, "claim", sub_task_id=sub["sub_task_id"], agent_id=sub["agent_id"],
                                    worker=worker))
        settle(row, now)
        return worker_view(sub, credential)
    settle(row, now)
    return None


def renew(row, leases, lease, now) -> list:
    """Extend the leases ``{sub_task_id: credential}`` still held; return the ids no longer held."""
    lost = []
    until = iso(now + lease)
    for sub_task_id, agent_id in leases.items():
        sub = find_subtask(row, sub_task_id)
        if sub["status"] == "running" and owns(sub, agent_id) and sub.get("pool"):
            sub["lease_until"] = until
        else:
            lost.append(sub_task_id)
    return lost


def release(row, sub_task_id, agent_id, reason, now) -> dict:
    """A worker gives a claimed sub-task back: pending again, still queued, its identity retired.

    ``agent_id`` is the credential the claim handed out.
    """
    sub = find_subtask(row, sub_task_id)
    if sub["status"] != "running" or not owns(sub, agent_id) or not sub.get("pool"):
        raise Refusal(f"this worker does not hold {sub_task_id} any more (it is {sub['status']}); nothing to release")
    label = sub["agent_id"]
    supersede(sub)
    sub.update(status="pending", agent_id=None, deadline=None, lease_until=None, worker=None, updated_at=iso(now))
    row["history"].append(event(now, "release", sub_task_id=sub_task_id, agent_id=label, reason=reason))
    settle(row, now)
    return public(sub)

"""The Python API of brain-jobs, named as the seed calls it.

    from brain_jobs.jobs import create_job_with_subtasks, update_subtask_status, consolidate_subtask_results

The seed's path, ``scripts.memory.jobs``, is this same module from the plugin
root or a checkout (``scripts/memory/jobs.py``).

Every function takes an optional ``db``: a SQLite path or a PostgreSQL URL;
without it the configured default is used (see ``paths``). Every write is
one transaction of the store (see ``store``). Writes also expire due jobs
and purge jobs past their retention, so no daemon is needed: a process's
first write does, and then at most one write a second (``housekeep``).
Reads and writes apply expiry and deadlines to the job they touch, so what
the API returns is always swept.

Errors are the exceptions of ``errors``; their messages say what to do.
"""

import os

from . import clock, credentials, prompts, record, state, validate
from .clock import iso, now as _now
from .errors import BrainError, InvalidInput, NotFound, StoreError
from .ids import token as _token
from .paths import default_target
from .store import open_store
from .vocabulary import DEFAULT_MODEL, FINAL, HOST, STATUSES

DEFAULT_RETENTION = 3600
# Seconds between two housekeepings by one process of one store. Why not every
# write: it is two statements, a large share of a report's time under the lock
# (docs/benchmarks.md, row 2), and a job's own expiry never waits for it (see the module doc).
HOUSEKEEPING_INTERVAL = 1.0
_stores = {}
_housekept = {}  # target -> when this process last housekept it (clock seconds)


def store_for(db=None):
    """The open store of ``db`` (default: the configured one), opened once per process.

    Every write of this module and of ``pool`` goes through it; ``close_stores`` closes them all.
    """
    target = db or default_target()
    store = _stores.get(target)
    if store is None:
        store = _stores[target] = open_store(target)
    return store


def close_stores() -> None:
    """Close every store this process opened (tests and long-lived processes)."""
    _housekept.clear()
    while _stores:
        _stores.popitem()[1].close()


def _retention() -> int:
    """``BRAIN_RETENTION``: ASCII digits, at most ten (``isdigit`` alone lets ``²`` and 5,000-digit
    numbers through to ``int``, and a purge time before year 1 through to the clock)."""
    raw = os.environ.get("BRAIN_RETENTION") or str(DEFAULT_RETENTION)
    if not (raw.isascii() and raw.isdigit() and len(raw) <= 10):
        raise InvalidInput(f"BRAIN_RETENTION={validate.printable(raw)} is not a whole number of seconds "
                           f"from 0 to {10 ** 10 - 1}")
    return int(raw)


def housekeep(tx, now, db, always=False) -> dict:
    """Expire due jobs and purge those past retention (indexed queries).

    Done when ``always`` (``cleanup_jobs``), or when this process has not done
    it for ``db`` in the last ``HOUSEKEEPING_INTERVAL`` seconds of ``clock``
    time (so a test that moves time forward gets it); otherwise nothing.
    """
    target = db or default_target()
    last = _housekept.get(target)
    if not always and last is not None and last <= now < last + HOUSEKEEPING_INTERVAL:
        return {"expired": 0, "purged": 0}
    if clock.is_set_by_hand():  # a test clock must not expire everyone's jobs from far ahead
        clock.check_leap(now, tx.newest())
    _housekept[target] = now
    expired = 0
    due, purged = tx.housekeeping(iso(now), iso(max(0.0, now - _retention())))
    for job_id in due:
        try:
            row = tx.get(job_id)
            if row is not None and state.sweep(row, now):
                tx.replace(row)
                expired += 1
        except BrainError:
            raise
        except Exception:  # a row no rule can read (any content) must not fail every write
            continue  # it stays as stored; the calls that name the job say what is wrong with it
    return {"expired": expired, "purged": purged}


def _not_found(job_id):
    return NotFound(f"job {job_id} not found (it may have been purged after expiry); see brain job list --all")


def mutate(job_id, change, db=None):
    """Run ``change(row, now)`` on one job inside one write transaction; return ``(row, outcome)``.

    Expiry and deadlines are applied first. If ``change`` raises a
    ``BrainError``, what the sweep did and a recorded refusal are still
    committed; nothing else is.

    ``row``'s sub-tasks and history are the job record (``record.py``) the
    store handed the rules, which need not be lists: a caller that hands
    the row on passes it through ``record.plain`` first.
    """
    job_id = validate.job_id(job_id)
    now = _now()
    iso(now)  # the rules format ``now`` several times: do it once, before taking the lock
    failure = outcome = None
    with store_for(db).write() as tx:
        housekeep(tx, now, db)
        row = tx.get(job_id)
        if row is None:
            raise _not_found(job_id)
        swept = state.sweep(row, now)
        try:
            outcome = change(row, now)
        except BrainError as exc:
            # The rules check before they change anything: the row holds only
            # what the sweep did and a recorded refusal. Keep those, commit,
            # then report the error (raising here would roll them back).
            if not (swept or getattr(exc, "recorded", False)):
                raise
            failure = exc
        tx.replace(row)
    if failure is not None:
        raise failure
    return row, outcome


def _read(job_id, db=None) -> dict:
    """The swept row, without what verifies a worker's credential (``credentials.strip_private``)."""
    job_id = validate.job_id(job_id)
    row = store_for(db).read(job_id)
    if row is None:
        raise _not_found(job_id)
    now = _now()
    if state.needs_sweep(row, now):
        try:
            row = record.plain(mutate(job_id, lambda r, n: None, db)[0])
        except StoreError:
            # A read-only or full store can still be read: show what the
            # sweep would store, without storing it.
            state.sweep(row, now)
    return credentials.strip_private(row)


# -- creating -------------------------------------------------------------

def create_job(ttl, data=None, *, job_type=state.NORMAL, subtasks=None, tools_required=None, db=None) -> str:
    """Create a job and return its bare id.

    ``job_type`` is ``normal`` or ``distributed_search``; a distributed job
    needs ``subtasks`` (queries of at most 500 characters each).
    """
    ttl = validate.ttl(ttl)
    data = validate.data(data)
    if job_type not in (state.NORMAL, state.DISTRIBUTED):
        raise InvalidInput(f"unknown job type {validate.printable(job_type)}: use normal or distributed_search")
    if "prompt" in data:
        validate.prompt(data["prompt"])
    validate.files(data.get("files"))
    queries = validate.subtasks(subtasks) if job_type == state.DISTRIBUTED else []
    if job_type == state.NORMAL and subtasks:
        raise InvalidInput("sub-tasks need a distributed job (brain job create --distributed)")
    tools = validate.tools_required(tools_required)
    now = _now()
    job_id = _token(6)
    row = state.new_row(job_id, ttl, data, job_type, queries, tools, now)
    with store_for(db).write() as tx:
        housekeep(tx, now, db)
        tx.insert(row)
    return job_id


def create_job_with_subtasks(ttl, data, subtasks, db=None) -> str:
    """Create a distributed job with one pending sub-task per query; return its id."""
    return create_job(ttl, data, job_type=state.DISTRIBUTED, subtasks=subtasks, db=db)


def subtasks_from_file(path) -> list:
    """Queries for ``create_job_with_subtasks``: one per non-blank line of a UTF-8 file
    (``-``: standard input), each checked; a refused line names its number (see ``queries``)."""
    from . import queries

    return queries.from_file(path)


def subtasks_from_glob(pattern, template, root=None) -> list:
    """Queries for ``create_job_with_subtasks``: ``template`` (containing ``{file}``) once per
    regular file matching ``pattern`` under ``root`` (default: here), sorted (see ``queries``)."""
    from . import queries

    return queries.from_glob(pattern, template, root)


# -- reading --------------------------------------------------------------

def get_job(job_id, db=None) -> dict:
    """The job's row (the seed's twelve columns, JSON decoded)."""
    return _read(job_id, db)


def get_job_subtasks(job_id, db=None) -> list:
    """The job's sub-tasks, current state."""
    return _read(job_id, db)["sub_tasks"]


def get_history(job_id, db=None) -> list:
    """The job's history events, oldest first."""
    return _read(job_id, db)["history"]


def list_jobs(include_finished=False, db=None) -> list:
    """Jobs newest first: only pending and running ones unless ``include_finished``."""
    store = store_for(db)
    now = _now()
    rows = store.read_all(active_only=not include_finished)
    if any(state.needs_sweep(r, now) for r in rows):
        try:
            cleanup_jobs(db)
        except StoreError:
            # As in ``_read``: a read-only or full store is still listed, swept in memory.
            for r in rows:
                state.sweep(r, now)
            return [r for r in rows if include_finished or r["status"] not in FINAL]
        rows = store.read_all(active_only=not include_finished)
    return [credentials.strip_private(r) for r in rows]


def job_stats(db=None) -> dict:
    """Counts of jobs by status and type, and of sub-tasks by status."""
    rows = list_jobs(include_finished=True, db=db)
    jobs = dict.fromkeys(STATUSES, 0)
    subs = dict.fromkeys(STATUSES, 0)
    types = {}
    for r in rows:
        jobs[r["status"]] = jobs.get(r["status"], 0) + 1
        types[r["type"]] = types.get(r["type"], 0) + 1
        for status, n in state.counts(r).items():
            subs[status] += n
    return {"total_jobs": len(rows), "jobs": jobs, "types": types, "sub_tasks": subs}


def find_subtask_by_agent(agent_id, db=None):
    """``(job_id, sub_task_id)`` of the sub-task whose worker is ``agent_id``
    (its dispatch identity or its linked host agent id), or None. A job whose
    sub-tasks have the wrong shape is passed over; a row the store cannot
    decode at all raises, as every listing does."""
    if not agent_id:
        return None
    # The rows as stored, not swept: a sweep changes statuses, never who a sub-task's worker is.
    for row in store_for(db).read_all():
        try:
            for sub in row["sub_tasks"]:
                if agent_id in (sub["agent_id"], sub.get("host_agent_id")):
                    return row["job_id"], sub["sub_task_id"]
        except (TypeError, KeyError, AttributeError):  # another program's row of the wrong shape: not this one
            continue
    return None


parse_subtask_prompt = prompts.parse_subtask_prompt


def dispatched_launch(prompt, db=None):
    """``(job_id, sub_task_id)`` when ``prompt`` launches a worker that dispatch issued, else None.

    That is: the pointer of a sub-task running now, with the credential
    dispatch issued for it, naming the sub-task's own query
    (``prompts.is_launch_prompt``). The PreToolUse hook approves only such
    launches. A read: the sweep it applies is not stored.
    """
    found = prompts.parse_subtask_prompt(prompt)
    if not found:
        return None
    job_id, sub_task_id, credential = found
    row = store_for(db).read(validate.job_id(job_id))
    if row is None:
        return None
    state.sweep(row, _now())
    sub = state.launched_worker(row, sub_task_id, credential)
    if sub is None or not prompts.is_launch_prompt(prompt, row["job_id"], sub, credential):
        return None
    return row["job_id"], sub_task_id


# -- writing --------------------------------------------------------------

def update_subtask_status(job_id, sub_task_id, status, result=None, agent_id=None, force=False, db=None) -> dict:
    """A worker's report: move one sub-task to ``status``; return the sub-task.

    A result longer than 200 characters is stored cut, with a visible mark.
    When this report finishes the last sub-task, the consolidated result is
    stored in the same transaction.
    """
    sub_task_id = validate.sub_task_id(sub_task_id)
    status = validate.status(status)
    result = validate.result(result)
    agent_id = validate.agent_id(agent_id)
    if not isinstance(force, bool):  # force="no" is truthy: never override ownership by accident
        raise InvalidInput("force must be True or False")
    _, sub = mutate(job_id, lambda row, now: state.report(row, sub_task_id, status, result, agent_id, force, now), db)
    return sub


def update_subtasks(job_id, reports, db=None, starts=()) -> list:
    """Several workers' reports on one job, in one transaction (a runner's batch).

    ``reports`` holds dicts with ``sub_task_id, status`` and optionally
    ``result, agent_id, usage``. Each is checked and applied on its own, exactly as
    :func:`update_subtask_status` would; one refused report does not stop
    the others. ``usage`` (``input_tokens, output_tokens, cost_usd``: what
    the worker cost) is stored on the sub-task its ``agent_id`` owns even
    when the report is refused (a worker that reported itself was paid for
    too); a bad ``usage`` refuses its report. Returns, per report, the updated sub-task or the
    ``BrainError`` that refused it. One commit for many reports is what
    lets a runner keep up with fast sub-tasks on large jobs.

    ``starts`` (dicts ``sub_task_id, agent_id, started_at`` in epoch
    seconds) are the runner's sub-tasks that left the wait for a free slot
    (``state.start``), recorded first in the same transaction. A refused
    start is skipped: that sub-task is no longer the runner's, and its
    report will be refused and say why.
    """
    checked, usages = [], []
    for r in reports:
        try:
            usage = _usage(r.get("usage"))
            checked.append((validate.sub_task_id(r.get("sub_task_id")), validate.status(r.get("status")),
                            validate.result(r.get("result")), validate.agent_id(r.get("agent_id"))))
        except BrainError as exc:
            checked.append(exc)
            usage = None
        usages.append(usage)

    started = [(validate.sub_task_id(s["sub_task_id"]), validate.agent_id(s["agent_id"]), float(s["started_at"]))
               for s in starts]

    def apply(row, now):
        for sub_task_id, agent_id, at in started:
            try:
                state.start(row, sub_task_id, agent_id, at, now)
            except BrainError:
                pass
        outcomes = []
        for item, usage in zip(checked, usages):
            if isinstance(item, BrainError):
                outcomes.append(item)
                continue
            if usage:  # first: the report that ends the job consolidates the totals with it
                try:
                    state.add_usage(row, item[0], item[3], usage, now)
                except BrainError:
                    pass  # not this worker's: its report is refused below and says why
            try:
                outcomes.append(dict(state.report(row, *item, False, now)))
            except BrainError as exc:
                outcomes.append(exc)
        return outcomes

    if not (checked or started):
        return []
    _, outcomes = mutate(job_id, apply, db)
    return outcomes


def _usage(value):
    """A report's ``usage`` as stored, or None: ``input_tokens`` and ``output_tokens``
    (whole numbers) and ``cost_usd``, each optional, none negative."""
    if value is None:
        return None
    if not isinstance(value, dict) or set(value) - set(state.USAGE_KEYS):
        raise InvalidInput(f"usage must be an object with some of {', '.join(state.USAGE_KEYS)}")
    out = {}
    for key in state.USAGE_KEYS:
        number = value.get(key)
        if number is None:
            continue
        if isinstance(number, bool) or not isinstance(number, (int, float)) or not 0 <= number < 1e15:
            raise InvalidInput(f"usage {key} must be a number of at least 0, got {validate.printable(number)}")
        out[key] = round(float(number), 6) if key == "cost_usd" else int(number)
    return out or None


def dispatch_job(job_id, model=DEFAULT_MODEL, files=None, timeout=None, session_id=None, executor=HOST, db=None,
                 runner=None) -> dict:
    """Mark every pending sub-task running, each with its own worker identity
    and deadline, and return one background ``Agent`` call per sub-task:
    ``{"job_id", "agent_calls": [{subagent_type, description, prompt, model, run_in_background}]}``.
    Each prompt carries its worker's credential: this answer is the only
    place it appears, so only the orchestrator should read it.
    ``runner`` (``{"pid", "log"}``) records a headless runner in the history.
    """
    # Checked before anything changes: the files go into every prompt.
    if files:
        files = [validate.query(str(f)) for f in files]
    else:
        files = validate.files(get_job(job_id, db)["data"].get("files"))
    row, started = _start(job_id, model, timeout, session_id, executor, runner, db)
    return {
        "job_id": row["job_id"],
        "agent_calls": [prompts.agent_call(row["job_id"], sub, files, model) for sub in started],
    }


def start_subtasks(job_id, executor, model=DEFAULT_MODEL, timeout=None, runner=None, db=None) -> list:
    """What ``dispatch_job`` does for a headless runner: the sub-tasks it started
    (``sub_task_id, agent_id, label, query, deadline``, ...) instead of ``Agent`` calls.
    ``agent_id`` is each worker's credential (report with it), ``label`` its public identity."""
    _, started = _start(job_id, model, timeout, None, executor, runner, db)
    return started


def _start(job_id, model, timeout, session_id, executor, runner, db):
    if timeout is not None:
        timeout = validate.positive_int(timeout, "timeout (seconds)")
    return mutate(job_id, lambda row, now: state.dispatch(row, model, timeout, session_id, executor, now, runner), db)


def consolidate_subtask_results(job_id, db=None) -> dict:
    """The consolidation dict of the seed, at any moment.

    Keys: ``job_id, total_tasks, completed, failed, results[{sub_task_id,
    query, status, result}], consolidated_at`` plus ``pending, running,
    complete, status``. Once the job is complete this is the stored final
    consolidation, and reading it is noted in the history.
    """
    row = _read(job_id, db)
    if row["consolidated_result"] is not None:
        if state.unread(row):
            try:
                mutate(job_id, state.mark_read, db)
            except StoreError:
                pass  # the note is a courtesy to the Stop hook; reading must not fail for it
        return row["consolidated_result"]
    return state.summary(row, _now())


def retry_subtasks(job_id, sub_task_ids=None, max_attempts=None, db=None) -> list:
    """Put failed sub-tasks back to pending (all failed ones, or those named:
    a list of ids, or one id)."""
    if isinstance(sub_task_ids, str):
        sub_task_ids = [sub_task_ids]
    ids = [validate.sub_task_id(s) for s in (sub_task_ids or [])]
    if max_attempts is not None:
        max_attempts = validate.positive_int(max_attempts, "max attempts")
    _, retried = mutate(job_id, lambda row, now: state.retry(row, ids, max_attempts, now), db)
    return retried


def cancel_job(job_id, db=None) -> dict:
    """Fail every unfinished sub-task with "cancelled" and return the consolidation."""
    row, _ = mutate(job_id, state.cancel, db)
    return row["consolidated_result"] or state.summary(row, _now())


def set_job_status(job_id, status, db=None) -> dict:
    """Move a normal job to ``status`` along the transition table; return the row."""
    status = validate.status(status)
    row, _ = mutate(job_id, lambda row, now: state.set_status(row, status, now), db)
    return record.plain(row)


def link_host_agent(job_id, sub_task_id, host_agent_id, credential, db=None) -> dict:
    """Record the host's agent id for the worker of a sub-task (the PostToolUse hook).

    ``credential`` is the one in the worker's launch prompt; without the one
    dispatch issued for this sub-task, nothing is linked (``Refused``).
    """
    sub_task_id = validate.sub_task_id(sub_task_id)
    host_agent_id = validate.agent_id(host_agent_id)
    credential = validate.agent_id(credential)
    _, sub = mutate(job_id, lambda row, now: state.link_host_agent(row, sub_task_id, host_agent_id, credential, now),
                     db)
    return sub


def recover_final_message(job_id, sub_task_id, host_agent_id, message, credential=None, db=None):
    """Save a host worker's final message when it ended without reporting (the SubagentStop hook).

    The worker must be the host agent linked to the sub-task, or present the
    credential of its launch prompt (read from its transcript when the link
    is not there yet). The message, on one line, is cut like any result
    (``validate.result``). Returns ``"completed"``, ``"failed"`` (no message),
    ``"late_report"`` (the sub-task had failed already: kept in its history)
    or None (the worker had reported). ``Refused`` when the worker is not
    the sub-task's.
    """
    sub_task_id = validate.sub_task_id(sub_task_id)
    host_agent_id = validate.agent_id(host_agent_id)
    credential = validate.agent_id(credential)
    # A NUL would make the whole message invalid: a final message is saved, never refused for it.
    message = validate.result(" ".join((message or "").replace("\x00", " ").split()) or None)
    _, outcome = mutate(job_id, lambda row, now: state.recover_final_message(
        row, sub_task_id, host_agent_id, message, credential, now), db)
    return outcome


def delete_job(job_id, db=None) -> bool:
    """Delete a job now, whatever its state."""
    job_id = validate.job_id(job_id)
    with store_for(db).write() as tx:
        if not tx.delete(job_id):
            raise _not_found(job_id)
    return True


def cleanup_jobs(db=None) -> dict:
    """Expire due jobs, time out overdue sub-tasks, purge jobs past retention.

    Returns counts: ``{"expired", "timed_out", "purged"}``.
    """
    store = store_for(db)
    now = _now()
    overdue = [r["job_id"] for r in store.read_all(active_only=True) if state.needs_sweep(r, now)]
    timed_out = 0
    with store.write() as tx:
        counts = housekeep(tx, now, db, always=True)
        for job_id in overdue:
            row = tx.get(job_id)
            if row is not None and state.sweep(row, now):
                tx.replace(row)
                timed_out += 1
    return {"expired": counts["expired"], "timed_out": timed_out, "purged": counts["purged"]}


def wait_for_commit(timeout, db=None) -> bool:
    """Block until a write is committed to the store, or ``timeout`` seconds pass.

    Returns True when woken by a commit (PostgreSQL: ``LISTEN``/``NOTIFY``;
    SQLite: its data version, looked at every few tens of milliseconds).
    It may wake early, and the first call returns True at once (that is when
    listening starts), so callers look, wait, and look again.
    """
    return store_for(db).wait(timeout)

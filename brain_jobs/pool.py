"""The worker pool's transactions: queue, claim, renew, release.

``brain job dispatch JOB --pool --executor NAME`` queues a job's pending
sub-tasks for the workers of ``NAME``; ``brain worker --executor NAME``
(see ``worker``) claims them one at a time, on any machine that reaches
the store. The rules (what is claimable, leases, lost workers) are pure
functions in ``state`` (section "the worker pool"); each function here is
one write transaction of the store, like everything in ``jobs``.

Finding claimable work uses the one storage-contract extension,
``tx.claimable``: PostgreSQL answers it with ``FOR UPDATE SKIP LOCKED``,
so workers on different jobs never wait for each other; SQLite's write
lock already serialises claims.
"""

import re

from . import state, validate
from .clock import iso, now as _now
from .errors import BrainError, InvalidInput
from .jobs import housekeep, mutate, store_for
from .vocabulary import DEFAULT_MODEL, HOST

_POOL = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}")


def pool_name(value) -> str:
    """An executor name as a pool name: letters, digits and ``_ . : -``, at most 64."""
    if not isinstance(value, str) or not _POOL.fullmatch(value) or value == HOST:
        raise InvalidInput(
            f"invalid worker pool {validate.printable(value)}: name the executor the workers run, "
            "e.g. --executor grep (host is the Claude Code Agent tool, not a pool)"
        )
    return value


def queue_job(job_id, executor, model=DEFAULT_MODEL, files=None, timeout=None, allow_shell=False, db=None) -> dict:
    """Queue every pending sub-task of ``job_id`` for ``brain worker --executor EXECUTOR``.

    Returns ``{"job_id", "pool", "sub_tasks": [ids]}`` at once; workers
    started before or after claim the sub-tasks one by one.
    """
    pool = pool_name(executor)
    if pool == "shell" and not allow_shell:
        from .executors.shell_command import OPT_IN  # only here: it imports subprocess

        raise InvalidInput(OPT_IN)
    if timeout is not None:
        timeout = validate.positive_int(timeout, "timeout (seconds)")
    files = [validate.query(str(f)) for f in files] if files else None
    order = {"files": files, "allow_shell": True if allow_shell else None}
    row, queued = mutate(job_id, lambda row, now: state.queue(row, pool, model, timeout, order, now), db)
    return {"job_id": row["job_id"], "pool": pool, "sub_tasks": [s["sub_task_id"] for s in queued]}


def claim(pool, worker, lease, db=None, skip=None):
    """Claim one sub-task queued for ``pool`` (oldest job first) for ``lease`` seconds.

    Returns ``{"job_id", "sub_task_id", "query", "agent_id", "label",
    "attempt", "deadline", "lease_until", "model", "files", "allow_shell"}``
    or None when nothing is claimable. ``agent_id`` is the credential this
    claim issued (nothing else ever gives it out): the worker reports,
    renews and releases with it. ``label`` is the public identity reads show.

    ``skip`` is a dict the caller keeps from one call to the next,
    ``{job_id: why}``: a job whose row cannot be read or claimed, whatever
    its content (a value the JSON codec refuses, a sub-task of the wrong
    shape), is added to it and passed over, then and in every later call
    that gets the same dict, so one bad row never stops the others.
    """
    skip = {} if skip is None else skip
    now = _now()
    stamp = iso(now)
    with store_for(db).write() as tx:
        housekeep(tx, now, db)
        for job_id in _candidates(tx, pool, stamp, skip):
            try:
                claimed = _claim_in(tx, job_id, pool, worker, lease, now)
            except BrainError:
                raise  # the store itself failed: not this row's doing
            except Exception as exc:  # any content that breaks the decoder or the rules
                skip[job_id] = describe(exc)
                continue
            if claimed is not None:
                return claimed
    return None


def _candidates(tx, pool, stamp, skip) -> list:
    """Jobs with a claimable sub-task, oldest first, those in ``skip`` left out.

    Rows another claimer holds are skipped first; only when every candidate
    is held does one wait its turn (one job, many workers).
    """
    ids = [j for j in tx.claimable(pool, stamp, limit=8 + len(skip)) if j not in skip]
    return ids or [j for j in tx.claimable(pool, stamp, limit=1 + len(skip), wait=True) if j not in skip][:1]


def _claim_in(tx, job_id, pool, worker, lease, now):
    """``claim``'s answer for one locked job, or None; the row is written back when anything changed.

    Everything that reads the row comes before the write, so a row that
    breaks any of it is left as it was.
    """
    row = tx.get(job_id)
    if row is None:
        return None
    before = len(row["history"])
    swept = state.sweep(row, now)
    sub = state.claim(row, pool, worker, lease, now)
    claimed = None
    if sub is not None:
        order = state.queue_order(row)
        claimed = {"job_id": job_id, "sub_task_id": sub["sub_task_id"], "query": sub["query"],
                   "agent_id": sub["agent_id"], "label": sub["label"], "attempt": sub["attempt"],
                   "deadline": sub["deadline"],
                   "lease_until": sub["lease_until"], "model": order.get("model", DEFAULT_MODEL),
                   "files": order.get("files") or row["data"].get("files") or [],
                   "allow_shell": bool(order.get("allow_shell"))}
    if sub is not None or swept or len(row["history"]) != before:
        tx.replace(row)
    return claimed


def describe(exc) -> str:
    """An error in one line for a log: a ``BrainError``'s message; anything else (what a row that
    cannot be read raises) as ``Type: message``."""
    text = " ".join(str(exc).split())
    if isinstance(exc, BrainError):
        return text
    text = text[:160]
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def renew(job_id, leases, lease, db=None) -> list:
    """Extend the leases ``{sub_task_id: agent_id}`` a worker holds in one job; return those it lost."""
    _, lost = mutate(job_id, lambda row, now: state.renew(row, leases, lease, now), db)
    return lost


def release(job_id, sub_task_id, agent_id, reason, db=None) -> dict:
    """Give a claimed sub-task back to the pool (pending, same queue); its identity is retired."""
    _, sub = mutate(job_id, lambda row, now: state.release(row, sub_task_id, agent_id, reason, now), db)
    return sub


def backlog(pool, db=None, skip=None) -> dict:
    """``{"pending", "running"}``: sub-tasks of ``pool`` in unfinished jobs, on any worker.

    Jobs in ``skip`` (see ``claim``) are not counted, and a job whose row
    cannot be read is added to it: a worker that drains the pool does not
    wait for work nobody can do.
    """
    skip = {} if skip is None else skip
    counts = {"pending": 0, "running": 0}
    try:
        rows = store_for(db).read_all(active_only=True)
    except BrainError:
        raise
    except Exception:  # some row cannot be read: read the pool's jobs one by one
        rows = _rows_one_by_one(pool, skip, db)
    for row in rows:
        if row["job_id"] in skip:
            continue
        try:
            mine = [s["status"] for s in row["sub_tasks"] if s.get("pool") == pool]
        except Exception as exc:  # sub-tasks of the wrong shape
            skip[row["job_id"]] = describe(exc)
            continue
        for status in mine:
            if status in counts:
                counts[status] += 1
    return counts


# Later than any lease: every running sub-task of a pool is "claimable" by this time.
_END_OF_TIME = "9999-12-31T23:59:59.999Z"


def _rows_one_by_one(pool, skip, db) -> list:
    """The rows of the unfinished jobs with work queued for ``pool``, each read alone.

    Those that cannot be read go to ``skip``.
    """
    rows = []
    with store_for(db).write() as tx:  # the pool's one query; it changes nothing
        for job_id in tx.claimable(pool, _END_OF_TIME, limit=1_000_000, wait=True):
            if job_id in skip:
                continue
            try:
                row = tx.get(job_id)
            except BrainError:
                raise
            except Exception as exc:  # any content the decoder refuses
                skip[job_id] = describe(exc)
                continue
            if row is not None:
                rows.append(row)
    return rows

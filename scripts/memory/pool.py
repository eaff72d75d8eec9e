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
from .errors import InvalidInput
from .jobs import _housekeep, _mutate, _store

_POOL = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}")


def pool_name(value) -> str:
    """An executor name as a pool name: letters, digits and ``_ . : -``, at most 64."""
    if not isinstance(value, str) or not _POOL.fullmatch(value) or value == "host":
        raise InvalidInput(
            f"invalid worker pool {validate.printable(value)}: name the executor the workers run, "
            "e.g. --executor grep (host is the Claude Code Agent tool, not a pool)"
        )
    return value


def queue_job(job_id, executor, model="haiku", files=None, timeout=None, allow_shell=False, db=None) -> dict:
    """Queue every pending sub-task of ``job_id`` for ``brain worker --executor EXECUTOR``.

    Returns ``{"job_id", "pool", "sub_tasks": [ids]}`` at once; workers
    started before or after claim the sub-tasks one by one.
    """
    pool = pool_name(executor)
    if pool == "shell" and not allow_shell:
        raise InvalidInput("the shell executor runs each sub-task query as a shell command: "
                           "add --allow-shell to this dispatch to opt in (its workers must opt in too)")
    if timeout is not None:
        timeout = validate.positive_int(timeout, "timeout (seconds)")
    files = [validate.query(str(f)) for f in files] if files else None
    order = {"files": files, "allow_shell": True if allow_shell else None}
    row, queued = _mutate(job_id, lambda row, now: state.queue(row, pool, model, timeout, order, now), db)
    return {"job_id": row["job_id"], "pool": pool, "sub_tasks": [s["sub_task_id"] for s in queued]}


def claim(pool, worker, lease, db=None):
    """Claim one sub-task queued for ``pool`` (oldest job first) for ``lease`` seconds.

    Returns ``{"job_id", "sub_task_id", "query", "agent_id", "label",
    "attempt", "deadline", "lease_until", "model", "files", "allow_shell"}``
    or None when nothing is claimable. ``agent_id`` is the credential this
    claim issued (nothing else ever gives it out): the worker reports,
    renews and releases with it. ``label`` is the public identity reads show.
    """
    now = _now()
    stamp = iso(now)
    with _store(db).write() as tx:
        _housekeep(tx, now, db)
        # Rows another claimer holds are skipped first; only when every
        # candidate is held does one wait its turn (one job, many workers).
        ids = tx.claimable(pool, stamp, limit=8) or tx.claimable(pool, stamp, limit=1, wait=True)
        for job_id in ids:
            row = tx.get(job_id)
            if row is None:
                continue
            before = len(row["history"])
            swept = state.sweep(row, now)
            sub = state.claim(row, pool, worker, lease, now)
            if sub is not None or swept or len(row["history"]) != before:
                tx.replace(row)
            if sub is not None:
                order = state.queue_order(row)
                return {"job_id": job_id, "sub_task_id": sub["sub_task_id"], "query": sub["query"],
                        "agent_id": sub["agent_id"], "label": sub["label"], "attempt": sub["attempt"],
                        "deadline": sub["deadline"],
                        "lease_until": sub["lease_until"], "model": order.get("model", "haiku"),
                        "files": order.get("files") or row["data"].get("files") or [],
                        "allow_shell": bool(order.get("allow_shell"))}
    return None


def renew(job_id, leases, lease, db=None) -> list:
    """Extend the leases ``{sub_task_id: agent_id}`` a worker holds in one job; return those it lost."""
    _, lost = _mutate(job_id, lambda row, now: state.renew(row, leases, lease, now), db)
    return lost


def release(job_id, sub_task_id, agent_id, reason, db=None) -> dict:
    """Give a claimed sub-task back to the pool (pending, same queue); its identity is retired."""
    _, sub = _mutate(job_id, lambda row, now: state.release(row, sub_task_id, agent_id, reason, now), db)
    return sub


def backlog(pool, db=None) -> dict:
    """``{"pending", "running"}``: sub-tasks of ``pool`` in unfinished jobs, on any worker."""
    counts = {"pending": 0, "running": 0}
    for row in _store(db).read_all(active_only=True):
        for sub in row["sub_tasks"]:
            if sub.get("pool") == pool and sub["status"] in counts:
                counts[sub["status"]] += 1
    return counts

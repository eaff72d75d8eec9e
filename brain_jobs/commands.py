"""What each ``brain`` command does: one ``cmd_<name>(args)`` per command.

Each takes the parsed arguments, calls the library and prints: data on
stdout, hints on stderr. Errors are raised as ``BrainError``; ``cli.main``
turns them into one line on stderr and an exit code.
"""

import os
import sys

from . import jobs, render
from .errors import InvalidInput
from .vocabulary import HOST


def _emit_json(value) -> None:
    """``--json`` output: indented on a terminal, compact otherwise; nothing invisible raw."""
    print(render.json_text(value, indent=2 if sys.stdout.isatty() else None))


def _hint(text) -> None:
    print(text, file=sys.stderr)


# -- commands ---------------------------------------------------------------

def cmd_create(a):
    data = jobs.validate.data(a.data)
    data["prompt"] = a.prompt
    if a.file:
        data["files"] = a.file
    if a.skills:
        data["skills"] = a.skills
    queries = _create_queries(a)
    distributed = a.distributed or bool(queries)
    job_id = jobs.create_job(
        a.ttl, data, job_type="distributed_search" if distributed else "normal",
        subtasks=queries if distributed else None, db=a.db,
    )
    if a.json:
        _emit_json(jobs.get_job(job_id, db=a.db))
        return
    if a.quiet:
        print(job_id)
        return
    print(f"job_{job_id}")
    if distributed:
        _hint(f"{len(queries)} sub-tasks pending; next: brain job dispatch {job_id}")


def _create_queries(a) -> list:
    """Every sub-task query of ``create``: the --subtask ones, then each --subtasks-from file's
    lines, then one per --glob match; all checked, at most validate.MAX_SUBTASKS in all."""
    from . import queries

    if a.glob and a.query is None:
        raise InvalidInput("--glob needs --query TEMPLATE, e.g. --query 'Find TODOs in {file}'")
    if a.query is not None and not a.glob:
        raise InvalidInput("--query is the template of --glob: add --glob PATTERN")
    if a.subtasks_from.count("-") > 1:
        raise InvalidInput("--subtasks-from - (standard input) can be given once")
    found = [jobs.validate.query(q) for q in a.subtask]
    cap = jobs.validate.MAX_SUBTASKS
    for path in a.subtasks_from:
        found += queries.from_file(path, limit=max(0, cap - len(found)))
    for pattern in a.glob:
        found += queries.from_glob(pattern, a.query, limit=max(0, cap - len(found)))
    if not found and (a.subtasks_from or a.glob):
        why = [f"{'standard input' if p == '-' else p} has no non-blank line" for p in a.subtasks_from]
        why += [f"no regular file matches {p}" for p in a.glob]
        raise InvalidInput("no sub-tasks: " + "; ".join(why))
    return found


def cmd_subtasks(a):
    row = jobs.get_job(a.job, db=a.db)
    if a.json:
        _emit_json(row["sub_tasks"])
    else:
        print(render.subtasks(row["job_id"], row["sub_tasks"], colour=render.use_colour()))


def cmd_update(a):
    sub = jobs.update_subtask_status(
        a.job, a.sub, a.status, result=a.result, agent_id=a.agent_id, force=a.force, db=a.db
    )
    if a.json:
        _emit_json(sub)
    else:
        print(f"{sub['sub_task_id']}: {sub['status']}")


def cmd_dispatch(a):
    from . import config

    settings = config.resolve({"executor": a.executor, "model": a.model, "concurrency": a.concurrency,
                               "base_url": a.base_url})
    if a.pool:
        _dispatch_pool(a, settings)
        return
    if settings["executor"] != HOST:
        _dispatch_headless(a, settings)
        return
    out = jobs.dispatch_job(
        a.job, model=settings["model"], files=a.file, timeout=a.timeout,
        session_id=os.environ.get("CLAUDE_CODE_SESSION_ID"), db=a.db,
    )
    if a.json:
        _emit_json(out)
        return
    calls = out["agent_calls"]
    print(f"Job {out['job_id']}: launch these {len(calls)} Agent calls in ONE message, in the background:")
    for call in calls:
        print(render.json_text(call))


def _dispatch_pool(a, settings):
    from . import pool

    if settings["executor"] == HOST:
        raise InvalidInput("--pool needs --executor NAME: the executor its workers run (brain worker --executor NAME)")
    out = pool.queue_job(a.job, settings["executor"], model=settings["model"], files=a.file, timeout=a.timeout,
                         allow_shell=a.allow_shell, db=a.db)
    if a.json:
        _emit_json(out)
        return
    print(f"job_{out['job_id']}: {len(out['sub_tasks'])} sub-tasks queued for the {out['pool']} worker pool")
    _hint(f"next: brain worker --executor {out['pool']} (on any machine that reaches the store); "
          f"brain job watch {out['job_id']}")


def cmd_worker(a):
    from . import config, worker

    settings = config.resolve({"concurrency": a.concurrency, "base_url": a.base_url})
    executor = a.executor or settings["executor"]
    w = worker.Worker(
        executor, concurrency=settings["concurrency"], lease=_env_seconds(a.lease, "BRAIN_WORKER_LEASE", 30),
        poll=_env_seconds(a.poll, "BRAIN_WORKER_POLL", 5), grace=_env_seconds(a.grace, "BRAIN_WORKER_GRACE", 30),
        drain=a.drain, allow_shell=a.allow_shell, settings=settings, workdir=a.workdir, db=a.db,
    )
    code = w.run()
    if code:
        raise KeyboardInterrupt  # SIGINT: main() maps it to 130


def _env_seconds(flag, name, default) -> float:
    """A positive number of seconds: the flag, else the environment variable, else the default."""
    if flag is not None:
        return flag
    raw = os.environ.get(name)
    if raw in (None, ""):
        return float(default)
    try:
        return seconds(raw)
    except ValueError as exc:
        raise InvalidInput(f"{name}={raw!r}: {exc}") from None


def seconds(text) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 < value <= 86400:  # also refuses nan
        raise ValueError(f"expected a number of seconds above 0 (at most 86400), got {text!r}")
    return value


def _dispatch_headless(a, settings):
    from . import runner

    out = runner.launch(a.job, settings["executor"], settings=settings, model=settings["model"], files=a.file,
                        timeout=a.timeout, allow_shell=a.allow_shell, db=a.db)
    if a.json:
        _emit_json(out)
        return
    print(f"job_{out['job_id']}: {len(out['sub_tasks'])} sub-tasks running with the {out['executor']} executor "
          f"(runner pid {out['pid']})")
    if sys.stderr.isatty():  # for a person; an agent reads every byte (the log is in brain job history)
        _hint(f"log: {out['log']}\nnext: brain job watch {out['job_id']} (live), or brain job wait {out['job_id']} "
              "(one answer at the end)")


def cmd_watch(a):
    from . import watch

    job = jobs.validate.job_id(a.job)
    try:
        code = watch.watch(job, sys.stdout, db=a.db, as_json=a.json)
    except KeyboardInterrupt:
        _still_running(job, "watching")
        raise
    _leave_with(code)


def cmd_wait(a):
    from . import clock, watch

    job = jobs.validate.job_id(a.job)
    try:
        row, timed_out = watch.join(job, timeout=a.timeout, db=a.db)
    except KeyboardInterrupt:
        _still_running(job, "waiting")
        raise
    if timed_out:
        summary = jobs.state.summary(row, clock.now())
    else:  # the stored consolidation, noted as read (the Stop hook stops reminding)
        summary = jobs.consolidate_subtask_results(job, db=a.db)
    if a.json:
        _emit_json(summary)
    else:
        print(watch.joined_text(summary, row if timed_out else None, a.timeout if timed_out else None))
    _leave_with(watch.TIMED_OUT if timed_out else watch.exit_code(row))


def _still_running(job, what) -> None:
    _hint(f"stopped {what}; job {job} goes on in the background: follow it again with "
          f"brain job watch {job}, or brain job wait {job}")


def _leave_with(code) -> None:
    """End the command with ``code``: a job that finished with failures (1) or a wait that ran out
    (124) is a result the output already shows, not an error line."""
    if code:
        raise SystemExit(code)


def cmd_consolidate(a):
    _emit_summary(jobs.consolidate_subtask_results(a.job, db=a.db), a.json)


def _emit_summary(summary, as_json) -> None:
    if as_json:
        _emit_json(summary)
    else:
        print(render.consolidation(summary))


def cmd_list(a):
    rows = jobs.list_jobs(include_finished=a.all, db=a.db)
    if a.json:
        _emit_json([{k: r[k] for k in ("job_id", "type", "status", "created_at", "expires_at")}
                    | {"sub_tasks": len(r["sub_tasks"])} for r in rows])
        return
    for r in rows:
        print(render.job_line(r))
    if not rows:
        _hint("no jobs" if a.all else "no active jobs (brain job list --all shows finished ones)")


def cmd_get(a):
    row = jobs.get_job(a.job, db=a.db)
    if a.json:
        _emit_json(row)
        return
    for key in ("job_id", "type", "status", "created_at", "expires_at", "ttl", "iteration"):
        print(f"{key}: {render.printable(row[key])}")
    print(f"data: {render.json_text(row['data'])}")
    if row["sub_tasks"]:
        counts = jobs.state.counts(row)
        print("sub_tasks: " + ", ".join(f"{n} {s}" for s, n in counts.items()))


def cmd_delete(a):
    jobs.delete_job(a.job, db=a.db)
    _hint(f"deleted job {jobs.validate.job_id(a.job)}")


def cmd_cleanup(a):
    counts = jobs.cleanup_jobs(db=a.db)
    if a.json:
        _emit_json(counts)
    else:
        print(", ".join(f"{n} {k.replace('_', ' ')}" for k, n in counts.items()))


def cmd_stats(a):
    stats = jobs.job_stats(db=a.db)
    if a.json:
        _emit_json(stats)
        return
    print(f"jobs: {stats['total_jobs']} (" + ", ".join(f"{n} {s}" for s, n in stats["jobs"].items()) + ")")
    print("sub-tasks: " + ", ".join(f"{n} {s}" for s, n in stats["sub_tasks"].items()))


def cmd_status(a):
    row = jobs.set_job_status(a.job, a.set, db=a.db) if a.set else jobs.get_job(a.job, db=a.db)
    if a.json:
        _emit_json({"job_id": row["job_id"], "status": row["status"]})
    else:
        print(render.printable(row["status"]))


def cmd_history(a):
    events = jobs.get_history(a.job, db=a.db)
    if a.json:
        _emit_json(events)
        return
    for ev in events:
        rest = " ".join(f"{k}={v}" for k, v in ev.items() if k not in ("at", "event"))
        print(render.printable(f"{ev['at']}  {ev['event']:<16} {rest}".rstrip()))


def cmd_retry(a):
    retried = jobs.retry_subtasks(a.job, a.subs, max_attempts=a.max_attempts, db=a.db)
    if a.json:
        _emit_json({"job_id": jobs.validate.job_id(a.job), "retried": retried})
    else:
        print("retried: " + (" ".join(retried) or "the job"))
        _hint(f"next: brain job dispatch {jobs.validate.job_id(a.job)}")


def cmd_cancel(a):
    _emit_summary(jobs.cancel_job(a.job, db=a.db), a.json)

"""The headless runner: runs a job's dispatched sub-tasks in the background.

``launch`` runs in ``brain job dispatch --executor NAME``. It checks that the
executor can run here (before anything changes), starts the runner as a
detached process (its own session and process group, stdin a pipe, output
to a log file under ``runners/`` next to the store), dispatches the job
through the ordinary API with the runner's pid and log in the history
event, sends the runner its work order on stdin and returns.

The runner (``python -m scripts.memory.runner``) runs the sub-tasks in
threads, at most ``concurrency`` at once, and reports each one through
``jobs.update_subtask_status`` with the identity dispatch gave it, like
any worker. A sub-task that raises fails alone. No work of the runner
outlives it or its deadline: commands run under a guard
(``executors.base.run_bounded``) that kills their whole process group at
their timeout or when the runner dies, however it dies. SIGTERM or SIGINT
kills the running commands and fails every unfinished sub-task with
``runner stopped (SIGTERM)``. If the runner is killed outright, its
sub-tasks are never reported and time out at their deadline.
"""

import json
import os
import signal
import subprocess
import sys
import threading
import time
import traceback
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from pathlib import Path

from . import executors, jobs, render, validate
from .clock import epoch, now_iso
from .errors import BrainError, OperationalError
from .executors.base import stop_commands
from .paths import default_target
from .pool import describe

ROOT = Path(__file__).resolve().parents[2]


def log_dir(db=None) -> str:
    """``runners/`` beside the SQLite file, or under ``~/.brain`` for a database URL."""
    target = db or default_target()
    if "://" in target:
        base = os.path.join(os.path.expanduser("~"), ".brain")
    else:
        base = os.path.dirname(os.path.abspath(target))
    return os.path.join(base, "runners")


def _open_log(job_id, db):
    directory = log_dir(db)
    os.makedirs(directory, mode=0o700, exist_ok=True)
    path = os.path.join(directory, f"job_{job_id}-{os.urandom(3).hex()}.log")
    return path, os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)


def _context(job_id, executor, model, settings, files, workdir, allow_shell, db):
    """The executor's view of a work order (file paths made absolute)."""
    absolute = [os.path.normpath(os.path.join(workdir, os.path.expanduser(f))) for f in files]
    return executors.Context(job_id=job_id, workdir=workdir, files=absolute, model=model, settings=settings,
                             db=db, allow_shell=allow_shell)


_DETACHED = []


def _reap() -> None:
    _DETACHED[:] = [p for p in _DETACHED if p.poll() is None]


def _prepare(job_id, executor, settings, model, files, allow_shell, workdir, db):
    """Check everything that can be checked before the job changes; return the work order's base."""
    job_id = validate.job_id(job_id)
    target = db or default_target()
    workdir = os.path.realpath(workdir or os.getcwd())
    row = jobs.get_job(job_id, db=target)
    files = [validate.query(str(f)) for f in (files or row["data"].get("files") or [])]
    ctx = _context(job_id, executor, model, settings, files, workdir, allow_shell, target)
    executors.create(executor, ctx).check()
    return {"job_id": job_id, "executor": executor, "model": model, "settings": settings, "files": files,
            "workdir": workdir, "allow_shell": allow_shell, "db": target}


def _dispatch(order, timeout, runner=None) -> dict:
    """Dispatch the job and complete ``order`` with the started sub-tasks and their identities."""
    started = jobs.start_subtasks(order["job_id"], order["executor"], model=order["model"], timeout=timeout,
                                  runner=runner, db=order["db"])
    order["tasks"] = [{k: sub[k] for k in ("sub_task_id", "agent_id", "query", "deadline")} for sub in started]
    return order


def launch(job_id, executor, *, settings, model="haiku", files=None, timeout=None, allow_shell=False,
           workdir=None, db=None) -> dict:
    """Dispatch ``job_id`` to a detached runner of ``executor``; return at once.

    Returns ``{"job_id", "executor", "pid", "log", "sub_tasks": [ids]}``.
    ``files`` default to the job's ``data.files``; relative paths are taken
    from ``workdir`` (default: the current directory), which is also the
    only directory file-reading executors may read. Nothing changes when
    the executor cannot run here (``Executor.check``).
    """
    _reap()
    order = _prepare(job_id, executor, settings, model, files, allow_shell, workdir, db)
    log_path, log_fd = _open_log(order["job_id"], order["db"])
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    try:
        proc = subprocess.Popen(
            [sys.executable, "-m", "scripts.memory.runner"], stdin=subprocess.PIPE, stdout=log_fd,
            stderr=subprocess.STDOUT, cwd=order["workdir"], env=env, start_new_session=True, close_fds=True,
        )
    finally:
        os.close(log_fd)
    try:
        _dispatch(order, timeout, runner={"pid": proc.pid, "log": log_path})
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    try:
        proc.stdin.write(json.dumps(order).encode())
        proc.stdin.close()
    except BrokenPipeError:
        for task in order["tasks"]:
            _report(order, task, "failed", f"runner did not start; see {log_path}")
        raise OperationalError(f"the runner exited before it got its work; see {log_path}") from None
    # Detached on purpose: nobody waits for it here. Keep a handle so a long-lived
    # caller reaps it later (see _reap) instead of leaving a zombie.
    _DETACHED.append(proc)
    return {"job_id": order["job_id"], "executor": executor, "pid": proc.pid, "log": log_path,
            "sub_tasks": [t["sub_task_id"] for t in order["tasks"]]}


def run_here(job_id, executor, *, settings, model="haiku", files=None, timeout=None, allow_shell=False,
             workdir=None, db=None) -> int:
    """Like ``launch``, but run the sub-tasks in this process and return the number that failed."""
    order = _prepare(job_id, executor, settings, model, files, allow_shell, workdir, db)
    return run(_dispatch(order, timeout, runner={"pid": os.getpid(), "foreground": True}))


# -- the runner process -------------------------------------------------------

_log_lock = threading.Lock()


def log(*messages) -> None:
    """One timestamped line per message, written and flushed together."""
    stamp = now_iso()
    with _log_lock:
        sys.stdout.write("".join(f"{stamp} {render.printable(m)}\n" for m in messages))
        sys.stdout.flush()


class _Ownership:
    """Which sub-tasks are still this runner's, without re-reading the job for each one.

    A sub-task stops being ours when we report it, or when someone else
    cancels, retries or times it out. The job is read again only when some
    connection has committed since the last read (``jobs.wait_for_commit``
    with no wait: SQLite's data version, PostgreSQL's NOTIFY), so checking
    before each start costs nothing while nothing changes.
    """

    def __init__(self, order):
        self._order = order
        self._lock = threading.Lock()
        self._owned = {}

    def check(self, task) -> bool:
        with self._lock:
            try:
                if jobs.wait_for_commit(0, db=self._order["db"]):
                    row = jobs.get_job(self._order["job_id"], db=self._order["db"])
                    self._owned = {s["sub_task_id"]: (s["status"], s["agent_id"]) for s in row["sub_tasks"]}
            except Exception as exc:  # a store error, or a row it cannot read: skip, say why
                log(f"{task['sub_task_id']}: skipped: {describe(exc)}")
                return False
            status, agent = self._owned.get(task["sub_task_id"], (None, None))
        if status == "running" and agent == task["agent_id"]:
            return True
        log(f"{task['sub_task_id']}: skipped: it is {status} (no longer this runner's)")
        return False

    def release(self, sub_task_id):
        with self._lock:
            self._owned[sub_task_id] = ("reported", None)


def _attempt(executor, ownership, task, stop):
    if stop.reason is not None:
        return "failed", f"runner stopped ({stop.reason}) before it ran"
    if not ownership.check(task):
        return None
    try:
        return "completed", executor.run(task["query"], task)
    except executors.Failed as exc:
        return "failed", str(exc) or "failed"
    except Exception as exc:  # one sub-task's bug must not take the others down
        log(f"{task['sub_task_id']}: {''.join(traceback.format_exception_only(type(exc), exc)).strip()}")
        return "failed", f"{type(exc).__name__}: {exc}"


def _report(order, task, status, result) -> bool:
    try:
        jobs.update_subtask_status(order["job_id"], task["sub_task_id"], status, result,
                                   agent_id=task["agent_id"], db=order["db"])
    except BrainError as exc:
        log(f"{task['sub_task_id']}: report not stored: {exc}")
        return False
    log(f"{task['sub_task_id']} {status}: {validate.result(result)}")
    return True


def _report_batch(order, batch, ownership) -> None:
    """Report every finished task of ``batch`` (task, status, result) in one transaction."""
    reports = [{"sub_task_id": t["sub_task_id"], "status": st, "result": r, "agent_id": t["agent_id"]}
               for t, st, r in batch]
    try:
        outcomes = jobs.update_subtasks(order["job_id"], reports, db=order["db"])
    except Exception as exc:  # the job is gone, expired or unreadable, or the store unusable
        outcomes = [exc] * len(batch)
    lines = []
    for (task, status, result), outcome in zip(batch, outcomes):
        ownership.release(task["sub_task_id"])
        if isinstance(outcome, Exception):
            lines.append(f"{task['sub_task_id']}: report not stored: {describe(outcome)}")
        else:
            lines.append(f"{task['sub_task_id']} {status}: {validate.result(result)}")
    log(*lines)


# Seconds between two looks of the runner's loop at a stop signal and at overdue sub-tasks.
SLICE = 0.25
# Seconds past a sub-task's deadline before the runner stops waiting for its executor: the
# executor's own timeout (bounded by the deadline) normally ends it first, and reports why.
OVERDUE_GRACE = 2.0


class _Stop:
    """Why the runner is stopping (a signal's name), or None; set by SIGTERM and SIGINT."""

    def __init__(self):
        self.reason = None

    def __call__(self, signum, frame):
        self.reason = signal.Signals(signum).name

    def install(self) -> dict:
        """Handle SIGTERM and SIGINT (from the main thread only); return the handlers to put back."""
        if threading.current_thread() is not threading.main_thread():
            return {}
        return {s: signal.signal(s, self) for s in (signal.SIGTERM, signal.SIGINT)}


def run(order, stop=None) -> int:
    """Run every task of ``order`` and report it; return the number of failed sub-tasks.

    SIGTERM or SIGINT (caught here when called from the main thread) stops
    the run: running commands are killed with their process groups
    (``executors.base.stop_commands``) and every unfinished sub-task is
    reported failed with ``runner stopped (SIGTERM)``. A sub-task whose
    executor is still busy ``OVERDUE_GRACE`` seconds past its deadline is
    left behind (the store times it out) so that no executor keeps the
    runner past its deadlines; ``stop.abandoned`` counts them.
    """
    stop = stop or _Stop()
    stop.abandoned = 0
    previous = stop.install()
    try:
        return _run(order, stop)
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def _run(order, stop) -> int:
    tasks = order["tasks"]
    settings = order["settings"]
    ctx = _context(order["job_id"], order["executor"], order["model"], settings, order["files"],
                   order["workdir"], order["allow_shell"], order["db"])
    deadlines = [epoch(t["deadline"]) for t in tasks if t.get("deadline")]
    ctx.deadline = min(deadlines) if deadlines else None
    workers = max(1, min(int(settings.get("concurrency", 4)), len(tasks)))
    log(f"runner {os.getpid()}: job {order['job_id']}, executor {order['executor']}, "
        f"{len(tasks)} sub-tasks, concurrency {workers}")
    try:
        executor = executors.create(order["executor"], ctx)
    except Exception as exc:
        for task in tasks:
            _report(order, task, "failed", f"executor {order['executor']} unavailable: {exc}")
        return len(tasks)
    failed = 0
    ownership = _Ownership(order)
    # Not ``with``: leaving it waits for every thread, and one whose executor
    # ignores its deadline must not hold the runner (see ``main``).
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="brain-runner")
    try:
        pending = {pool.submit(_attempt, executor, ownership, task, stop): task for task in tasks}
        # When to stop waiting for each: parsed once, not at every turn of the loop.
        overdue_at = {f: epoch(t["deadline"]) + OVERDUE_GRACE for f, t in pending.items() if t.get("deadline")}
        while pending:
            # Everything that finished while the last batch was being
            # stored goes into the next one: one commit for many reports.
            done, _ = wait(pending, timeout=SLICE, return_when=FIRST_COMPLETED)
            batch = []
            for future in done:
                task = pending.pop(future)
                overdue_at.pop(future, None)
                outcome = future.result()
                if outcome is not None:
                    batch.append((task, *outcome))
            if stop.reason is not None and pending:
                stopped = stop_commands(f"runner stopped ({stop.reason})")
                log(f"runner {os.getpid()}: {stop.reason}: stopping {len(pending)} unfinished sub-task(s), "
                    f"{stopped} command(s) killed")
                batch.extend((pending.pop(f), "failed", f"runner stopped ({stop.reason})") for f in list(pending))
            else:
                stop.abandoned += _leave_overdue(pending, overdue_at)
            failed += sum(status == "failed" for _, status, _ in batch)
            if batch:
                _report_batch(order, batch, ownership)
    finally:
        pool.shutdown(wait=False, cancel_futures=True)
        executor.close()
    log(f"runner {os.getpid()}: done, {len(tasks) - failed} of {len(tasks)} not failed"
        + (f", stopped by {stop.reason}" if stop.reason else ""))
    return failed


def _leave_overdue(pending, overdue_at) -> int:
    """Stop waiting for sub-tasks ``OVERDUE_GRACE`` seconds past their deadline; return how many."""
    now = time.time()
    if not overdue_at or now <= min(overdue_at.values()):
        return 0
    overdue = [f for f in pending if now > overdue_at.get(f, now)]
    for future in overdue:
        task = pending.pop(future)
        del overdue_at[future]
        log(f"{task['sub_task_id']}: still running past its deadline ({task['deadline']}): left behind, "
            "the store times it out")
    return len(overdue)


def main() -> int:
    stop = _Stop()
    stop.install()  # before reading the order: a stop that comes first still ends the run cleanly
    raw = sys.stdin.read()
    if not raw.strip():
        log("no work order: the dispatching process ended before sending it; nothing to do "
            "(the sub-tasks time out at their deadline)")
        return 1
    try:
        run(json.loads(raw), stop)
    except BaseException as exc:
        # Whatever ended the run, its commands end with it (the guards also
        # see this process die; this is sooner).
        stop_commands("runner crashed")
        log(f"runner {os.getpid()}: crashed: {describe(exc)}")
        raise
    code = 128 + signal.Signals[stop.reason] if stop.reason else 0
    if stop.reason or stop.abandoned:
        # Threads may still be inside executors (one past its deadline, or any
        # after a stop): the runner does not wait for them, they end with it.
        sys.stdout.flush()
        os._exit(code)
    return code


if __name__ == "__main__":
    sys.exit(main())

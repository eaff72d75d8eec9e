"""The headless runner: runs a job's dispatched sub-tasks in the background.

``launch`` runs in ``brain job dispatch --executor NAME``. It checks that the
executor can run here (before anything changes), starts the runner as a
detached process (its own session and process group, stdin a pipe, output
to a log file under ``runners/`` next to the store), dispatches the job
through the ordinary API with the runner's pid and log in the history
event, sends the runner its work order on stdin and returns.

The runner (``python -m brain_jobs.runner``) runs the sub-tasks in
threads, at most ``concurrency`` at once, and reports each one through
``jobs.update_subtask_status`` with the identity dispatch gave it, like
any worker. A sub-task waits for a free thread without timing out: its
start is recorded when a thread takes it up, and its deadline counts from
then. A sub-task that raises fails alone. No work of the runner outlives it
or its deadline: commands run under a guard (``executors.base.run_bounded``)
that kills their whole process group at their timeout or when the runner
dies, however it dies. SIGTERM or SIGINT kills the running commands and
fails every unfinished sub-task with ``runner stopped (SIGTERM)``. If the
runner is killed outright, its started sub-tasks are never reported and time
out at their deadline; those still waiting fail when the job expires.
"""

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
import traceback
from concurrent.futures import ThreadPoolExecutor

from . import clock, executors, jobs, render, validate
from .clock import epoch, now_iso
from .errors import BrainError, OperationalError
from .executors.base import stop_commands
from .paths import PACKAGE_PARENT, default_target, private_dirs
from .pool import describe
from .vocabulary import DEFAULT_MODEL



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
    private_dirs(directory)
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
    files = [validate.query(str(f)) for f in files] if files else validate.files(row["data"].get("files"))
    ctx = _context(job_id, executor, model, settings, files, workdir, allow_shell, target)
    executors.create(executor, ctx).check()
    return {"job_id": job_id, "executor": executor, "model": model, "settings": settings, "files": files,
            "workdir": workdir, "allow_shell": allow_shell, "db": target}


def _dispatch(order, timeout, runner=None) -> dict:
    """Dispatch the job and complete ``order`` with the started sub-tasks and their identities."""
    started = jobs.start_subtasks(order["job_id"], order["executor"], model=order["model"], timeout=timeout,
                                  runner=runner, db=order["db"])
    # ``agent_id`` is each task's credential, handed out by this dispatch only; ``label`` is what reads show.
    order["tasks"] = [{k: sub.get(k) for k in ("sub_task_id", "agent_id", "label", "query", "deadline", "timeout")}
                      for sub in started]
    return order


def launch(job_id, executor, *, settings, model=DEFAULT_MODEL, files=None, timeout=None, allow_shell=False,
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
    env["PYTHONPATH"] = os.pathsep.join(p for p in (PACKAGE_PARENT, env.get("PYTHONPATH")) if p)
    try:
        proc = subprocess.Popen(
            [sys.executable, "-m", "brain_jobs.runner"], stdin=subprocess.PIPE, stdout=log_fd,
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


def run_here(job_id, executor, *, settings, model=DEFAULT_MODEL, files=None, timeout=None, allow_shell=False,
             workdir=None, db=None) -> int:
    """Like ``launch``, but run the sub-tasks in this process and return the number that failed."""
    order = _prepare(job_id, executor, settings, model, files, allow_shell, workdir, db)
    return run(_dispatch(order, timeout, runner={"pid": os.getpid(), "foreground": True}))


# -- the runner process -------------------------------------------------------

_log_lock = threading.Lock()
# Seconds a start waits for a report to share its commit: what `brain job subtasks`
# may lag behind a start. Its deadline counts from the start itself.
START_DELAY = 0.2


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
        if status == "running" and agent == task["label"]:
            return True
        log(f"{task['sub_task_id']}: skipped: it is {status} (no longer this runner's)")
        return False

    def release(self, sub_task_id):
        with self._lock:
            self._owned[sub_task_id] = ("reported", None)


class _TaskContext(executors.Context):
    """The executors' context in a runner, whose ``deadline`` is that of the sub-task the
    calling thread runs: each counts from its own start (``state.start``)."""

    _threads = threading.local()  # one runner, one context per process

    @property
    def deadline(self):
        return getattr(self._threads, "deadline", None)

    @deadline.setter
    def deadline(self, value):
        self._threads.deadline = value


def _attempt(executor, ownership, task, started=None, stop=None):
    """Run one task: ``(status, result, usage)``, or None when it is no longer ours.
    ``usage`` is what the executor measured (``executors.Answer``, ``Failed.usage``), or None."""
    if stop is not None and stop.reason is not None:
        return "failed", f"runner stopped ({stop.reason}) before it ran", None
    if not ownership.check(task):
        return None
    if started is not None:
        started(task)
    try:
        answer = executor.run(task["query"], task)
        return "completed", str(answer), getattr(answer, "usage", None)
    except executors.Failed as exc:
        return "failed", str(exc) or "failed", exc.usage
    except Exception as exc:  # one sub-task's bug must not take the others down
        log(f"{task['sub_task_id']}: {''.join(traceback.format_exception_only(type(exc), exc)).strip()}")
        return "failed", f"{type(exc).__name__}: {exc}", None


def _report(order, task, status, result) -> bool:
    try:
        jobs.update_subtask_status(order["job_id"], task["sub_task_id"], status, result,
                                   agent_id=task["agent_id"], db=order["db"])
    except BrainError as exc:
        log(f"{task['sub_task_id']}: report not stored: {exc}")
        return False
    log(f"{task['sub_task_id']} {status}: {validate.result(result)}")
    return True


def _report_batch(order, batch, ownership, starts=()) -> None:
    """Report every finished task of ``batch`` (task, status, result, usage) in one transaction,
    with the ``starts`` (task, epoch seconds) of tasks that a thread took up since the last one."""
    reports = [{"sub_task_id": t["sub_task_id"], "status": st, "result": r, "agent_id": t["agent_id"], "usage": u}
               for t, st, r, u in batch]
    begun = [{"sub_task_id": t["sub_task_id"], "agent_id": t["agent_id"], "started_at": at} for t, at in starts]
    try:
        outcomes = jobs.update_subtasks(order["job_id"], reports, db=order["db"], starts=begun)
    except Exception as exc:  # the job is gone, expired or unreadable, or the store unusable
        outcomes = [exc] * len(batch)
    lines = []
    for (task, status, result, _), outcome in zip(batch, outcomes):
        ownership.release(task["sub_task_id"])
        if isinstance(outcome, Exception):
            lines.append(f"{task['sub_task_id']}: report not stored: {describe(outcome)}")
        else:
            lines.append(f"{task['sub_task_id']} {status}: {validate.result(result)}")
    if lines:
        log(*lines)


def _record(order, ownership, events, tasks, limits, stop) -> int:
    """Store what the threads tell until every task is done; return how many failed.

    The threads tell when they start a task and when they finish one.
    Everything told while the last batch was being stored goes into the
    next one: one commit for many starts and reports. A task runs as soon
    as a thread takes it up; until its start is stored (with the next
    report, or after START_DELAY) it keeps the provisional deadline dispatch
    gave it, the job's expiry, and its own deadline counts from the start.

    It also looks, at least every SLICE seconds, at ``stop`` (SIGTERM,
    SIGINT: every unfinished task is failed and its command killed) and at
    started tasks ``OVERDUE_GRACE`` seconds past their deadline (``limits``:
    sub_task_id -> epoch seconds, set when a thread starts one), which are
    left behind for the store to time out, counted in ``stop.abandoned``.
    """
    failed = 0
    unfinished = {t["sub_task_id"]: t for t in tasks}
    starts, batch, first = [], [], None
    while unfinished:
        # Reports go at once; starts alone wait up to START_DELAY for one to go with.
        wait_for = SLICE if first is None else min(SLICE, first + START_DELAY - time.monotonic())
        for kind, task, value in _told(events, wait_for):
            if kind == "start":
                starts.append((task, value))
                first = first or time.monotonic()
            elif unfinished.pop(task["sub_task_id"], None) is not None and value is not None:
                failed += value[0] == "failed"
                batch.append((task, *value))
        if stop.reason is not None and unfinished:
            stopped = stop_commands(f"runner stopped ({stop.reason})")
            log(f"runner {os.getpid()}: {stop.reason}: stopping {len(unfinished)} unfinished sub-task(s), "
                f"{stopped} command(s) killed")
            batch.extend((t, "failed", f"runner stopped ({stop.reason})", None) for t in unfinished.values())
            failed += len(unfinished)
            unfinished.clear()
        else:
            stop.abandoned += _leave_overdue(unfinished, limits)
        if batch or (starts and (not unfinished or time.monotonic() >= first + START_DELAY)):
            _report_batch(order, batch, ownership, starts)
            starts, batch, first = [], [], None
    return failed


# Seconds between two looks of the runner's loop at a stop signal and at overdue sub-tasks.
SLICE = 0.25
# Seconds past a sub-task's deadline before the runner stops waiting for its executor: the
# executor's own timeout (bounded by the deadline) normally ends it first, and reports why.
OVERDUE_GRACE = 2.0


def _leave_overdue(unfinished, limits) -> int:
    """Stop waiting for started tasks ``OVERDUE_GRACE`` seconds past their deadline; return how many."""
    now = clock.now()
    overdue = [s for s in unfinished if limits.get(s) is not None and now > limits[s] + OVERDUE_GRACE]
    for sub_task_id in overdue:
        unfinished.pop(sub_task_id)
        log(f"{sub_task_id}: still running past its deadline: left behind, the store times it out")
    return len(overdue)


class _Stop:
    """Why the runner is stopping (a signal's name), or None; set by SIGTERM and SIGINT."""

    def __init__(self):
        self.reason = None
        self.abandoned = 0

    def __call__(self, signum, frame):
        self.reason = signal.Signals(signum).name

    def install(self) -> dict:
        """Handle SIGTERM and SIGINT (from the main thread only); return the handlers to put back."""
        if threading.current_thread() is not threading.main_thread():
            return {}
        return {s: signal.signal(s, self) for s in (signal.SIGTERM, signal.SIGINT)}


def _told(events, timeout) -> list:
    """What the threads told: the first event (waiting up to ``timeout`` seconds; None: until
    there is one) and everything already queued after it."""
    told = []
    try:
        told.append(events.get(timeout=None if timeout is None else max(0.0, timeout)))
        while True:
            told.append(events.get_nowait())
    except queue.Empty:
        return told


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
    ctx = _TaskContext(**vars(_context(order["job_id"], order["executor"], order["model"], settings,
                                       order["files"], order["workdir"], order["allow_shell"], order["db"])))
    limits = {d: epoch(d) for d in {t["deadline"] for t in tasks if t.get("deadline")}}
    workers = max(1, min(int(settings.get("concurrency", 4)), len(tasks)))
    log(f"runner {os.getpid()}: job {order['job_id']}, executor {order['executor']}, "
        f"{len(tasks)} sub-tasks, concurrency {workers}")
    try:
        executor = executors.create(order["executor"], ctx)
    except Exception as exc:
        for task in tasks:
            _report(order, task, "failed", f"executor {order['executor']} unavailable: {exc}")
        return len(tasks)
    ownership = _Ownership(order)
    events = queue.SimpleQueue()
    started_limits = {}  # sub_task_id -> its deadline once a thread started it (epoch seconds)

    def started(task):
        at = clock.now()
        limit = limits.get(task.get("deadline"))
        if task.get("timeout"):
            limit = min(at + task["timeout"], limit) if limit else at + task["timeout"]
        ctx.deadline = limit  # this thread's task: what state.start will store
        started_limits[task["sub_task_id"]] = limit
        events.put(("start", task, at))

    def work(task):
        outcome = None
        try:
            outcome = _attempt(executor, ownership, task, started, stop)
        except Exception as exc:  # not the executor's (``_attempt`` keeps those): say it, report nothing
            log(f"{task['sub_task_id']}: not run: {''.join(traceback.format_exception_only(type(exc), exc)).strip()}")
        finally:
            events.put(("done", task, outcome))

    # Not ``with``: leaving it waits for every thread, and one whose executor
    # ignores its deadline must not hold the runner (see ``main``).
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="brain-runner")
    try:
        for task in tasks:
            pool.submit(work, task)
        failed = _record(order, ownership, events, tasks, started_limits, stop)
    finally:
        pool.shutdown(wait=False, cancel_futures=True)
        executor.close()
    log(f"runner {os.getpid()}: done, {len(tasks) - failed} of {len(tasks)} not failed"
        + (f", stopped by {stop.reason}" if stop.reason else ""))
    return failed


def main() -> int:
    render.tolerant_output()  # PYTHONIOENCODING=ascii or a C locale must not end the runner at its first log line
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

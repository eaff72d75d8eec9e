"""The headless runner: runs a job's dispatched sub-tasks in the background.

``launch`` runs in ``brain job dispatch --executor NAME``. It checks that the
executor can run here (before anything changes), starts the runner as a
detached process (its own session and process group, stdin a pipe, output
to a log file under ``runners/`` next to the store), dispatches the job
through the ordinary API with the runner's pid and log in the history
event, sends the runner its work order on stdin and returns.

The runner (``python -m brain_jobs.runner``) gives the sub-tasks to
the execution engine (``engine``, which ``brain worker`` uses too): they
run in threads, at most ``concurrency`` at once, and each is reported with
the identity dispatch gave it, like any worker, many starts and reports in
one transaction (``jobs.update_subtasks``). A sub-task waits for a free
thread without timing out: its start is recorded when a thread takes it up, and its deadline counts from
then. A sub-task that raises fails alone. No work of the runner outlives it
or its deadline: commands run under a guard (``executors.base.run_bounded``)
that kills their whole process group at their timeout or when the runner
dies, however it dies. SIGTERM, SIGINT or SIGHUP kills the running commands and
fails every unfinished sub-task with ``runner stopped (SIGTERM)``. If the
runner is killed outright, its started sub-tasks are never reported and time
out at their deadline; those still waiting fail when the job expires.
"""

import json
import os
import signal
import subprocess
import sys
import threading

from . import engine, executors, jobs, render, validate
from .clock import now_iso
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
    ctx = engine.context(job_id, workdir=workdir, files=files, model=model, settings=settings,
                         allow_shell=allow_shell, db=target)
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


def log(*messages) -> None:
    """One timestamped line per message, written and flushed together."""
    stamp = now_iso()
    with _log_lock:
        sys.stdout.write("".join(f"{stamp} {render.printable(m)}\n" for m in messages))
        sys.stdout.flush()


class _Ownership:
    """Which sub-tasks are still this runner's, without re-reading the job for each one.

    A sub-task stops being ours when someone else cancels, retries or times
    it out. The job is read again only when some connection has committed
    since the last read (``jobs.wait_for_commit`` with no wait: SQLite's
    data version, PostgreSQL's NOTIFY), so checking before each start costs
    nothing while nothing changes.
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


class _Policy(engine.Policy):
    """The runner's part: one job's fixed tasks, each checked as still ours before it starts, its
    start stored; a stop fails every unfinished task at once."""

    record_starts = True
    thread_name = "brain-runner"
    who = "runner"

    def __init__(self, ownership):
        self.ownership = ownership

    def name(self, task) -> str:
        return task["sub_task_id"]

    def owns(self, task) -> bool:
        return self.ownership.check(task)

    def stopped(self, tasks, killed, reason) -> list:
        log(f"runner {os.getpid()}: {reason}: stopping {len(tasks)} unfinished sub-task(s), "
            f"{killed} command(s) killed")
        return super().stopped(tasks, killed, reason)


def _report(order, task, status, result) -> bool:
    try:
        jobs.update_subtask_status(order["job_id"], task["sub_task_id"], status, result,
                                   agent_id=task["agent_id"], db=order["db"])
    except BrainError as exc:
        log(f"{task['sub_task_id']}: report not stored: {exc}")
        return False
    log(f"{task['sub_task_id']} {status}: {validate.result(result)}")
    return True


def run(order, stop=None) -> int:
    """Run every task of ``order`` and report it; return the number of failed sub-tasks.

    The tasks run in the execution engine (``engine``), at most
    ``settings.concurrency`` at once, their starts and reports stored in
    batches. SIGTERM, SIGINT or SIGHUP (caught here when called from the main
    thread) stops the run: running commands are killed with their process
    groups and every unfinished sub-task is reported failed with ``runner
    stopped (SIGTERM)``. A sub-task whose executor is still busy
    ``engine.OVERDUE_GRACE`` seconds past its deadline is left behind (the
    store times it out) so that no executor keeps the runner past its
    deadlines; ``stop.abandoned`` counts them.
    """
    stop = stop or engine.Stop()
    stop.abandoned = 0
    previous = stop.install()
    try:
        return _run(order, stop)
    finally:
        stop.restore(previous)


def _run(order, stop) -> int:
    job_id = order["job_id"]
    tasks = [dict(t, job_id=job_id) for t in order["tasks"]]
    ctx = engine.context(job_id, workdir=order["workdir"], files=order["files"], model=order["model"],
                         settings=order["settings"], allow_shell=order["allow_shell"], db=order["db"],
                         cls=engine.TaskContext)
    workers = max(1, min(int(order["settings"].get("concurrency", 4)), len(tasks)))
    log(f"runner {os.getpid()}: job {job_id}, executor {order['executor']}, "
        f"{len(tasks)} sub-tasks, concurrency {workers}")
    try:
        executor = executors.create(order["executor"], ctx)
    except Exception as exc:
        for task in tasks:
            _report(order, task, "failed", f"executor {order['executor']} unavailable: {exc}")
        return len(tasks)
    run = engine.Engine(engine.SharedExecutor(executor), _Policy(_Ownership(order)), db=order["db"], log=log,
                        stop=stop)
    try:
        run.submit_all(tasks, workers)
        run.record()
    finally:
        run.shutdown()
        stop.abandoned = run.abandoned
    log(f"runner {os.getpid()}: done, {len(tasks) - run.failed} of {len(tasks)} not failed"
        + (f", stopped by {stop.reason}" if stop.reason else ""))
    return run.failed


def main() -> int:
    render.tolerant_output()  # PYTHONIOENCODING=ascii or a C locale must not end the runner at its first log line
    stop = engine.Stop()
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

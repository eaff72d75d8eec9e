"""The one execution engine: runs sub-tasks with an executor and stores what happens.

Both ways of running sub-tasks without a host agent use it: the runner that
``brain job dispatch --executor NAME`` starts gives it a fixed list of tasks
(``runner``); ``brain worker`` gives it claims as they come (``worker``).
A task is a dict with ``job_id, sub_task_id, agent_id, query`` and
optionally ``deadline`` (stored text) and ``timeout`` (seconds from its start).

The contract:

- ``context`` is the one place an executor's view of a job is built: file
  paths absolute (relative ones from the working directory, ``~``
  expanded), the shell allowed only when every opt-in was given.
- ``attempt`` runs one task and turns whatever happens into one outcome
  ``(status, result, usage)``: an answer is ``completed``; a ``BrainError``
  (a check the job's own settings fail) is ``failed`` with its message;
  ``executors.Failed`` is ``failed`` with its message and usage; any other
  exception is ``failed`` with ``Type: message``, and logged.
- ``Engine`` runs tasks in threads. A task is *in flight* from ``submit``
  until exactly one of these: its report is stored (or refused by the
  store), it is left behind past its deadline, or ``stop`` takes it back.
  A finish told for a task no longer in flight is never reported, so a
  sub-task given back (left behind, released, failed by a stop) gets no
  second report from here.
- Threads tell the recorder (``record``, one loop, in the thread the
  caller chooses) when they start a task and when they finish one, through
  one queue. Everything told while the last batch was being stored goes
  into the next: one transaction per job for many starts and reports
  (``jobs.update_subtasks``). A report goes as soon as no other task is
  in flight, else after at most ``LINGER`` seconds, with every report told
  meanwhile; starts alone wait up to ``START_DELAY`` for one to go with.
- At least every ``SLICE`` seconds the recorder looks at the ``Stop`` (a
  signal's name) and at started tasks ``OVERDUE_GRACE`` seconds past
  their deadline, which it leaves behind for the store to time out
  (counted in ``abandoned``). Once a stop is asked, no task starts; after
  ``policy.grace`` seconds (at once on a second signal) running commands
  are killed (``executors.base.stop_commands``) and every task still in
  flight is handed to ``policy.stopped``, which decides: the runner fails
  them, the worker releases them back to the pool.
- What differs between callers is their ``Policy``: how a task is named in
  the log, whether it owns a task before starting it, whether starts are
  stored, the grace, the stop.
"""

import os
import queue
import signal
import threading
import time
import traceback
from concurrent.futures import ThreadPoolExecutor

from . import clock, executors, jobs, validate
from .clock import epoch, iso
from .errors import BrainError
from .executors.base import stop_commands
from .pool import describe
from .vocabulary import DEFAULT_MODEL

# Seconds between two looks of the recorder at a stop and at overdue tasks.
SLICE = 0.25
# Seconds a start waits for a report to share its commit: what `brain job subtasks`
# may lag behind a start. Its deadline counts from the start itself.
START_DELAY = 0.2
# Seconds a finished task's report waits for others to share its commit, while other tasks
# are still in flight: a commit costs about what many reports in it cost, and each commit
# makes the runner's ownership check read the job again, so one report a commit would
# spend more time committing than running quick tasks.
LINGER = 0.01
# Seconds past a task's deadline before the engine stops waiting for its executor: the
# executor's own timeout (bounded by the deadline) normally ends it first, and reports why.
OVERDUE_GRACE = 2.0


def context(job_id, *, workdir, files=(), model=DEFAULT_MODEL, settings=None, allow_shell=False, db=None,
            deadline=None, cls=executors.Context):
    """The executor's view of a job: ``files`` made absolute from ``workdir`` (an absolute, real
    path), the shell allowed when ``allow_shell`` is true (every opt-in the caller needs, given)."""
    absolute = [os.path.normpath(os.path.join(workdir, os.path.expanduser(f))) for f in files or ()]
    return cls(job_id=job_id, workdir=workdir, files=absolute, model=model, settings=settings or {},
               deadline=deadline, db=db, allow_shell=bool(allow_shell))


class TaskContext(executors.Context):
    """A context shared by the tasks of one executor whose ``deadline`` is that of the task the
    calling thread runs: each counts from its own start."""

    @property
    def deadline(self):
        return getattr(self._threads(), "deadline", None)

    @deadline.setter
    def deadline(self, value):
        self._threads().deadline = value

    def _threads(self):
        return self.__dict__.setdefault("_by_thread", threading.local())


class SharedExecutor:
    """One executor for every task (a runner: one job, one context), closed at the end."""

    def __init__(self, executor):
        self.executor = executor

    def open(self, task, deadline):
        self.executor.ctx.deadline = deadline  # this thread's (``TaskContext``)
        return self.executor

    def done(self, executor):
        pass

    def close(self):
        self.executor.close()


class ExecutorPerTask:
    """A new executor for each task (a worker: each claim may be of another job), made from
    ``context_of(task, deadline)``, checked before it runs (what the job gives it, files or the
    shell opt-in, may be refused here) and closed after."""

    def __init__(self, cls, context_of):
        self.cls, self.context_of = cls, context_of

    def open(self, task, deadline):
        executor = self.cls(self.context_of(task, deadline))
        try:
            executor.check()
        except BaseException:
            executor.close()
            raise
        return executor

    def done(self, executor):
        executor.close()

    def close(self):
        pass


def exception_line(exc) -> str:
    return "".join(traceback.format_exception_only(type(exc), exc)).strip()


def attempt(source, task, deadline, log, name):
    """Run ``task`` with an executor of ``source`` (``SharedExecutor``, ``ExecutorPerTask``);
    return ``(status, result, usage)``. ``usage`` is what the executor measured, or None."""
    executor = None
    try:
        executor = source.open(task, deadline)
        answer = executor.run(task["query"], task)
        return "completed", str(answer), getattr(answer, "usage", None)
    except BrainError as exc:
        return "failed", str(exc) or type(exc).__name__, None
    except executors.Failed as exc:
        return "failed", str(exc) or "failed", exc.usage
    except Exception as exc:  # one sub-task's bug fails that sub-task, not the others
        log(f"{name}: {exception_line(exc)}")
        return "failed", f"{type(exc).__name__}: {exc}", None
    finally:
        if executor is not None:
            try:
                source.done(executor)
            except Exception as exc:  # a close that fails must not lose the outcome
                log(f"{name}: executor not closed: {exception_line(exc)}")


class Stop:
    """Why the engine is stopping: a signal's name (``reason``), or None; ``again`` after a second
    signal. ``install`` makes SIGTERM, SIGINT and SIGHUP set it."""

    def __init__(self):
        self.reason = None
        self.again = False
        self.abandoned = 0  # tasks left behind past their deadline (set by the caller)

    def __call__(self, signum, frame):
        if self.reason is not None:
            self.again = True
        self.reason = signal.Signals(signum).name

    def install(self) -> dict:
        """Handle SIGTERM, SIGINT and SIGHUP (from the main thread only); return the handlers to put back.

        SIGHUP too: a ``brain worker`` whose terminal closes, or a runner someone sends
        it to, would otherwise die at once and leave its sub-tasks running until their
        deadlines; handled, it stops like on SIGTERM."""
        if threading.current_thread() is not threading.main_thread():
            return {}
        return {s: signal.signal(s, self) for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)}

    @staticmethod
    def restore(previous) -> None:
        for s, handler in previous.items():
            signal.signal(s, handler)


class Policy:
    """What one caller of the engine decides; override what differs."""

    grace = 0.0           # seconds running tasks may still finish after a stop is asked
    record_starts = False  # store each start (state.start) with the next batch
    shown = None          # characters of a result shown in a log line (None: all that is stored)
    thread_name = "brain-engine"
    who = "engine"        # what the stop text says stopped: ``<who> stopped (SIGTERM)``

    def stop_text(self, reason) -> str:
        """Why a stop ended what was running: the result of a task failed by it, a killed command's reason."""
        return f"{self.who} stopped ({reason})"

    def name(self, task) -> str:
        """How the log names ``task``."""
        return f"job {task['job_id']} {task['sub_task_id']}"

    def owns(self, task) -> bool:
        """Whether ``task`` is still the caller's, just before it starts (False: skipped, not reported)."""
        return True

    def stopped(self, tasks, killed, reason) -> list:
        """``tasks`` were still in flight at a stop (``killed`` commands killed); return the
        reports to store for them, ``(task, status, result, usage)``. By default each is failed
        with ``stop_text``; a policy that hands them on instead (the worker releases them to the
        pool) returns none."""
        return [(task, "failed", self.stop_text(reason), None) for task in tasks]

    def reported(self, task, status, error) -> None:
        """A report was stored (``error`` None) or refused (``error``)."""


class Engine:
    """Runs tasks in threads and stores their starts and reports in batches (see the module's contract)."""

    def __init__(self, source, policy, *, db, log, stop=None):
        self.source = source
        self.policy = policy
        self.db = db
        self.log = log
        self.stop = stop or Stop()
        self.freed = threading.Event()  # set whenever a task leaves flight
        self.failed = 0      # tasks reported failed (stored or not)
        self.abandoned = 0   # tasks left behind past their deadline
        self._flight = {}    # (job_id, sub_task_id) -> task
        self._limits = {}    # key -> deadline in epoch seconds, once started
        self._lock = threading.Lock()
        self._events = queue.SimpleQueue()
        self._halted = False  # no task starts any more
        self._closed = False  # no task will be submitted any more
        self._pool = None
        self._epochs = {}

    # -- what is in flight -----------------------------------------------------

    @staticmethod
    def key(task):
        return task["job_id"], task["sub_task_id"]

    def running(self) -> list:
        """The tasks in flight now."""
        with self._lock:
            return list(self._flight.values())

    def holds(self, task) -> bool:
        """Whether this very task (not a later claim of its sub-task) is still in flight."""
        with self._lock:
            return self._flight.get(self.key(task)) is task

    # -- running ---------------------------------------------------------------

    def submit(self, task) -> bool:
        """Run ``task`` in a thread of its own; True. When a task of the same sub-task is in flight
        (a claim renewed under a new identity), that one takes ``task``'s fields and runs on: False."""
        key = self.key(task)
        with self._lock:
            running = self._flight.get(key)
            if running is not None:
                running.update(task)
                if key in self._limits:
                    self._limits[key] = self._limit(running, None)
                return False
            self._flight[key] = task
        threading.Thread(target=self._work, args=(task,), daemon=True,
                         name=f"{self.policy.thread_name}-{task['sub_task_id']}").start()
        return True

    def submit_all(self, tasks, concurrency) -> None:
        """Run ``tasks`` in ``concurrency`` threads; a task waits for a free thread without its
        deadline counting (it counts from its start). No more tasks come after these."""
        with self._lock:
            for task in tasks:
                self._flight[self.key(task)] = task
        # Not ``with``: leaving it waits for every thread, and one whose executor ignores its
        # deadline must not hold the engine (see ``shutdown``).
        self._pool = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix=self.policy.thread_name)
        for task in tasks:
            self._pool.submit(self._work, task)
        self.close()

    def close(self) -> None:
        """No task will be submitted any more: ``record`` returns once none is in flight."""
        self._closed = True
        self._events.put(("wake", None, None))

    def shutdown(self) -> None:
        """After ``record``: threads still busy are not waited for; the executors are closed."""
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
        self.source.close()

    def _limit(self, task, at):
        deadline = task.get("deadline")
        limit = None
        if deadline:
            limit = self._epochs.get(deadline)
            if limit is None:
                limit = self._epochs[deadline] = epoch(deadline)
        if at is not None and task.get("timeout"):
            limit = min(at + task["timeout"], limit) if limit else at + task["timeout"]
        return limit

    def _work(self, task):
        name = self.policy.name(task)
        outcome = None
        try:
            if self._halted or self.stop.reason is not None:
                return  # stays in flight: the stop decides what becomes of it
            if self.holds(task) and self.policy.owns(task):  # else given back before its turn, or no longer ours
                at = clock.now()
                limit = self._limit(task, at)
                with self._lock:
                    if self._flight.get(self.key(task)) is task:
                        self._limits[self.key(task)] = limit
                if self.policy.record_starts:
                    self._events.put(("start", task, at))
                outcome = attempt(self.source, task, limit, self.log, name)
        except Exception as exc:  # not the executor's (``attempt`` keeps those): say it, report nothing
            self.log(f"{name}: not run: {exception_line(exc)}")
        self._events.put(("done", task, outcome))

    # -- recording -------------------------------------------------------------

    def record(self) -> None:
        """Store what the threads tell until the engine is closed and nothing is in flight."""
        starts, batch, first, done = [], [], None, None
        stop_seen = None
        while True:
            wait_for = SLICE if first is None else min(SLICE, first + START_DELAY - time.monotonic())
            if done is not None:
                wait_for = min(wait_for, done + LINGER - time.monotonic())
            for kind, task, value in _told(self._events, wait_for):
                if kind == "start":
                    starts.append((task, value))
                    first = first or time.monotonic()
                elif kind == "done":
                    batch.extend(self._finished(task, value))
                    if batch and done is None:
                        done = time.monotonic()
            if self.stop.reason is not None:
                self._halted = True
                stop_seen = stop_seen or time.monotonic()
                if self._flight and (self.stop.again or time.monotonic() >= stop_seen + self.policy.grace):
                    batch.extend(self._stop())
            self._leave_overdue()
            idle = self._closed and not self._flight
            now = time.monotonic()
            # Reports go once nothing else is in flight (none could join them) or they have
            # lingered; starts alone wait up to START_DELAY for reports to go with.
            due = batch and (not self._flight or self.stop.reason is not None
                             or (done is not None and now >= done + LINGER))
            if due or (starts and (idle or now >= first + START_DELAY)):
                self._store(batch, starts)
                starts, batch, first, done = [], [], None, None
            if idle and self._events.empty():
                return

    def _finished(self, task, outcome) -> list:
        key = self.key(task)
        with self._lock:
            ours = self._flight.get(key) is task
            if ours:
                del self._flight[key]
                self._limits.pop(key, None)
        if not ours:
            if outcome is not None:
                self.log(f"{self.policy.name(task)}: finished after it was given back ({outcome[0]}); not reported")
            return []
        self.freed.set()
        return [] if outcome is None else [(task, *outcome)]

    def _stop(self) -> list:
        """Kill the running commands and hand every task in flight to the policy."""
        why = self.stop.reason
        with self._lock:  # out of flight first: their threads' reports are then not made
            left = list(self._flight.values())
            self._flight.clear()
            self._limits.clear()
        killed = stop_commands(self.policy.stop_text(why)) if left else 0
        self.freed.set()
        return self.policy.stopped(left, killed, why) if left else []

    def _leave_overdue(self) -> None:
        now = clock.now()
        with self._lock:
            overdue = [(k, limit) for k, limit in self._limits.items()
                       if limit is not None and now > limit + OVERDUE_GRACE]
            for k, _ in overdue:
                del self._limits[k]
            left = [(self._flight.pop(k), limit) for k, limit in overdue if k in self._flight]
        for task, limit in left:
            self.log(f"{self.policy.name(task)}: still running past its deadline ({iso(limit)}): left behind, "
                     "the store times it out")
        if left:
            self.abandoned += len(left)
            self.freed.set()

    def _store(self, batch, starts) -> None:
        """Store ``batch`` (task, status, result, usage) and ``starts`` (task, epoch seconds): one
        transaction per job."""
        by_job = {}
        for item in batch:
            by_job.setdefault(item[0]["job_id"], ([], []))[0].append(item)
        for task, at in starts:
            by_job.setdefault(task["job_id"], ([], []))[1].append(
                {"sub_task_id": task["sub_task_id"], "agent_id": task["agent_id"], "started_at": at})
        lines = []
        for job_id, (items, begun) in by_job.items():
            reports = [{"sub_task_id": t["sub_task_id"], "status": st, "result": r, "agent_id": t["agent_id"],
                        "usage": u} for t, st, r, u in items]
            try:
                outcomes = jobs.update_subtasks(job_id, reports, db=self.db, starts=begun)
            except Exception as exc:  # the job is gone, expired or unreadable, or the store unusable
                outcomes = [exc] * len(items)
            for (task, status, result, _), outcome in zip(items, outcomes):
                self.failed += status == "failed"
                if isinstance(outcome, Exception):
                    lines.append(f"{self.policy.name(task)}: report not stored: {describe(outcome)}")
                    self.policy.reported(task, status, outcome)
                else:
                    shown = validate.result(result)
                    if self.policy.shown is not None:
                        shown = (shown or "")[:self.policy.shown]
                    lines.append(f"{self.policy.name(task)} {status}: {shown}")
                    self.policy.reported(task, status, None)
        if lines:
            self.log(*lines)


def _told(events, timeout) -> list:
    """What the threads told: the first event (waiting up to ``timeout`` seconds) and everything
    already queued after it."""
    told = []
    try:
        told.append(events.get(timeout=max(0.0, timeout)))
        while True:
            told.append(events.get_nowait())
    except queue.Empty:
        return told

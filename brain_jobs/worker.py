"""``brain worker``: a long-running process that runs sub-tasks from the worker pool.

    brain job dispatch $job --executor grep --pool      # queue the job's sub-tasks
    brain worker --executor grep --concurrency 4        # on every machine that reaches the store

The main thread claims sub-tasks (``pool.claim``), at most ``concurrency``
at once, and hands each to the execution engine (``engine``, which the
headless runner uses too): one thread per claim runs the executor, and a
recording thread stores the reports with the identity each claim gave,
like any worker; reports that finish together go in one transaction per
job. A thread of its own renews the leases every third of the lease, so a
slow claim never delays a renewal. When nothing is claimable the main
thread sleeps in ``jobs.wait_for_commit``: on PostgreSQL a ``NOTIFY``
wakes it the moment anything is queued or finished; on SQLite it polls
the file's data version. It also looks every ``poll`` seconds, because a
lease that runs out (a dead worker) sends no notification.

A job, whatever its stored content, cannot stop a worker: a row it cannot
read or claim is logged once and passed over (``pool.claim``'s ``skip``).
A sub-task whose executor is still busy ``engine.OVERDUE_GRACE`` seconds
past its deadline gives its slot back (the store has timed it out by then).

SIGTERM, SIGINT or SIGHUP (its terminal closed): stop claiming, let running sub-tasks finish for up to
``grace`` seconds while still renewing their leases, then kill the commands
still running (``executors.base.stop_commands``), release their sub-tasks
back to the pool (pending, to be claimed again) and exit 0 (130 after
SIGINT). A second signal releases at once. SIGKILL cannot be handled: the
commands' guards see the worker die and kill them; the sub-task's lease
runs out and another worker claims it under a new identity; a late report
from the lost one is refused as superseded.

Executors are those of ``executors`` (``grep``, ``http``, ``shell``,
``anthropic``, ``claude``) or, for your own, ``package.module:Class``, an
``executors.Executor`` subclass importable by the worker.
"""

import importlib
import math
import os
import socket
import sys
import threading
import time

from . import engine, executors, jobs, pool, render
from .clock import now_iso
from .errors import InvalidInput
from .executors.base import stop_commands
from .vocabulary import DEFAULT_MODEL

SLICE = engine.SLICE  # seconds: the longest a wait runs before looking at the stop flag
# The shortest settings a worker accepts. A lease is renewed every third of it, and a
# renewal is a write that may wait for the store like any other; an idle look is a
# claim, also a write, so polling faster than this only keeps the store busy.
MIN_LEASE = 1.0
MIN_POLL = 0.1


def resolve_executor(name):
    """The ``Executor`` class for ``name``: a registered name or ``package.module:Class``."""
    if ":" not in name:
        return executors.get(name)
    module, _, attr = name.partition(":")
    try:
        cls = getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as exc:
        raise InvalidInput(f"cannot load executor {name}: {exc}") from None
    if not (isinstance(cls, type) and issubclass(cls, executors.Executor)):
        raise InvalidInput(f"executor {name} is not an executors.Executor subclass")
    return cls


class _Policy(engine.Policy):
    """The worker's part of the engine: claims of any job, named with their job; a stop waits
    ``grace`` seconds for running claims, then releases the rest back to the pool."""

    shown = 80
    thread_name = "brain-worker"
    who = "worker"

    def __init__(self, worker):
        self.worker = worker
        self.grace = worker.grace

    def stopped(self, tasks, killed, reason) -> list:
        w = self.worker
        w.log(f"{reason}: releasing {len(tasks)} sub-task(s)" + (f", {killed} command(s) killed" if killed else ""))
        for claim in tasks:
            try:
                pool.release(claim["job_id"], claim["sub_task_id"], claim["agent_id"], self.stop_text(reason),
                             db=w.db)
            except Exception as exc:  # not ours any more, a store error, or an unreadable row
                w.log(f"job {claim['job_id']} {claim['sub_task_id']}: not released: {pool.describe(exc)}")
            else:
                w.counts["released"] += 1
                w.log(f"job {claim['job_id']} {claim['sub_task_id']}: released back to the pool")
        return []

    def reported(self, task, status, error) -> None:
        self.worker.counts["not_stored" if error is not None else status] += 1


class Worker:
    """One worker process: ``run()`` claims and runs until stopped (or, with ``drain``, until the pool is empty)."""

    def __init__(self, executor, *, concurrency=1, lease=30.0, poll=5.0, grace=30.0, drain=False,
                 allow_shell=False, settings=None, workdir=None, db=None, stream=None):
        self.pool = pool.pool_name(executor)
        self.cls = resolve_executor(executor)
        self.concurrency = concurrency
        self.lease = _at_least("lease", lease, MIN_LEASE, "a claim is renewed every third of it")
        self.poll = _at_least("poll", poll, MIN_POLL, "each look is a write to the store")
        self.grace = _at_least("grace", grace, 0.0, "")
        self.drain = drain
        self.allow_shell = allow_shell
        self.settings = settings or {}
        self.workdir = os.path.realpath(workdir or os.getcwd())
        self.db = db
        self.stream = stream or sys.stderr
        self.id = f"{socket.gethostname()}:{os.getpid()}"
        self.counts = {"claimed": 0, "completed": 0, "failed": 0, "not_stored": 0, "released": 0}
        self.unreadable = {}  # job_id -> why its row cannot be read or claimed (see pool.claim)
        self.stop = engine.Stop()  # the signal that asked us to stop; ``again`` after a second one
        self.engine = engine.Engine(engine.ExecutorPerTask(self.cls, self._context), _Policy(self), db=db,
                                    log=self.log, stop=self.stop)
        self._log_lock = threading.Lock()
        self._done = threading.Event()  # tells the renewing thread to end

    # -- the executor --------------------------------------------------------

    def _context(self, claim, deadline=None):
        return engine.context(claim["job_id"], workdir=self.workdir, files=claim.get("files"),
                              model=claim.get("model", DEFAULT_MODEL), settings=self.settings, deadline=deadline,
                              db=self.db, allow_shell=self.allow_shell and claim.get("allow_shell", False))

    def check(self) -> None:
        """Refuse to start where the executor cannot run (missing key, package, opt-in).

        The probe stands for any job: its one file is the working directory.
        """
        probe = self.cls(self._context({"job_id": "check", "allow_shell": True, "files": [self.workdir]}))
        try:
            probe.check()
        finally:
            probe.close()

    # -- the main loop -----------------------------------------------------------

    def log(self, *messages) -> None:
        """One line per message on the worker's stream; untrusted text in them is neutralised here."""
        stamp = now_iso()
        with self._log_lock:
            self.stream.write("".join(f"{stamp} worker {self.id}: {render.printable(m)}\n" for m in messages))
            self.stream.flush()

    def _fill(self) -> bool:
        """Claim until every slot is busy (True) or nothing is claimable (False)."""
        while self.stop.reason is None and len(self.engine.running()) < self.concurrency:
            known = len(self.unreadable)
            claim = pool.claim(self.pool, self.id, self.lease, db=self.db, skip=self.unreadable)
            self._log_unreadable(known)
            if claim is None:
                return False
            key = (claim["job_id"], claim["sub_task_id"])
            if not self.engine.submit(claim):
                # Our own lease ran out and we claimed our own sub-task again: it is
                # still running here, so it keeps running once, under the new identity.
                self.log(f"job {key[0]} {key[1]}: its lease had run out; still running here, now as "
                         f"{claim['agent_id']} (attempt {claim['attempt']})")
                continue
            self.counts["claimed"] += 1
            self.log(f"job {key[0]} {key[1]}: claimed as {claim['label']} (attempt {claim['attempt']})")
        return self.stop.reason is None

    def _log_unreadable(self, known) -> None:
        """One line for each job newly found unreadable (the dict keeps insertion order)."""
        for job_id, why in list(self.unreadable.items())[known:]:
            self.log(f"job {job_id}: skipped: its stored row cannot be read or claimed ({why}); "
                     "this worker leaves it alone (brain job get / delete it)")

    def _renew(self) -> None:
        by_job = {}
        for claim in self.engine.running():
            by_job.setdefault(claim["job_id"], {})[claim["sub_task_id"]] = claim["agent_id"]
        for job_id, leases in by_job.items():
            try:
                lost = pool.renew(job_id, leases, self.lease, db=self.db)
            except Exception as exc:  # a store error or a row that cannot be read: next time
                self.log(f"job {job_id}: lease not renewed: {pool.describe(exc)}")
                continue
            held = {c["sub_task_id"]: c["agent_id"] for c in self.engine.running() if c["job_id"] == job_id}
            for sub_task_id in lost:
                if held.get(sub_task_id) == leases[sub_task_id]:  # a sub-task that finished meanwhile is not "lost"
                    self.log(f"job {job_id} {sub_task_id}: no longer ours (timed out, cancelled or claimed again); "
                             "its report will be refused")

    def _renewing(self) -> None:
        """The renewing thread: every third of the lease, whatever the main thread is doing."""
        while not self._done.wait(self.lease / 3):
            try:
                self._renew()
            except Exception as exc:  # this thread must outlive any one renewal
                self.log(f"leases not renewed: {pool.describe(exc)}")

    def _idle(self, seconds, until_freed=False) -> None:
        """Sleep up to ``seconds``: until a commit (or a freed slot), a signal, or the time is up."""
        end = time.monotonic() + seconds
        while self.stop.reason is None:
            left = end - time.monotonic()
            if left <= 0:
                return
            if until_freed:
                if self.engine.freed.wait(min(left, SLICE)):
                    self.engine.freed.clear()
                    return
            elif jobs.wait_for_commit(min(left, SLICE), db=self.db):
                return

    def _pool_is_empty(self) -> bool:
        known = len(self.unreadable)
        try:
            backlog = pool.backlog(self.pool, db=self.db, skip=self.unreadable)
        except Exception as exc:  # a busy or unreachable store: not empty, look again later
            self.log(f"cannot look at the pool now: {pool.describe(exc)}")
            return False
        finally:
            self._log_unreadable(known)
        return backlog["pending"] == 0 and backlog["running"] == 0

    def run(self) -> int:
        """Work until SIGTERM, SIGINT or SIGHUP (or, with ``drain``, until the pool is empty); return the exit code."""
        self.check()
        previous = self.stop.install()
        recorder = threading.Thread(target=self.engine.record, daemon=True, name="brain-worker-record")
        try:
            self.log(f"executor {self.pool}, concurrency {self.concurrency}, lease {self.lease:g}s, "
                     f"poll {self.poll:g}s" + (", until the pool is empty" if self.drain else ""))
            jobs.wait_for_commit(0, db=self.db)  # listen before the first look, so no commit is missed
            threading.Thread(target=self._renewing, daemon=True, name="brain-worker-renew").start()
            recorder.start()
            while self.stop.reason is None:
                full = self._fill_safely()
                if self.drain and not self.engine.running() and not full and self._pool_is_empty():
                    self.log("the pool is empty: exiting")
                    break
                self._idle(self.poll, until_freed=full)
            running = len(self.engine.running())
            if self.stop.reason is not None and running and not self.stop.again:
                self.log(f"{self.stop.reason}: finishing {running} sub-task(s) for up to {self.grace:g}s "
                         "(signal again to release them now)")
            self.engine.close()
            while recorder.is_alive():  # the grace, then the release (engine.Engine.record); signals still come
                recorder.join(SLICE)
        except BaseException:
            stop_commands("worker crashed")  # its commands end with it (their guards would see it die too)
            raise
        finally:
            self._done.set()
            self.engine.close()
            self.engine.shutdown()
            self.stop.restore(previous)
        self.log("done: " + ", ".join(f"{n} {k.replace('_', ' ')}" for k, n in self.counts.items()))
        return 130 if self.stop.reason == "SIGINT" else 0

    def _fill_safely(self) -> bool:
        try:
            return self._fill()
        except Exception as exc:  # a busy or unreachable store: say so, try again at the next look
            self.log(f"cannot claim now: {pool.describe(exc)}")
            return False


def _at_least(name, value, floor, why) -> float:
    """``value`` as seconds, or InvalidInput naming the setting and its floor."""
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        seconds = float("nan")
    if not (math.isfinite(seconds) and seconds >= floor and seconds > 0):
        least = f"at least {floor:g} second{'s' * (floor != 1)} ({why})" if floor else "a positive number of seconds"
        raise InvalidInput(f"--{name} (BRAIN_WORKER_{name.upper()}) must be {least}, got {value!r}")
    return seconds

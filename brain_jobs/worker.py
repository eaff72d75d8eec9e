"""``brain worker``: a long-running process that runs sub-tasks from the worker pool.

    brain job dispatch $job --executor grep --pool      # queue the job's sub-tasks
    brain worker --executor grep --concurrency 4        # on every machine that reaches the store

The main thread claims sub-tasks (``pool.claim``), at most ``concurrency``
at once; a thread of its own renews their leases every third of the lease,
so a slow claim never delays a renewal. One thread per claimed sub-task
runs the executor and reports the result with the identity the claim gave
it, like any worker. When nothing is claimable the main thread sleeps in
``jobs.wait_for_commit``: on PostgreSQL a ``NOTIFY`` wakes it the moment
anything is queued or finished; on SQLite it polls the file's data
version. It also looks every ``poll`` seconds, because a lease that runs
out (a dead worker) sends no notification.

A job, whatever its stored content, cannot stop a worker: a row it cannot
read or claim is logged once and passed over (``pool.claim``'s ``skip``).
A sub-task whose executor is still busy ``OVERDUE_GRACE`` seconds past its
deadline gives its slot back (the store has timed it out by then).

SIGTERM or SIGINT: stop claiming, let running sub-tasks finish for up to
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
import signal
import socket
import sys
import threading
import time

from . import executors, jobs, pool, render
from .clock import epoch, now_iso
from .errors import BrainError, InvalidInput
from .executors.base import stop_commands
from .vocabulary import DEFAULT_MODEL

SLICE = 0.25  # seconds: the longest a wait runs before looking at the stop flag
# The shortest settings a worker accepts. A lease is renewed every third of it, and a
# renewal is a write that may wait for the store like any other; an idle look is a
# claim, also a write, so polling faster than this only keeps the store busy.
MIN_LEASE = 1.0
MIN_POLL = 0.1
# Seconds past a sub-task's deadline before its slot is given back while its executor
# is still busy: the executor's own timeout (bounded by the deadline) normally ends it first.
OVERDUE_GRACE = 2.0


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
        self.active = {}  # (job_id, sub_task_id) -> claim
        self.counts = {"claimed": 0, "completed": 0, "failed": 0, "not_stored": 0, "released": 0}
        self.unreadable = {}  # job_id -> why its row cannot be read or claimed (see pool.claim)
        self._lock = threading.Lock()
        self._log_lock = threading.Lock()
        self._freed = threading.Event()
        self._done = threading.Event()  # tells the renewing thread to end
        self._stop = None  # the signal that asked us to stop
        self._hurry = False

    # -- the executor --------------------------------------------------------

    def _context(self, claim, deadline=None):
        files = [os.path.normpath(os.path.join(self.workdir, os.path.expanduser(f))) for f in claim.get("files", ())]
        return executors.Context(job_id=claim["job_id"], workdir=self.workdir, files=files,
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

    def _execute(self, claim):
        deadline = epoch(claim["deadline"]) if claim.get("deadline") else None
        executor = None
        try:
            executor = self.cls(self._context(claim, deadline))
            executor.check()  # what this job gives it (files, the shell opt-in) may not do
            answer = executor.run(claim["query"], claim)
            return "completed", str(answer), getattr(answer, "usage", None)
        except BrainError as exc:
            return "failed", str(exc), None
        except executors.Failed as exc:
            return "failed", str(exc) or "failed", exc.usage
        except Exception as exc:  # one sub-task's bug fails that sub-task, not the worker
            return "failed", f"{type(exc).__name__}: {exc}", None
        finally:
            if executor is not None:
                executor.close()

    def _work(self, claim):
        key = (claim["job_id"], claim["sub_task_id"])
        try:
            status, result, usage = self._execute(claim)
            with self._lock:
                given_back = self.active.get(key) is not claim
            if given_back:  # released at shutdown, or left past its deadline: its report is not ours to make
                self.log(f"job {key[0]} {key[1]}: finished after it was given back ({status}); not reported")
                return
            try:
                # With its usage (what the executor measured it cost), as a runner reports.
                (outcome,) = jobs.update_subtasks(claim["job_id"], [{
                    "sub_task_id": claim["sub_task_id"], "status": status, "result": result,
                    "agent_id": claim["agent_id"], "usage": usage}], db=self.db)
                if isinstance(outcome, Exception):
                    raise outcome
            except Exception as exc:  # refused, a store error, or a row that cannot be read
                self.counts["not_stored"] += 1
                self.log(f"job {key[0]} {key[1]}: report not stored: {pool.describe(exc)}")
            else:
                self.counts[status] += 1
                self.log(f"job {key[0]} {key[1]} {status}: {render.printable((result or '')[:80])}")
        finally:
            with self._lock:
                if self.active.get(key) is claim:  # not a later claim of the same sub-task
                    del self.active[key]
            self._freed.set()

    # -- the main loop -----------------------------------------------------------

    def log(self, message) -> None:
        """One line on the worker's stream; untrusted text in ``message`` is neutralised here."""
        with self._log_lock:
            self.stream.write(f"{now_iso()} worker {self.id}: {render.printable(message)}\n")
            self.stream.flush()

    def _on_signal(self, signum, frame):
        if self._stop is not None:
            self._hurry = True
        self._stop = signum

    def _fill(self) -> bool:
        """Claim until every slot is busy (True) or nothing is claimable (False)."""
        while self._stop is None and len(self.active) < self.concurrency:
            known = len(self.unreadable)
            claim = pool.claim(self.pool, self.id, self.lease, db=self.db, skip=self.unreadable)
            self._log_unreadable(known)
            if claim is None:
                return False
            key = (claim["job_id"], claim["sub_task_id"])
            with self._lock:
                running = self.active.get(key)
                if running is not None:
                    # Our own lease ran out and we claimed our own sub-task again: it is
                    # still running here, so it keeps running once, under the new identity.
                    running.update(claim)
                else:
                    self.active[key] = claim
            if running is not None:
                self.log(f"job {key[0]} {key[1]}: its lease had run out; still running here, now as "
                         f"{claim['agent_id']} (attempt {claim['attempt']})")
                continue
            self.counts["claimed"] += 1
            self.log(f"job {key[0]} {key[1]}: claimed as {claim['label']} (attempt {claim['attempt']})")
            threading.Thread(target=self._work, args=(claim,), daemon=True,
                             name=f"brain-worker-{claim['sub_task_id']}").start()
        return self._stop is None

    def _log_unreadable(self, known) -> None:
        """One line for each job newly found unreadable (the dict keeps insertion order)."""
        for job_id, why in list(self.unreadable.items())[known:]:
            self.log(f"job {job_id}: skipped: its stored row cannot be read or claimed ({why}); "
                     "this worker leaves it alone (brain job get / delete it)")

    def _renew(self) -> None:
        with self._lock:
            by_job = {}
            for claim in self.active.values():
                by_job.setdefault(claim["job_id"], {})[claim["sub_task_id"]] = claim["agent_id"]
        for job_id, leases in by_job.items():
            try:
                lost = pool.renew(job_id, leases, self.lease, db=self.db)
            except Exception as exc:  # a store error or a row that cannot be read: next time
                self.log(f"job {job_id}: lease not renewed: {pool.describe(exc)}")
                continue
            with self._lock:  # a sub-task that finished meanwhile is not "lost"
                lost = [s for s in lost if self.active.get((job_id, s), {}).get("agent_id") == leases[s]]
            for sub_task_id in lost:
                self.log(f"job {job_id} {sub_task_id}: no longer ours (timed out, cancelled or claimed again); "
                         "its report will be refused")

    def _renewing(self) -> None:
        """The renewing thread: every third of the lease, whatever the main thread is doing."""
        while not self._done.wait(self.lease / 3):
            try:
                self._renew()
            except Exception as exc:  # this thread must outlive any one renewal
                self.log(f"leases not renewed: {pool.describe(exc)}")

    def _leave_overdue(self) -> None:
        """Give back the slots of sub-tasks still busy ``OVERDUE_GRACE`` seconds past their deadline."""
        now = time.time()
        with self._lock:
            overdue = [(key, claim) for key, claim in self.active.items()
                       if claim.get("deadline") and now > epoch(claim["deadline"]) + OVERDUE_GRACE]
            for key, _ in overdue:
                del self.active[key]
        for key, claim in overdue:
            self.log(f"job {key[0]} {key[1]}: still running past its deadline ({claim['deadline']}): slot given "
                     "back, the store times it out")

    def _idle(self, seconds, until_freed=False, stopping=False) -> None:
        """Sleep up to ``seconds``: until a commit (or a freed slot), a signal, or the time is up.

        ``stopping``: already shutting down, so only a second signal cuts the sleep short.
        """
        end = time.monotonic() + seconds
        while (self._stop is None) if not stopping else (not self._hurry):
            left = end - time.monotonic()
            if left <= 0:
                return
            if until_freed:
                if self._freed.wait(min(left, SLICE)):
                    self._freed.clear()
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
        """Work until SIGTERM/SIGINT (or, with ``drain``, until the pool is empty); return the exit code."""
        self.check()
        previous = {s: signal.signal(s, self._on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
        try:
            self.log(f"executor {self.pool}, concurrency {self.concurrency}, lease {self.lease:g}s, "
                     f"poll {self.poll:g}s" + (", until the pool is empty" if self.drain else ""))
            jobs.wait_for_commit(0, db=self.db)  # listen before the first look, so no commit is missed
            threading.Thread(target=self._renewing, daemon=True, name="brain-worker-renew").start()
            while self._stop is None:
                full = self._fill_safely()
                self._leave_overdue()
                if self.drain and not self.active and not full and self._pool_is_empty():
                    self.log("the pool is empty: exiting")
                    break
                self._idle(self.poll, until_freed=full)
            if self._stop is not None:
                self._shut_down()
        except BaseException:
            stop_commands("worker crashed")  # its commands end with it (their guards would see it die too)
            raise
        finally:
            self._done.set()
            for s, handler in previous.items():
                signal.signal(s, handler)
        self.log("done: " + ", ".join(f"{n} {k.replace('_', ' ')}" for k, n in self.counts.items()))
        return 130 if self._stop == signal.SIGINT else 0

    def _fill_safely(self) -> bool:
        try:
            return self._fill()
        except Exception as exc:  # a busy or unreachable store: say so, try again at the next look
            self.log(f"cannot claim now: {pool.describe(exc)}")
            return False

    def _shut_down(self) -> None:
        name = signal.Signals(self._stop).name
        if self.active and not self._hurry:
            self.log(f"{name}: finishing {len(self.active)} sub-task(s) for up to {self.grace:g}s "
                     "(signal again to release them now)")
            end = time.monotonic() + self.grace
            while self.active and not self._hurry and time.monotonic() < end:
                self._idle(end - time.monotonic(), until_freed=True, stopping=True)
        with self._lock:  # out of ``active`` first: their threads then leave the reporting to us
            left = list(self.active.values())
            self.active.clear()
        if left:
            killed = stop_commands(f"worker stopped ({name})")
            self.log(f"{name}: releasing {len(left)} sub-task(s)" + (f", {killed} command(s) killed" if killed else ""))
        for claim in left:
            try:
                pool.release(claim["job_id"], claim["sub_task_id"], claim["agent_id"], f"worker stopped ({name})",
                             db=self.db)
            except Exception as exc:  # not ours any more, a store error, or an unreadable row
                self.log(f"job {claim['job_id']} {claim['sub_task_id']}: not released: {pool.describe(exc)}")
            else:
                self.counts["released"] += 1
                self.log(f"job {claim['job_id']} {claim['sub_task_id']}: released back to the pool")


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

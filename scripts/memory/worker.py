"""``brain worker``: a long-running process that runs sub-tasks from the worker pool.

    brain job dispatch $job --executor grep --pool      # queue the job's sub-tasks
    brain worker --executor grep --concurrency 4        # on every machine that reaches the store

The main thread claims sub-tasks (``pool.claim``), at most ``concurrency``
at once, and renews their leases every third of the lease; one thread per
claimed sub-task runs the executor and reports the result with the
identity the claim gave it, like any worker. When nothing is claimable the
main thread sleeps in ``jobs.wait_for_commit``: on PostgreSQL a ``NOTIFY``
wakes it the moment anything is queued or finished; on SQLite it polls the
file's data version. It also looks every ``poll`` seconds, because a lease
that runs out (a dead worker) sends no notification.

SIGTERM or SIGINT: stop claiming, let running sub-tasks finish for up to
``grace`` seconds while still renewing their leases, then release the rest
back to the pool (pending, to be claimed again) and exit 0 (130 after
SIGINT). A second signal releases at once. SIGKILL cannot be handled: the
sub-task's lease runs out and another worker claims it under a new
identity; a late report from the lost one is refused as superseded.

Executors are those of ``executors`` (``grep``, ``http``, ``shell``,
``anthropic``, ``claude``) or, for your own, ``package.module:Class``, an
``executors.Executor`` subclass importable by the worker.
"""

import importlib
import os
import signal
import socket
import sys
import threading
import time

from . import executors, jobs, pool, render
from .clock import epoch, now_iso
from .errors import BrainError, InvalidInput

SLICE = 0.25  # seconds: the longest a wait runs before looking at the stop flag


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
        self.lease = float(lease)
        self.poll = float(poll)
        self.grace = float(grace)
        self.drain = drain
        self.allow_shell = allow_shell
        self.settings = settings or {}
        self.workdir = os.path.realpath(workdir or os.getcwd())
        self.db = db
        self.stream = stream or sys.stderr
        self.id = f"{socket.gethostname()}:{os.getpid()}"
        self.active = {}  # (job_id, sub_task_id) -> claim
        self.counts = {"claimed": 0, "completed": 0, "failed": 0, "not_stored": 0, "released": 0}
        self._lock = threading.Lock()
        self._freed = threading.Event()
        self._stop = None  # the signal that asked us to stop
        self._hurry = False

    # -- the executor --------------------------------------------------------

    def _context(self, claim, deadline=None):
        files = [os.path.normpath(os.path.join(self.workdir, os.path.expanduser(f))) for f in claim.get("files", ())]
        return executors.Context(job_id=claim["job_id"], workdir=self.workdir, files=files,
                                 model=claim.get("model", "haiku"), settings=self.settings, deadline=deadline,
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
        executor = self.cls(self._context(claim, deadline))
        try:
            executor.check()  # what this job gives it (files, the shell opt-in) may not do
            return "completed", executor.run(claim["query"], claim)
        except BrainError as exc:
            return "failed", str(exc)
        except executors.Failed as exc:
            return "failed", str(exc) or "failed"
        except Exception as exc:  # one sub-task's bug fails that sub-task, not the worker
            return "failed", f"{type(exc).__name__}: {exc}"
        finally:
            executor.close()

    def _work(self, claim):
        key = (claim["job_id"], claim["sub_task_id"])
        try:
            status, result = self._execute(claim)
            try:
                jobs.update_subtask_status(claim["job_id"], claim["sub_task_id"], status, result,
                                           agent_id=claim["agent_id"], db=self.db)
            except BrainError as exc:
                self.counts["not_stored"] += 1
                self.log(f"job {key[0]} {key[1]}: report not stored: {exc}")
            else:
                self.counts[status] += 1
                self.log(f"job {key[0]} {key[1]} {status}: {render.printable((result or '')[:80])}")
        finally:
            with self._lock:
                self.active.pop(key, None)
            self._freed.set()

    # -- the main loop -----------------------------------------------------------

    def log(self, message) -> None:
        """One line on the worker's stream; untrusted text in ``message`` is neutralised here."""
        self.stream.write(f"{now_iso()} worker {self.id}: {render.printable(message)}\n")
        self.stream.flush()

    def _on_signal(self, signum, frame):
        if self._stop is not None:
            self._hurry = True
        self._stop = signum

    def _fill(self) -> bool:
        """Claim until every slot is busy (True) or nothing is claimable (False)."""
        while self._stop is None and len(self.active) < self.concurrency:
            claim = pool.claim(self.pool, self.id, self.lease, db=self.db)
            if claim is None:
                return False
            self.counts["claimed"] += 1
            with self._lock:
                self.active[(claim["job_id"], claim["sub_task_id"])] = claim
            self.log(f"job {claim['job_id']} {claim['sub_task_id']}: claimed as {claim['agent_id']} "
                     f"(attempt {claim['attempt']})")
            threading.Thread(target=self._work, args=(claim,), daemon=True,
                             name=f"brain-worker-{claim['sub_task_id']}").start()
        return self._stop is None

    def _renew(self) -> None:
        with self._lock:
            by_job = {}
            for claim in self.active.values():
                by_job.setdefault(claim["job_id"], {})[claim["sub_task_id"]] = claim["agent_id"]
        for job_id, leases in by_job.items():
            try:
                lost = pool.renew(job_id, leases, self.lease, db=self.db)
            except BrainError as exc:
                self.log(f"job {job_id}: lease not renewed: {exc}")
                continue
            for sub_task_id in lost:
                self.log(f"job {job_id} {sub_task_id}: no longer ours (timed out, cancelled or claimed again); "
                         "its report will be refused")

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
        backlog = pool.backlog(self.pool, db=self.db)
        return backlog["pending"] == 0 and backlog["running"] == 0

    def run(self) -> int:
        """Work until SIGTERM/SIGINT (or, with ``drain``, until the pool is empty); return the exit code."""
        self.check()
        previous = {s: signal.signal(s, self._on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
        try:
            self.log(f"executor {self.pool}, concurrency {self.concurrency}, lease {self.lease:g}s, "
                     f"poll {self.poll:g}s" + (", until the pool is empty" if self.drain else ""))
            jobs.wait_for_commit(0, db=self.db)  # listen before the first look, so no commit is missed
            renew_every = self.lease / 3
            next_renew = time.monotonic() + renew_every
            while self._stop is None:
                full = self._fill_safely()
                if time.monotonic() >= next_renew:
                    self._renew()
                    next_renew = time.monotonic() + renew_every
                if self.drain and not self.active and not full and self._pool_is_empty():
                    self.log("the pool is empty: exiting")
                    break
                pause = max(0.0, min(self.poll, next_renew - time.monotonic()))
                self._idle(pause, until_freed=full)
            if self._stop is not None:
                self._shut_down(next_renew, renew_every)
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)
        self.log("done: " + ", ".join(f"{n} {k.replace('_', ' ')}" for k, n in self.counts.items()))
        return 130 if self._stop == signal.SIGINT else 0

    def _fill_safely(self) -> bool:
        try:
            return self._fill()
        except BrainError as exc:  # a busy or unreachable store: say so, try again at the next look
            self.log(f"cannot claim now: {exc}")
            return False

    def _shut_down(self, next_renew, renew_every) -> None:
        name = signal.Signals(self._stop).name
        if self.active and not self._hurry:
            self.log(f"{name}: finishing {len(self.active)} sub-task(s) for up to {self.grace:g}s "
                     "(signal again to release them now)")
            end = time.monotonic() + self.grace
            while self.active and not self._hurry and time.monotonic() < end:
                if time.monotonic() >= next_renew:
                    self._renew()
                    next_renew = time.monotonic() + renew_every
                self._idle(min(end, next_renew) - time.monotonic(), until_freed=True, stopping=True)
        with self._lock:
            left = list(self.active.values())
        for claim in left:
            try:
                pool.release(claim["job_id"], claim["sub_task_id"], claim["agent_id"], f"worker stopped ({name})",
                             db=self.db)
            except BrainError as exc:
                self.log(f"job {claim['job_id']} {claim['sub_task_id']}: not released: {exc}")
            else:
                self.counts["released"] += 1
                self.log(f"job {claim['job_id']} {claim['sub_task_id']}: released back to the pool")

"""What every executor shares: its context, its contract and its failure."""

import os
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Optional

from ..errors import BrainError
from ..vocabulary import DEFAULT_MODEL


class Failed(Exception):
    """The sub-task failed; the message (at most 200 characters are kept) is its result.

    ``usage``: what the failed attempt still cost, when the executor measured it (see ``Answer``).
    """

    def __init__(self, message="", usage=None):
        super().__init__(message)
        self.usage = usage


class Answer(str):
    """A result text that also carries what producing it cost.

    ``usage`` is ``{"input_tokens", "output_tokens"}`` plus ``"cost_usd"``
    where the executor knows it, or None. Executors that measure usage
    return one from ``run``; anywhere else it is an ordinary ``str``.
    """

    usage = None

    def __new__(cls, text, usage=None):
        answer = super().__new__(cls, text)
        answer.usage = usage
        return answer


def sum_usage(total, more):
    """``total`` plus ``more`` (usage dicts, either may be None), key by key."""
    if not more:
        return total
    if not total:
        return dict(more)
    return {k: (total.get(k) or 0) + (more.get(k) or 0) for k in dict.fromkeys([*total, *more])}


@dataclass
class Context:
    """Everything an executor may use, fixed at dispatch.

    ``workdir`` is the job's working directory (absolute): file-reading
    executors stay inside it. ``files`` are absolute paths. ``deadline`` is
    the sub-tasks' deadline in epoch seconds (None: no deadline), so no
    executor waits past the moment its report would be refused.
    """

    job_id: str
    workdir: str
    files: list = field(default_factory=list)
    model: str = DEFAULT_MODEL
    settings: dict = field(default_factory=dict)
    deadline: Optional[float] = None
    db: Optional[str] = None
    allow_shell: bool = False

    def seconds_left(self):
        """Seconds until the deadline (may be negative), or None when there is none."""
        return None if self.deadline is None else self.deadline - time.time()

    def may_retry(self, pause: float, attempt_at_least: float = 5.0) -> bool:
        """Whether waiting ``pause`` seconds still leaves ``attempt_at_least`` for one more try."""
        left = self.seconds_left()
        return left is None or left >= pause + attempt_at_least

    def time_left(self, cap: float) -> float:
        """Seconds the next step may take: ``cap``, or fewer when the deadline is nearer.

        Raises ``Failed`` once the deadline has passed, so no step starts
        after it and a loop of steps (turns, retries) ends with it.
        """
        if self.deadline is None:
            return cap
        left = self.deadline - time.time()
        if left <= 0:
            raise Failed("timed out: the sub-task's deadline has passed")
        return min(cap, left)

    def relative(self, path: str) -> str:
        """``path`` as shown in results: relative to the working directory when inside it."""
        rel = os.path.relpath(path, self.workdir)
        return path if rel.startswith("..") else rel


class Executor:
    """One way of running a sub-task query. Subclasses set ``name`` and implement ``run``."""

    name = ""

    def __init__(self, ctx: Context):
        self.ctx = ctx

    def check(self) -> None:
        """Raise a ``BrainError`` saying what is missing when this executor cannot run here.

        Called in the dispatching process, before any sub-task is marked
        running, so a misconfigured dispatch changes nothing.
        """

    def run(self, query: str, task=None) -> str:
        """Run one query; return its result text or raise ``Failed``. Called from worker threads.

        An executor that measures what the run cost returns an ``Answer`` (and raises
        ``Failed`` with its ``usage``): the runner stores that usage on the sub-task.

        ``task`` is the sub-task being run (``sub_task_id``, ``agent_id``, ``query``).
        """
        raise NotImplementedError

    def close(self) -> None:
        """Release what ``run`` opened (clients, connections)."""


# The guards of the commands this process is running (see ``run_bounded``), and why they were stopped.
_running = {}
_running_lock = threading.Lock()
# The guard, imported from this directory by a bare interpreter (-I: no environment, no user
# site; -S: no site) rather than run as a script, so its compiled form is cached.
_GUARD = [sys.executable, "-I", "-S", "-c", "import sys; sys.path.insert(0, sys.argv[1]); from guard import main; "
          "sys.exit(main(sys.argv[2:]))", os.path.dirname(os.path.abspath(__file__))]
# Seconds ``run_bounded`` waits past a command's timeout before it kills the group itself:
# the guard kills it at the timeout, so this only matters when the guard cannot act.
GUARD_SLACK = 5.0
GUARD_POLL = 0.5  # seconds between two looks at a running command's guard (see _communicate)
OUTPUT_LIMIT = 4 << 20  # bytes kept of a command's stdout, and of its stderr (see _communicate)


def run_bounded(command, timeout: float, what: str, *, shell: bool = False, **popen) -> tuple:
    """Run ``command`` under a guard; return ``(returncode, stdout bytes, stderr bytes)``.

    The command (an argv list, or a string for ``/bin/sh -c`` with
    ``shell``) runs in a process group of its own under ``guard.py``, which
    kills that whole group, background processes included, when the
    command exits, when ``timeout`` seconds pass (``Failed("<what> timed out
    after Ns")``), when ``stop_commands`` is called (``Failed("<what>
    stopped: <reason>")``), or when this process dies, however it dies.
    Call it from the thread that waits for the result: the guard's
    parent-death signal fires when that thread ends.
    """
    import subprocess

    argv = ["/bin/sh", "-c", command] if shell else list(command)
    proc = subprocess.Popen([*_GUARD, str(os.getpid()), repr(float(timeout)), *argv],
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, **popen)
    with _running_lock:
        _running[proc] = None
    try:
        try:
            out, err = _communicate(proc, timeout + GUARD_SLACK)
        except BaseException as exc:  # the guard did not end it in time, or this thread is interrupted
            _kill_group(proc.pid)
            proc.kill()
            _drain(proc)
            if isinstance(exc, subprocess.TimeoutExpired):
                raise Failed(f"{what} timed out after {timeout:g}s") from None
            raise
    finally:
        with _running_lock:
            reason = _running.pop(proc, None)
    if proc.returncode < 0:
        _kill_group(proc.pid)  # a guard killed from outside could not end its group (see _communicate)
    if reason is not None:
        raise Failed(f"{what} stopped: {reason}")
    if proc.returncode == -signal.SIGALRM:
        raise Failed(f"{what} timed out after {timeout:g}s")
    if proc.returncode < 0:
        raise Failed(f"{what} stopped: its guard got signal {signal.Signals(-proc.returncode).name}")
    return proc.returncode, out or b"", err or b""


RETRY_FIRST = 1.0   # seconds before the first retry of an overloaded or rate-limited answer
RETRY_MOST = 30.0   # the longest pause between two tries


def retry_pause(retry: int, retry_after=None) -> float:
    """Seconds to wait before retry number ``retry`` (1, 2, ...): the server's ``retry-after``
    when it sent one, else exponential backoff with jitter (so many workers that were refused
    together do not come back together); never more than ``RETRY_MOST``."""
    import random

    if retry_after is not None:
        return min(max(0.0, float(retry_after)), RETRY_MOST)
    return min(RETRY_MOST, RETRY_FIRST * 2 ** (retry - 1)) * random.uniform(0.5, 1.0)


def stop_commands(reason: str) -> int:
    """Kill every command ``run_bounded`` is running in this process, each with its whole group.

    Returns how many. Each of those ``run_bounded`` calls raises
    ``Failed("<what> stopped: <reason>")``. The commands are dead when this
    returns (SIGKILL to their groups), so their sub-tasks can be handed on.
    """
    with _running_lock:
        for proc in _running:
            _running[proc] = reason
            try:
                proc.send_signal(signal.SIGTERM)  # the guard: stop, and do not report the command's status
            except OSError:
                pass
            _kill_group(proc.pid)
        return len(_running)


def _kill_group(pgid) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass  # the group is already empty


def _communicate(proc, limit: float) -> tuple:
    """``(stdout, stderr)`` of ``proc`` once it has exited, within ``limit`` seconds
    (``TimeoutExpired`` after), like ``proc.communicate()`` but with two bounds:

    - at most ``OUTPUT_LIMIT`` bytes of each stream are kept; the rest is read and dropped, so a
      command that floods its output (``yes``) cannot fill this process's memory;
    - the guard is looked at every ``GUARD_POLL`` seconds: a guard killed from outside (SIGKILL)
      cannot end its group, whose processes would hold the pipes open and work on, so its group
      is killed here and then.
    """
    import selectors
    import subprocess

    end = time.monotonic() + limit
    kept = {pipe: bytearray() for pipe in (proc.stdout, proc.stderr) if pipe is not None}
    with selectors.DefaultSelector() as selector:
        for pipe in kept:
            selector.register(pipe, selectors.EVENT_READ)
        while selector.get_map():
            left = end - time.monotonic()
            if left <= 0:
                raise subprocess.TimeoutExpired(proc.args, limit)
            for key, _ in selector.select(min(GUARD_POLL, left)):
                chunk = os.read(key.fd, 65536)
                if not chunk:
                    selector.unregister(key.fileobj)
                buf = kept[key.fileobj]
                buf += chunk[:max(0, OUTPUT_LIMIT - len(buf))]
            if proc.poll() is not None and proc.returncode < 0:
                _kill_group(proc.pid)
    for pipe in kept:
        pipe.close()
    proc.wait(timeout=max(0.0, end - time.monotonic()))
    return (bytes(kept[proc.stdout]) if proc.stdout else None, bytes(kept[proc.stderr]) if proc.stderr else None)


def _drain(proc) -> None:
    """Wait for a killed guard, reading (and dropping) what its pipes still hold for a while; a pipe
    held open by a process that left the group is given up."""
    import subprocess

    try:
        _communicate(proc, GUARD_SLACK)
    except subprocess.TimeoutExpired:
        for pipe in (proc.stdout, proc.stderr):
            if pipe is not None:
                pipe.close()
        proc.wait()


def first_line(text: str) -> str:
    for line in (text or "").splitlines():
        if line.strip():
            return line.strip()
    return ""


def unavailable(message: str) -> BrainError:
    from ..errors import OperationalError

    return OperationalError(message)

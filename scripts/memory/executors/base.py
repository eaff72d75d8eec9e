"""What every executor shares: its context, its contract and its failure."""

import os
import time
from dataclasses import dataclass, field
from typing import Optional

from ..errors import BrainError


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
    model: str = "haiku"
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
        """``cap`` seconds, or fewer when the deadline is nearer (at least 1)."""
        if self.deadline is None:
            return cap
        return max(1.0, min(cap, self.deadline - time.time()))

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


def run_bounded(command, timeout: float, what: str, **popen) -> tuple:
    """Run ``command`` in its own process group; return ``(returncode, stdout bytes, stderr bytes)``.

    Past ``timeout`` seconds the whole group is killed (a shell's children
    too) and ``Failed("<what> timed out after Ns")`` is raised.
    """
    import signal
    import subprocess

    proc = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            start_new_session=True, **popen)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.communicate()
        raise Failed(f"{what} timed out after {timeout:g}s") from None
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


def first_line(text: str) -> str:
    for line in (text or "").splitlines():
        if line.strip():
            return line.strip()
    return ""


def unavailable(message: str) -> BrainError:
    from ..errors import OperationalError

    return OperationalError(message)

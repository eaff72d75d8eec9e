"""A bounded, fair, cross-process write lock on a lock file.

Why not ``filelock`` on the hot path: it waits by polling (a fixed
interval by default) and its import alone costs more than a report. A
blocking ``fcntl.flock`` lets the kernel queue waiters fairly, so the worst
wait under contention is far shorter (figures: docs/benchmarks.md and the
project's measurement notes). The wait is
bounded by a ``SIGALRM`` interval timer in the main thread; other threads
poll with a short back-off. Where ``fcntl`` does not exist (Windows) the
``filelock`` package does the job.
"""

import os
import threading
import time

try:
    # The C functions under ``signal``: its wrappers convert every handler and
    # signal number to an enum, a measurable share of a contended report's CPU
    # (docs/benchmarks.md, row 2). The numbers and handlers are the same.
    import _signal as signal
except ImportError:  # pragma: no cover - an interpreter without it
    import signal

from ..errors import StoreBusy

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None


class _Timeout(Exception):
    pass


def _on_alarm(signum, frame):
    raise _Timeout()


class WriteLock:
    """An exclusive lock on ``path``; ``acquire(timeout)`` / ``release()``."""

    def __init__(self, path: str):
        self.path = path
        self._fd = None
        self._portable = None

    def acquire(self, timeout: float) -> None:
        if fcntl is None:  # pragma: no cover - Windows
            self._acquire_portable(timeout)
            return
        if self._fd is None:
            self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o600)
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            if timeout <= 0:  # setitimer(0) would disarm the timer and wait for ever
                raise self._busy(timeout) from None
        if self._can_use_alarm():
            self._acquire_blocking(timeout)
        else:
            self._acquire_polling(timeout)

    def _can_use_alarm(self) -> bool:
        if threading.current_thread() is not threading.main_thread():
            return False
        if signal.getitimer(signal.ITIMER_REAL)[0] > 0:
            return False  # somebody else's timer is running; do not disturb it
        # Not a handler installed outside Python (None): it could not be put back.
        return signal.getsignal(signal.SIGALRM) in (signal.SIG_DFL, signal.SIG_IGN)

    def _acquire_blocking(self, timeout: float) -> None:
        previous = signal.signal(signal.SIGALRM, _on_alarm)
        try:
            signal.setitimer(signal.ITIMER_REAL, timeout)
            try:
                fcntl.flock(self._fd, fcntl.LOCK_EX)
            finally:
                signal.setitimer(signal.ITIMER_REAL, 0)
        except _Timeout:
            raise self._busy(timeout) from None
        finally:
            signal.signal(signal.SIGALRM, previous)

    def _acquire_polling(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        pause = 0.0002
        while True:
            try:
                fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise self._busy(timeout) from None
                time.sleep(pause)
                pause = min(pause * 2, 0.005)

    def _acquire_portable(self, timeout: float) -> None:  # pragma: no cover - Windows
        import filelock

        if self._portable is None:
            self._portable = filelock.FileLock(self.path, poll_interval=0.001)
        try:
            self._portable.acquire(timeout=timeout)
        except filelock.Timeout:
            raise self._busy(timeout) from None

    def release(self) -> None:
        if self._portable is not None:  # pragma: no cover - Windows
            self._portable.release()
        elif self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def _busy(self, timeout: float) -> StoreBusy:
        # Only brain takes this lock: the holder is another brain process (or thread) writing.
        if timeout <= 0:
            waited = "and BRAIN_LOCK_TIMEOUT=0 says not to wait"
        else:
            waited = f"for more than {timeout:g} s (BRAIN_LOCK_TIMEOUT)"
        return StoreBusy(
            f"the job store is busy: another brain process is writing to it (it holds {self.path}) "
            f"{waited}; retry, or raise BRAIN_LOCK_TIMEOUT"
        )

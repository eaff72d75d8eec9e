"""The guard of one command: its work ends with its deadline, its sub-task or its runner.

    python -I -S guard.py PARENT_PID SECONDS COMMAND [ARG]...

``executors.base.run_bounded`` starts this small program (standard library
only, so a bare ``python -I -S`` that imports it starts fast) instead of
the command itself.
The guard runs the command in a process group of its own, ``P``, whose id
is the guard's pid (the runner knows it without asking), and stays in ``P``
while the command runs, so that a signal to its runner's group (``kill -9
-- -PGID``: the runner and the guards beside it would die at once, and
nobody would be left to end ``P``) does not reach it. To end the command
it steps back into its parent's group and kills ``P``, which kills the
command and everything it started (``sh -c 'sleep 300 &'`` included) but
not the guard. The guard kills ``P``, with SIGKILL, when the first of
these happens:

- the command exits: what it left running in the background is part of
  the sub-task, and the sub-task is over; the guard then exits with the
  command's status (``128 + n`` when signal ``n`` killed it);
- ``SECONDS`` pass: the guard exits by SIGALRM (the caller's "timed out");
- its parent dies, however it dies: Linux sends the guard SIGTERM then
  (``prctl(PR_SET_PDEATHSIG)``); elsewhere, or if the parent died before
  the guard could ask for that, the guard notices within ``PARENT_POLL``
  seconds that its parent pid changed;
- it gets SIGTERM or SIGHUP (the runner stopping): it exits by SIGTERM.

SIGINT is ignored: the worker, not the guard, decides what a Ctrl-C means
(finish within the grace period).

The parent-death signal is tied to the *thread* that started the guard,
not to the process: Linux sends it when that thread exits. ``run_bounded``
waits for the guard in the thread that started it, so that thread outlives
the command unless the whole process dies, which is the case to catch.

A guard killed from outside with SIGKILL (it alone, or ``P`` with it)
cannot act: its runner ends ``P`` when it sees its guard killed
(``base.run_bounded``). What a guard cannot stop: a process that leaves
``P`` on purpose (``setsid``, a daemon's double fork) escapes the group
kill.
"""

import os
import select
import sys
import time

# ``_signal``, not ``signal``: the same functions without the enums, whose import would
# take about as long as the rest of the guard's start.
import _signal as signal

PARENT_POLL = 0.5  # seconds between two looks at the parent pid
_PR_SET_PDEATHSIG = 1


def _set_parent_death_signal(signum) -> bool:
    """Ask Linux to send ``signum`` to this process when its parent (thread) dies; False elsewhere."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(_PR_SET_PDEATHSIG, signum, 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def _spawn(argv) -> int:
    """Fork and exec ``argv`` in a new process group (this process is single-threaded: fork is safe)."""
    pid = os.fork()
    if pid == 0:  # the command
        try:
            _set_parent_death_signal(signal.SIGKILL)
            # As a shell would start it: Python ignores SIGPIPE and SIGXFSZ, the guard SIGINT,
            # and an ignored signal stays ignored across exec.
            for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGCHLD, signal.SIGPIPE, signal.SIGXFSZ):
                signal.signal(s, signal.SIG_DFL)
            signal.set_wakeup_fd(-1)
            os.execvp(argv[0], argv)
        except BaseException as exc:  # whatever it is, say it and leave like a shell
            try:
                os.write(2, f"cannot run {argv[0]}: {getattr(exc, 'strerror', None) or exc}\n".encode())
            finally:
                os._exit(127)
    return pid


def _kill_group(pgid) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass  # nothing left in the group


def _end_group(home) -> None:
    """Kill ``P`` from outside it: step back into the parent's group ``home`` first, so that the
    guard lives on to say how the command ended. When that group is gone, so is the parent,
    and nobody waits for the guard: it dies with ``P``."""
    try:
        os.setpgid(0, home)
    except OSError:
        pass
    _kill_group(os.getpid())


def _status(wait_status) -> int:
    if os.WIFSIGNALED(wait_status):
        return 128 + os.WTERMSIG(wait_status)
    return os.WEXITSTATUS(wait_status)


def _die_by(signum):
    signal.signal(signum, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, [signum])
    os.kill(os.getpid(), signum)
    os._exit(128 + signum)  # not reached


def main(argv) -> int:
    parent, seconds, command = int(argv[0]), float(argv[1]), argv[2:]
    end = time.monotonic() + seconds
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_r, False)
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)
    for s in (signal.SIGTERM, signal.SIGHUP, signal.SIGCHLD):
        signal.signal(s, lambda *_: None)  # the wake-up pipe says which arrived
    notified = _set_parent_death_signal(signal.SIGTERM)
    if os.getppid() != parent:
        return 125  # the parent died before it could be watched: run nothing
    home = os.getpgrp()
    os.setpgid(0, 0)  # P: a group whose id is this pid; the guard stays in it while the command runs
    child = _spawn(command)
    try:
        return _watch(child, parent, end, wake_r, notified, home)
    finally:
        _end_group(home)


def _watch(child, parent, end, wake_r, notified, home) -> int:
    """Wait for the first end (see the module doc); return the exit status, or die by the signal that says why."""
    while True:
        done, wait_status = os.waitpid(child, os.WNOHANG)
        if done:
            _end_group(home)  # what it left in the background
            return _status(wait_status)
        left = end - time.monotonic()
        if left <= 0:
            _end_group(home)
            os.waitpid(child, 0)
            _die_by(signal.SIGALRM)
        if os.getppid() != parent:
            stop = True
        else:
            select.select([wake_r], [], [], left if notified else min(left, PARENT_POLL))
            try:
                got = os.read(wake_r, 512)
            except BlockingIOError:
                got = b""
            stop = signal.SIGTERM in got or signal.SIGHUP in got
        if stop:
            _end_group(home)
            os.waitpid(child, 0)
            _die_by(signal.SIGTERM)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

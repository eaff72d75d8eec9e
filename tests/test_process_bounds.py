"""No work of a sub-task outlives its runner, its worker or its deadline.

Real processes: a shell runner or a ``brain worker`` runs commands that
start background grandchildren, which ignore every polite signal and would
write a file much later. The test kills the runner (or worker) however a
process dies, or lets a deadline pass, then polls until no process of the
commands' process groups is left (bounded, never a stopwatch): once none
is, the late files can never be written, and the test checks they were not.
"""

import os
import signal
import subprocess
import sys

import pytest

from conftest import BRAIN
from brain_jobs import jobs, pool
from tests.test_runner_support import cli, dispatch_event, finished, wait_until

pytestmark = pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="reads process groups from /proc")

# Records its shell's pid, starts a grandchild that ignores TERM, HUP and INT and would
# write late/N in 30 s, then waits far longer than any test.
COMMAND = ("echo $$ > {marks}/{n}.sh; (trap '' TERM HUP INT; sleep 30; touch {late}/{n}) & "
           "echo $! > {marks}/{n}.bg; sleep 300")


def stat_of(pid):
    """``(state, pgrp)`` of a live process, or None once it is gone or a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return None
    return None if fields[0] == "Z" else (fields[0], int(fields[2]))


def members(groups):
    """Pids of the live processes in ``groups``."""
    found = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            st = stat_of(int(name))
            if st is not None and st[1] in groups:
                found.append(int(name))
    return found


@pytest.fixture
def commands(tmp_path):
    """``(queries, marks, late, groups)``: the commands, and the process groups they turn out to run in.

    Whatever the test's outcome, nothing it started is left running.
    """
    marks, late = tmp_path / "marks", tmp_path / "late"
    marks.mkdir()
    late.mkdir()
    groups = set()
    yield [COMMAND.format(marks=marks, late=late, n=n) for n in (1, 2)], marks, late, groups
    for pid in [int(p.read_text()) for p in marks.iterdir() if p.read_text().strip()]:
        st = stat_of(pid)
        if st is not None:
            groups.add(st[1])
            os.kill(pid, signal.SIGKILL)
    for group in groups:
        try:
            os.killpg(group, signal.SIGKILL)
        except OSError:
            pass  # already empty: what the tests expect


def running_groups(marks, count, groups):
    """Wait until ``count`` commands and their grandchildren run; return their process groups."""
    def started():
        shells = [p for p in marks.glob("*.sh") if p.read_text().strip()]
        grandchildren = [p for p in marks.glob("*.bg") if p.read_text().strip()]
        return len(shells) == count and len(grandchildren) == count and shells

    for path in wait_until(started, timeout=30, what="the commands and their grandchildren to start"):
        st = stat_of(int(path.read_text()))
        assert st is not None, "a command ended before the test could see it"
        groups.add(st[1])
        assert stat_of(int((marks / path.name.replace(".sh", ".bg")).read_text()))[1] == st[1]
    return groups


def assert_all_gone(groups, late):
    left = wait_until(lambda: not members(groups) and "gone", timeout=20,
                      what=f"every process of the groups {sorted(groups)} to die")
    assert left == "gone"
    assert list(late.iterdir()) == []  # nobody is left who could write them


def dispatch_shell(queries, db, cwd):
    """A job of ``queries`` dispatched to a detached shell runner: ``(job, its runner's {pid, log})``."""
    job = jobs.create_job_with_subtasks(600, {"prompt": "p"}, queries, db=db)
    proc = cli("job", "dispatch", job, "--executor", "shell", "--allow-shell", cwd=cwd)
    assert proc.returncode == 0, proc.stderr
    return job, dispatch_event(job, db)["runner"]


@pytest.mark.parametrize("how", [signal.SIGKILL, signal.SIGTERM, signal.SIGINT, signal.SIGHUP], ids=lambda s: s.name)
def test_a_killed_runner_takes_its_commands_and_their_grandchildren_with_it(commands, db, tmp_path, how):
    queries, marks, late, groups = commands
    job, runner = dispatch_shell(queries, db, tmp_path)
    running_groups(marks, 2, groups)
    assert os.getpgid(runner["pid"]) not in groups  # the runner is not in its commands' groups

    os.kill(runner["pid"], how)

    wait_until(lambda: stat_of(runner["pid"]) is None, timeout=20, what="the runner to end")
    assert_all_gone(groups, late)
    subs = jobs.get_job(job, db=db)["sub_tasks"]
    if how == signal.SIGKILL:  # nobody is left to report: the deadline will time them out
        assert [s["status"] for s in subs] == ["running", "running"]
    else:  # a runner told to stop says so for each sub-task
        assert [(s["status"], s["result"]) for s in subs] == [("failed", f"runner stopped ({how.name})")] * 2
        assert f"{how.name}: stopping 2 unfinished sub-task(s), 2 command(s) killed" in open(runner["log"]).read()


def test_what_a_command_leaves_in_the_background_ends_with_it(db, tmp_path):
    """The sub-task is over when its command exits: a background process it left is killed then."""
    late = tmp_path / "late"
    late.mkdir()
    marks = tmp_path / "bg"
    query = f"(trap '' TERM HUP INT; sleep 30; touch {late}/1) > /dev/null 2>&1 & echo $! > {marks}; echo started"
    job = jobs.create_job_with_subtasks(600, {"prompt": "p"}, [query], db=db)
    proc = cli("job", "dispatch", job, "--executor", "shell", "--allow-shell", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    row = wait_until(lambda: finished(job, db), what="the command to finish")
    assert (row["sub_tasks"][0]["status"], row["sub_tasks"][0]["result"]) == ("completed", "exit 0: started")
    bg = int(marks.read_text())
    wait_until(lambda: stat_of(bg) is None, timeout=20, what="the background process to be killed")
    assert list(late.iterdir()) == []


def test_a_command_past_its_deadline_dies_with_its_grandchildren_while_the_runner_lives(commands, db, tmp_path):
    queries, marks, late, groups = commands
    job = jobs.create_job_with_subtasks(600, {"prompt": "p"}, queries[:1], db=db)
    proc = cli("job", "dispatch", job, "--executor", "shell", "--allow-shell", cwd=tmp_path,
               env={"BRAIN_SHELL_TIMEOUT": "1"})
    assert proc.returncode == 0, proc.stderr
    running_groups(marks, 1, groups)
    row = wait_until(lambda: finished(job, db), what="the command to time out")
    assert (row["sub_tasks"][0]["status"], row["sub_tasks"][0]["result"]) == (
        "failed", "the command timed out after 1s")
    assert_all_gone(groups, late)


@pytest.mark.parametrize("how", [signal.SIGKILL, signal.SIGTERM, signal.SIGHUP], ids=lambda s: s.name)
def test_a_killed_worker_takes_its_commands_and_their_grandchildren_with_it(commands, db, tmp_path, how):
    queries, marks, late, groups = commands
    job = jobs.create_job_with_subtasks(600, {"prompt": "p"}, queries, db=db)
    pool.queue_job(job, "shell", allow_shell=True, db=db)
    log = tmp_path / "worker.log"
    with open(log, "w") as err:
        worker = subprocess.Popen([sys.executable, str(BRAIN), "worker", "--executor", "shell", "--allow-shell",
                                   "--concurrency", "2", "--grace", "0.5"], cwd=tmp_path, stdout=subprocess.DEVNULL,
                                  stderr=err)
    try:
        running_groups(marks, 2, groups)
        assert os.getpgid(worker.pid) not in groups
        worker.send_signal(how)
        worker.wait(timeout=30)
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait(10)
    assert_all_gone(groups, late)
    subs = jobs.get_job(job, db=db)["sub_tasks"]
    if how != signal.SIGKILL:  # after the grace period: killed, then released back to the pool
        assert worker.returncode == 0, log.read_text()
        assert [s["status"] for s in subs] == ["pending", "pending"]
        assert f"{how.name}: releasing 2 sub-task(s), 2 command(s) killed" in log.read_text()


def test_a_runner_killed_with_its_whole_process_group_takes_its_commands_with_it(commands, db, tmp_path):
    """``kill -9 -- -PGID`` on the runner's group kills the runner and all that group holds at once:
    the guards are not in it, so they live to end their commands' groups."""
    queries, marks, late, groups = commands
    job, runner = dispatch_shell(queries, db, tmp_path)
    running_groups(marks, 2, groups)

    os.killpg(os.getpgid(runner["pid"]), signal.SIGKILL)

    wait_until(lambda: stat_of(runner["pid"]) is None, timeout=20, what="the runner to end")
    assert_all_gone(groups, late)


def test_a_worker_killed_with_its_whole_process_group_takes_its_commands_with_it(commands, db, tmp_path):
    queries, marks, late, groups = commands
    job = jobs.create_job_with_subtasks(600, {"prompt": "p"}, queries, db=db)
    pool.queue_job(job, "shell", allow_shell=True, db=db)
    worker = subprocess.Popen([sys.executable, str(BRAIN), "worker", "--executor", "shell", "--allow-shell",
                               "--concurrency", "2"], cwd=tmp_path, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        running_groups(marks, 2, groups)
        os.killpg(worker.pid, signal.SIGKILL)
        worker.wait(timeout=30)
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait(10)
    assert_all_gone(groups, late)


def test_a_guard_killed_alone_has_its_commands_killed_by_the_runner(commands, db, tmp_path):
    """A guard cannot act on SIGKILL: the runner, seeing it killed, ends its group (whose id is the
    guard's pid), and the sub-task fails saying so."""
    queries, marks, late, groups = commands
    job = jobs.create_job_with_subtasks(600, {"prompt": "p"}, queries[:1], db=db)
    proc = cli("job", "dispatch", job, "--executor", "shell", "--allow-shell", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    (guard,) = running_groups(marks, 1, groups)

    os.kill(guard, signal.SIGKILL)

    row = wait_until(lambda: finished(job, db), timeout=20, what="the sub-task to fail")
    assert (row["sub_tasks"][0]["status"], row["sub_tasks"][0]["result"]) == (
        "failed", "the command stopped: its guard got signal SIGKILL")
    assert_all_gone(groups, late)

"""Rows 4 and 6: headless throughput and the runner's memory.

brain: one job of N trivial sub-tasks (the ``grep`` executor on a one-line
file: in-process, no network, no child process), dispatched to a headless
runner through ``runner.launch`` (what ``brain job dispatch --executor grep``
calls), executed, reported and consolidated. Timed from dispatch to the
consolidation; the runner's start is included.

Huey: N trivial tasks that store a result, SqliteStorage, a consumer with 2
worker processes already running (its normal state). Timed from the first
enqueue to every result read back.

Both run with 2 workers, alternately, in the same run. Peak RSS (row 6) is
``VmHWM`` read from ``/proc`` while the processes run: ``ru_maxrss`` from
``wait4`` is useless here, since Linux carries the parent's high-water mark
into a child through ``vfork`` + ``exec``.
"""

import glob
import os
import signal
import subprocess
import sys
import time

from .common import ROOT, TempDir, child_env, median, progress

GOAL = 1.0  # x Huey's tasks per second
WORKERS = 2


def _hwm_kib(pid) -> int:
    """The peak resident set of a live process (``VmHWM``, KiB); 0 once it is gone."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0


def _family(pid) -> list:
    """``pid`` and its live children (Huey's worker processes)."""
    kids = []
    for path in glob.glob(f"/proc/{pid}/task/*/children"):
        try:
            with open(path, encoding="ascii") as fh:
                kids += [int(k) for k in fh.read().split()]
        except OSError:
            pass
    return [pid] + kids


class _Peak:
    """Track the summed ``VmHWM`` of a process and its children, sampled every 20 ms."""

    def __init__(self, pid):
        self.pid, self.peaks = pid, {}

    def sample(self):
        for p in _family(self.pid):
            self.peaks[p] = max(self.peaks.get(p, 0), _hwm_kib(p))

    @property
    def mib(self):
        return round(sum(self.peaks.values()) / 1024, 1)


def _ours(n, tmp):
    from brain_jobs import config, jobs, runner

    db = os.path.join(tmp, f"brain-{time.monotonic_ns()}.db")
    haystack = os.path.join(tmp, "haystack.txt")
    with open(haystack, "w", encoding="utf-8") as fh:
        fh.write("a needle in a haystack\n")
    job = jobs.create_job_with_subtasks(3600, {"prompt": "headless"}, ["needle"] * n, db=db)
    settings = config.resolve({"executor": "grep", "concurrency": WORKERS})
    start = time.perf_counter()
    out = runner.launch(job, "grep", settings=settings, files=[haystack], workdir=tmp, db=db)
    peak = _Peak(out["pid"])
    while True:
        peak.sample()
        done, status = os.waitpid(out["pid"], os.WNOHANG)
        if done:
            break
        time.sleep(0.02)
    summary = jobs.consolidate_subtask_results(job, db=db)
    seconds = time.perf_counter() - start
    runner._reap()
    jobs.close_stores()
    if summary["completed"] != n or os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"headless run incomplete: {summary['completed']}/{n} completed, "
                           f"runner exit {os.waitstatus_to_exitcode(status)}; see {out['log']}")
    return {"seconds": round(seconds, 3), "per_second": round(n / seconds, 1),
            "runner_peak_rss_mib": peak.mib}


def _huey(n, tmp):
    path = os.path.join(tmp, f"huey-{time.monotonic_ns()}.db")
    env = child_env({"BENCH_HUEY_DB": path})
    consumer = subprocess.Popen(
        [sys.executable, "-m", "huey.bin.huey_consumer", "bench.huey_app.huey", "-w", str(WORKERS), "-k", "process",
         "-d", "0.01", "-q"], cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        from . import huey_app

        huey, trivial = huey_app.make(path)
        time.sleep(1.5)  # let the consumer and its workers start; not timed
        if consumer.poll() is not None:
            raise RuntimeError(f"huey consumer exited: {consumer.stderr.read().decode()[-500:]}")
        peak = _Peak(consumer.pid)
        start = time.perf_counter()
        handles = [trivial(i) for i in range(n)]
        enqueued = time.perf_counter() - start
        polls = 0
        while huey.storage.result_store_size() < n:
            if time.perf_counter() - start > 300:
                raise RuntimeError("huey did not finish in 300 s")
            polls += 1
            if polls % 10 == 0:
                peak.sample()
            time.sleep(0.002)
        peak.sample()
        values = [h.get() for h in handles]
        seconds = time.perf_counter() - start
    finally:
        consumer.send_signal(signal.SIGINT)
        consumer.wait()
    if values != list(range(n)):
        raise RuntimeError("huey results are wrong")
    return {"seconds": round(seconds, 3), "per_second": round(n / seconds, 1),
            "enqueue_per_second": round(n / enqueued, 1),
            "consumer_peak_rss_mib": peak.mib}


def run(n=1000, rounds=2):
    ours, peer = [], []
    with TempDir() as tmp:
        for r in range(rounds):
            peer.append(_huey(n, tmp))
            ours.append(_ours(n, tmp))
            progress(f"headless round {r + 1}/{rounds}: brain {ours[-1]['per_second']}/s, "
                     f"huey {peer[-1]['per_second']}/s")
    mine = median([x["per_second"] for x in ours])
    theirs = median([x["per_second"] for x in peer])
    return {
        "sub_tasks": n, "workers": WORKERS, "rounds": rounds, "executor": "grep",
        "brain_per_second": mine, "huey_per_second": theirs, "ratio": round(mine / theirs, 3),
        "goal_ratio": GOAL, "goal_met": mine / theirs >= GOAL,
        "runner_peak_rss_mib": max(x["runner_peak_rss_mib"] for x in ours),
        "huey_consumer_peak_rss_mib": max(x["consumer_peak_rss_mib"] for x in peer),
        "brain_runs": ours, "huey_runs": peer,
    }

"""Row 3: fan-out scale. Jobs of 10, 1,000 and 5,000 sub-tasks, through the API in
one process: create, one report, one ``subtasks`` read, consolidate. The sizes
are alternated within every round so noise falls on all of them alike.
"""

import cProfile
import io
import os
import pstats

from .common import TempDir, median, ms, progress, timed

SIZES = (10, 1000, 5000)
GOAL = 2.0  # report on 1,000 sub-tasks / report on 10


def run(rounds=5, reports_per_round=5, sizes=SIZES, synchronous="FULL"):
    from scripts.memory import jobs

    previous = os.environ.get("BRAIN_SYNCHRONOUS")
    os.environ["BRAIN_SYNCHRONOUS"] = synchronous  # read when the store opens
    try:
        return _run(jobs, rounds, reports_per_round, sizes, synchronous)
    finally:
        if previous is None:
            os.environ.pop("BRAIN_SYNCHRONOUS", None)
        else:
            os.environ["BRAIN_SYNCHRONOUS"] = previous


def _run(jobs, rounds, reports_per_round, sizes, synchronous):
    times = {n: {"create": [], "report": [], "subtasks": [], "consolidate": []} for n in sizes}
    profile = None
    with TempDir() as tmp:
        db = os.path.join(tmp, "jobs.db")
        for r in range(rounds):
            for n in sizes:
                queries = [f"GET /api/items/{i}" for i in range(n)]
                t, job = timed(jobs.create_job_with_subtasks, 3600, {"prompt": "fan-out"}, queries, db=db)
                times[n]["create"].append(t)
                for i in range(1, reports_per_round + 1):
                    t, _ = timed(jobs.update_subtask_status, job, f"sub_{i}", "completed", "[200 OK] 5 items",
                                 agent_id=f"bench_{i}", db=db)
                    times[n]["report"].append(t)
                t, _ = timed(jobs.get_job_subtasks, job, db=db)
                times[n]["subtasks"].append(t)
                t, _ = timed(jobs.consolidate_subtask_results, job, db=db)
                times[n]["consolidate"].append(t)
                if r == rounds - 1 and n == 1000 and 1000 in sizes:
                    profile = _profile(jobs, job, db, first=reports_per_round + 1)
            progress(f"fan-out ({synchronous}): round {r + 1}/{rounds}")
        jobs.close_stores()
    out = {"rounds": rounds, "reports_per_round": reports_per_round, "synchronous": synchronous, "sizes": {},
           "goal_ratio": GOAL}
    for n in sizes:
        out["sizes"][str(n)] = {f"{what}_ms": ms(median(v)) for what, v in times[n].items()}
    small, big = str(min(sizes)), "1000"
    if big in out["sizes"]:
        out["ratio"] = round(out["sizes"][big]["report_ms"] / out["sizes"][small]["report_ms"], 2)
        out["goal_met"] = out["ratio"] <= GOAL
    out["profile_report_1000"] = profile
    return out


def _profile(jobs, job, db, first, count=20):
    """Where a report on the 1,000-sub-task job spends its time (cProfile, by own time)."""
    prof = cProfile.Profile()
    prof.enable()
    for i in range(first, first + count):
        jobs.update_subtask_status(job, f"sub_{i}", "completed", "[200 OK]", agent_id=f"bench_{i}", db=db)
    prof.disable()
    stream = io.StringIO()
    stats = pstats.Stats(prof, stream=stream)
    total = stats.total_tt
    rows = []
    for (filename, line, func), (cc, nc, tt, ct, callers) in stats.stats.items():
        rows.append((tt, ct, nc, f"{os.path.basename(filename)}:{line}({func})"))
    rows.sort(reverse=True)
    return {
        "reports": count, "total_ms_per_report": ms(total / count),
        "top_own_time": [{"function": name, "calls_per_report": round(nc / count, 1),
                          "own_ms_per_report": ms(tt / count), "share": round(tt / total, 3)}
                         for tt, ct, nc, name in rows[:10]],
    }

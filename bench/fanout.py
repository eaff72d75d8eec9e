"""Row 3: fan-out scale. Jobs of 10, 1,000 and 5,000 sub-tasks, through the API in
one process: create, one report, one ``subtasks`` read, consolidate. The sizes
are alternated within every round so noise falls on all of them alike.

Two physical references run on twin jobs created the same way, in the same
file, right after brain's reports, under the same ``synchronous``: a bare ``sqlite3`` report as
one ``json_set`` statement (the raw limit of row 2), and a bare "splice" that
cuts the sub-task out of the stored text and writes the text back, with no
JSON decoding at all. Both rewrite the whole ``sub_tasks`` value, as any report
must while that value is the job's current state; their 1,000/10 ratios show
what the record rewrite alone costs.

A third reference shows what it would take to escape it: the same splice on a
job whose text was first laid out with whitespace slack (each sub-task padded
to one width, room left after the history), so the record keeps its size and
SQLite overwrites only the pages that changed. It still decodes nothing, so
it is a lower bound that brain's reports, which decode the job to apply
its rules, do not reach (see docs/benchmarks.md).
"""

import cProfile
import io
import json
import os
import pstats
import sqlite3

from .common import TempDir, median, ms, progress, timed

SIZES = (10, 1000, 5000)
GOAL = 2.0  # report on 1,000 sub-tasks / report on 10


def run(rounds=5, reports_per_round=5, sizes=SIZES, synchronous="FULL"):
    from brain_jobs import jobs

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
    times = {n: {"create": [], "report": [], "subtasks": [], "consolidate": [], "raw_json_set": [],
                 "raw_splice": [], "raw_slack": []} for n in sizes}
    profile = None
    with TempDir() as tmp:
        db = os.path.join(tmp, "jobs.db")
        raw = _Raw(db, synchronous)
        for r in range(rounds):
            for n in sizes:
                queries = [f"GET /api/items/{i}" for i in range(n)]
                t, job = timed(jobs.create_job_with_subtasks, 3600, {"prompt": "fan-out"}, queries, db=db)
                times[n]["create"].append(t)
                for i in range(1, reports_per_round + 1):
                    t, _ = timed(jobs.update_subtask_status, job, f"sub_{i}", "completed", "[200 OK] 5 items",
                                 agent_id=f"bench_{i}", db=db)
                    times[n]["report"].append(t)
                for ref, write in (("raw_json_set", raw.json_set), ("raw_splice", raw.splice),
                                   ("raw_slack", raw.slack_splice)):
                    twin = jobs.create_job_with_subtasks(3600, {"prompt": "fan-out"}, queries, db=db)
                    if ref == "raw_slack":
                        raw.add_slack(twin)
                    for i in range(1, reports_per_round + 1):
                        times[n][ref].append(timed(write, twin, i)[0])
                t, _ = timed(jobs.get_job_subtasks, job, db=db)
                times[n]["subtasks"].append(t)
                t, _ = timed(jobs.consolidate_subtask_results, job, db=db)
                times[n]["consolidate"].append(t)
                if r == rounds - 1 and n == 1000 and 1000 in sizes:
                    profile = _profile(jobs, job, db, first=reports_per_round + 1)
            progress(f"fan-out ({synchronous}): round {r + 1}/{rounds}")
        raw.close()
        jobs.close_stores()
    out = {"rounds": rounds, "reports_per_round": reports_per_round, "synchronous": synchronous, "sizes": {},
           "goal_ratio": GOAL}
    for n in sizes:
        out["sizes"][str(n)] = {f"{what}_ms": ms(median(v)) for what, v in times[n].items()}
    small, big = str(min(sizes)), "1000"
    if big in out["sizes"]:
        out["ratio"] = round(out["sizes"][big]["report_ms"] / out["sizes"][small]["report_ms"], 2)
        out["goal_met"] = out["ratio"] <= GOAL
        for ref in ("raw_json_set", "raw_splice", "raw_slack"):
            out[f"{ref}_ratio"] = round(out["sizes"][big][f"{ref}_ms"] / out["sizes"][small][f"{ref}_ms"], 2)
    out["profile_report_1000"] = profile
    return out


class _Raw:
    """The physical references: one sub-task's report written with bare ``sqlite3``.

    Like brain's report, each is one ``BEGIN IMMEDIATE`` transaction that sets the
    sub-task's status, result and time and appends a history event.
    """

    def __init__(self, db, synchronous):
        self.conn = sqlite3.connect(db, isolation_level=None)
        self.conn.execute(f"PRAGMA synchronous = {synchronous}")

    def close(self):
        self.conn.close()

    @staticmethod
    def _event(i):
        return json.dumps({"at": "2026-11-29T00:00:00.000Z", "event": "report", "sub_task_id": f"sub_{i}",
                           "status": "completed", "agent_id": f"raw_{i}"}, separators=(",", ":"))

    def json_set(self, job, i):
        k = i - 1
        self.conn.execute("BEGIN IMMEDIATE")
        self.conn.execute(
            f"UPDATE jobs SET sub_tasks = json_set(sub_tasks, '$[{k}].status', 'completed', '$[{k}].result', "
            f"'[200 OK] 5 items', '$[{k}].updated_at', '2026-11-29T00:00:00.000Z'), "
            "history = json_insert(history, '$[#]', json(?)) WHERE job_id = ?", (self._event(i), job))
        self.conn.execute("COMMIT")

    def splice(self, job, i):
        """Find the sub-task in the stored text, replace only its bytes, write the text back."""
        self.conn.execute("BEGIN IMMEDIATE")
        subs, history = self.conn.execute("SELECT sub_tasks, history FROM jobs WHERE job_id = ?", (job,)).fetchone()
        start = subs.index(f'{{"sub_task_id":"sub_{i}",')
        end = subs.find(',{"sub_task_id":', start)
        end = len(subs) - 1 if end < 0 else end
        sub = json.loads(subs[start:end])
        sub.update(status="completed", result="[200 OK] 5 items", updated_at="2026-11-29T00:00:00.000Z")
        subs = subs[:start] + json.dumps(sub, separators=(",", ":"), ensure_ascii=False) + subs[end:]
        history = history[:-1] + "," + self._event(i) + "]"
        self.conn.execute("UPDATE jobs SET sub_tasks = ?, history = ? WHERE job_id = ?", (subs, history, job))
        self.conn.execute("COMMIT")


    SLOT_ROOM = 64  # bytes of slack per sub-task: room for a short result
    HISTORY_ROOM = 8192

    def add_slack(self, job):
        """Lay the job's text out again, untimed: fixed-width sub-task slots, room after the history."""
        subs = json.loads(self.conn.execute("SELECT sub_tasks FROM jobs WHERE job_id = ?", (job,)).fetchone()[0])
        texts = [json.dumps(x, separators=(",", ":")) for x in subs]
        width = max(len(t) for t in texts) + self.SLOT_ROOM
        history = self.conn.execute("SELECT history FROM jobs WHERE job_id = ?", (job,)).fetchone()[0]
        self.conn.execute("UPDATE jobs SET sub_tasks = ?, history = ? WHERE job_id = ?",
                          ("[" + ",".join(t.ljust(width) for t in texts) + "]",
                           history + " " * self.HISTORY_ROOM, job))
        self.width = width

    def slack_splice(self, job, i):
        """Overwrite sub-task i's slot and append the event into the history's room: same lengths."""
        self.conn.execute("BEGIN IMMEDIATE")
        subs, history = self.conn.execute("SELECT sub_tasks, history FROM jobs WHERE job_id = ?", (job,)).fetchone()
        start = 1 + (i - 1) * (self.width + 1)
        sub = json.loads(subs[start:start + self.width])
        sub.update(status="completed", result="[200 OK] 5 items", updated_at="2026-11-29T00:00:00.000Z")
        subs = subs[:start] + json.dumps(sub, separators=(",", ":")).ljust(self.width) + subs[start + self.width:]
        used = history.rstrip()
        grown = used[:-1] + "," + self._event(i) + "]"
        history = grown + " " * (len(history) - len(grown))
        self.conn.execute("UPDATE jobs SET sub_tasks = ?, history = ? WHERE job_id = ?", (subs, history, job))
        self.conn.execute("COMMIT")


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

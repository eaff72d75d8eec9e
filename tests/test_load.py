"""Load: 64 concurrent reporter processes on one job while 8 other jobs are worked.

Zero reports may be lost, and no process may ever show a raw
"database is locked": waits are bounded by the store's own lock.
"""

import json
import subprocess
import sys
import textwrap

from conftest import BRAIN, ROOT
from brain_jobs import jobs

# One worker on one job: claims (running), then completes, each of its sub-tasks.
WORKER = textwrap.dedent("""
    import sys
    sys.path.insert(0, {root!r})
    from brain_jobs import jobs
    db, job = sys.argv[1:3]
    for pair in sys.argv[3:]:
        sub, agent = pair.split("=")
        jobs.update_subtask_status(job, sub, "running", agent_id=agent, db=db)
        jobs.update_subtask_status(job, sub, "completed", "w " + sub, agent_id=agent, db=db)
""").format(root=str(ROOT))

# A reader polling the big job's consolidation until it is complete.
READER = textwrap.dedent("""
    import json, subprocess, sys
    brain, job = sys.argv[1:3]
    seen = []
    for _ in range(400):
        out = subprocess.run([sys.executable, brain, "job", "consolidate", job, "--json"],
                             capture_output=True, text=True)
        if out.returncode != 0:
            sys.stderr.write(out.stderr)
            sys.exit(1)
        c = json.loads(out.stdout)
        seen.append(c["completed"])
        if c["complete"]:
            break
    print(json.dumps(seen))
""")


def agents(out):
    return {jobs.parse_subtask_prompt(c["prompt"])[1]: jobs.parse_subtask_prompt(c["prompt"])[2]
            for c in out["agent_calls"]}


def test_64_reporters_on_one_job_and_8_jobs_at_once_lose_nothing(db):
    big = jobs.create_job_with_subtasks(600, {"prompt": "fan out"}, [f"GET /e/{i}" for i in range(64)], db=db)
    big_ids = agents(jobs.dispatch_job(big, db=db))
    small = [jobs.create_job_with_subtasks(600, {"prompt": f"job {j}"}, [f"q{j}.{i}" for i in range(8)], db=db)
             for j in range(8)]
    # Not dispatched: each worker claims its sub-tasks (running), then completes them.
    small_ids = {job: {f"sub_{i}": f"agent_w{j}_{i}" for i in range(1, 9)} for j, job in enumerate(small)}
    jobs.close_stores()

    procs = [subprocess.Popen([sys.executable, str(BRAIN), "job", "update", big, sub, "--status", "completed",
                               "--result", f"[200 OK] {sub}", "--agent-id", agent],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for sub, agent in big_ids.items()]
    procs += [subprocess.Popen([sys.executable, "-c", WORKER, db, job, *(f"{s}={a}" for s, a in ids.items())],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
              for job, ids in small_ids.items()]
    readers = [subprocess.Popen([sys.executable, "-c", READER, str(BRAIN), big], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outputs = [p.communicate(timeout=240) + (p.returncode,) for p in procs + readers]  # bounds a hang

    for out, err, code in outputs:
        assert "database is locked" not in err and "Traceback" not in err, err
        assert code == 0, err
    for (out, err, code), sub in zip(outputs[:64], big_ids):
        assert (out, err) == (f"{sub}: completed\n", "")

    final = jobs.consolidate_subtask_results(big, db=db)
    assert (final["completed"], final["failed"], final["complete"]) == (64, 0, True)
    assert [r["result"] for r in final["results"]] == [f"[200 OK] sub_{i}" for i in range(1, 65)]
    history = jobs.get_history(big, db=db)
    assert sum(e["event"] == "report" for e in history) == 64
    assert sum(e["event"] == "consolidated" for e in history) == 1
    for job in small:
        c = jobs.consolidate_subtask_results(job, db=db)
        assert (c["completed"], c["complete"]) == (8, True)
        assert [r["result"] for r in c["results"]] == [f"w sub_{i}" for i in range(1, 9)]
        events = [e["event"] for e in jobs.get_history(job, db=db)]
        assert events.count("report") == 16 and events.count("consolidated") == 1
    for out, _, _ in outputs[-2:]:
        seen = json.loads(out)
        assert seen == sorted(seen) and seen[-1] == 64  # readers never saw a report disappear

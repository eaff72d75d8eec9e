"""Row 1: what an agent pays per report -- one ``brain job update`` process, one
``brain job subtasks`` process -- against the bare interpreter, alternated run by run.

``brain`` is started as an agent starts it inside Claude Code: ``bin/brain``
with ``BRAIN_PYTHON`` set, as the SessionStart hook exports it, to the real
interpreter (or to the plugin's venv). The shim path (``bin/brain`` without
``BRAIN_PYTHON``, which falls back to ``python3`` on PATH) is shown for honesty.
"""

import os
import random
import subprocess
import time

from .common import ROOT, TempDir, median, ms, percentile, progress, python_env, real_python

GOAL = 2.5  # x the real interpreter's `-c pass`


def _seed(db, reports_needed):
    """Jobs of 16 dispatched sub-tasks: one ``(job, sub, agent)`` per update run, and a job to read."""
    from brain_jobs import jobs

    slots = []
    while len(slots) < reports_needed:
        job = jobs.create_job_with_subtasks(3600, {"prompt": "latency"}, [f"GET /api/{i}" for i in range(16)], db=db)
        calls = jobs.dispatch_job(job, db=db)["agent_calls"]
        for call in calls:
            slots.append(jobs.parse_subtask_prompt(call["prompt"]))
    read_job = jobs.create_job_with_subtasks(3600, {"prompt": "read"}, [f"GET /api/{i}" for i in range(16)], db=db)
    for _, sub, agent in (jobs.parse_subtask_prompt(c["prompt"]) for c in jobs.dispatch_job(read_job, db=db)["agent_calls"][:8]):
        jobs.update_subtask_status(read_job, sub, "completed", "[200 OK] 5 items", agent_id=agent, db=db)
    jobs.close_stores()
    return slots, read_job


def run(rounds=40):
    real = real_python()
    venv = os.path.join(ROOT, ".venv", "bin", "python")
    launcher = os.path.join(ROOT, "bin", "brain")
    with TempDir() as tmp:
        db = os.path.join(tmp, "jobs.db")
        brain_envs = {
            "real": python_env({"BRAIN_DB": db, "BRAIN_PYTHON": real}),
            "venv": python_env({"BRAIN_DB": db, "BRAIN_PYTHON": venv}),
            "shim": python_env({"BRAIN_DB": db}),
        }
        slots, read_job = _seed(db, rounds * len(brain_envs))
        slots = iter(slots)
        bare = python_env()
        commands = {
            "python -c pass": lambda: ([real, "-c", "pass"], bare),
            "python -c 'import sqlite3'": lambda: ([real, "-c", "import sqlite3"], bare),
            "venv python -c pass": lambda: ([venv, "-c", "pass"], bare),
        }
        for name, env in brain_envs.items():
            commands[f"update ({name})"] = lambda env=env: (_update_cmd(launcher, next(slots)), env)
            commands[f"subtasks ({name})"] = lambda env=env: ([launcher, "job", "subtasks", read_job], env)
        times = {name: [] for name in commands}
        order = list(commands)
        rng = random.Random(7)
        for r in range(rounds):
            rng.shuffle(order)  # alternate run by run, in a different order each round
            for name in order:
                argv, env = _resolve(commands[name])
                start = time.perf_counter()
                proc = subprocess.run(argv, env=env, stdin=subprocess.DEVNULL, capture_output=True)
                elapsed = time.perf_counter() - start
                if proc.returncode != 0:
                    raise RuntimeError(f"{name} failed ({proc.returncode}): {proc.stderr.decode()[-300:]}")
                times[name].append(elapsed)
            if r % 10 == 9:
                progress(f"latency: {r + 1}/{rounds} rounds")
    base = median(times["python -c pass"])
    out = {"rounds": rounds, "interpreter": real, "goal_ratio": GOAL, "commands": {}}
    for name, values in times.items():
        out["commands"][name] = {
            "median_ms": ms(median(values)), "p90_ms": ms(percentile(values, 90)),
            "ratio_to_pass": round(median(values) / base, 2),
        }
    for name in ("update (real)", "subtasks (real)"):
        out["commands"][name]["goal_met"] = out["commands"][name]["ratio_to_pass"] <= GOAL
    return out


def _update_cmd(launcher, slot):
    job, sub, agent = slot
    return [launcher, "job", "update", job, sub, "--agent-id", agent, "--status", "completed",
            "--result", "[200 OK] 5 items"]


def _resolve(entry):
    argv, env = entry()
    return argv, env

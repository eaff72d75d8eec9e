"""Row 7: what a ready plugin costs the host per hook, against the bare interpreter.

The plugin data directory is prepared as after a first session (the
interpreter chosen and recorded, nothing left to install), then
``hooks/run session_start`` and ``hooks/run pre_tool_use`` (a worker's
report being approved) are timed as the host starts them, alternated run by
run with ``python -c pass``. Goal (issue 3): under 100 ms of hook time.
"""

import json
import os
import random
import subprocess
import time

from .common import ROOT, TempDir, median, ms, python_env, real_python

GOAL_MS = 100.0
PAYLOADS = os.path.join(ROOT, "tests", "host", "payloads")


def _payload(name, **subs):
    with open(os.path.join(PAYLOADS, name), encoding="utf-8") as fh:
        text = fh.read()
    for key, value in subs.items():
        text = text.replace(f"@{key}@", value)
    return text


def run(rounds=30):
    real = real_python()
    hook = os.path.join(ROOT, "hooks", "run")
    with TempDir() as tmp:
        data = os.path.join(tmp, "plugin-data")
        os.makedirs(data)
        none = os.path.join(tmp, "requirements-none.txt")
        open(none, "w").close()
        env = python_env({"CLAUDE_PLUGIN_DATA": data, "CLAUDE_PLUGIN_ROOT": ROOT, "BRAIN_REQUIREMENTS_FILE": none,
                          "CLAUDE_ENV_FILE": os.devnull, "BRAIN_DB": os.path.join(data, "jobs.db")})
        inputs = {
            "session_start": _payload("session_start.json", TMP=tmp),
            "pre_tool_use": _payload("pre_tool_use_worker_report.json", JOB="abc123", IDENTITY_1="a1",
                                     HOST_AGENT_1="h1", TMP=tmp),
        }
        # The first start chooses and records the interpreter, as in the host.
        subprocess.run([hook, "session_start"], input=inputs["session_start"].encode(), env=env,
                       capture_output=True, check=True)
        with open(os.path.join(data, "environment.json"), encoding="utf-8") as fh:
            assert json.load(fh)["status"] == "ready"
        commands = {"python -c pass": ([real, "-c", "pass"], None)}
        for name, body in inputs.items():
            commands[name] = ([hook, name], body.encode())
        times = {name: [] for name in commands}
        order = list(commands)
        rng = random.Random(11)
        for _ in range(rounds):
            rng.shuffle(order)
            for name in order:
                argv, stdin = commands[name]
                start = time.perf_counter()
                subprocess.run(argv, input=stdin, env=env, capture_output=True, check=True)
                times[name].append(time.perf_counter() - start)
    base = median(times["python -c pass"])
    out = {"rounds": rounds, "goal_ms": GOAL_MS, "hooks": {}}
    for name in inputs:
        value = median(times[name])
        out["hooks"][name] = {"median_ms": ms(value), "ratio_to_pass": round(value / base, 2),
                              "goal_met": ms(value) <= GOAL_MS}
    out["python_pass_ms"] = ms(base)
    return out

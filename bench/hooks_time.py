"""Row 7: what a ready plugin costs the host per hook, against the bare interpreter.

The plugin data directory is prepared as after a first session (the
interpreter chosen and recorded, nothing left to install), then each hook is
timed as the host starts it (its ``hooks/hooks.json`` command, through
``sh -c``), alternated run by run with the references: SessionStart and a
worker's report being approved by PreToolUse against ``python -c pass``
(goal, issue 3: under 100 ms), and PreToolUse on a Bash command that is not
the plugin's -- what every Bash call of every session pays -- against
``sh -c :`` (goal, issue 14: at most 5 ms, no Python started).
"""

import json
import os
import random
import subprocess
import time

from .common import ROOT, TempDir, median, ms, python_env, real_python

UNRELATED = "pre_tool_use (unrelated command)"
GOALS = {  # measure: (reference, goal in ms)
    "session_start": ("python -c pass", 100.0),
    "pre_tool_use": ("python -c pass", 100.0),
    UNRELATED: ("sh -c :", 5.0),
}
PAYLOADS = os.path.join(ROOT, "tests", "host", "payloads")


def _payload(name, **subs):
    with open(os.path.join(PAYLOADS, name), encoding="utf-8") as fh:
        text = fh.read()
    for key, value in subs.items():
        text = text.replace(f"@{key}@", value)
    return text


def _host_commands():
    """Each hook event's command line, as ``hooks/hooks.json`` gives it to the host's shell."""
    with open(os.path.join(ROOT, "hooks", "hooks.json"), encoding="utf-8") as fh:
        config = json.load(fh)["hooks"]
    return {event: entries[0]["hooks"][0]["command"] for event, entries in config.items()}


def run(rounds=30):
    real = real_python()
    host = _host_commands()
    with TempDir() as tmp:
        data = os.path.join(tmp, "plugin-data")
        os.makedirs(data)
        none = os.path.join(tmp, "requirements-none.txt")
        open(none, "w").close()
        env = python_env({"CLAUDE_PLUGIN_DATA": data, "CLAUDE_PLUGIN_ROOT": ROOT, "BRAIN_REQUIREMENTS_FILE": none,
                          "CLAUDE_ENV_FILE": os.devnull, "BRAIN_DB": os.path.join(data, "jobs.db")})
        report = _payload("pre_tool_use_worker_report.json", JOB="abc123", IDENTITY_1="a1", HOST_AGENT_1="h1",
                          TMP=tmp)
        unrelated = json.loads(report)
        unrelated["tool_input"] = {"command": "git status --short", "description": "Show changes"}
        inputs = {  # name: (hook event, payload)
            "session_start": ("SessionStart", _payload("session_start.json", TMP=tmp)),
            "pre_tool_use": ("PreToolUse", report),
            UNRELATED: ("PreToolUse", json.dumps(unrelated)),
        }
        # The first start chooses and records the interpreter, as in the host;
        # then one check that each PreToolUse payload gets the answer timed.
        subprocess.run(["sh", "-c", host["SessionStart"]], input=inputs["session_start"][1].encode(), env=env,
                       capture_output=True, check=True)
        with open(os.path.join(data, "environment.json"), encoding="utf-8") as fh:
            assert json.load(fh)["status"] == "ready"
        for name, expected in (("pre_tool_use", "allow"), (UNRELATED, "")):
            answer = subprocess.run(["sh", "-c", host["PreToolUse"]], input=inputs[name][1].encode(), env=env,
                                    capture_output=True, check=True).stdout.decode()
            assert expected in answer and bool(answer) == bool(expected), (name, answer)
        commands = {"python -c pass": ([real, "-c", "pass"], None), "sh -c :": (["sh", "-c", ":"], None)}
        for name, (event, body) in inputs.items():
            commands[name] = (["sh", "-c", host[event]], body.encode())
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
    out = {"rounds": rounds, "hooks": {}}
    for name, (reference, goal) in GOALS.items():
        value, base = median(times[name]), median(times[reference])
        out["hooks"][name] = {"median_ms": ms(value), "reference": reference, "reference_ms": ms(base),
                              "ratio_to_reference": round(value / base, 2), "goal_ms": goal,
                              "goal_met": ms(value) <= goal}
    return out

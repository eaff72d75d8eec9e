"""Fifty sub-tasks from inside the real Claude Code CLI, joined into one answer, for little context.

One run of ``claude -p`` (the pinned CLI, offline, against the scripted fake
Messages API of ``fanout_scenario.py``, with no network but loopback where
``unshare -n`` works). The main "model" creates a job of 50 sub-tasks with
``--glob`` (typing none of them), dispatches it with ``--executor claude``,
starts ``brain job wait`` in the background, and when the host says that
command ended, reads the joined result with a foreground ``brain job wait``
and answers from it. The workers are real nested ``claude -p`` processes
against the same fake API: odd ones read their note and report themselves,
even ones only answer (the runner reports), and two are refused with 529
until the CLI gives up once (the executor tries again).

Permissions: the plugin's PreToolUse hook approves what it approves (asked
the way the host asks it, ``allowed_tools``); only the main agent's commands
it leaves to the host are given with ``--allowedTools``: ``dispatch
--executor`` at least, which starts processes (the run prints the list).
The workers' reports are allowed by the executor's own ``--allowedTools``.

What "context" means here: the bytes the orchestrator's conversation grew by
from its create call to its final answer, host notifications included,
counted as content (tool inputs, tool results, texts, notifications: what
the model reads and writes), read from the fake API's request log.
"""

import json
import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.fakes.fake_anthropic import system_text
from tests.host import fanout_scenario as scenario
from tests.host.claude_cli import ROOT, api_requests, claude_binary, claude_outputs, isolated_command, isolated_env

N = 50
OVERLOADED = (3, 4)
BUDGET_PER_SUBTASK = 80  # bytes of orchestrator context per sub-task, everything included
RUN_TIMEOUT = 900  # only a hang gets near it

pytestmark = pytest.mark.sqlite_only  # the host run keeps its own store in its isolated HOME


def hook_approves(command, env) -> bool:
    """Whether the plugin's own PreToolUse hook approves ``command`` (run as the host runs it)."""
    payload = {"hook_event_name": "PreToolUse", "tool_name": "Bash", "tool_input": {"command": command},
               "session_id": "s", "cwd": "/", "transcript_path": "/dev/null"}
    proc = subprocess.run([str(ROOT / "hooks" / "run"), "pre_tool_use"], input=json.dumps(payload),
                          capture_output=True, text=True, env=env, timeout=30)
    answer = json.loads(proc.stdout) if proc.stdout.strip() else {}
    return (answer.get("hookSpecificOutput") or {}).get("permissionDecision") == "allow"


def allowed_tools(env) -> "tuple[str, list]":
    """``--allowedTools`` for the main agent's commands the plugin does not approve, and their names."""
    commands = {"create": scenario.create_command(), **scenario.main_commands("0123456789ab")}
    left = [name for name, command in commands.items() if not hook_approves(command, env)]
    return ",".join(f"Bash(brain job {name}:*)" for name in left), left


def main_requests(requests):
    return [r for r in requests if r["body"] and scenario.is_main(r["body"])]


def worker_requests(requests):
    """The headless workers' requests: the worker instructions in their system prompt."""
    return [r for r in requests if r["body"] and scenario.WORKER_MARKER in system_text(r["body"])
            and not scenario.is_main(r["body"])]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    claude = claude_binary()
    base = tmp_path_factory.mktemp("fanout")
    home, tmp, project, out = (base / n for n in ("home", "tmp", "project", "out"))
    for d in (home, tmp, project):
        d.mkdir()
    no_extras = base / "requirements-none.txt"
    no_extras.write_text("# the run prepares no optional packages\n")
    # A clean environment (nothing of the test process leaks in); `claude` on PATH, as for a user.
    env = isolated_env(
        home, tmp, PATH=f"{claude.parent}{os.pathsep}{os.environ['PATH']}",
        BRAIN_HOOK_DEBUG="1", BRAIN_REQUIREMENTS_FILE=str(no_extras),
        # Left alone, the CLI retries a 529 up to ten times over minutes; bounded, it gives
        # up after three tries and the executor's own retry is what gets the answer.
        CLAUDE_CODE_MAX_RETRIES=str(scenario.CLI_MAX_RETRIES))
    (base / "env.json").write_text(json.dumps(env))
    hook_env = dict(env, CLAUDE_PLUGIN_ROOT=str(ROOT), CLAUDE_PLUGIN_DATA=str(base / "hook-probe"))
    allowed, left = allowed_tools(hook_env)
    store = home / ".brain" / "jobs.db"  # the one store of sessions and terminals
    cmd = [sys.executable, str(Path(scenario.__file__)), "--claude", str(claude), "--cwd", str(project),
           "--out", str(out), "--env", str(base / "env.json"), "--n", str(N), "--store", str(store),
           "--overload", ",".join(map(str, OVERLOADED)), "--timeout", str(RUN_TIMEOUT),
           "--extra", json.dumps(["--plugin-dir", str(ROOT), "--allowedTools", allowed])]
    cmd, netns = isolated_command(cmd)
    started = time.monotonic()
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=2 * RUN_TIMEOUT + 60)
    print(f"fan-out run of {N} took {time.monotonic() - started:.1f}s (netns={netns}); "
          f"--allowedTools {allowed!r} (the plugin approves the rest)")
    assert proc.returncode == 0, f"scenario runner failed:\n{proc.stdout}\n{proc.stderr}"
    return {
        "base": base, "tmp": tmp, "out": out, "netns": netns, "store": store, "left": left,
        **claude_outputs(out),
        "requests": api_requests(out),
        "refused": json.loads((out / "refused.json").read_text()),
    }


def _explain(run) -> str:
    return f"rc={run['rc']}\nstdout={run['stdout'][-3000:]}\nstderr={run['stderr'][-3000:]}"


@pytest.fixture(scope="module")
def output(run):
    assert run["rc"] == "0", _explain(run)
    return json.loads(run["stdout"])


@pytest.fixture(scope="module")
def job(run, output):
    conn = sqlite3.connect(f"file:{run['store']}?mode=ro", uri=True)
    try:
        rows = conn.execute("SELECT job_id, status, sub_tasks, history, consolidated_result FROM jobs").fetchall()
    finally:
        conn.close()
    assert len(rows) == 1, _explain(run)
    job_id, status, subs, history, consolidated = rows[0]
    return {"job_id": job_id, "status": status, "sub_tasks": json.loads(subs), "history": json.loads(history),
            "consolidated": json.loads(consolidated)}


def test_the_run_succeeds_with_no_permission_prompt(run, output):
    assert output["is_error"] is False and output["subtype"] == "success", _explain(run)
    assert output["permission_denials"] == [], output["permission_denials"]
    assert not (run["out"] / "responder_errors.txt").read_text()
    # The plugin cannot approve a headless dispatch (it starts processes): the user's rule does.
    assert "dispatch" in run["left"]
    assert output["result"] == f"Notes: {N} summarized, 0 failed."  # answered from the joined result


def test_every_result_is_in_the_store(job):
    assert job["status"] == "completed" and len(job["sub_tasks"]) == N
    expected = {f"Summarize notes/item_{i:02d}.txt": ("completed", scenario.answer(i)) for i in range(1, N + 1)}
    assert {s["query"]: (s["status"], s["result"]) for s in job["sub_tasks"]} == expected
    assert (job["consolidated"]["completed"], job["consolidated"]["failed"]) == (N, 0)


def test_workers_reported_themselves_or_through_the_runner(job):
    by_item = {int(s["query"][-6:-4]): s for s in job["sub_tasks"]}
    for item, sub in by_item.items():
        reports = [e for e in job["history"] if e["event"] == "report" and e["sub_task_id"] == sub["sub_task_id"]]
        assert [(e["status"], e["agent_id"]) for e in reports] == [("completed", sub["agent_id"])], sub
    # Odd workers ran `brain job update` (allowed by the executor's --allowedTools, since
    # --safe-mode loads no plugin hook); the runner's own report of them was refused as a duplicate.
    assert all(s["agent_id"].startswith("agent_claude_") for s in job["sub_tasks"])


def test_every_workers_usage_is_recorded_and_added_up(job):
    for sub in job["sub_tasks"]:
        usage = sub.get("usage")
        assert usage and usage["input_tokens"] > 0 and usage["output_tokens"] > 0 and usage["cost_usd"] > 0, sub
    totals = job["consolidated"]["usage"]
    assert totals["input_tokens"] == sum(s["usage"]["input_tokens"] for s in job["sub_tasks"])
    assert totals["output_tokens"] == sum(s["usage"]["output_tokens"] for s in job["sub_tasks"])
    assert totals["cost_usd"] == pytest.approx(sum(s["usage"]["cost_usd"] for s in job["sub_tasks"]), abs=1e-5)


def test_overloaded_workers_were_tried_again(run, job):
    assert run["refused"] == {str(i): scenario.CLI_TRIES_ON_529 for i in OVERLOADED}  # the CLI gave up once
    by_item = {int(s["query"][-6:-4]): s for s in job["sub_tasks"]}
    assert all(by_item[i]["status"] == "completed" for i in OVERLOADED)


def test_workers_are_real_nested_headless_runs_with_read_only_tools(run):
    workers = worker_requests(run["requests"])
    sessions = {r["headers"].get("x-claude-code-session-id") for r in workers}
    assert len(sessions) == N + len(OVERLOADED), "one claude -p per sub-task, and one more per retried one"
    for r in workers:
        names = {t["name"] for t in r["body"]["tools"]}
        assert {"Read", "Grep", "Glob", "Bash"} <= names, names
        assert not names & {"Agent", "Edit", "Write", "Workflow", "NotebookEdit"}, names


def test_workers_are_not_children_of_the_orchestrators_session(run, output):
    """The executor drops the session's markers: inherited, each nested run registers itself
    under the orchestrator's session as a session it started."""
    started = list(run["tmp"].glob(f"claude-*/*/{output['session_id']}/started/*"))
    assert started == []


def test_dispatch_returned_while_the_workers_ran(run):
    """The orchestrator went on (launched the background wait) before the last worker's request."""
    requests = run["requests"]
    after_dispatch = next(i for i, r in enumerate(requests) if r["body"] and scenario.is_main(r["body"])
                          and any("brain job dispatch" in b["input"].get("command", "")
                                  for b, _ in scenario.tool_calls(r["body"])))
    last_worker = max(i for i, r in enumerate(requests) if r in worker_requests(requests))
    assert after_dispatch < last_worker
    waits = [b for r in main_requests(requests) for b, _ in scenario.tool_calls(r["body"])
             if "brain job wait" in b["input"].get("command", "")]
    assert waits[0]["input"].get("run_in_background") is True


def test_no_request_left_loopback(run):
    requests = run["requests"]
    assert requests and all(r["client"] == "127.0.0.1" for r in requests)
    if run["netns"]:
        links = [line.split(":")[1].strip() for line in (run["out"] / "links.txt").read_text().splitlines() if line]
        assert links == ["lo"], "the run's network namespace had more than loopback"


def test_context_growth_per_subtask(run, output):
    parts, total = scenario.context_growth(run["requests"])
    for n, msg in parts:
        print(f"{n:6d}  {msg['role']:9s} {json.dumps(msg['content'], ensure_ascii=False)[:110]}")
    per = total / N
    print(f"orchestrator context from create to answer: {total} bytes, {per:.1f} per sub-task "
          f"(budget {BUDGET_PER_SUBTASK}); as JSON messages "
          f"{sum(len(json.dumps(m, ensure_ascii=False, separators=(',', ':')).encode()) for _, m in parts)} bytes")
    joined = next(m for _, m in parts if m["role"] == "user" and "completed, 0 failed" in json.dumps(m))
    assert all(scenario.answer(i) in json.dumps(joined, ensure_ascii=False) for i in range(1, N + 1))
    assert per <= BUDGET_PER_SUBTASK

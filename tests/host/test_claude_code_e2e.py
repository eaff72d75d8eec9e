"""End to end in the real Claude Code CLI: the seed's flow with the plugin loaded.

One run of ``claude -p`` (pinned version, installed once into a persistent
cache) against the scripted fake Messages API of ``scenario.py``, with an
isolated HOME and config dir and -- where ``unshare -n`` works -- no network
but loopback. The main "model" creates a distributed job with the seed's
three endpoints, dispatches it with ``--json`` and launches the Agent calls
exactly as printed; two workers report with ``brain job update``, the third
only ends with a final message; the main model consolidates when the
plugin's Stop hook reminds it. The tests below each assert one promise on
what that run left behind: the store, the hook log, the request log.
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
from tests.host import scenario
from tests.host.claude_cli import ROOT, api_requests, claude_binary, claude_outputs, isolated_command, isolated_env

RUN_TIMEOUT = 180
BUDGET_PER_SUBTASK = 600
# No permission flag: the orchestrator's create, dispatch and consolidate and
# the workers' reports must all be approved by the plugin's PreToolUse hook,
# or they are denied (and listed in permission_denials).

# The host run keeps its own store in its isolated HOME, whatever the test backend: one run is enough.
pytestmark = pytest.mark.sqlite_only



@pytest.fixture(scope="module")
def run(tmp_path_factory):
    claude = claude_binary()
    base = tmp_path_factory.mktemp("claude-e2e")
    home, tmp, project, out = (base / n for n in ("home", "tmp", "project", "out"))
    for d in (home, tmp, project):
        d.mkdir()
    no_extras = base / "requirements-none.txt"
    no_extras.write_text("# the e2e run prepares no optional packages (tests/test_hooks.py covers that)\n")
    # A clean environment: nothing of the test process (BRAIN_DB above all) leaks in.
    env = isolated_env(home, tmp, BRAIN_HOOK_DEBUG="1", BRAIN_HOOK_RECORD=str(out / "payloads"),
                       BRAIN_REQUIREMENTS_FILE=str(no_extras))
    (base / "env.json").write_text(json.dumps(env))
    cmd = [sys.executable, str(Path(scenario.__file__)), "--claude", str(claude), "--plugin-dir", str(ROOT),
           "--cwd", str(project), "--out", str(out), "--env", str(base / "env.json"),
           "--timeout", str(RUN_TIMEOUT)]
    cmd, netns = isolated_command(cmd)
    started = time.monotonic()
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=RUN_TIMEOUT + 60)
    elapsed = time.monotonic() - started
    print(f"claude -p end-to-end run took {elapsed:.1f}s (netns={netns})")
    assert proc.returncode == 0, f"scenario runner failed:\n{proc.stdout}\n{proc.stderr}"
    data_dirs = sorted((home / ".claude" / "plugins" / "data").glob("*"))
    result = {
        "base": base, "home": home, "out": out, "netns": netns, "elapsed": elapsed,
        **claude_outputs(out),
        "requests": api_requests(out),
        "data_dirs": data_dirs,
        "hooks_log": "".join(p.joinpath("hooks.log").read_text() for p in data_dirs if p.joinpath("hooks.log").exists()),
    }
    return result


def _explain(run) -> str:
    return f"rc={run['rc']}\nstdout={run['stdout'][-3000:]}\nstderr={run['stderr'][-3000:]}\nhooks.log:\n{run['hooks_log']}"


@pytest.fixture(scope="module")
def output(run):
    assert run["rc"] == "0", _explain(run)
    return json.loads(run["stdout"])


@pytest.fixture(scope="module")
def job(run, output):
    """The one job of the run, read straight from the plugin's SQLite file."""
    dbs = [run["home"] / ".brain" / "jobs.db"]
    assert dbs[0].exists(), f"expected the store at ~/.brain/jobs.db (a terminal's too)\n{_explain(run)}"
    conn = sqlite3.connect(f"file:{dbs[0]}?mode=ro", uri=True)
    try:
        rows = conn.execute("SELECT job_id, status, sub_tasks, history, consolidated_result FROM jobs").fetchall()
    finally:
        conn.close()
    assert len(rows) == 1, _explain(run)
    job_id, status, subs, history, consolidated = rows[0]
    return {"db": dbs[0], "job_id": job_id, "status": status, "sub_tasks": json.loads(subs),
            "history": json.loads(history), "consolidated": json.loads(consolidated)}


def _main_requests(run):
    return [r for r in run["requests"] if r["body"] and "Agent" in [t.get("name") for t in r["body"].get("tools") or []]
            and "cc_is_subagent=true" not in system_text(r["body"])]


def test_the_run_succeeds_with_three_background_workers(run, output):
    assert output["is_error"] is False and output["subtype"] == "success", _explain(run)
    assert output["permission_denials"] == [], output["permission_denials"]
    stats = output["subagent_stats"]
    assert stats["by_type"] == {"brain-jobs:subtask-worker": 3}
    assert stats["started_in_background"] == 3 and stats["completed"] == 3
    assert not (run["out"] / "responder_errors.txt").read_text()


def test_store_holds_three_completed_results(job):
    assert job["status"] == "completed"
    results = {s["query"]: (s["status"], s["result"]) for s in job["sub_tasks"]}
    expected = {q: ("completed", r) for q, r in {**scenario.RESULTS, **scenario.SILENT}.items()}
    assert results == expected  # byte for byte, shell characters included
    assert "; $HOME & `id`" in results["GET /users"][1] and "it's" in results["GET /users"][1]
    assert job["consolidated"]["completed"] == 3 and job["consolidated"]["failed"] == 0


def test_hooks_bash_and_the_terminal_share_one_database(run, job):
    # The store is ~/.brain/jobs.db, exported to Bash by SessionStart ...
    env_files = list((run["home"] / ".claude" / "session-env").rglob("sessionstart-hook-*.sh"))
    exported = "".join(p.read_text() for p in env_files)
    assert f"export BRAIN_DB={job['db']}\n" in exported, exported
    # ... no command fell back to another store ...
    assert len(list(run["base"].rglob("jobs.db"))) == 1
    # ... the plugin's data directory is private ...
    assert [oct(d.stat().st_mode & 0o777) for d in run["data_dirs"]] == ["0o700"]
    # ... and a person at a terminal (no CLAUDE_* variables) sees the session's job through the launcher.
    launcher = run["home"] / ".brain" / "bin" / "brain"
    assert f"exec {ROOT / 'bin' / 'brain'} " in launcher.read_text()
    listed = subprocess.run([str(launcher), "job", "list", "--all", "--json"], capture_output=True, text=True,
                            timeout=30, env={"HOME": str(run["home"]), "PATH": os.environ["PATH"]})
    assert [j["job_id"] for j in json.loads(listed.stdout)] == [job["job_id"]], listed.stderr


def _launch_prompts(run) -> dict:
    """The host's agent id -> the launch prompt, from the recorded PostToolUse(Agent) payloads."""
    launched = {}
    for path in sorted((run["out"] / "payloads").glob("*-post_tool_use.json")):
        payload = json.loads(path.read_text())
        if payload.get("tool_name") == "Agent":
            launched[payload["tool_response"]["agentId"]] = payload["tool_input"]["prompt"]
    return launched


def test_agent_links_recorded_for_every_worker(run, job):
    launched = _launch_prompts(run)
    assert len(launched) == 3
    links = [e for e in job["history"] if e["event"] == "link"]
    assert len(links) == 3
    for sub in job["sub_tasks"]:
        host_id = sub["host_agent_id"]
        assert host_id in launched and f" {sub['sub_task_id']} " in launched[host_id]
        assert {"sub_task_id": sub["sub_task_id"], "agent_id": sub["agent_id"], "host_agent_id": host_id}.items() \
            <= next(e for e in links if e["sub_task_id"] == sub["sub_task_id"]).items()


def test_the_orchestrators_commands_were_approved_by_the_plugin_hook(run, job):
    # No flag allows anything (see run): our hook said allow to each.
    log = run["hooks_log"].splitlines()
    for command in ("create", f"dispatch {job['job_id']}", f"consolidate {job['job_id']}"):
        assert [line for line in log if f"pre_tool_use: allow 'brain job {command} " in line], (command, log)


def test_worker_reports_were_approved_by_the_plugin_hook(run, job):
    # No flag covers the reports (see run); our hook said allow to each.
    log = run["hooks_log"].splitlines()
    by_query = {s["query"]: s for s in job["sub_tasks"]}
    for query in scenario.RESULTS:
        sub = by_query[query]
        # Each worker reported with the credential of its own launch prompt (never its public label).
        prompt = _launch_prompts(run)[sub["host_agent_id"]]
        credential = prompt.split()[2].rstrip(":")
        assert credential != sub["agent_id"]
        allowed = [line for line in log if "pre_tool_use: allow " in line and "brain job update" in line
                   and f" {sub['sub_task_id']} --agent-id {credential} " in line]
        assert len(allowed) == 1 and f"agent={sub['host_agent_id']}" in allowed[0], run["hooks_log"]
        reports = [e for e in job["history"] if e["event"] == "report" and e["sub_task_id"] == sub["sub_task_id"]]
        assert [(e["status"], e["agent_id"]) for e in reports] == [("completed", sub["agent_id"])]


def test_subagent_stop_saved_the_silent_workers_final_message(run, job):
    (query, final), = scenario.SILENT.items()
    sub = next(s for s in job["sub_tasks"] if s["query"] == query)
    reports = [e for e in job["history"] if e["event"] == "report" and e["sub_task_id"] == sub["sub_task_id"]]
    # Recorded by the hook, never by a Bash report: under the host's id for the
    # worker when PostToolUse(Agent) had linked it already, else -- the host may
    # end a worker first -- under its dispatch identity, found from its transcript.
    assert len(reports) == 1 and reports[0]["status"] == "completed"
    assert reports[0]["agent_id"] in (sub["host_agent_id"], sub["agent_id"])
    assert f"subagent_stop: recovered {job['job_id']}/{sub['sub_task_id']} from {sub['host_agent_id']} (message)" \
        in run["hooks_log"]
    assert not [line for line in run["hooks_log"].splitlines()
                if "pre_tool_use" in line and f"{job['job_id']} {sub['sub_task_id']} " in line]


def test_stop_hook_reminded_once_and_the_result_was_read(run, job, output):
    assert run["hooks_log"].count("stop: blocking once") == 1, run["hooks_log"]
    events = [e["event"] for e in job["history"]]
    assert events.index("consolidated") < events.index("consolidate_read")
    assert "consolidate" in output["result"]


def test_workers_get_exactly_the_tools_their_definition_names(run):
    # The host gives a worker only the tools of its frontmatter that the session has.
    from tests.test_plugin_manifest import frontmatter

    named = sorted(t.strip() for t in frontmatter(ROOT / "agents" / "subtask-worker.md")["tools"].split(","))
    received = scenario.worker_tool_lists(run["requests"])
    assert received and all(tools == named for tools in received), (named, received)


def test_no_request_left_loopback(run):
    requests = run["requests"]
    assert requests and all(r["client"] == "127.0.0.1" for r in requests)
    assert {r["path"].split("?")[0] for r in requests if r["method"] == "POST"} == {"/v1/messages"}
    if run["netns"]:
        links = [line.split(":")[1].strip() for line in (run["out"] / "links.txt").read_text().splitlines() if line]
        assert links == ["lo"], "the run's network namespace had more than loopback"
    else:
        print("loopback-only is asserted from the request log only: no network namespace here")


def context_bytes(run) -> dict:
    """Bytes the orchestrator paid for the fan-out, from the last main request."""
    body = _main_requests(run)[-1]["body"]
    from tests.fakes.fake_anthropic import tool_results

    results = tool_results(body)
    dispatch = consolidate = 0
    agent_inputs = []
    for msg in body["messages"]:
        if msg.get("role") != "assistant" or not isinstance(msg.get("content"), list):
            continue
        for block in msg["content"]:
            if block.get("type") != "tool_use":
                continue
            if block["name"] == "Agent":
                agent_inputs.append(len(json.dumps(block["input"], separators=(",", ":"), ensure_ascii=False).encode()))
            elif "brain job dispatch" in block["input"].get("command", ""):
                dispatch += len(results[block["id"]].encode())
            elif "brain job consolidate" in block["input"].get("command", ""):
                consolidate += len(results[block["id"]].encode())
    return {"dispatch": dispatch, "agent_inputs": sum(agent_inputs), "agent_calls": len(agent_inputs),
            "consolidate": consolidate}


# What the orchestrating agent pays per sub-task: the dispatch output it reads,
# the Agent call inputs it writes and the consolidate output it reads. The
# launch prompt is a pointer (brain_jobs/prompts.py); with full
# instructions in every prompt this was about 850 bytes per sub-task.
def test_context_economy_budget(run, job):
    spent = context_bytes(run)
    n = len(job["sub_tasks"])
    assert spent["agent_calls"] == n and spent["dispatch"] and spent["consolidate"]
    per_subtask = (spent["dispatch"] + spent["agent_inputs"] + spent["consolidate"]) / n
    print(f"context economy: {spent} -> {per_subtask:.0f} bytes per sub-task (budget {BUDGET_PER_SUBTASK})")
    assert per_subtask <= BUDGET_PER_SUBTASK, spent

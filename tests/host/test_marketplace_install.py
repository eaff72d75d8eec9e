"""The plugin as a user installs it: the repository is its own marketplace.

In a fresh HOME, offline (inside ``unshare -n`` where it works), the pinned
CLI runs ``claude plugin marketplace add <checkout>`` and ``claude plugin
install brain-jobs@brain-jobs`` -- the README's lines -- and then the seed's
flow with NO ``--plugin-dir``: the scripted fake API of ``scenario.py``
creates a job, dispatches it, three host workers report (one only by its
final message) and the main model consolidates when the Stop hook reminds
it. The tests assert on what that run left behind.

The checkout is copied first without what git ignores, so the install sees
what a clone holds: the host copies the whole marketplace folder into its
plugin cache at install time, and ``.cache/`` holds the CLI itself when
``BRAIN_TEST_CACHE`` is unset. (The session then reads a local-path
marketplace's plugin from the folder itself.)
"""

import json
import shutil
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.fakes.fake_anthropic import message_text
from tests.host import scenario
from tests.host.claude_cli import ROOT, api_requests, claude_binary, claude_outputs, isolated_command, isolated_env

RUN_TIMEOUT = 180
ALLOWED_TOOLS = "Bash(brain job create:*),Bash(brain job dispatch:*)"
PLUGIN_ID = "brain-jobs@brain-jobs"  # <plugin>@<marketplace name in .claude-plugin/marketplace.json>
NOT_IN_A_CLONE = shutil.ignore_patterns(".git", ".cache", ".venv", "node_modules", "__pycache__", ".pytest_cache",
                                        "*.db", "*.db-*", "*.log")

# The run keeps its own store in its isolated HOME, whatever the test backend: one run is enough.
pytestmark = pytest.mark.sqlite_only


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    claude = claude_binary()
    base = tmp_path_factory.mktemp("claude-marketplace")
    home, tmp, project, out, checkout = (base / n for n in ("home", "tmp", "project", "out", "checkout"))
    for d in (home, tmp, project):
        d.mkdir()
    shutil.copytree(ROOT, checkout, symlinks=True, ignore=NOT_IN_A_CLONE)
    no_extras = base / "requirements-none.txt"
    no_extras.write_text("# this run prepares no optional packages (tests/test_hooks.py covers that)\n")
    env = isolated_env(home, tmp, BRAIN_HOOK_DEBUG="1", BRAIN_REQUIREMENTS_FILE=str(no_extras))
    (base / "env.json").write_text(json.dumps(env))
    cmd = [sys.executable, str(Path(scenario.__file__)), "--claude", str(claude), "--marketplace", str(checkout),
           "--cwd", str(project), "--out", str(out), "--env", str(base / "env.json"),
           "--timeout", str(RUN_TIMEOUT), "--extra", json.dumps(["--allowedTools", ALLOWED_TOOLS])]
    cmd, netns = isolated_command(cmd)
    started = time.monotonic()
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=RUN_TIMEOUT + 300)
    print(f"marketplace install and claude -p run took {time.monotonic() - started:.1f}s (netns={netns})")
    install = json.loads((out / "install.json").read_text()) if (out / "install.json").exists() else []
    assert proc.returncode == 0, f"scenario runner failed:\n{proc.stdout}\n{proc.stderr}\n{json.dumps(install, indent=1)}"
    return {
        "home": home, "out": out, "checkout": checkout, "netns": netns, "install": install,
        "cmd": json.loads((out / "claude.cmd").read_text()), **claude_outputs(out),
        "requests": api_requests(out),
        "hooks_log": "".join(p.read_text() for p in sorted(home.rglob("hooks.log"))),
    }


def _explain(run) -> str:
    return f"rc={run['rc']}\nstdout={run['stdout'][-3000:]}\nstderr={run['stderr'][-3000:]}\nhooks.log:\n{run['hooks_log']}"


@pytest.fixture(scope="module")
def job(run):
    """The one job of the run, from the one store anywhere in the isolated HOME."""
    assert run["rc"] == "0", _explain(run)
    dbs = sorted(run["home"].rglob("jobs.db"))
    assert len(dbs) == 1, f"expected one store in the isolated HOME, found {dbs}\n{_explain(run)}"
    conn = sqlite3.connect(f"file:{dbs[0]}?mode=ro", uri=True)
    try:
        rows = conn.execute("SELECT job_id, status, sub_tasks, history FROM jobs").fetchall()
    finally:
        conn.close()
    assert len(rows) == 1, _explain(run)
    job_id, status, subs, history = rows[0]
    return {"job_id": job_id, "status": status, "sub_tasks": json.loads(subs), "history": json.loads(history)}


def test_install_from_the_checkout_as_a_marketplace(run):
    assert [step["rc"] for step in run["install"]] == [0, 0], json.dumps(run["install"], indent=1)
    assert run["install"][1]["cmd"][-1] == PLUGIN_ID
    plugins = run["home"] / ".claude" / "plugins"
    assert [p["scope"] for p in json.loads((plugins / "installed_plugins.json").read_text())["plugins"][PLUGIN_ID]] \
        == ["user"]
    assert json.loads((plugins / "known_marketplaces.json").read_text())["brain-jobs"]["source"] \
        == {"source": "directory", "path": str(run["checkout"])}
    assert "--plugin-dir" not in run["cmd"]


def test_seed_flow_runs_from_the_installed_plugin(run, job):
    output = json.loads(run["stdout"])
    assert output["is_error"] is False and output["permission_denials"] == [], _explain(run)
    stats = output["subagent_stats"]
    assert stats["by_type"] == {"brain-jobs:subtask-worker": 3} and stats["completed"] == 3
    assert job["status"] == "completed"
    results = {s["query"]: (s["status"], s["result"]) for s in job["sub_tasks"]}
    assert results == {q: ("completed", r) for q, r in {**scenario.RESULTS, **scenario.SILENT}.items()}
    events = [e["event"] for e in job["history"]]
    assert events.index("consolidated") < events.index("consolidate_read")
    assert not (run["out"] / "responder_errors.txt").read_text()


def test_stop_reminder_reaches_the_model_as_context_not_as_an_error(run, job):
    """The Stop hook's reminder arrives as additional context; a ``decision: block``
    would arrive as "Stop hook blocking error from command: ..." (and the
    interactive UI would show "Stop hook reported a problem")."""
    reminder = (f"brain-jobs: every sub-task of job {job['job_id']} has finished but the results were not read. "
                f"Run brain job consolidate {job['job_id']} --json and answer from it.")
    said = ["\n".join(message_text(m) for m in r["body"].get("messages", []) if m.get("role") != "assistant")
            for r in run["requests"] if r.get("body")]
    assert any(f"Stop hook additional context: {reminder}" in text for text in said), _explain(run)
    assert not any("blocking error" in text for text in said)


def test_no_request_left_loopback(run):
    assert run["requests"] and all(r["client"] == "127.0.0.1" for r in run["requests"])
    if run["netns"]:
        links = [line.split(":")[1].strip() for line in (run["out"] / "links.txt").read_text().splitlines() if line]
        assert links == ["lo"], "the run's network namespace had more than loopback"
    else:
        print("loopback-only is asserted from the request log only: no network namespace here")

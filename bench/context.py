"""Rows 8 and 9: a fan-out from inside the real Claude Code CLI (pinned, offline, fake Messages API).

Row 8, the orchestrator's context: bytes its conversation grows by from the
moment it creates the job (without a job: its first answer) to its final
answer, host notifications included, per sub-task, for 10 and 50 sub-tasks,
each way of fanning out (``tests/host/fanout_scenario.py`` plays the models):

- ``headless``: the plugin, headless ``claude -p`` workers, a background
  ``brain job wait``, then a foreground ``brain job wait`` to read the join;
  ``headless, read the output file`` reads the background command's output
  file with the Read tool instead (the other way to get the join).
- ``host``: the plugin, one background host ``Agent`` per sub-task.
- ``plain``: no plugin, one background host ``Agent`` per item with the full
  instruction; the answers come in the host's notifications.
  Both launch every agent in one message, with the host's limit of 20
  background agents at once raised to N (``CLAUDE_CODE_MAX_CONCURRENT_SUBAGENTS``);
  under the default limit the host refuses the launches past 20.
- ``workflow``: no plugin, the host's ``Workflow`` tool, a script the (fake)
  model wrote, with one ``agent()`` per item (the prompt opts in: "use a workflow").

Counted: what the model reads and writes (texts, tool inputs, tool results,
notifications), not the JSON framing of the API. Results are about 20
characters each.

Row 9, wall time from dispatch to join: 50 sub-tasks, headless workers at
concurrency 8, against a fake model whose every worker answer takes a fixed
delay. The reference is what the delays alone would take at that
concurrency; the difference is the cost of starting ``claude -p`` workers
(and of the runner and the join) on this machine.
"""

import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from .common import ROOT, progress

SCENARIO = Path(ROOT) / "tests" / "host" / "fanout_scenario.py"
ROUTES = (("headless", "wait"), ("headless", "file"), ("host", "wait"), ("plain", "wait"), ("workflow", "wait"))
SIZES = (10, 50)
CONCURRENCY = 8


def claude_or_reason():
    """``(path of the pinned claude, None)`` or ``(None, why it cannot be measured)``."""
    sys.path.insert(0, ROOT)
    try:
        from tests.host.claude_cli import claude_binary

        return claude_binary(), None
    except BaseException as exc:  # pytest's skip is a BaseException: report it as the reason
        return None, f"the pinned Claude Code CLI is not available: {exc}"


def _netns() -> bool:
    try:
        return subprocess.run(["unshare", "-n", "--", "ip", "link", "set", "lo", "up"], capture_output=True,
                              timeout=30).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def one_run(claude, route, n, read="wait", delay=0.0, timeout=900) -> dict:
    """Run the scenario once in a fresh HOME; return the request log and the CLI's JSON output."""
    sys.path.insert(0, ROOT)
    from tests.host import fanout_scenario as scenario

    with tempfile.TemporaryDirectory(prefix="brain-bench-fanout-") as base:
        base = Path(base)
        home, tmp, project, out = (base / x for x in ("home", "tmp", "project", "out"))
        for d in (home, tmp, project):
            d.mkdir()
        (base / "requirements-none.txt").write_text("")
        env = {
            "PATH": f"{Path(claude).parent}{os.pathsep}{os.environ['PATH']}", "HOME": str(home), "LANG": "C.UTF-8",
            "CLAUDE_CONFIG_DIR": str(home / ".claude"), "CLAUDE_CODE_TMPDIR": str(tmp), "TMPDIR": str(tmp),
            "ANTHROPIC_API_KEY": "dummy", "DISABLE_AUTOUPDATER": "1", "DISABLE_TELEMETRY": "1",
            "DISABLE_ERROR_REPORTING": "1", "DISABLE_BUG_COMMAND": "1",
            "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
            "BRAIN_REQUIREMENTS_FILE": str(base / "requirements-none.txt"),
        }
        if route in ("host", "plain"):
            # The host refuses background agents past 20 at once (seen: 30 of 50 refused); the
            # user can raise the limit, which is what a fan-out of 50 host agents needs.
            env["CLAUDE_CODE_MAX_CONCURRENT_SUBAGENTS"] = str(max(20, n))
        (base / "env.json").write_text(json.dumps(env))
        plugin = route in ("headless", "host")
        allowed = {"headless": "Bash(brain job create:*),Bash(brain job dispatch:*),Bash(brain job wait:*)",
                   "host": "Bash(brain job create:*),Bash(brain job dispatch:*),Bash(brain job wait:*)",
                   "plain": "Read", "workflow": "Workflow,Read"}[route]
        extra = (["--plugin-dir", ROOT] if plugin else []) + ["--allowedTools", allowed]
        store = home / ".claude" / "plugins" / "data" / "brain-jobs-inline" / "jobs.db"
        cmd = [sys.executable, str(SCENARIO), "--claude", str(claude), "--cwd", str(project), "--out", str(out),
               "--env", str(base / "env.json"), "--n", str(n), "--route", route, "--read", read,
               "--delay", str(delay), "--store", str(store), "--timeout", str(timeout), "--extra", json.dumps(extra)]
        if _netns():
            cmd = ["unshare", "-n", "--", *cmd, "--netns"]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=2 * timeout + 60)
        if proc.returncode != 0:
            raise RuntimeError(f"scenario failed: {proc.stderr[-2000:]}")
        requests = [json.loads(line) for line in (out / "requests.jsonl").read_text().splitlines()]
        output = json.loads((out / "claude.stdout").read_text() or "{}")
        parts, total = scenario.context_growth(requests)
        return {"requests": requests, "output": output, "parts": parts, "total": total, "scenario": scenario}


def context_row(claude) -> dict:
    figures = {}
    for route, read in ROUTES:
        for n in SIZES:
            key = f"{route}{', read the output file' if read == 'file' else ''} @ {n}"
            progress(f"row 8: {key} ...")
            run = one_run(claude, route, n, read)
            answer = run["output"].get("result", "")
            figures[key] = {"route": route, "read": read, "sub_tasks": n, "bytes": run["total"],
                            "per_sub_task": round(run["total"] / n, 1), "answer": answer,
                            "permission_denials": len(run["output"].get("permission_denials") or []),
                            "parts": [(b, m["role"], _kind(m)) for b, m in run["parts"]]}
    return figures


def _kind(msg) -> str:
    content = msg["content"]
    if isinstance(content, str):
        return "notification" if "<task-notification>" in content else "text"
    kinds = [b.get("type") for b in content]
    if "tool_use" in kinds:
        return "call " + ",".join(b["name"] for b in content if b.get("type") == "tool_use")[:40]
    if "tool_result" in kinds:
        return "result"
    return "notification" if "<task-notification>" in json.dumps(content) else "text"


def dispatch_to_join(claude, n, delay) -> "tuple[float, str]":
    """Seconds from the main model's dispatch call to the request that brings it the join's
    notification (the fake API's clock), and the final answer."""
    progress(f"row 9: {n} headless sub-tasks, each worker answer {delay:g} s ...")
    run = one_run(claude, "headless", n, delay=delay)
    scenario = run["scenario"]
    main = [r for r in run["requests"] if r["body"] and scenario.is_main(r["body"])]
    dispatched = next(r["at"] for r in main if r["reply"] and any(
        b.get("type") == "tool_use" and "brain job dispatch" in b["input"].get("command", "")
        for b in r["reply"]["content"]))
    joined = next(r["at"] for r in main if "<task-notification>" in scenario.said(r["body"]))
    return joined - dispatched, run["output"].get("result", "")


def wall_row(claude, n=50, delay=2.0) -> dict:
    """Dispatch to join for ``n`` headless sub-tasks whose answers take ``delay`` seconds, and the
    same with instant answers (what starting the workers costs on this machine)."""
    wall, answer = dispatch_to_join(claude, n, delay)
    instant, _ = dispatch_to_join(claude, n, 0.0)
    bound = math.ceil(n / CONCURRENCY) * delay
    return {"sub_tasks": n, "concurrency": CONCURRENCY, "worker_delay_s": delay, "seconds": round(wall, 1),
            "delays_alone_s": bound, "instant_answers_s": round(instant, 1),
            "overhead_per_worker_s": round((wall - bound) * CONCURRENCY / n, 2), "answer": answer}


def run(only=("8", "9")) -> dict:
    claude, why = claude_or_reason()
    if claude is None:
        return {"skipped": why}
    out = {}
    if "8" in only:
        out["context"] = context_row(claude)
    if "9" in only:
        out["wall"] = wall_row(claude)
    return out


if __name__ == "__main__":
    started = time.time()
    print(json.dumps(run(tuple(sys.argv[1:]) or ("8", "9")), indent=1, default=str))
    print(f"{time.time() - started:.0f} s", file=sys.stderr)

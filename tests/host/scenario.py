"""The scripted "models" of the end-to-end test, and the runner that plays them.

Run as a script (by ``test_claude_code_e2e`` and ``test_marketplace_install``),
inside ``unshare -n`` when possible so loopback is the only network: it brings
``lo`` up, serves the fake Messages API on 127.0.0.1, runs ``claude -p`` with
the plugin loaded, and leaves everything the test asserts on in ``--out``: the
request log (``requests.jsonl``), the CLI's output and the network interfaces
seen. The plugin is loaded either for this run only (``--plugin-dir``) or the
way a user installs it (``--marketplace DIR``: ``claude plugin marketplace
add DIR`` and ``claude plugin install``, then a run with no plugin flag); the
install commands' output goes to ``install.json``.

The replies are stateless: each request is answered from what it carries
(system prompt, tools, earlier tool results), as the host interleaves the
main agent's and the workers' requests in any order.
"""

import argparse
import json
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from tests.fakes.fake_anthropic import (FakeAnthropic, message, message_text, system_text,  # noqa: E402
                                        text, tool_results, tool_use)

ENDPOINTS = ["GET /health", "POST /auth", "GET /users"]
# What each worker finds; POST /auth's worker never runs `brain job update`
# and only ends with its final message, which SubagentStop must save.
# GET /users's result holds shell characters: the worker quotes it as its
# definition says, and it must reach the store byte for byte.
RESULTS = {"GET /health": "[200 OK] status healthy in 12ms",
           "GET /users": "[200 OK] 42 users; it's def f(x) -> int: return x | 1; $HOME & `id` \"p1\" {a,b} *"}
SILENT = {"POST /auth": "[401] POST /auth needs a bearer token"}
WORKER_MARKER = "You are a brain-jobs worker"  # first words of agents/subtask-worker.md
STOP_REASON_MARK = "results were not read"
PROMPT = "Validate the endpoints GET /health, POST /auth and GET /users in parallel."


def tool_calls(body):
    """``[(tool_use block, result text or None)]`` of the conversation, in order."""
    results = tool_results(body)
    return [(b, results.get(b.get("id"))) for m in body.get("messages", [])
            if m.get("role") == "assistant" and isinstance(m.get("content"), list)
            for b in m["content"] if isinstance(b, dict) and b.get("type") == "tool_use"]


def bash(calls, needle, background=None):
    """The Bash calls among ``calls`` whose command holds ``needle`` (and, when ``background``
    is given, that ran in the background or not)."""
    return [(b, r) for b, r in calls if b["name"] == "Bash" and needle in b["input"].get("command", "")
            and (background is None or bool(b["input"].get("run_in_background")) == background)]


def said(body) -> str:
    """Everything the host said to the model (user entries, tool results, injected notes)."""
    return "\n".join(message_text(m) for m in body.get("messages", []) if m.get("role") != "assistant")


def fan_out(calls, prompt):
    """The first steps of the job-queue skill's flow: create the job, dispatch it, launch every
    Agent call exactly as dispatch printed it, in one message. Returns ``(job_id, None)`` once
    they are done, else ``(None, this turn's answer)``."""
    created = bash(calls, "brain job create")
    if not created:
        subtasks = " ".join(f'--subtask "{e}"' for e in ENDPOINTS)
        return None, tool_use("Bash", {"command": f'brain job create --distributed --ttl 300 --prompt "{prompt}" '
                                                  f"{subtasks}", "description": "Create the job"})
    match = re.search(r"job_(\w+)", created[-1][1] or "")
    if not match:
        return None, text(f"create failed: {created[-1][1]}")
    job_id = match.group(1)
    dispatched = bash(calls, "brain job dispatch")
    if not dispatched:
        return None, tool_use("Bash", {"command": f"brain job dispatch {job_id} --json", "description": "Dispatch"})
    if not [b for b, _ in calls if b["name"] == "Agent"]:
        try:
            agent_calls = json.loads(dispatched[-1][1])["agent_calls"]
        except (TypeError, ValueError, KeyError):
            return None, text(f"dispatch failed: {dispatched[-1][1]}")
        return None, message([{"type": "tool_use", "name": "Agent", "input": call} for call in agent_calls])
    return job_id, None


def prepare_out(args) -> Path:
    """The run's output directory, made; loopback up inside a fresh network namespace; the
    links the run sees, kept in ``links.txt`` (a test checks there is nothing but loopback)."""
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.netns:
        subprocess.run(["ip", "link", "set", "lo", "up"], check=True, timeout=30)
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True, timeout=30)
    (out / "links.txt").write_text(links.stdout)
    return out


def main_model(body):
    calls = tool_calls(body)
    job_id, turn = fan_out(calls, "Validate endpoints")
    if turn is not None:
        return turn
    if not bash(calls, "brain job consolidate"):
        # This main model "forgets" to consolidate until the plugin's Stop hook
        # reminds it, so the run proves that hook inside the real host.
        if STOP_REASON_MARK in said(body):
            return tool_use("Bash", {"command": f"brain job consolidate {job_id} --json", "description": "Consolidate"})
        return text("Workers launched; waiting for them.")
    return text("All three endpoints were checked; results consolidated.")


def worker_model(body):
    heard = said(body)
    for query, final in SILENT.items():
        if query in heard:
            return text(final)
    query = next((q for q in RESULTS if q in heard), None)
    # Like a real worker: read the pointer from the prompt ("<job> <sub> <credential>: Search ...")
    # and fill in the report command that the worker definition (the system prompt) spells out.
    pointer = re.search(r"(\w+) (sub_\d+) (\S+): Search ", heard)
    template = re.search(r"`(brain job update <job> <sub_N> --agent-id <agent id> [^`]*)`", system_text(body))
    if query is None or pointer is None or template is None:
        return text("cannot find my sub-task in the prompt")
    if not tool_calls(body):
        job, sub, agent = pointer.groups()
        command = (template.group(1).replace("<job>", job).replace("<sub_N>", sub)
                   .replace("<agent id>", agent).replace("<answer>", RESULTS[query].replace("'", "'\\''")))
        return tool_use("Bash", {"command": command, "description": "Report the result"})
    return text(RESULTS[query])


def respond(rec):
    body = rec.body
    system = system_text(body)
    if WORKER_MARKER in system:
        return worker_model(body)
    if "Agent" in [t.get("name") for t in body.get("tools") or []] and "cc_is_subagent=true" not in system:
        return main_model(body)
    return text("ok")  # side requests of the host (titles, summaries)


def worker_tool_lists(requests) -> list:
    """The tool names of every worker request in a request log (``requests.jsonl`` rows)."""
    return [sorted(t.get("name") for t in r["body"].get("tools") or [])
            for r in requests if r.get("body") and WORKER_MARKER in system_text(r["body"])]


def install_from_marketplace(claude, source, env, cwd, out: Path) -> bool:
    """Add ``source`` as a marketplace and install the plugin it lists, as a user would.

    Writes each command with its exit code and output to ``out/install.json``;
    returns whether both succeeded.
    """
    name = json.loads((Path(source) / ".claude-plugin" / "marketplace.json").read_text())["name"]
    steps = []
    for cmd in ([claude, "plugin", "marketplace", "add", source],
                [claude, "plugin", "install", f"brain-jobs@{name}"]):
        try:
            proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=120,
                                  stdin=subprocess.DEVNULL)
            steps.append({"cmd": cmd, "rc": proc.returncode, "stdout": proc.stdout, "stderr": proc.stderr})
        except subprocess.TimeoutExpired:
            steps.append({"cmd": cmd, "rc": "timeout", "stdout": "", "stderr": ""})
        if steps[-1]["rc"] != 0:
            break
    (out / "install.json").write_text(json.dumps(steps, indent=1))
    return len(steps) == 2 and steps[-1]["rc"] == 0


def run(args) -> int:
    out = prepare_out(args)
    env = json.loads(Path(args.env).read_text())
    plugin = ["--plugin-dir", args.plugin_dir] if args.plugin_dir else []
    with FakeAnthropic(responder=respond) as api:
        env["ANTHROPIC_BASE_URL"] = api.url
        # With a base URL set the install commands do not look up api.anthropic.com
        # (offline, 2.1.332 retries that for about 17 s per command, then goes on).
        if args.marketplace and not install_from_marketplace(args.claude, args.marketplace, env, args.cwd, out):
            return 1
        cmd = [args.claude, "-p", PROMPT, "--output-format", "json", *plugin, *json.loads(args.extra)]
        (out / "claude.cmd").write_text(json.dumps(cmd))
        try:
            proc = subprocess.run(cmd, cwd=args.cwd, env=env, capture_output=True, text=True,
                                  timeout=args.timeout, stdin=subprocess.DEVNULL)
            rc, stdout, stderr = proc.returncode, proc.stdout, proc.stderr
        except subprocess.TimeoutExpired as exc:
            rc, stdout, stderr = "timeout", exc.stdout or "", exc.stderr or ""
            stdout = stdout.decode() if isinstance(stdout, bytes) else stdout
            stderr = stderr.decode() if isinstance(stderr, bytes) else stderr
        api.dump_requests(str(out / "requests.jsonl"))
        (out / "responder_errors.txt").write_text("\n".join(repr(e) for e in api.errors))
    (out / "claude.stdout").write_text(stdout)
    (out / "claude.stderr").write_text(stderr)
    (out / "claude.rc").write_text(str(rc))
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    for name in ("--claude", "--cwd", "--out", "--env"):
        parser.add_argument(name, required=True)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--plugin-dir", help="load the plugin from this directory for this run only")
    source.add_argument("--marketplace", help="install the plugin from this marketplace directory first")
    parser.add_argument("--extra", default="[]", help="JSON list of extra claude arguments")
    parser.add_argument("--timeout", type=float, default=180)
    parser.add_argument("--netns", action="store_true", help="bring lo up first (inside unshare -n)")
    sys.exit(run(parser.parse_args()))

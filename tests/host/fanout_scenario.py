"""A fan-out of N sub-tasks in the real Claude Code CLI, the way an orchestrator does it, scripted.

Run as a script (by ``test_fanout_e2e`` and by ``bench/context.py``), inside
``unshare -n`` when possible: it brings ``lo`` up, writes N small notes into
the project, serves the fake Messages API on 127.0.0.1 and runs ``claude -p``
once. Everything the callers assert on is left in ``--out``: the request log
(``requests.jsonl``), the CLI's output, the network interfaces seen.

Routes (``--route``), each one way to get N answers into the main agent:

- ``headless``: the plugin, headless workers. ``brain job create --glob``,
  ``brain job dispatch --executor claude`` (real nested ``claude -p``
  workers against the same fake API), ``brain job wait`` in the background,
  and once the host says it ended, the joined result: read again with a
  foreground ``brain job wait`` (``--read wait``) or from the output file
  with the Read tool (``--read file``).
- ``host``: the plugin, host agents: create, ``dispatch --json``, one
  background ``Agent`` call per sub-task, then ``brain job wait``.
- ``plain``: no plugin: one background ``Agent`` call per item, each with the
  full instruction; the answers come back in the host's notifications.
- ``workflow``: no plugin: the host's ``Workflow`` tool, with a script that
  runs one ``agent()`` per item in ``parallel()``.

The replies are stateless except for two counters (``--overload`` workers are
refused with 529 until the CLI gives up once, so the executor must retry).
Workers tell their item from their prompt; ``--delay`` makes every worker
answer wait that many seconds (the wall-time bench).
"""

import argparse
import json
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from tests.fakes.fake_anthropic import FakeAnthropic, error, message, system_text, text, tool_use  # noqa: E402
from tests.host.scenario import bash, prepare_out, said, tool_calls  # noqa: E402

WORKER_MARKER = "You are a brain-jobs worker"  # first words of agents/subtask-worker.md
ITEM = re.compile(r"notes/item_(\d+)\.txt")
# The CLI's own retries (CLAUDE_CODE_MAX_RETRIES, set by the callers): a claude -p run gives
# up on 529 after CLI_TRIES_ON_529 requests, and the executor's retry is what is left to see.
CLI_MAX_RETRIES = 2
CLI_TRIES_ON_529 = CLI_MAX_RETRIES + 1


def notes(n):
    return {f"notes/item_{i:02d}.txt": f"item {i}: the value is {i * 7}\n" for i in range(1, n + 1)}


def answer(i: int) -> str:
    """What the worker of item ``i`` finds: about 20 characters."""
    return f"item_{i:02d}: value is {i * 7}"


def answered(heard) -> int:
    """How many items' answers the host has shown the main model."""
    return len(set(re.findall(r"item_(\d+): value is", heard)))


def prompt(route, n) -> str:
    if route == "workflow":
        return f"Use a workflow: summarize each of the {n} files in notes/, one agent per file."
    if route == "plain":
        return f"Summarize each of the {n} files in notes/ in parallel, one background agent per file."
    how = "headless claude workers" if route == "headless" else "host agents"
    return f"Summarize each of the {n} files in notes/ in parallel with brain-jobs, using {how}."


# -- reading a request ------------------------------------------------------------

def create_command() -> str:
    return ("brain job create -q --ttl 900 --prompt 'Summarize the notes' --glob 'notes/*.txt' "
            "--query 'Summarize {file}'")


def main_commands(job_id):
    """The headless route's commands after create, as the main model sends them."""
    return {"dispatch": f"brain job dispatch {job_id} --executor claude --concurrency 8",
            "wait": f"brain job wait {job_id}"}


# -- the main models ----------------------------------------------------------------

class Main:
    def __init__(self, route, n, read):
        self.route, self.n, self.read = route, n, read

    def __call__(self, body):
        return getattr(self, self.route)(body, tool_calls(body), said(body))

    def _job(self, found):
        created = bash(found, "brain job create")
        if not created:
            return None, tool_use("Bash", {"command": create_command(), "description": "Create the job"})
        out = (created[-1][1] or "").strip()
        if not re.fullmatch(r"[0-9a-f]{12}", out):
            return None, text(f"create failed: {out}")
        return out, None

    def _joined(self, found, heard, job_id):
        """Once the background wait ended: read the joined result, then answer from it."""
        if "<task-notification>" not in heard:
            return text("Waiting for the workers.")
        if self.read == "file":
            reads = [r for b, r in found if b["name"] == "Read"]
            if not reads:
                path = re.search(r"<output-file>([^<]+)</output-file>", heard).group(1)
                return tool_use("Read", {"file_path": path})
            joined = reads[-1] or ""
        else:
            rereads = bash(found, "brain job wait", background=False)
            if not rereads:
                return tool_use("Bash", {"command": main_commands(job_id)["wait"], "description": "Results"})
            joined = rereads[-1][1] or ""
        head = re.search(r"(\d+) completed, (\d+) failed", joined)
        return text(f"Notes: {head.group(1)} summarized, {head.group(2)} failed." if head else f"no result: {joined}")

    def headless(self, body, found, heard):
        job_id, step = self._job(found)
        if step:
            return step
        commands = main_commands(job_id)
        if not bash(found, "brain job dispatch"):
            return tool_use("Bash", {"command": commands["dispatch"], "description": "Dispatch"})
        if not bash(found, "brain job wait", background=True):
            return tool_use("Bash", {"command": commands["wait"], "description": "Join", "run_in_background": True})
        return self._joined(found, heard, job_id)

    def host(self, body, found, heard):
        job_id, step = self._job(found)
        if step:
            return step
        dispatched = bash(found, "brain job dispatch")
        if not dispatched:
            return tool_use("Bash", {"command": f"brain job dispatch {job_id} --json", "description": "Dispatch"})
        if not [b for b, _ in found if b["name"] == "Agent"]:
            agent_calls = json.loads(dispatched[-1][1])["agent_calls"]
            return message([{"type": "tool_use", "name": "Agent", "input": call} for call in agent_calls])
        if heard.count("<task-notification>") < self.n:
            return text("Waiting for the workers.")
        if not bash(found, "brain job wait", background=False):
            return tool_use("Bash", {"command": f"brain job wait {job_id}", "description": "Results"})
        joined = bash(found, "brain job wait")[-1][1] or ""
        head = re.search(r"(\d+) completed, (\d+) failed", joined)
        return text(f"Notes: {head.group(1)} summarized, {head.group(2)} failed." if head else f"no result: {joined}")

    def plain(self, body, found, heard):
        if not [b for b, _ in found if b["name"] == "Agent"]:
            return message([{"type": "tool_use", "name": "Agent", "input": {
                "description": f"Summarize item {i:02d}", "subagent_type": "general-purpose", "model": "haiku",
                "run_in_background": True,
                "prompt": f"Search Summarize {path} in the current directory. Return ONLY the result (max 200 chars)."}}
                for i, path in enumerate(notes(self.n), 1)])
        if heard.count("<task-notification>") < self.n:
            return text("Waiting for the agents.")
        return text(f"Notes: {answered(heard)} summarized.")

    def workflow(self, body, found, heard):
        if not [b for b, _ in found if b["name"] == "Workflow"]:
            script = (
                "export const meta = { name: 'summarize-notes', "
                "description: 'Summarize each note, one agent per file' }\n"
                f"const files = Array.from({{length: {self.n}}}, "
                "(_, i) => `notes/item_${String(i + 1).padStart(2, '0')}.txt`)\n"
                "const results = await parallel(files.map(f => () => agent(`Search Summarize ${f} in the current "
                "directory. Return ONLY the result (max 200 chars).`, {label: f, model: 'haiku'})))\n"
                "return results\n")
            return tool_use("Workflow", {"script": script})
        if "<task-notification>" not in heard:
            return text("Waiting for the workflow.")
        return text(f"Notes: {answered(heard)} summarized.")


# -- the workers --------------------------------------------------------------------

class Workers:
    """Every worker's model: a headless ``claude -p``, a plugin agent, a plain agent or a workflow's."""

    def __init__(self, overload=(), delay=0.0):
        self.overload = set(overload)
        self.delay = delay
        self.refused = {}
        self.lock = threading.Lock()

    def refuse(self, item) -> bool:
        """529 for the first tries of an ``--overload`` item: the CLI gives up once, the executor retries."""
        if item not in self.overload:
            return False
        with self.lock:
            count = self.refused.get(item, 0)
            if count >= CLI_TRIES_ON_529:
                return False
            self.refused[item] = count + 1
            return True

    def __call__(self, body):
        heard = said(body)
        found = ITEM.search(heard)
        if not found:
            return text("no item in my prompt")
        item = int(found.group(1))
        if self.refuse(item):
            return error(529, msg="Overloaded", retry_after=None)
        done = tool_calls(body)
        if self.delay and not done:
            time.sleep(self.delay)
        names = [t.get("name") for t in body.get("tools") or []]
        # Odd items read their note first and report it themselves; even ones only answer,
        # except the plugin's host agents, which always report (their definition says so).
        if item % 2 and "Read" in names and not [b for b, _ in done if b["name"] == "Read"]:
            cwd = re.search(r"Primary working directory: (\S+)", system_text(body) + heard)
            return tool_use("Read", {"file_path": f"{cwd.group(1) if cwd else '.'}/notes/item_{item:02d}.txt"})
        command = report_command(heard, answer(item))
        if (command and (item % 2 or "Report: " not in heard) and "Bash" in names
                and not [b for b, _ in done if b["name"] == "Bash"]):
            return tool_use("Bash", {"command": command, "description": "Report"})
        return text(answer(item))


def report_command(heard, result):
    """The worker's report: from the headless prompt's ``Report:`` line, or built from a host
    agent's pointer (``<job> <sub> <identity>: Search ...``) as its definition says; else None."""
    line = re.search(r'Report: (brain job update \S+ sub_\d+ --agent-id \S+ --status completed --result )"<result>"',
                     heard)
    if line:
        return f'{line.group(1)}"{result}"'
    pointer = re.search(r"(\w+) (sub_\d+) (\S+): Search ", heard)
    if pointer:
        job, sub, agent = pointer.groups()
        return f'brain job update {job} {sub} --agent-id {agent} --status completed --result "{result}"'
    return None


def is_main(body) -> bool:
    names = [t.get("name") for t in body.get("tools") or []]
    return "Agent" in names and "cc_is_subagent=true" not in system_text(body)


def is_worker(body) -> bool:
    """A headless worker (our marker, no Agent tool) or a host sub-agent of any kind."""
    if not body.get("tools"):
        return False
    return not is_main(body) and bool(ITEM.search(said(body)))


def responder(main, workers):
    def respond(rec):
        body = rec.body
        if is_main(body):
            return main(body)
        if is_worker(body):
            return workers(body)
        return text("ok")  # side requests of the host (titles, summaries)
    return respond


# -- measuring ----------------------------------------------------------------------

def content_bytes(msg) -> int:
    """What the model reads or writes in one message: texts, tool inputs (with the tool's
    name), tool results and the host's notifications, in bytes of UTF-8; no JSON framing."""
    content = msg["content"]
    if isinstance(content, str):
        return len(content.encode())
    total = 0
    for block in content:
        kind = block.get("type")
        if kind == "text":
            total += len(block["text"].encode())
        elif kind == "tool_use":
            total += len(block["name"]) + len(json.dumps(block["input"], ensure_ascii=False,
                                                          separators=(",", ":")).encode())
        elif kind == "tool_result":
            inner = block.get("content")
            total += len(inner.encode()) if isinstance(inner, str) else sum(
                len(part.get("text", "").encode()) for part in inner or [])
    return total


def context_growth(requests) -> "tuple[list, int]":
    """``[(bytes, message)]`` of the orchestrator's conversation from its ``brain job create``
    call (without one: its first answer) to its final answer, and the sum of their content bytes.
    ``requests``: the fake API's log (``requests.jsonl`` entries)."""
    last = [r for r in requests if r["body"] and is_main(r["body"])][-1]
    convo = last["body"]["messages"] + [{"role": "assistant", "content": last["reply"]["content"]}]
    answers = [i for i, m in enumerate(convo) if m["role"] == "assistant" and isinstance(m["content"], list)]
    start = next((i for i in answers if any(b.get("type") == "tool_use" and "brain job create" in
                                            json.dumps(b.get("input")) for b in convo[i]["content"])), answers[0])
    parts = [(content_bytes(m), m) for m in convo[start:]]
    return parts, sum(n for n, _ in parts)


# -- the run ------------------------------------------------------------------------

def runner_pids(store) -> list:
    """Pids of the headless runners the job's history names (read-only, stdlib sqlite3)."""
    import sqlite3

    if not Path(store).exists():
        return []
    conn = sqlite3.connect(f"file:{store}?mode=ro", uri=True)
    try:
        rows = conn.execute("SELECT history FROM jobs").fetchall()
    finally:
        conn.close()
    return [e["runner"]["pid"] for (h,) in rows for e in json.loads(h)
            if e.get("event") == "dispatch" and isinstance(e.get("runner"), dict) and e["runner"].get("pid")]


def alive(pid) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def run(args) -> int:
    out = prepare_out(args)
    project = Path(args.cwd)
    for rel, body in notes(args.n).items():
        (project / rel).parent.mkdir(parents=True, exist_ok=True)
        (project / rel).write_text(body)
    env = json.loads(Path(args.env).read_text())
    main = Main(args.route, args.n, args.read)
    workers = Workers(overload=[int(x) for x in args.overload.split(",") if x], delay=args.delay)
    with FakeAnthropic(responder=responder(main, workers)) as api:
        env["ANTHROPIC_BASE_URL"] = api.url
        cmd = [args.claude, "-p", prompt(args.route, args.n), "--output-format", "json", *json.loads(args.extra)]
        started = time.monotonic()
        try:
            proc = subprocess.run(cmd, cwd=project, env=env, capture_output=True, text=True,
                                  timeout=args.timeout, stdin=subprocess.DEVNULL)
            rc, stdout, stderr = proc.returncode, proc.stdout, proc.stderr
        except subprocess.TimeoutExpired as exc:
            rc, stdout, stderr = "timeout", exc.stdout or "", exc.stderr or ""
            stdout = stdout.decode() if isinstance(stdout, bytes) else stdout
            stderr = stderr.decode() if isinstance(stderr, bytes) else stderr
        host_seconds = time.monotonic() - started
        # The runner outlives `claude -p` by a moment (it stores the last workers' usage
        # after their reports): keep the API up until it has exited.
        end = time.monotonic() + args.timeout
        while args.store and any(alive(p) for p in runner_pids(args.store)) and time.monotonic() < end:
            time.sleep(0.2)
        api.dump_requests(str(out / "requests.jsonl"))
        (out / "responder_errors.txt").write_text("\n".join(repr(e) for e in api.errors))
        (out / "refused.json").write_text(json.dumps(workers.refused))
    (out / "claude.stdout").write_text(stdout)
    (out / "claude.stderr").write_text(stderr)
    (out / "claude.rc").write_text(str(rc))
    (out / "host_seconds").write_text(f"{host_seconds:.2f}")
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    for name in ("--claude", "--cwd", "--out", "--env"):
        parser.add_argument(name, required=True)
    parser.add_argument("--route", default="headless", choices=("headless", "host", "plain", "workflow"))
    parser.add_argument("--n", type=int, default=50)
    parser.add_argument("--read", default="wait", choices=("wait", "file"))
    parser.add_argument("--overload", default="", help="comma-separated items refused with 529 at first")
    parser.add_argument("--delay", type=float, default=0.0, help="seconds each worker takes to answer")
    parser.add_argument("--store", help="the SQLite store, to wait for its runners to exit")
    parser.add_argument("--extra", default="[]", help="JSON list of extra claude arguments")
    parser.add_argument("--timeout", type=float, default=600)
    parser.add_argument("--netns", action="store_true", help="bring lo up first (inside unshare -n)")
    sys.exit(run(parser.parse_args()))

"""``claude``: one headless Claude Code run (``claude -p``) per sub-task.

Each sub-task gets the same launch prompt a host worker gets (the seed's
instruction and its ``brain job update`` report command) and the worker
agent's standing instructions (``agents/subtask-worker.md``) through
``--append-system-prompt``. It runs with the user's own Claude Code login
(no API key needed), from inside a Claude Code session too:

- Tools: Read, Grep, Glob and Bash, with no one to answer a permission
  prompt (``--permission-prompts none``): what would prompt is denied. So
  the worker reads inside its working directory (and runs the read-only
  commands the CLI approves itself, such as ``grep`` or ``ls``), and the
  one command allowed beyond that is its report (``ALLOWED_TOOLS``).
- ``--safe-mode``: none of the user's CLAUDE.md, plugins, hooks, skills or
  MCP servers (a worker does one search; settings, permissions and login
  still apply). ``--no-session-persistence``: no transcript per worker.
- The environment is the runner's without the markers of the session that
  dispatched (``SESSION_MARKERS``), so the worker is a session of its own,
  not that session's child.

The CLI's JSON result (``--output-format json``) gives the answer and
what the run cost (``usage``, ``total_cost_usd``), recorded on the
sub-task. An answer refused for overload or rate limit (``api_error_status``
429, 529, 5xx), after the CLI's own retries, is tried again with backoff
up to ``api_retries`` times while the sub-task's deadline leaves time.
When the worker reports, its report stands; when it only answers, the
runner reports that answer (cut to 200 characters), the way the
SubagentStop hook rescues a host worker. Anything else that fails, and the
timeout (``claude_timeout``, default 300 s), fails the sub-task. Dispatch
refuses this executor when ``claude`` is not on PATH.
"""

import json
import os
import shutil
import subprocess
import time
from pathlib import Path

from .. import prompts
from ..config import model_id
from ..paths import PACKAGE_PARENT
from .base import Answer, Executor as _Base, Failed, first_line, retry_pause, run_bounded, sum_usage, unavailable

ROOT = Path(PACKAGE_PARENT)
TOOLS = "Read,Grep,Glob,Bash"
ALLOWED_TOOLS = "Bash(brain job update:*)"
# What a Claude Code session puts in its Bash tool's environment to mark the
# commands it runs. A worker that inherited them would pass for a child of
# that session (its notes, messaging socket, session id and effort).
SESSION_MARKERS = (
    "CLAUDECODE", "CLAUDE_CODE_SESSION_ID", "CLAUDE_CODE_CHILD_SESSION", "CLAUDE_CODE_CHILD_NOTES_DIR",
    "CLAUDE_CODE_SESSION_ATTENDED", "CLAUDE_CODE_LAUNCHED_BY_SESSION_IDS", "CLAUDE_CODE_MESSAGING_SOCKET",
    "CLAUDE_CODE_MESSAGING_TOKEN", "CLAUDE_CODE_ENTRYPOINT", "CLAUDE_CODE_EXECPATH", "CLAUDE_CODE_INVOKED_SKILLS",
    "CLAUDE_PID", "CLAUDE_EFFORT", "AI_AGENT", "TRACEPARENT", "CLAUDE_ENV_FILE", "CLAUDE_PLUGIN_ROOT",
    "CLAUDE_PLUGIN_DATA", "CLAUDE_PROJECT_DIR",
)
RETRYABLE = {408, 409, 429, 500, 502, 503, 504, 529}  # overloaded, rate-limited, or a passing server error
FALLBACK_INSTRUCTIONS = (
    "You are a brain-jobs sub-task worker. Do the one search you are given, nothing else. "
    "Answer in at most 200 characters, without shell metacharacters. Report with the exact "
    "brain job update command from your prompt; if you cannot finish, report --status failed "
    "with a short reason. End with the result as your final message."
)


def worker_instructions() -> str:
    """The worker agent's definition without its front matter, or a built-in summary of it."""
    for base in (os.environ.get("CLAUDE_PLUGIN_ROOT"), str(ROOT)):
        if not base:
            continue
        path = Path(base) / "agents" / "subtask-worker.md"
        try:
            text = path.read_text(encoding="utf-8")
        except OSError:
            continue
        if text.startswith("---"):
            end = text.find("\n---", 3)
            text = text[end + 4:] if end != -1 else text
        if text.strip():
            return text.strip()
    return FALLBACK_INSTRUCTIONS


def usage_of(result: dict):
    """What one ``claude -p`` run cost, from its JSON result: every input token (cached or
    not), output tokens and the CLI's ``total_cost_usd``; None when it says nothing."""
    usage = result.get("usage")
    if not isinstance(usage, dict):
        return None
    tokens = {k: usage.get(k) for k in ("input_tokens", "cache_creation_input_tokens", "cache_read_input_tokens",
                                         "output_tokens")}
    if not all(isinstance(v, int) or v is None for v in tokens.values()):
        return None
    out = {"input_tokens": sum(tokens[k] or 0 for k in ("input_tokens", "cache_creation_input_tokens",
                                                          "cache_read_input_tokens")),
           "output_tokens": tokens["output_tokens"] or 0}
    cost = result.get("total_cost_usd")
    if isinstance(cost, (int, float)) and not isinstance(cost, bool):
        out["cost_usd"] = cost
    return out


def parse_result(out: bytes):
    """The JSON result object that ``claude -p --output-format json`` prints last, or None."""
    for line in reversed(out.decode("utf-8", "replace").strip().splitlines()):
        try:
            value = json.loads(line)
        except ValueError:
            continue
        if isinstance(value, dict) and value.get("type") == "result":
            return value
    return None


class Executor(_Base):
    name = "claude"

    def check(self):
        if shutil.which("claude") is None:
            raise unavailable("the claude executor runs the Claude Code CLI, but `claude` is not on PATH: "
                              "install it (npm install -g @anthropic-ai/claude-code) or use "
                              "--executor anthropic/http/grep")

    def _env(self):
        env = {k: v for k, v in os.environ.items() if k not in SESSION_MARKERS}
        if self.ctx.db:
            if "://" in self.ctx.db:
                env["BRAIN_DATABASE_URL"] = self.ctx.db
            else:
                env["BRAIN_DB"] = self.ctx.db
                env.pop("BRAIN_DATABASE_URL", None)
        bin_dir = ROOT / "bin"
        if bin_dir.is_dir():
            env["PATH"] = f"{bin_dir}{os.pathsep}{env.get('PATH', '')}"
        return env

    def argv(self, exe, prompt) -> list:
        return [exe, "-p", prompt, "--model", model_id(self.ctx.settings, self.ctx.model),
                "--append-system-prompt", worker_instructions(), "--tools", TOOLS, "--allowedTools", ALLOWED_TOOLS,
                "--permission-prompts", "none", "--safe-mode", "--no-session-persistence",
                "--output-format", "json"]

    def run(self, query: str, task=None) -> str:
        exe = shutil.which("claude")
        if exe is None:
            raise Failed("claude is not on PATH")
        files = [self.ctx.relative(f) for f in self.ctx.files]
        prompt = prompts.instruction(query, files)
        if task and task.get("agent_id"):
            prompt += f"\nReport: {prompts.report_command(self.ctx.job_id, task)}"
        argv, env = self.argv(exe, prompt), self._env()
        retries = int(self.ctx.settings.get("api_retries", 4))
        usage = None
        for tried in range(1, retries + 2):
            timeout = self.ctx.time_left(self.ctx.settings.get("claude_timeout", 300.0))
            try:
                code, out, err = run_bounded(argv, timeout, "claude -p", cwd=self.ctx.workdir, env=env,
                                             stderr=subprocess.PIPE)
            except Failed as exc:
                raise Failed(str(exc), usage) from None
            result = parse_result(out)
            usage = sum_usage(usage, result and usage_of(result))
            if not (result and result.get("is_error") and result.get("api_error_status") in RETRYABLE):
                break
            pause = retry_pause(tried)
            if tried > retries or not self.ctx.may_retry(pause):
                break
            time.sleep(pause)
        return _answer(code, out, err, result, usage, tried)


def _answer(code, out, err, result, usage, tried) -> Answer:
    """The run's answer, or ``Failed`` saying why there is none."""
    if result is None:
        err, out = err.decode("utf-8", "replace"), out.decode("utf-8", "replace")
        if "unknown option" in err:
            raise Failed(f"claude -p: {first_line(err)}: this Claude Code is too old for the claude executor "
                         "(update it: claude update)", usage)
        raise Failed(f"claude exited {code}: {first_line(err) or first_line(out) or 'no output'}", usage)
    text = " ".join(str(result.get("result") or "").split())
    if result.get("is_error") or code != 0:
        status = result.get("api_error_status")
        why = f"API error {status}: " if status else ""
        tries = f" ({tried} tries)" if tried > 1 else ""
        raise Failed(f"claude -p failed{tries}: {why}{text or result.get('subtype') or f'exit {code}'}", usage)
    if not text:
        raise Failed("claude -p gave no answer", usage)
    return Answer(text, usage)

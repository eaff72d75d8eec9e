"""``claude``: one headless Claude Code run (``claude -p``) per sub-task.

Each sub-task gets the same launch prompt a host worker gets (the seed's
instruction and its ``brain job update`` report command) and the worker
agent's standing instructions (``agents/subtask-worker.md``) through
``--append-system-prompt``. Its tools are read-only (Read, Grep, Glob)
plus exactly that report command. When the worker reports, its report
stands; when it only prints an answer, the runner reports that answer (cut
to 200 characters), the way the SubagentStop hook rescues a host worker.
A non-zero exit or the timeout (``claude_timeout``, default 300 s) fails
the sub-task. Dispatch refuses this executor when ``claude`` is not on PATH.
"""

import os
import shutil
import subprocess
from pathlib import Path

from .. import prompts
from ..config import model_id
from .base import Executor as _Base, Failed, first_line, run_bounded, unavailable

ROOT = Path(__file__).resolve().parents[3]
ALLOWED_TOOLS = "Read Grep Glob Bash(brain job update:*)"
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


class Executor(_Base):
    name = "claude"

    def check(self):
        if shutil.which("claude") is None:
            raise unavailable("the claude executor runs the Claude Code CLI, but `claude` is not on PATH: "
                              "install it (npm install -g @anthropic-ai/claude-code) or use "
                              "--executor anthropic/http/grep")

    def _env(self):
        env = dict(os.environ)
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

    def run(self, query: str, task=None) -> str:
        exe = shutil.which("claude")
        if exe is None:
            raise Failed("claude is not on PATH")
        files = [self.ctx.relative(f) for f in self.ctx.files]
        prompt = prompts.instruction(query, files)
        if task and task.get("agent_id"):
            prompt += f"\nReport: {prompts.report_command(self.ctx.job_id, task)}"
        argv = [exe, "-p", prompt, "--model", model_id(self.ctx.settings, self.ctx.model),
                "--append-system-prompt", worker_instructions(),
                "--allowedTools", ALLOWED_TOOLS, "--output-format", "text"]
        timeout = self.ctx.time_left(self.ctx.settings.get("claude_timeout", 300.0))
        code, out, err = run_bounded(argv, timeout, "claude -p", cwd=self.ctx.workdir, env=self._env(),
                                     stderr=subprocess.PIPE)
        out, err = out.decode("utf-8", "replace"), err.decode("utf-8", "replace")
        if code != 0:
            raise Failed(f"claude exited {code}: {first_line(err) or first_line(out) or 'no output'}")
        answer = " ".join(out.split())
        if not answer:
            raise Failed("claude -p printed no answer")
        return answer

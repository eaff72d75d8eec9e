"""A new user's first session, in the real INTERACTIVE Claude Code CLI, driven through tmux.

Run as a script by ``test_interactive_tmux``, inside ``unshare -n`` when
possible so loopback is the only network. In the isolated HOME of ``--env``
it serves the fake Messages API on 127.0.0.1, pre-accepts the host's
first-run dialogs (``pre_accept``) and installs the plugin with the README's
lines: at the shell (``--install``, JSON: each line a list of words) or typed
into a first session (``--slash``, JSON: the ``/plugin ...`` lines), after
which it starts a new session, as the README says. The session is ``claude``
with no flag at all -- the permission mode a new user gets -- in a tmux pane
of 200x50; it types a request for parallel work and presses Enter, as a
person would.

The "model" is scripted (``main_model``, and ``scenario.worker_model`` for
the workers): create a job, dispatch it, launch the Agent calls, look at
``subtasks``, end the turn; when the plugin's Stop hook reminds it, ``wait``,
``consolidate`` and answer with every result in a code block. Every distinct
screen is appended to ``screens.txt``. The run stops at once when a
permission prompt appears (``PROMPTS``: nothing of ours may ask), and
otherwise when the answer is on screen; every wait polls ``capture-pane``
against a deadline. ``--out`` receives the screens, ``outcome.json``, the
request log and the install output.
"""

import argparse
import json
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from tests.fakes.fake_anthropic import FakeAnthropic, system_text, text, tool_use  # noqa: E402
from tests.host import scenario  # noqa: E402
from tests.host.scenario import bash, fan_out, prepare_out, said, tool_calls  # noqa: E402

PROMPT = "Search these in parallel for me: GET /health, POST /auth and GET /users."
ANSWER_HEADING = "brain-jobs results, verbatim:"
# What the host shows when a tool call waits for the user's permission (2.1.332): the
# question of every permission dialog, and auto mode's "can't check" notices.
PROMPTS = ("Do you want to proceed?", "requires approval", "needs your approval",
           "Auto mode can't check actions")
SESSION_TIMEOUT = 90  # seconds for the whole session; each wait below has its own, smaller deadline
POLL = 0.2


def main_model(body):
    """The orchestrator: the job-queue skill's flow, with every read command a user could see."""
    calls = tool_calls(body)
    job_id, turn = fan_out(calls, "Parallel search")
    if turn is not None:
        return turn
    if not bash(calls, "brain job subtasks"):
        return tool_use("Bash", {"command": f"brain job subtasks {job_id}", "description": "Progress"})
    if not bash(calls, "brain job wait"):
        # Waits for the plugin's Stop hook to say that every sub-task has finished.
        if scenario.STOP_REASON_MARK not in said(body):
            return text("Workers launched; waiting for them.")
        return tool_use("Bash", {"command": f"brain job wait {job_id} --timeout 60", "description": "Join"})
    consolidated = bash(calls, "brain job consolidate")
    if not consolidated:
        return tool_use("Bash", {"command": f"brain job consolidate {job_id} --json", "description": "Consolidate"})
    try:
        results = json.loads(consolidated[-1][1])["results"]
    except (TypeError, ValueError, KeyError):
        return text(f"consolidate failed: {consolidated[-1][1]}")
    lines = "\n".join(f"{r['sub_task_id']} {r['query']}: {r['result']}" for r in results)
    return text(f"{ANSWER_HEADING}\n\n```\n{lines}\n```")


def respond(rec):
    body = rec.body
    system = system_text(body)
    if scenario.WORKER_MARKER in system:
        return scenario.worker_model(body)
    if "Agent" in [t.get("name") for t in body.get("tools") or []] and "cc_is_subagent=true" not in system:
        return main_model(body)
    return text("ok")  # side requests of the host (titles, summaries)


def pre_accept(config_dir: Path, project: Path, api_key: str) -> None:
    """Answer the host's first-run dialogs in its own config file, as a person would once.

    ``$CLAUDE_CONFIG_DIR/.claude.json`` (``~/.claude.json`` without the variable):
    ``hasCompletedOnboarding`` skips the theme and login steps (which also check
    that api.anthropic.com is reachable), ``customApiKeyResponses.approved``
    (the key's last 20 characters) answers "Detected a custom API key in your
    environment", and ``projects[<dir>].hasTrustDialogAccepted`` answers the
    workspace trust dialog ("Accessing workspace: ... Is this a project you
    created or one you trust?"), which runs no plugin hook until it is accepted.
    """
    path = config_dir / ".claude.json"
    config_dir.mkdir(parents=True, exist_ok=True)
    config = json.loads(path.read_text()) if path.exists() else {}
    config["hasCompletedOnboarding"] = True
    config.setdefault("customApiKeyResponses", {"approved": [], "rejected": []})["approved"].append(api_key[-20:])
    config.setdefault("projects", {}).setdefault(str(project.resolve()), {})["hasTrustDialogAccepted"] = True
    path.write_text(json.dumps(config, indent=2))


class Pane:
    """One tmux pane on a private server socket; every distinct screen goes to ``log``."""

    def __init__(self, socket: Path, env: dict, log: Path):
        self.base = ["tmux", "-S", str(socket), "-f", "/dev/null"]
        self.env, self.log, self.screens, self.started = env, log, [], time.monotonic()

    def tmux(self, *args, check=True):
        return subprocess.run([*self.base, *args], env=self.env, capture_output=True, text=True, timeout=30,
                              check=check)

    def start(self, cwd: Path, command: list) -> None:
        self.tmux("new-session", "-d", "-s", "user", "-x", "200", "-y", "50", "-c", str(cwd), "--", *command,
                  ";", "set-option", "-t", "user", "remain-on-exit", "on")

    def screen(self) -> str:
        shown = self.tmux("capture-pane", "-p", "-t", "user", check=False).stdout
        if not self.screens or shown != self.screens[-1]:
            self.screens.append(shown)
            with open(self.log, "a", encoding="utf-8") as fh:
                fh.write(f"===== screen {len(self.screens)} at {time.monotonic() - self.started:.1f}s\n{shown}\n")
        return shown

    def dead(self) -> bool:
        return self.tmux("display-message", "-p", "-t", "user", "#{pane_dead}", check=False).stdout.strip() == "1"

    def keys(self, *keys, literal=False) -> None:
        self.tmux("send-keys", "-t", "user", *(["-l"] if literal else []), *keys)

    def kill(self) -> None:
        self.tmux("kill-server", check=False)


def prompt_on(screen: str):
    """The first permission-prompt marker shown on ``screen``, or None."""
    return next((marker for marker in PROMPTS if marker in screen), None)


class PermissionPrompt(Exception):
    pass


def wait_for(pane: Pane, ready, seconds: float, what: str, also=lambda: False) -> str:
    """Poll the screen until ``ready(screen)`` (or ``also()``); a permission prompt ends the run."""
    deadline = time.monotonic() + seconds
    while True:
        dead = pane.dead()  # before the look, so that a pane that just ended gets one last one
        screen = pane.screen()
        marker = prompt_on(screen)
        if marker:
            raise PermissionPrompt(marker)
        if ready(screen) or also():
            return screen
        if dead or time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not seen within {seconds:.0f}s" + (" (claude exited)" if dead else ""))
        time.sleep(POLL)


def _input_ready(screen: str) -> bool:
    """The prompt box is drawn and its footer shows a permission mode: the CLI takes keys."""
    return "\n❯" in "\n" + screen and re.search(r"mode on|for shortcuts", screen) is not None


def submit(pane: Pane, line: str, done, what: str, also=lambda: False) -> None:
    """Type ``line`` at the ready prompt and press Enter until ``done(screen)`` or ``also()``
    (at most 3 presses: an Enter that arrives with the typed text can be read as part of a paste)."""
    wait_for(pane, _input_ready, 30, "the input prompt")
    pane.keys(line, literal=True)
    wait_for(pane, lambda s: line in s, 10, f"the typed {line!r}")
    for _ in range(3):
        pane.keys("Enter")
        try:
            wait_for(pane, done, 10, what, also=also)
            return
        except TimeoutError:
            continue
    raise TimeoutError(f"{what}: not seen after 3 presses of Enter")


def install_in_session(pane: Pane, lines: list) -> None:
    """Type the README's ``/plugin`` lines; take the install menu's first choice (user scope)."""
    for line in lines:
        if " install " in line:
            submit(pane, line, lambda s: "Install for you (user scope)" in s, "the install menu")
            pane.keys("Enter")
            wait_for(pane, lambda s: "Installed brain-jobs" in s, 30, "the install")
        else:
            submit(pane, line, lambda s: "Added marketplace" in s, "the added marketplace")


def leave(pane: Pane) -> None:
    """``/exit``, as a user leaves; returns when claude has ended."""
    submit(pane, "/exit", lambda s: False, "claude to exit", also=pane.dead)


def ask(pane: Pane, api: FakeAnthropic, prompt: str) -> None:
    """Type ``prompt`` and press Enter until the host has sent it to the model."""
    def sent() -> bool:
        return any(prompt in said(r.body) for r in api.messages_requests() if isinstance(r.body, dict))

    submit(pane, prompt, lambda s: False, "the request reaching the model", also=sent)


def session(pane: Pane, api: FakeAnthropic, claude: str, cwd: Path, slash: list) -> dict:
    """The interactive session (after a first one that installs, with ``slash``), from start
    to /exit; what happened, for ``outcome.json``."""
    try:
        if slash:
            pane.start(cwd, [claude])
            install_in_session(pane, slash)
            leave(pane)
            pane.tmux("respawn-pane", "-t", "user")  # "then start a new session"
        else:
            pane.start(cwd, [claude])
        ask(pane, api, PROMPT)
        wait_for(pane, lambda s: ANSWER_HEADING in s, SESSION_TIMEOUT, "the answer")
        # Let the turn finish (no "esc to interrupt" in the footer), then leave as a user does.
        answer = wait_for(pane, lambda s: "esc to interrupt" not in s, 30, "the end of the turn")
        leave(pane)
        return {"ok": True, "answer_screen": answer}
    except PermissionPrompt as exc:
        return {"ok": False, "permission_prompt": str(exc)}
    except TimeoutError as exc:
        return {"ok": False, "timeout": str(exc)}


def run(args) -> int:
    out = prepare_out(args)
    env = json.loads(Path(args.env).read_text())
    cwd = Path(args.cwd)
    with FakeAnthropic(responder=respond) as api:
        env["ANTHROPIC_BASE_URL"] = api.url
        pre_accept(Path(env["CLAUDE_CONFIG_DIR"]), cwd, env["ANTHROPIC_API_KEY"])
        steps = []
        for cmd in json.loads(args.install):
            proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=120,
                                  stdin=subprocess.DEVNULL)
            steps.append({"cmd": cmd, "rc": proc.returncode, "stdout": proc.stdout, "stderr": proc.stderr})
        (out / "install.json").write_text(json.dumps(steps, indent=1))
        if any(step["rc"] != 0 for step in steps):
            return 1
        pane = Pane(out / "tmux.sock", env, out / "screens.txt")
        try:
            outcome = session(pane, api, args.claude, cwd, json.loads(args.slash))
        finally:
            pane.kill()
        outcome["screens"] = len(pane.screens)
        (out / "answer_screen.txt").write_text(outcome.pop("answer_screen", ""))
        (out / "last_screen.txt").write_text(pane.screens[-1] if pane.screens else "")
        (out / "outcome.json").write_text(json.dumps(outcome))
        api.dump_requests(str(out / "requests.jsonl"))
        (out / "responder_errors.txt").write_text("\n".join(repr(e) for e in api.errors))
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    for name in ("--claude", "--cwd", "--out", "--env"):
        parser.add_argument(name, required=True)
    parser.add_argument("--install", default="[]", help="JSON: install commands to run first, each a list of words")
    parser.add_argument("--slash", default="[]", help="JSON: /plugin lines to type into a first session")
    parser.add_argument("--netns", action="store_true", help="bring lo up first (inside unshare -n)")
    sys.exit(run(parser.parse_args()))

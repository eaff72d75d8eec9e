"""Issue 14's user path, in the real interactive CLI: install, ask, see, and find it again at a terminal.

In a fresh HOME, offline (inside ``unshare -n`` where it works), the pinned
CLI installs the plugin with the lines of the README's "Use it in Claude
Code" section word for word (the clone's path in place of
``/path/to/brain-jobs``): once with the ``claude plugin`` lines at the shell,
once with the ``/plugin`` lines typed into a first session followed by a new
session. Then ``interactive.py`` starts ``claude`` with no flag in tmux -- the
permission mode a new user gets, auto in 2.1.332 -- types a request for
parallel work and reads every screen until the answer. The fake API on 127.0.0.1 plays the
models; it does not pass auto mode's server-side safety check through, so
any action that no hook approves would stop on a permission dialog on screen.
Afterwards a "terminal" (a plain subprocess: that HOME, ``~/.brain/bin`` on
PATH, no ``CLAUDE_*`` variable) lists and consolidates the same job.

The host's first-run dialogs (onboarding, the API key, workspace trust) are
answered in its config file first: see ``interactive.pre_accept``.
"""

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.host import interactive, scenario
from tests.host.claude_cli import ROOT, api_requests, claude_binary, isolated_command, isolated_env, unavailable
from tests.host.test_marketplace_install import NOT_IN_A_CLONE

RUN_TIMEOUT = 240  # the runner's own waits end well before this; it only catches a hang
SHELL_CODE = "def f(x) -> int: return x | 1; $HOME"  # part of the GET /users worker's result

# The run keeps its own store in its isolated HOME, whatever the test backend: one run is enough.
pytestmark = pytest.mark.sqlite_only


def _readme_section() -> str:
    return (ROOT / "README.md").read_text().split("## Use it in Claude Code", 1)[1].split("\n## ", 1)[0]


def readme_shell_lines(checkout: Path) -> list:
    """The ``claude plugin ...`` lines of the section's first shell block, as argv lists."""
    block = _readme_section().split("```bash", 1)[1].split("```", 1)[0]
    lines = [line.split("#", 1)[0].split() for line in block.splitlines() if line.startswith("claude plugin ")]
    return [[str(checkout) if word == "/path/to/brain-jobs" else word for word in line] for line in lines]


def readme_slash_lines(checkout: Path) -> list:
    """The ``/plugin ...`` commands the section gives for doing the same in a session."""
    lines = re.findall(r"`(/plugin [^`]+)`", " ".join(_readme_section().split()))
    return [line.replace("/path/to/brain-jobs", str(checkout)) for line in lines]


@pytest.fixture(scope="module", params=["shell", "session"])
def run(request, tmp_path_factory):
    if shutil.which("tmux") is None:
        unavailable("tmux is not installed (needed to drive the interactive CLI; apt-get install tmux)")
    claude = claude_binary()
    base = tmp_path_factory.mktemp("claude-interactive")
    home, tmp, project, out, checkout = (base / n for n in ("home", "tmp", "project", "out", "checkout"))
    for d in (home, tmp, project):
        d.mkdir()
    shutil.copytree(ROOT, checkout, symlinks=True, ignore=NOT_IN_A_CLONE)
    no_extras = base / "requirements-none.txt"
    no_extras.write_text("# this run prepares no optional packages (tests/test_hooks.py covers that)\n")
    # `claude` is on PATH, as after `npm install -g`: the README's lines run as written.
    env = isolated_env(home, tmp, PATH=f"{claude.parent}:{os.environ['PATH']}", BRAIN_HOOK_DEBUG="1",
                       BRAIN_REQUIREMENTS_FILE=str(no_extras))
    (base / "env.json").write_text(json.dumps(env))
    install = readme_shell_lines(checkout) if request.param == "shell" else []
    slash = readme_slash_lines(checkout) if request.param == "session" else []
    cmd = [sys.executable, str(Path(interactive.__file__)), "--claude", "claude", "--cwd", str(project),
           "--out", str(out), "--env", str(base / "env.json"), "--install", json.dumps(install),
           "--slash", json.dumps(slash)]
    cmd, netns = isolated_command(cmd)
    started = time.monotonic()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=RUN_TIMEOUT)
    finally:  # the runner ends its tmux server; this ends it when the runner could not (a timeout)
        if (out / "tmux.sock").exists():
            subprocess.run(["tmux", "-S", str(out / "tmux.sock"), "kill-server"], capture_output=True, timeout=30)
    print(f"install and interactive session took {time.monotonic() - started:.1f}s (netns={netns})")
    steps = json.loads((out / "install.json").read_text()) if (out / "install.json").exists() else []
    assert proc.returncode == 0, f"runner failed:\n{proc.stdout}\n{proc.stderr}\n{json.dumps(steps, indent=1)}"
    return {
        "home": home, "out": out, "netns": netns, "install": install, "slash": slash, "steps": steps,
        "outcome": json.loads((out / "outcome.json").read_text()),
        "screens": (out / "screens.txt").read_text(),
        "last": (out / "last_screen.txt").read_text(),
        "answer": (out / "answer_screen.txt").read_text(),
        "requests": api_requests(out),
        "hooks_log": "".join(p.read_text() for p in sorted(home.rglob("hooks.log"))),
    }


def _explain(run) -> str:
    return f"outcome={run['outcome']}\nlast screen:\n{run['last']}\nhooks.log:\n{run['hooks_log'][-3000:]}"


@pytest.fixture(scope="module")
def job_id(run):
    assert run["outcome"]["ok"], _explain(run)
    ids = set(re.findall(r"pre_tool_use: allow 'brain job dispatch (\w+) ", run["hooks_log"]))
    assert len(ids) == 1, _explain(run)
    return ids.pop()


def terminal(run, *args) -> subprocess.CompletedProcess:
    """``brain ARGS`` at a terminal: the user's HOME, the launcher's directory on PATH, no CLAUDE_* variable."""
    env = {"HOME": str(run["home"]), "PATH": f"{run['home'] / '.brain' / 'bin'}:{os.environ['PATH']}",
           "LANG": "C.UTF-8"}
    return subprocess.run(["brain", *args], capture_output=True, text=True, timeout=60, env=env)


def test_the_readme_install_lines_install_the_plugin(run):
    if run["slash"]:
        assert [line.split()[:2] for line in run["slash"]] == [["/plugin", "marketplace"], ["/plugin", "install"]]
        assert "Installed brain-jobs" in run["screens"], _explain(run)
    else:
        assert [line[:3] for line in run["install"]] == [["claude", "plugin", "marketplace"],
                                                          ["claude", "plugin", "install"]]
        assert [step["rc"] for step in run["steps"]] == [0, 0], json.dumps(run["steps"], indent=1)
    installed = json.loads((run["home"] / ".claude" / "plugins" / "installed_plugins.json").read_text())
    assert [p["scope"] for p in installed["plugins"]["brain-jobs@brain-jobs"]] == ["user"]


def test_no_permission_prompt_on_any_screen(run, job_id):
    """The session ran to its answer in the default mode with nothing asked: every
    Bash call (the orchestrator's and the workers') and every worker launch was
    approved by the plugin's hook, or a dialog would have stopped it on screen."""
    assert not [m for m in interactive.PROMPTS if m in run["screens"]], _explain(run)
    assert "auto mode on" in run["screens"], "the CLI's default mode changed: see what this test now proves"
    log = run["hooks_log"]
    for command in ("create", f"dispatch {job_id}", f"subtasks {job_id}", f"wait {job_id}",
                    f"consolidate {job_id}", f"update {job_id} "):
        assert f"pre_tool_use: allow 'brain job {command}" in log, (command, _explain(run))
    assert log.count("pre_tool_use: allow launch ") == len(scenario.ENDPOINTS), _explain(run)


def test_the_results_are_on_screen_verbatim(run, job_id):
    """The model's answer puts the consolidated results in a code block, which the
    host shows as written: each line of the screen is one result, byte for byte."""
    assert interactive.ANSWER_HEADING in run["answer"], _explain(run)
    shown = [line.strip() for line in run["answer"].split(interactive.ANSWER_HEADING, 1)[1].splitlines()]
    by_query = {**scenario.RESULTS, **scenario.SILENT}
    for n, query in enumerate(scenario.ENDPOINTS, 1):
        assert f"sub_{n} {query}: {by_query[query]}" in shown, (query, run["answer"])
    assert any(SHELL_CODE in line for line in shown)


def test_the_stop_reminder_shows_as_a_note_not_an_error(run, job_id):
    screens = run["screens"]
    assert f"Stop hook says: brain-jobs: every sub-task of job {job_id} has finished" in screens, _explain(run)
    for error in ("Stop hook reported a problem", "Stop hook error", "blocking error"):
        assert error not in screens


def test_a_terminal_finds_the_same_job_verbatim(run, job_id):
    listed = terminal(run, "job", "list", "--all")
    assert listed.returncode == 0 and listed.stdout.split()[0] == job_id, listed
    assert len(listed.stdout.splitlines()) == 1
    shown = terminal(run, "job", "consolidate", job_id)
    assert shown.returncode == 0 and not shown.stderr, shown
    for query, result in {**scenario.RESULTS, **scenario.SILENT}.items():
        assert f"{query} -> {result}" in shown.stdout, shown.stdout
    data = json.loads(terminal(run, "job", "consolidate", job_id, "--json").stdout)
    assert {r["query"]: r["result"] for r in data["results"]} == {**scenario.RESULTS, **scenario.SILENT}


def test_no_request_left_loopback(run):
    assert run["requests"] and all(r["client"] == "127.0.0.1" for r in run["requests"])
    assert not (run["out"] / "responder_errors.txt").read_text()
    if run["netns"]:
        links = [line.split(":")[1].strip() for line in (run["out"] / "links.txt").read_text().splitlines() if line]
        assert links == ["lo"], "the run's network namespace had more than loopback"
    else:
        print("loopback-only is asserted from the request log only: no network namespace here")

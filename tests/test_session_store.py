"""One store for a person and their Claude Code sessions, and a private plugin data directory
(issue 14).

A session (hooks with ``CLAUDE_PLUGIN_DATA``, Bash with what SessionStart exported) and the
same person at a terminal (no ``CLAUDE_*`` variable, ``brain`` from ``~/.brain/bin``) read
and write ``~/.brain/jobs.db``, whatever the plugin data directory is called. Everything
the hooks write under that directory is 0600 in a 0700 directory, even when the host made
it 0755. A preparation of the optional packages that fails offline says so in two lines.
"""

import json
import os
import socket
import stat
import subprocess
import sys
import time

import pytest

from test_hooks import ROOT, hook, recorded

pytestmark = pytest.mark.sqlite_only


def _mode(path):
    return stat.S_IMODE(os.lstat(path).st_mode)


@pytest.fixture
def host(tmp_path, monkeypatch):
    """A fresh HOME and a plugin data dir made the host's way (0755, named after the install)."""
    home = tmp_path / "home"
    data = home / ".claude" / "plugins" / "data" / "brain-jobs-some-marketplace"
    data.mkdir(parents=True)
    data.chmod(0o755)
    none = tmp_path / "requirements-none.txt"
    none.write_text("")
    monkeypatch.delenv("BRAIN_DB")
    for name, value in {"HOME": str(home), "CLAUDE_PLUGIN_DATA": str(data), "CLAUDE_PLUGIN_ROOT": str(ROOT),
                        "BRAIN_REQUIREMENTS_FILE": str(none), "CLAUDE_ENV_FILE": str(tmp_path / "env.sh")}.items():
        monkeypatch.setenv(name, value)
    return home, data


def _session_env(env_file):
    """What the Bash tool of the session runs with: the hooks' environment plus the exports."""
    exported = dict(line[len("export "):].split("=", 1) for line in env_file.read_text().splitlines())
    return dict(os.environ, **exported)


def _terminal_env(home):
    """A person at a terminal: no CLAUDE_* variable, no BRAIN_DB, the launcher's directory on PATH."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CLAUDE_", "BRAIN_"))}
    env.update(HOME=str(home), PATH=f"{home / '.brain' / 'bin'}:{os.environ['PATH']}")
    return env


def test_a_person_at_a_terminal_sees_the_jobs_of_their_sessions(host, tmp_path):
    home, data = host
    hook("session_start", recorded("session_start.json", TMP="/tmp"))
    store = home / ".brain" / "jobs.db"
    assert f"export BRAIN_DB={store}" in (tmp_path / "env.sh").read_text().splitlines()
    # The session's agent creates a job with the plugin's brain, as the Bash tool runs it.
    created = subprocess.run([str(ROOT / "bin" / "brain"), "job", "create", "--distributed", "--ttl", "300",
                              "--prompt", "from the session", "--subtask", "GET /a"], capture_output=True, text=True,
                             env=_session_env(tmp_path / "env.sh"), timeout=30)
    assert created.returncode == 0, created.stderr
    job = created.stdout.strip()[len("job_"):]
    # The next session's hook sees it ...
    out, _ = hook("session_start", recorded("session_start.json", TMP="/tmp"))
    assert f"job {job} pending 0/1 done: from the session" in out["hookSpecificOutput"]["additionalContext"]
    # ... and so does the person at a terminal, with `brain` from the launcher on PATH.
    listed = subprocess.run(["brain", "job", "list", "--json"], capture_output=True, text=True,
                            env=_terminal_env(home), timeout=30)
    assert listed.returncode == 0, listed.stderr
    assert [j["job_id"] for j in json.loads(listed.stdout)] == [job]
    assert not list(data.rglob("jobs.db*"))  # the plugin data dir holds no store


def test_the_launcher_runs_this_plugin_and_is_kept_current(host, tmp_path):
    home, data = host
    launcher = home / ".brain" / "bin" / "brain"
    hook("session_start", recorded("session_start.json", TMP="/tmp"))
    assert _mode(home / ".brain") == 0o700 and _mode(launcher.parent) == 0o700 and _mode(launcher) == 0o700
    text = launcher.read_text()
    python = (data / "python").read_text().strip()  # the interpreter SessionStart chose
    assert f"exec {ROOT / 'bin' / 'brain'} \"$@\"" in text and f"BRAIN_PYTHON={python}\n" in text
    helped = subprocess.run([str(launcher), "job", "--help"], capture_output=True, text=True,
                            env=_terminal_env(home), timeout=30)
    assert helped.returncode == 0 and "brain job" in helped.stdout.replace("usage: brain job", "brain job")
    # A launcher from an older install is brought up to date; a user's own file is left alone.
    launcher.write_text(text.replace(str(ROOT), "/old/install"))
    hook("session_start", recorded("session_start.json", TMP="/tmp"))
    assert launcher.read_text() == text
    launcher.write_text("#!/bin/sh\necho mine\n")
    hook("session_start", recorded("session_start.json", TMP="/tmp"))
    assert launcher.read_text() == "#!/bin/sh\necho mine\n"


def test_a_plugin_installed_inside_a_session_leaves_the_launcher_at_its_first_stop(host, tmp_path):
    """`/plugin install` in a session is active at once ("Plugin is now active"), but its
    SessionStart runs only in the next session: the Stop hook writes the missing launcher,
    so the person at a terminal finds that first session's job."""
    home, data = host
    launcher = home / ".brain" / "bin" / "brain"
    # No SessionStart: the session's Bash has the plugin's bin/ on PATH and no export.
    created = subprocess.run([str(ROOT / "bin" / "brain"), "job", "create", "-q", "--ttl", "300", "--prompt", "first",
                              "--subtask", "GET /a"], capture_output=True, text=True, timeout=30)
    assert created.returncode == 0, created.stderr
    assert not launcher.exists()
    hook("stop", recorded("stop.json", TMP="/tmp"))
    assert _mode(launcher) == 0o700 and f"exec {ROOT / 'bin' / 'brain'} " in launcher.read_text()
    listed = subprocess.run(["brain", "job", "list", "--json"], capture_output=True, text=True,
                            env=_terminal_env(home), timeout=30)
    assert [j["job_id"] for j in json.loads(listed.stdout)] == [created.stdout.strip()], listed.stderr
    # SessionStart keeps it current; Stop never rewrites one that exists, nor a user's own file.
    launcher.write_text("#!/bin/sh\necho mine\n")
    hook("stop", recorded("stop.json", TMP="/tmp"))
    assert launcher.read_text() == "#!/bin/sh\necho mine\n"


def test_a_user_store_setting_is_not_overridden(host, tmp_path, monkeypatch):
    mine = tmp_path / "elsewhere" / "jobs.db"
    monkeypatch.setenv("BRAIN_DB", str(mine))
    hook("session_start", recorded("session_start.json", TMP="/tmp"))
    assert "BRAIN_DB" not in (tmp_path / "env.sh").read_text()  # Bash inherits the user's own
    assert mine.exists()  # SessionStart's sweep opened the user's store, not ~/.brain's


def test_the_plugin_data_dir_is_private_even_when_the_host_made_it(host, tmp_path):
    """The host creates the data dir 0755; SessionStart makes it 0700, and every file the
    hooks write there is 0600, a log left 0644 by an older version included."""
    home, data = host
    (data / "hooks.log").write_text("older line\n")
    (data / "hooks.log").chmod(0o644)
    env = {"BRAIN_HOOK_DEBUG": "1"}
    hook("session_start", recorded("session_start.json", TMP="/tmp"), env=env)
    # A finished, unread job dispatched in the session makes the Stop hook write its session file.
    session = recorded("stop.json", TMP="/tmp")["session_id"]
    code = ("import sys; from brain_jobs import jobs;"
            "j = jobs.create_job_with_subtasks(60, {'prompt': 'p'}, ['a']);"
            "call = jobs.dispatch_job(j, session_id=sys.argv[1])['agent_calls'][0];"
            "credential = jobs.parse_subtask_prompt(call['prompt'])[2];"
            "jobs.update_subtask_status(j, 'sub_1', 'completed', 'r', agent_id=credential)")
    subprocess.run([sys.executable, "-c", code, session], cwd=ROOT, check=True, timeout=60)
    out, _ = hook("stop", recorded("stop.json", TMP="/tmp"), env=env)
    assert "brain job consolidate" in out["hookSpecificOutput"]["additionalContext"]
    assert _mode(data) == 0o700
    files = [p for p in data.rglob("*")]
    assert {p.name for p in files} >= {"hooks.log", "environment.json", "python", "sessions"}
    for path in files:
        assert _mode(path) == (0o700 if path.is_dir() else 0o600), path


def _closed_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # nothing listens there once closed: connections are refused


def test_an_offline_preparation_failure_is_two_lines(host, tmp_path, monkeypatch):
    """pip offline prints a screen of urllib3 retry warnings; the next session gets two lines:
    what failed and the command that fixes it. The details stay in prepare.log."""
    _, data = host
    reqs = tmp_path / "requirements.txt"
    reqs.write_text("brainjobs_probe brainjobs-probe\n")
    monkeypatch.setenv("BRAIN_REQUIREMENTS_FILE", str(reqs))
    monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)
    index = f"http://127.0.0.1:{_closed_port()}/simple"
    monkeypatch.setenv("BRAIN_PIP_ARGS", f"--index-url {index} --retries 2 --timeout 2")
    out, _ = hook("session_start", recorded("session_start.json", TMP="/tmp"))  # starts the preparation
    assert "preparing optional Python packages" in out["systemMessage"]
    deadline = time.monotonic() + 300
    while json.loads((data / "environment.json").read_text())["status"] == "preparing":
        assert time.monotonic() < deadline, (data / "prepare.log").read_text()
        time.sleep(0.2)
    details = (data / "prepare.log").read_text()
    assert "Retrying" in details and "Connection refused" in details  # it failed the offline way
    out, _ = hook("session_start", recorded("session_start.json", TMP="/tmp"))  # the next session
    message = out["systemMessage"]
    first, second = message.split("\n")
    assert first == ("brain-jobs: could not prepare optional Python packages (pip install failed: No matching "
                     "distribution found for brainjobs-probe); the job queue works without them.")
    assert second == (f"To install them yourself: python3 -m pip install --user brainjobs-probe "
                      f"(details: {data / 'prepare.log'})")
    for path in (data / "prepare.log", data / "prepare.lock", data / "environment.json"):
        assert _mode(path) == 0o600, path

"""The PreToolUse(Bash) approval hook as a trust boundary.

Every command is run through the hook as the host runs it (the PreToolUse
command of hooks/hooks.json, through ``sh -c``, with a payload recorded from
the real host). An approved command must compute exactly the argv that
``bash -c`` passes to a stub ``brain`` on PATH; every hostile form must get
no answer, from the host's entry and from the Python hook itself (the
prefilter in front of it must never be what refuses).
"""

import importlib
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
HOOKS = ROOT / "hooks"
PAYLOADS = ROOT / "tests" / "host" / "payloads"
OWN = str(ROOT / "bin" / "brain")
HOST_COMMAND = json.loads((HOOKS / "hooks.json").read_text())["hooks"]["PreToolUse"][0]["hooks"][0]["command"]
ALLOW_REASON = "brain-jobs: brain job {} (BRAIN_AUTO_APPROVE=0 turns this off)"

sys.path.insert(0, str(HOOKS))
pre_tool_use = importlib.import_module("pre_tool_use")

# No store is involved: one run is enough.
pytestmark = pytest.mark.sqlite_only

RESULT = "def f(x) -> int: return x | 1; $HOME"
REPORT = "brain job update J sub_1 --agent-id agent_haiku_3f9a1c.1f0e9a2b --status completed --result"

APPROVED = [
    # a worker's report, any printable result verbatim inside single quotes
    f"{REPORT} '{RESULT}'",
    'brain job update abc123 sub_1 --agent-id agent_haiku_3f9a1c --status completed --result "[200 OK] 5 items"',
    "brain job update abc123 sub_2 --agent-id agent_haiku_3f9a1c --status failed --result 'no such file'",
    "brain job update abc123 sub_1 --status=running --agent-id=a1",
    f"{REPORT} 'a; b & c | d $(e) `f` <g> (h) {{i,j}} [k] *? ~ ! # % \\ \" end'",
    f"{REPORT} 'it'\\''s done'",
    f"{REPORT} 'it'\"'\"'s done'",
    f"{REPORT} \"it's 50% done, 3 of 4 * ok ~ {{a,b}} [c] ? # ; & | < > ( )\"",
    f"{REPORT} 'caf\u00e9 \u2713 \u65e5\u672c'",
    f"{REPORT} ''",
    f"{REPORT}=''",
    f"{REPORT}='-5 items'",
    f"{REPORT} ok\\'s",
    f"{REPORT} a'b'\"c\"d",
    "brain job update abc123 sub_1 --agent-id a1 --status completed --result ok\t--agent-id\ta1",
    # reads
    "brain job subtasks abc123",
    "brain job subtasks job_abc123 --json",
    "brain job consolidate abc123 --json",
    "brain job get abc123",
    "brain job get abc123 --json",
    "brain job list",
    "brain job list --all --json",
    "brain job wait abc123",
    "brain job wait abc123 --timeout 60 --json",
    "brain job wait abc123 --timeout=60",
    # the orchestrator's own
    'brain job create --distributed --ttl 300 --prompt "Validate endpoints" --subtask "GET /health" --subtask "POST /auth"',
    "brain job create --distributed --ttl 300 --prompt 'Find TODOs' --file src/api.py --file=src/ --skills search --json",
    "brain job create -q --ttl 60 --prompt x --data '{\"k\": [1, 2]}'",
    "brain job create --ttl 60 --prompt x --glob 'src/**/*.py' --query 'TODO in {file}'",
    "brain job dispatch abc123 --json",
    "brain job dispatch abc123 --executor host --json",
    "brain job dispatch abc123 --executor=host --model haiku --timeout 120 --file src/",
    "brain   job list  ",
]
# Approved by the Python hook, but passed over by the prefilter in front of it
# (the command does not start with `brain ` or an absolute .../bin/brain):
# the host asks, which is the safe side.
PREFILTERED = [
    "  brain job list",
    "\tbrain job list",
    "'brain' job list",
    "br'ai'n job list",
    "'brain' \"job\" l'is't",
    "brain\tjob list",
]
REFUSED = [
    # brace expansion (issue 12): bash adds the option after the hook's look
    "brain job update J sub_2 --agent-id x --status completed --result forged {--force,}",
    "brain job update J sub_2 --agent-id x --status completed --result forged {,--force}",
    "brain job update J sub_2 --agent-id x --status completed --result forged -{-force,}",
    "brain job update J sub_2 --agent-id x --status completed --result forged --{force,}",
    "brain job update J sub_2 --agent-id x --status completed --result forged {--force,--force}",
    "brain job list {--db=/tmp/elsewhere/x.db,}",
    "brain job list {--db,/tmp/elsewhere/x.db}",
    "brain job list {--database-url=postgresql://evil.example/db,}",
    "brain job list --all{,}",
    "brain job update J sub_{1..3} --status completed",
    "brain job update J sub_2 --status completed --result {a,b}",
    # globs, with a file named like an option in the working directory
    "brain job update J sub_2 --agent-id x --status completed --result forged [-]-force",
    "brain job update J sub_2 --agent-id x --status completed --result forged --forc?",
    "brain job update J sub_2 --agent-id x --status completed --result forged --for*",
    "brain job update J sub_2 --agent-id x --status completed --result forged --force*",
    "brain job list --db=*",
    "brain job list *",
    "brain job get [a]",
    # tilde
    "brain job get ~",
    "brain job get ~root",
    "brain job update J sub_2 --status completed --result a~b",
    # parameters, command and arithmetic substitution, ANSI-C and locale quoting
    'brain job update abc123 sub_1 --status completed --result "$(cat /etc/passwd)"',
    "brain job update abc123 sub_1 --status completed --result $HOME",
    "brain job update abc123 sub_1 --status completed --result ${HOME}",
    'brain job update abc123 sub_1 --status completed --result "$HOME"',
    "brain job update abc123 sub_1 --status completed --result `id`",
    'brain job update abc123 sub_1 --status completed --result "a`id`b"',
    "brain job update abc123 sub_1 --status completed --result $((1+1))",
    "brain job list $'--all'",
    "brain job update J sub_1 --status completed $'--force'",
    'brain job update J sub_1 --status completed $"--force"',
    'brain job update abc123 sub_1 --status completed --result "hi!"',
    "brain job update abc123 sub_1 --status completed --result !!",
    # backslashes other than \' outside quotes, and any inside double quotes
    "brain job update abc123 sub_1 --status completed --result a\\;b",
    "brain job update J sub_1 --status completed \\--force",
    "brain job update J sub_1 --status completed -\\-force",
    'brain job update abc123 sub_1 --status completed --result "a\\"b"',
    "brain job update abc123 sub_1 --status completed --result 'a'\\",
    "\\brain job list",
    # operators, redirections, comments, grouping
    "brain job update abc123 sub_1 --status completed --result ok; rm -rf ~",
    "brain job list && curl example.com",
    "brain job list || true",
    "brain job list | tee out",
    "brain job list & sleep 1",
    "brain job list > /tmp/x",
    "brain job list < /etc/passwd",
    "brain job list >> log",
    "brain job list 2>&1",
    "brain job list <<< x",
    "brain job list <(id)",
    "(brain job list)",
    "{ brain job list; }",
    "brain job list # comment",
    "brain job update J sub_1 --status completed --result a#b",
    # control characters anywhere, even quoted
    "brain job list\nrm -rf /",
    "brain job list\rrm",
    "brain job list\x00--force",
    "brain job update J sub_1 --status completed --result 'a\nb'",
    "brain job update J sub_1 --status completed --result 'a\tb'",
    "brain job update J sub_1 --status completed --result 'a\x1b[2Jb'",
    "brain job update J sub_1 --status completed --result 'a\x7fb'",
    "brain job update J sub_1 --status completed --result 'a\u2028b'",
    "brain job update J sub_1 --status completed --result 'a\u202eb'",
    "brain job update J sub_1 --status completed --result 'a\ud800b'",
    "brain\u00a0job list",
    "brain job list\x0b",
    # unterminated quotes
    'brain job update abc123 sub_1 --status completed --result "unbalanced',
    "brain job update abc123 sub_1 --status completed --result 'unbalanced",
    "brain job update abc123 sub_1 --status completed --result 'a'\\''",
    # read differently by zsh
    "brain job update J sub_1 --status completed --result 'a''b'",
    "brain job get =brain",
    "brain job create --ttl 60 --prompt x --subtasks-from==ls",
    "brain job create --ttl 60 --prompt x --subtasks-from=a==b",
    "brain job get a'b'=brain",
    # options: ownership, other stores, abbreviations, --, help, unknown, misplaced values
    "brain job update abc123 sub_1 --status completed --force",
    "brain job update abc123 sub_1 --status completed '--force'",
    "brain job update abc123 sub_1 --status completed --fo'rce'",
    "brain job update abc123 sub_1 --status completed \"--fo\"rce",
    "brain job update abc123 sub_1 --status completed --fo",
    "brain job update abc123 sub_1 --status completed --forc",
    "brain job update abc123 sub_1 --status completed --force=1",
    "brain job update abc123 sub_1 --status completed --db /etc/x.db",
    "brain job list --db=/tmp/other.db",
    "brain job list --database-url=postgresql://evil.example/db",
    "brain job list --database-url postgresql://evil.example/db",
    "brain --db /tmp/x.db job list",
    "brain job list --d /tmp/x",
    "brain job list --",
    "brain job get -- --force",
    "brain job list -h",
    "brain job list --help",
    "brain job list --json=1",
    "brain job list --al",
    "brain job update abc123 sub_1 --status completed --result --force",
    "brain job update abc123 sub_1 --status completed --result -x",
    "brain job update abc123 sub_1 --status completed --result",
    "brain job update abc123 sub_1 --status completed --agent-id -",
    "brain job update abc123 sub_1 --status completed --json",
    "brain job update abc123 sub_1 --status completed --result ok extra",
    "brain job update abc123 --status completed",
    "brain job get",
    "brain job get a b",
    "brain job list extra",
    "brain job wait abc123 --timeout",
    "brain job wait abc123 --time 5",
    "brain job wait abc123 --poll 1",
    # create and dispatch beyond the approved forms
    "brain job create --ttl 60 --prompt x --subtasks-from -",
    "brain job create --ttl 60 --prompt x --subtasks-from=-",
    "brain job create --ttl 60 --prompt x --subtasks-from /etc/passwd",
    "brain job create --ttl 60 --prompt x --subtasks-from=/etc/passwd",
    "brain job create --ttl 60 --prompt x --subtasks-from ../secrets.txt",
    "brain job create --ttl 60 --prompt x --subtasks-from a/../../b",
    "brain job create --ttl 60 --prompt x --subtasks-from ''",
    "brain job create --ttl 60 --prompt x --subtasks-from '~/x'",
    "brain job create --ttl 60 --prompt x --glob '/etc/*' --query x",
    "brain job create --ttl 60 --prompt x --glob '../**' --query x",
    "brain job create --ttl 60 --prompt x --glob 'src/../../*' --query x",
    "brain job create --ttl 60 --prompt x --glob '~/x' --query x",
    "brain job create --ttl 60 --prompt x --db /tmp/x.db",
    "brain job create --ttl 60 --prompt x -qq",
    "brain job dispatch abc123 --executor shell --allow-shell",
    "brain job dispatch abc123 --executor claude",
    "brain job dispatch abc123 --executor=anthropic",
    "brain job dispatch abc123 --executor http --base-url http://127.0.0.1:1",
    "brain job dispatch abc123 --executor host --pool",
    "brain job dispatch abc123 --executor host --concurrency 4",
    "brain job dispatch abc123 --executor host --allow-shell",
    "brain job dispatch abc123 --executor host --base-url http://127.0.0.1:1",
    "brain job dispatch abc123 --executor host --executor shell",
    "brain job dispatch abc123 --executor host --db /tmp/x.db",
    "brain job dispatch",
    # other subcommands and programs
    "brain job delete abc123",
    "brain job cancel abc123",
    "brain job retry abc123",
    "brain job cleanup",
    "brain job watch abc123",
    "brain job status abc123 --set completed",
    "brain job history abc123",
    "brain job stats",
    "brain worker --executor shell --allow-shell",
    "brain job",
    "brain",
    "BRAIN_DB=/tmp/x brain job list",
    "BRAIN_EXECUTOR=shell brain job dispatch abc123",
    "env brain job list",
    "command brain job list",
    "exec brain job list",
    "time brain job list",
    "/usr/local/bin/brain job list",
    f"{OWN}x job list",
    "./brain job list",
    "scripts/brain job list",
    "bin/brain job list",
    "brainx job list",
    "brain jobs list",
    "brain job list' '",
    "git status",
    "",
    "   ",
]
# Forms from issue 12 and what bash makes of them, given a file named --force here.
REWRITTEN = {
    "brain job update J sub_2 --agent-id x --status completed --result forged {--force,}": "--force",
    "brain job update J sub_2 --agent-id x --status completed --result forged [-]-force": "--force",
    "brain job list {--db=/tmp/elsewhere/x.db,}": "--db=/tmp/elsewhere/x.db",
    "brain job list {--database-url=postgresql://evil.example/db,}": "--database-url=postgresql://evil.example/db",
}


@pytest.fixture
def data(tmp_path, monkeypatch):
    """The plugin data dir of a ready plugin; no setting that changes the hook's answers."""
    d = tmp_path / "plugin-data"
    d.mkdir()
    (d / "python").write_text(sys.executable + "\n")
    monkeypatch.setenv("CLAUDE_PLUGIN_DATA", str(d))
    monkeypatch.setenv("CLAUDE_PLUGIN_ROOT", str(ROOT))
    for name in ("BRAIN_AUTO_APPROVE", "BRAIN_EXECUTOR", "BRAIN_CONFIG", "BRAIN_HOOK_DEBUG"):
        monkeypatch.delenv(name, raising=False)
    return d


def payload(command, **fields):
    """A worker's recorded PreToolUse payload carrying ``command``."""
    text = (PAYLOADS / "pre_tool_use_worker_report.json").read_text()
    for key, value in {"JOB": "abc123", "IDENTITY_1": "a1", "HOST_AGENT_1": "h1", "TMP": "/tmp"}.items():
        text = text.replace(f"@{key}@", value)
    body = json.loads(text)
    body["tool_input"]["command"] = command
    body.update(fields)
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False)  # as the host sends it


def orchestrator(command, **fields):
    """The same payload from the main agent, which has no ``agent_id`` or ``agent_type``."""
    body = json.loads(payload(command, **fields))
    del body["agent_id"], body["agent_type"]
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False)


def host_hook(raw, env=None, timeout=60):
    """Run the PreToolUse hook as the host does: its hooks.json command through ``sh -c``."""
    proc = subprocess.run(["sh", "-c", HOST_COMMAND], input=raw.encode("utf-8", "surrogatepass"),
                          capture_output=True, timeout=timeout,
                          env=dict(os.environ, **(env or {})))
    assert proc.returncode == 0 and proc.stderr == b"", proc.stderr
    return json.loads(proc.stdout) if proc.stdout.strip() else None


def allowed(subcommand):
    return {"hookSpecificOutput": {"hookEventName": "PreToolUse", "permissionDecision": "allow",
                                   "permissionDecisionReason": ALLOW_REASON.format(subcommand)}}


@pytest.fixture
def bash_argv(tmp_path):
    """``bash -c COMMAND`` with a stub ``brain`` on PATH; returns the argv the stub was given.

    The working directory holds files named like options, so that a glob
    that bash expands shows up in the argv."""
    stub_dir, cwd, out = tmp_path / "stub", tmp_path / "cwd", tmp_path / "argv.json"
    stub_dir.mkdir()
    cwd.mkdir()
    for name in ("--force", "--forced", "--db=x", "-x"):
        (cwd / name).write_text("")
    stub = stub_dir / "brain"
    stub.write_text(f"#!{sys.executable}\nimport json, os, sys\n"
                    "json.dump(sys.argv[1:], open(os.environ['ARGV_OUT'], 'w'))\n")
    stub.chmod(0o755)
    env = dict(os.environ, PATH=f"{stub_dir}{os.pathsep}{os.environ['PATH']}", ARGV_OUT=str(out))

    def run(command):
        if out.exists():
            out.unlink()
        proc = subprocess.run(["bash", "-c", command], cwd=cwd, env=env, capture_output=True, timeout=60)
        assert proc.returncode == 0, proc.stderr
        return ["brain", *json.loads(out.read_text())]

    return run


# -- the table ---------------------------------------------------------------------------------

@pytest.mark.parametrize("command", APPROVED)
def test_approved_commands_are_allowed_by_the_host_entry(data, command):
    subcommand = pre_tool_use.shell_words(command)[2]
    raw = payload(command) if subcommand in pre_tool_use.WORKER_COMMANDS else orchestrator(command)
    assert host_hook(raw) == allowed(subcommand)


@pytest.mark.parametrize("command", APPROVED + PREFILTERED)
def test_the_hooks_argv_is_exactly_what_bash_passes(bash_argv, command):
    words = pre_tool_use.shell_words(command)
    assert words is not None and words[0] == "brain"
    assert bash_argv(command) == words


def test_the_result_with_shell_characters_reaches_brain_verbatim(bash_argv):
    command = f"{REPORT} '{RESULT}'"
    assert pre_tool_use.is_approved(command)
    assert bash_argv(command)[-2:] == ["--result", RESULT]


def test_the_plugins_own_bin_brain_is_approved_by_absolute_path(data):
    command = f"{OWN} job update abc123 sub_1 --agent-id a1 --status completed --result ok"
    assert pre_tool_use.shell_words(command)[0] == OWN
    assert host_hook(payload(command)) == allowed("update")
    assert pre_tool_use.is_approved(f"'{OWN}' job list --json")  # quoted: the prefilter passes it over


@pytest.mark.parametrize("command", REFUSED)
def test_refused_commands_get_no_answer(data, command):
    assert pre_tool_use.is_approved(command) is False  # the Python hook itself, not only the prefilter
    assert host_hook(payload(command)) is None


@pytest.mark.parametrize("command", PREFILTERED)
def test_the_prefilter_only_ever_passes_over(data, command):
    assert pre_tool_use.is_approved(command) is True
    assert host_hook(payload(command)) is None


@pytest.mark.parametrize("command, injected", REWRITTEN.items())
def test_bash_really_rewrites_the_issue_forms(bash_argv, command, injected):
    """The reproduced forms are real: bash adds an option the text does not show."""
    words = bash_argv(command)
    assert injected in words and injected not in command.split()
    assert command in REFUSED


def test_refused_forms_keep_refusing_under_any_quoting():
    """Quoting an option does not hide it: the argv is judged, not the text."""
    for option in ("--force", "--db=/tmp/x.db", "--database-url=postgresql://x/y", "--fo", "--"):
        for spelled in (option, f"'{option}'", f'"{option}"', f"{option[:2]}'{option[2:]}'"):
            command = f"brain job update J sub_1 --status completed {spelled}"
            assert pre_tool_use.shell_words(command)[-1] == option
            assert pre_tool_use.is_approved(command) is False, command


def test_non_string_commands_are_refused(data):
    assert pre_tool_use.is_approved(None) is False and pre_tool_use.is_approved(["brain"]) is False
    # The prefilter sees the first "command"; JSON's last one wins.
    raw = '{"tool_name":"Bash","tool_input":{"command":"brain job list","command":["brain","job","list"]}}'
    assert host_hook(raw) is None


# -- long input ----------------------------------------------------------------------------------

def test_the_length_bound_is_exact():
    head = "brain job update J sub_1 --status completed --result '"
    fits = head + "x" * (pre_tool_use.MAX_COMMAND - len(head) - 1) + "'"
    assert len(fits) == pre_tool_use.MAX_COMMAND and pre_tool_use.is_approved(fits)
    too_long = head + "x" * (pre_tool_use.MAX_COMMAND - len(head)) + "'"
    assert pre_tool_use.shell_words(too_long) is None


@pytest.mark.parametrize("size", [10**6, 10**7])
def test_huge_commands_get_no_answer_and_no_long_work(data, size):
    """Once ran past the hook's 10 s timeout (1 MB) or for minutes (10 MB).
    The timeout here only fails the test when the hook hangs."""
    command = "brain job update J sub_1 --status completed --result '" + "x" * size + "'"
    raw = payload(command)
    assert host_hook(raw, timeout=60) is None
    direct = subprocess.run([str(HOOKS / "run"), "pre_tool_use"], input=raw.encode(), capture_output=True,
                            timeout=60)
    assert direct.returncode == 0 and direct.stdout == b"" and direct.stderr == b""


# -- settings that change the answer ---------------------------------------------------------------

@pytest.mark.parametrize("value", ["0", "false", "no", "off", "OFF"])
def test_auto_approval_can_be_turned_off_in_the_environment(data, value):
    report = payload(f"{REPORT} 'ok'")
    assert host_hook(report, env={"BRAIN_AUTO_APPROVE": value}) is None
    assert host_hook(report, env={"BRAIN_AUTO_APPROVE": "1"}) == allowed("update")


def test_auto_approval_can_be_turned_off_with_a_file_in_the_data_dir(data):
    report = payload(f"{REPORT} 'ok'")
    assert host_hook(report) == allowed("update")
    (data / "no-auto-approve").write_text("")
    assert host_hook(report) is None


def test_subtasks_from_is_approved_only_for_a_regular_file_inside_the_working_directory(data, tmp_path):
    """``create --subtasks-from`` stores the file's lines, which ``subtasks`` then shows: a relative
    name that leads out (a symlink to a secret), blocks (a FIFO) or streams (a device) is not approved."""
    project, outside = tmp_path / "project", tmp_path / "elsewhere"
    (project / "lists").mkdir(parents=True)
    outside.mkdir()
    (outside / "id_rsa").write_text("SECRET\n")
    (project / "subtasks.txt").write_text("GET /a\n")
    (project / "lists" / "a.b.txt").write_text("GET /b\n")
    os.symlink("subtasks.txt", project / "inside.txt")
    os.symlink(outside / "id_rsa", project / "urls.txt")
    os.symlink("../elsewhere/id_rsa", project / "relative.txt")
    os.symlink(outside, project / "away")
    os.symlink("/dev/stdin", project / "stdin.txt")
    os.symlink("/dev/zero", project / "zero.txt")
    os.symlink("missing.txt", project / "dangling.txt")
    os.mkfifo(project / "fifo.txt")
    create = "brain job create --quiet --ttl 60 --prompt x --subtasks-from"
    for name in ("subtasks.txt", "=lists/a.b.txt", "inside.txt", "./subtasks.txt"):
        command = f"{create}{name}" if name.startswith("=") else f"{create} {name}"
        assert host_hook(orchestrator(command, cwd=str(project))) == allowed("create"), name
    for name in ("urls.txt", "relative.txt", "away/id_rsa", "stdin.txt", "zero.txt", "fifo.txt", "dangling.txt",
                 "missing.txt", "lists", "."):
        assert host_hook(orchestrator(f"{create} {name}", cwd=str(project))) is None, name
    # Without a working directory to look in, nothing that names a file is approved.
    assert host_hook(orchestrator(f"{create} subtasks.txt", cwd=None)) is None
    assert pre_tool_use.is_approved(f"{create} subtasks.txt") is False
    assert pre_tool_use.is_approved(f"{create} subtasks.txt", str(project)) is True


def test_the_worker_agent_gets_only_its_report_and_the_reads_approved(data):
    """A dispatch run by a worker would hand it the credentials of sub-tasks not yet dispatched or
    queued for a pool, so it could report for them; the orchestrator's own commands stay approved."""
    for command in ("brain job dispatch abc123 --json", "brain job dispatch abc123 --executor host",
                    "brain job create --ttl 60 --prompt x --subtask y"):
        assert host_hook(payload(command)) is None, command
        assert host_hook(payload(command, agent_type="general-purpose")) == allowed(command.split()[2])
        assert host_hook(orchestrator(command)) == allowed(command.split()[2])
    for command in (f"{REPORT} 'ok'", "brain job subtasks abc123", "brain job list --all", "brain job wait abc123",
                    "brain job get abc123 --json", "brain job consolidate abc123"):
        assert host_hook(payload(command)) == allowed(command.split()[2]), command


def test_dispatch_without_executor_is_approved_only_when_nothing_picks_another(data, monkeypatch, tmp_path):
    plain = orchestrator("brain job dispatch abc123 --json")
    explicit = orchestrator("brain job dispatch abc123 --executor host")
    assert host_hook(plain) == allowed("dispatch")
    for env in ({"BRAIN_EXECUTOR": "claude"}, {"BRAIN_EXECUTOR": ""}, {"BRAIN_CONFIG": str(tmp_path / "c.yaml")}):
        assert host_hook(plain, env=env) is None, env
        assert host_hook(explicit, env=env) == allowed("dispatch"), env
    assert host_hook(plain, env={"BRAIN_EXECUTOR": "host"}) == allowed("dispatch")
    config = Path(os.environ["HOME"]) / ".brain" / "config.yaml"
    config.parent.mkdir(parents=True, exist_ok=True)
    config.write_text("executor: shell\n")
    assert host_hook(plain) is None
    assert host_hook(explicit) == allowed("dispatch")


# -- the prefilter: unrelated commands start no Python ---------------------------------------------

def test_unrelated_commands_are_passed_over_before_any_python_starts(data, tmp_path):
    marker = tmp_path / "python-started"
    spy = tmp_path / "spy-python"
    spy.write_text(f"#!/bin/sh\necho started >> '{marker}'\nexec '{sys.executable}' \"$@\"\n")
    spy.chmod(0o755)
    (data / "python").write_text(f"{spy}\n")
    # Inside a worker, everything around the command names the plugin.
    for command in ("git status", "ls brain/", "echo brain job list", "cat ~/brain-jobs/README.md"):
        raw = payload(command, agent_type="brain-jobs:subtask-worker", cwd="/home/u/brain-jobs")
        assert host_hook(raw) is None
    for raw in ("", "not json", "[1, 2]", "{}"):
        assert host_hook(raw) is None
    assert not marker.exists()
    assert host_hook(payload("brain job list")) == allowed("list")
    assert marker.read_text() == "started\n"


def test_a_payload_that_looks_like_ours_but_is_broken_is_logged_not_answered(data):
    assert host_hook('{"tool_name": "Bash", "tool_input": {"command": "brain job list"') is None
    assert "pre_tool_use: " in (data / "hooks.log").read_text()


# -- the recorded payloads -------------------------------------------------------------------------

def recorded(name, **subs):
    text = (PAYLOADS / name).read_text()
    for key, value in subs.items():
        text = text.replace(f"@{key}@", value)
    return text


def test_a_recorded_worker_report_is_allowed(data):
    raw = recorded("pre_tool_use_worker_report.json", JOB="abc123", IDENTITY_1="agent_haiku_3f9a1c",
                   HOST_AGENT_1="a120c7a5c1eadaf3e", TMP="/tmp")
    assert host_hook(raw) == allowed("update")
    assert host_hook(json.dumps(json.loads(raw), separators=(",", ":"))) == allowed("update")


def test_the_recorded_orchestrator_create_is_allowed(data):
    assert host_hook(recorded("pre_tool_use_main_create.json", TMP="/tmp")) == allowed("create")


def test_a_recorded_report_with_anything_appended_gets_no_answer(data):
    body = json.loads(recorded("pre_tool_use_worker_report.json", JOB="abc123", IDENTITY_1="a1", HOST_AGENT_1="h1",
                               TMP="/tmp"))
    for tail in ("; echo pwned", " --force", " {--force,}", " && id", "\nid"):
        changed = json.loads(json.dumps(body))
        changed["tool_input"]["command"] += tail
        assert host_hook(json.dumps(changed)) is None, tail


def test_other_tools_get_no_answer(data):
    body = json.loads(payload("brain job list"))
    body["tool_name"] = "Read"
    assert host_hook(json.dumps(body)) is None


# -- the worker's instructions ---------------------------------------------------------------------

def test_the_worker_definition_spells_approved_reports(data, bash_argv):
    """Following agents/subtask-worker.md (the answer in single quotes, a quote
    inside as '\\'') gives a report the hook approves and bash passes verbatim."""
    worker = (ROOT / "agents" / "subtask-worker.md").read_text()
    template, example = re.findall(r"`(brain job update [^`]*)`", worker)[:2]
    assert pre_tool_use.is_approved(example) and host_hook(payload(example)) == allowed("update")
    answer = f"it's {RESULT} & \"done\" `id` (ok) <b> {{a,b}} [c] *? ~ ! # \\"
    command = (template.replace("<job>", "abc123").replace("<sub_N>", "sub_1").replace("<agent id>", "a1")
               .replace("<answer>", answer.replace("'", "'\\''")))
    assert host_hook(payload(command)) == allowed("update")
    assert bash_argv(command)[-2:] == ["--result", answer] == pre_tool_use.shell_words(command)[-2:]


def test_every_approved_option_is_one_the_cli_defines():
    """The hook's option lists are checked against the one definition of the command line (argparse)."""
    from brain_jobs import cli

    parser = cli.build_parser()
    job = next(a for a in parser._actions if a.dest == "area").choices["job"]
    commands = next(a for a in job._actions if a.dest == "command").choices
    for name, (_, valued, flags) in pre_tool_use.COMMANDS.items():
        assert name in commands, name
        defined = {opt: action.nargs != 0 for action in commands[name]._actions for opt in action.option_strings}
        for opt in valued:
            assert defined.get(opt) is True, f"{name} {opt}: the hook approves a value the CLI does not take"
        for opt in flags:
            assert defined.get(opt) is False, f"{name} {opt}: the hook approves a flag the CLI does not define"

"""PreToolUse(Bash): approve the plugin's own commands, in a form the shell cannot rewrite.

Background workers must never stall on a permission prompt when they
report, and the orchestrator should not be asked for its own bookkeeping,
so a few ``brain job`` commands are approved. The command text is hostile
input, and bash rewrites what it is given (braces, globs, tildes,
variables...), so the hook never judges the text: it reads the command
with a grammar in which nothing can expand, computes the exact argv bash
will pass, and checks that argv. Anything outside the grammar or the table
below gets no answer, which leaves it to the host's normal permission flow.

The grammar (see :func:`shell_words`): words separated by spaces or tabs,
each a concatenation of

* bare characters from ``A-Z a-z 0-9 _ . / : @ % + = , -``,
* single-quoted text ``'...'`` (bash expands nothing inside),
* double-quoted text ``"..."`` without ``$`` backtick ``\\`` ``!`` ``"``,
* the escaped quote ``\\'``.

Nothing else outside quotes (no ``; & | < > ( ) { } [ ] * ? ~ $ # !``...),
no control character anywhere, no unterminated quote.

It also approves the launch (``Agent``) of the plugin's worker with a
prompt that dispatch issued for a sub-task running now, its credential
verified against the store (``jobs.dispatched_launch``). Without that, in
auto mode (the default mode of Claude Code 2.1.332) each launch waits for the
host's safety check, and behind a gateway that does not pass the check
through, for the user ("Auto mode can't check actions in this session").
The worker's own tool calls still go through the normal permission flow.

Turn approval off with ``BRAIN_AUTO_APPROVE=0`` in the host's environment
or a file named ``no-auto-approve`` in the plugin data directory.
"""

import os
import re
import stat

from hooklib import PLUGIN_ROOT, data_dir, debug, run
from brain_jobs.prompts import WORKER_AGENT
from brain_jobs.vocabulary import HOST  # after hooklib, which puts the plugin root on sys.path

OWN_BIN = os.path.join(PLUGIN_ROOT, "bin", "brain")
MAX_COMMAND = 8192  # characters; longer commands are not read at all (a create with many --subtask fits)
OFF_FILE = "no-auto-approve"
LAUNCH_TOOLS = ("Agent", "Task")  # the sub-agent tool, and its older name

# One piece of a word; alternatives start with different characters, so a
# match never backtracks and a scan is linear. Tabs separate words only
# (every other control character is refused before the scan).
_PIECE = re.compile(r"""
      (?P<bare>[A-Za-z0-9_./:@%+=,-]+)
    | '(?P<single>[^'\t]*)'
    | "(?P<double>[^"$`\\!\t]*)"
    | (?P<escaped>\\')
    | (?P<space>[ \t]+)
""", re.VERBOSE)

# subcommand: (positional arguments, options taking a value, flags).
# Left out on purpose: --db/--database-url (another store), --force
# (ownership override), --pool/--allow-shell/--base-url/--concurrency and
# any executor but host (processes), --help.
COMMANDS = {
    "update": (2, {"--status", "--result", "--agent-id"}, set()),
    "subtasks": (1, set(), {"--json"}),
    "consolidate": (1, set(), {"--json"}),
    "get": (1, set(), {"--json"}),
    "list": (0, set(), {"--json", "--all"}),
    "wait": (1, {"--timeout"}, {"--json"}),
    "create": (0, {"--ttl", "--prompt", "--subtask", "--file", "--skills", "--data", "--subtasks-from", "--glob",
                   "--query"}, {"--distributed", "--json", "-q", "--quiet"}),
    "dispatch": (1, {"--model", "--file", "--timeout", "--executor"}, {"--json"}),
}


# What the plugin's own worker agent gets approved: its report and the reads. Its definition
# starts nothing, and a dispatch would hand it other workers' credentials (a job created and
# not yet dispatched, or queued for a pool).
WORKER_COMMANDS = {"update", "subtasks", "consolidate", "get", "list", "wait"}


def _relative_path(value: str, cwd=None) -> bool:
    """A path or pattern under the working directory: not absolute, no ``~``, no ``..``, not stdin."""
    return value not in ("", "-") and value[0] not in "/~" and ".." not in value.split("/")


def _file_inside(value: str, cwd) -> bool:
    """A relative path (``_relative_path``) that names, now, a regular file inside ``cwd``.

    ``create --subtasks-from`` stores the file's lines, which every read
    then shows: a symlink out of the working directory (``~/.ssh/id_rsa``),
    a FIFO (it would block) or a device (``/dev/stdin``, ``/dev/zero``) is
    left to the person. A file swapped in between this look and the
    command is not caught: that needs something already running here.
    """
    if not (_relative_path(value) and isinstance(cwd, str) and os.path.isabs(cwd)):
        return False
    root = os.path.realpath(cwd)
    real = os.path.realpath(os.path.join(root, value))
    if os.path.commonpath([root, real]) != root:
        return False
    try:
        return stat.S_ISREG(os.stat(real).st_mode)
    except (OSError, ValueError):
        return False


# (subcommand, option): what its value must satisfy, given the command's working directory.
VALUE_CHECKS = {
    ("dispatch", "--executor"): lambda value, cwd: value == HOST,
    ("create", "--subtasks-from"): _file_inside,
    ("create", "--glob"): _relative_path,
}


def shell_words(command):
    """The argv bash would pass for ``command``, or None when it is outside the grammar.

    None also for anything longer than MAX_COMMAND, for control characters
    (newline, CR, NUL...) anywhere, and for what zsh reads differently: two
    single-quoted pieces side by side, bare text starting with ``=`` or
    holding ``==``.
    """
    if not isinstance(command, str) or len(command) > MAX_COMMAND:
        return None
    if not command.replace("\t", " ").isprintable():
        return None
    words, pieces, previous, pos = [], [], None, 0
    while pos < len(command):
        match = _PIECE.match(command, pos)
        if match is None:
            return None
        kind, pos = match.lastgroup, match.end()
        if kind == "space":
            if previous is not None:
                words.append("".join(pieces))
            pieces, previous = [], None
            continue
        if kind == "single" and previous == "single":
            return None  # zsh's RC_QUOTES reads '' inside single quotes as a quote
        text = "'" if kind == "escaped" else match.group(kind)
        if kind == "bare" and (text.startswith("=") or "==" in text):
            return None  # zsh expands =name to a path, also after a = with MAGIC_EQUAL_SUBST
        pieces.append(text)
        previous = kind
    if previous is not None:
        words.append("".join(pieces))
    return words


def _default_executor_is_host() -> bool:
    """True when a dispatch without --executor can only run on the host (no setting picks another)."""
    if os.environ.get("BRAIN_EXECUTOR", HOST) != HOST or os.environ.get("BRAIN_CONFIG"):
        return False
    return not os.path.exists(os.path.join(os.path.expanduser("~"), ".brain", "config.yaml"))


def approved_subcommand(argv, cwd=None):
    """The subcommand when ``argv`` is one of the approved ``brain job`` commands, else None.

    Every word starting with ``-`` must be an allowed option by its exact
    name (``--opt`` or ``--opt=value``; no abbreviation, no ``--``); an
    option's separate value must not start with ``-``; the positional count
    must be the subcommand's. ``cwd`` is the directory the command runs in
    (the payload's ``cwd``), for the values that name files.
    """
    if len(argv) < 3 or argv[0] not in ("brain", OWN_BIN) or argv[1] != "job" or argv[2] not in COMMANDS:
        return None
    subcommand = argv[2]
    positionals, valued, flags = COMMANDS[subcommand]
    rest, seen, count = iter(argv[3:]), set(), 0
    for word in rest:
        if not word.startswith("-"):
            count += 1
            continue
        name, equals, value = word.partition("=")
        if name in flags and not equals:
            continue
        if name not in valued:
            return None
        if not equals:
            value = next(rest, "-")  # a missing value is refused like one starting with "-"
            if value.startswith("-"):
                return None
        check = VALUE_CHECKS.get((subcommand, name))
        if check is not None and not check(value, cwd):
            return None
        seen.add(name)
    if count != positionals:
        return None
    if subcommand == "dispatch" and "--executor" not in seen and not _default_executor_is_host():
        return None
    return subcommand


def is_approved(command, cwd=None) -> bool:
    """True when ``command``, run in ``cwd``, is exactly one approved brain job command and nothing more."""
    words = shell_words(command)
    return words is not None and approved_subcommand(words, cwd) is not None


def turned_off() -> bool:
    """True when the user turned auto-approval off (environment or a file in the data dir)."""
    if os.environ.get("BRAIN_AUTO_APPROVE", "").strip().lower() in ("0", "false", "no", "off"):
        return True
    return os.path.exists(os.path.join(data_dir(), OFF_FILE))


def approved_launch(tool_input):
    """``(job_id, sub_task_id)`` when ``tool_input`` launches the plugin's worker agent with
    a prompt that dispatch issued for a sub-task running now, else None."""
    from brain_jobs import jobs, prompts

    if not isinstance(tool_input, dict) or tool_input.get("subagent_type") != prompts.WORKER_AGENT:
        return None
    return jobs.dispatched_launch(tool_input.get("prompt"))


def _allow(what: str) -> dict:
    return {
        "hookSpecificOutput": {
            "hookEventName": "PreToolUse",
            "permissionDecision": "allow",
            "permissionDecisionReason": f"brain-jobs: {what} (BRAIN_AUTO_APPROVE=0 turns this off)",
        }
    }


def handle(payload: dict):
    tool = payload.get("tool_name")
    if tool not in ("Bash", *LAUNCH_TOOLS) or turned_off():
        return None
    tool_input = payload.get("tool_input") or {}
    if tool in LAUNCH_TOOLS:
        launched = approved_launch(tool_input)
        # Never the prompt itself: it carries the worker's credential.
        debug(f"pre_tool_use: {'allow' if launched else 'pass'} launch {'/'.join(launched or ())} "
              f"type={str(tool_input.get('subagent_type'))[:100]!r}")
        return _allow("a worker launch that brain job dispatch issued") if launched else None
    command = tool_input.get("command")
    words = shell_words(command)
    subcommand = approved_subcommand(words, payload.get("cwd")) if words is not None else None
    if payload.get("agent_type") == WORKER_AGENT and subcommand not in WORKER_COMMANDS:
        subcommand = None
    shown = command[:1000] if isinstance(command, str) else command
    debug(f"pre_tool_use: {'allow' if subcommand else 'pass'} {shown!r} agent={payload.get('agent_id')}")
    if subcommand is None:
        return None
    return _allow(f"brain job {subcommand}")


if __name__ == "__main__":
    run("pre_tool_use", handle)

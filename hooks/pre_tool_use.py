"""PreToolUse(Bash): approve the plugin's own reporting and reading commands.

Background workers must never stall on a permission prompt when they
report, so ``brain job update|subtasks|consolidate|get|list ...`` is
approved -- but only in a form that cannot smuggle anything else in: no
shell metacharacters at all, the program is ``brain`` (or this plugin's own
``bin/brain`` by absolute path), and every option is one that subcommand
reads (so no ``--db`` to write elsewhere and no ``--force`` to override
ownership; argparse prefixes such as ``--fo`` are refused too). Anything
else gets no answer, which leaves it to the host's normal permission flow.
"""

import os
import shlex

from hooklib import PLUGIN_ROOT, debug, run

# Characters that let a shell do more than run one command with arguments.
FORBIDDEN = set(";&|$`<>()\\\n\r")
# The options each approved subcommand may carry.
OPTIONS = {
    "update": {"--status", "--result", "--agent-id"},
    "subtasks": {"--json"},
    "consolidate": {"--json"},
    "get": {"--json"},
    "list": {"--json", "--all"},
}
OWN_BIN = os.path.join(PLUGIN_ROOT, "bin", "brain")


def is_approved(command) -> bool:
    """True when ``command`` is exactly a brain job report/read and nothing more."""
    if not isinstance(command, str):
        return False
    if any(c in FORBIDDEN or (ord(c) < 32 and c != "\t") or ord(c) == 127 for c in command):
        return False
    try:
        tokens = shlex.split(command)
    except ValueError:  # unbalanced quotes
        return False
    if len(tokens) < 3 or tokens[0] not in ("brain", OWN_BIN) or tokens[1] != "job":
        return False
    allowed = OPTIONS.get(tokens[2])
    if allowed is None:
        return False
    for token in tokens[3:]:
        if token.startswith("-") and token.split("=", 1)[0] not in allowed:
            return False
    return True


def handle(payload: dict):
    if payload.get("tool_name") != "Bash":
        return None
    command = (payload.get("tool_input") or {}).get("command")
    approved = is_approved(command)
    debug(f"pre_tool_use: {'allow' if approved else 'pass'} {command!r} agent={payload.get('agent_id')}")
    if not approved:
        return None
    return {
        "hookSpecificOutput": {
            "hookEventName": "PreToolUse",
            "permissionDecision": "allow",
            "permissionDecisionReason": "brain-jobs: a job report or read",
        }
    }


if __name__ == "__main__":
    run("pre_tool_use", handle)

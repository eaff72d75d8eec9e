"""Stop: remind the agent, once, to read the results of a job it dispatched.

It also writes the ``~/.brain/bin/brain`` launcher when it is missing
(``ensure_launcher``), for a plugin installed inside the session.

When a job dispatched in this session has every sub-task finished but its
consolidated result has not been read since (no ``brain job consolidate``),
the hook answers once with a reminder that names the command. A stop that
is already the continuation of a stop hook (``stop_hook_active``) is never
reminded, and each job is reminded at most once per session, so this cannot
loop.

The reminder is ``hookSpecificOutput.additionalContext``, not
``{"decision": "block"}``: the host continues the turn with it either way,
but shows a block to the user as a problem ("Stop hook reported a problem",
"Stop hook error") and tells the model "Stop hook blocking error", while
additional context reads "Stop hook says: ..." (2.1.332; "Stop hook
feedback: ..." in 2.1.197) and reaches the model as "Stop hook additional
context: ...".
"""

import json
import os
import re
import sys

from hooklib import data_dir, debug, log, private_dirs, run, write_private

_SAFE = re.compile(r"[^A-Za-z0-9_.-]")


def _reminded_path(session_id: str) -> str:
    return os.path.join(data_dir(), "sessions", _SAFE.sub("_", session_id)[:100] + ".stop.json")


def _load(path) -> list:
    try:
        with open(path, encoding="utf-8") as fh:
            value = json.load(fh)
        return value if isinstance(value, list) else []
    except (OSError, ValueError):
        return []


def unread_jobs(session_id: str) -> list:
    """Jobs dispatched in ``session_id`` that are finished but whose result was not read."""
    from brain_jobs import jobs, state

    found = []
    for row in jobs.list_jobs(include_finished=True):
        if not state.unread(row):
            continue
        if any(ev.get("event") == "dispatch" and ev.get("session_id") == session_id for ev in row["history"]):
            found.append(row)
    return found


def ensure_launcher() -> None:
    """Write ``~/.brain/bin/brain`` when it is missing (SessionStart keeps it current).

    A plugin installed inside a session (``/plugin install``) is active at
    once, but its SessionStart runs only in the next session: without this,
    a person at a terminal would not find ``brain`` after that first session.
    """
    from brain_jobs import paths

    home = paths.brain_home()
    if os.path.exists(os.path.join(home, "bin", "brain")):
        return
    from session_start import keep_launcher  # only now: it costs an import on every turn

    keep_launcher(home, sys.executable)


def handle(payload: dict):
    try:
        ensure_launcher()
    except OSError as exc:  # a convenience: the reminder does not depend on it
        log(f"stop: cannot write the brain launcher: {exc}")
    session_id = payload.get("session_id")
    if payload.get("stop_hook_active") or not session_id:
        return None
    path = _reminded_path(session_id)
    reminded = _load(path)
    pending = [row for row in unread_jobs(session_id) if row["job_id"] not in reminded]
    if not pending:
        return None
    private_dirs(os.path.dirname(path))
    write_private(path, json.dumps(reminded + [row["job_id"] for row in pending]))
    from brain_jobs.render import printable  # the reminder reaches the agent's prompt

    ids = printable(" ".join(row["job_id"] for row in pending))
    commands = printable("; ".join(f"brain job consolidate {row['job_id']} --json" for row in pending))
    debug(f"stop: blocking once for {ids}")
    reminder = (f"brain-jobs: every sub-task of job{'s' if len(pending) > 1 else ''} {ids} has finished "
                "but the results were not read. "
                f"Run {commands} and answer from it.")
    return {"hookSpecificOutput": {"hookEventName": "Stop", "additionalContext": reminder}}


if __name__ == "__main__":
    run("stop", handle)

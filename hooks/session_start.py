"""SessionStart: one database for everyone, prepared packages, and a summary of active jobs.

* Exports ``BRAIN_DB`` (and ``BRAIN_PYTHON``) through ``$CLAUDE_ENV_FILE``
  so the agent's and the workers' Bash commands -- which do not get
  ``CLAUDE_PLUGIN_DATA`` -- use the same store as the hooks:
  ``${CLAUDE_PLUGIN_DATA}/jobs.db`` unless the user set ``BRAIN_DB``.
* Starts the background preparation of optional packages when needed.
* Opens the store, sweeps expired jobs, and injects one line per active job.
"""

import os
import shlex

import environment
from hooklib import data_dir, debug, run

MAX_LINES = 20


def export(names: dict) -> None:
    """Append ``export NAME=value`` lines to the host's per-session env file."""
    path = os.environ.get("CLAUDE_ENV_FILE")
    if not path:
        debug("session_start: no CLAUDE_ENV_FILE; Bash commands will not see BRAIN_DB")
        return
    with open(path, "a", encoding="utf-8") as fh:
        for name, value in names.items():
            fh.write(f"export {name}={shlex.quote(value)}\n")


def handle(payload: dict):
    data = data_dir()
    os.makedirs(data, mode=0o700, exist_ok=True)
    python, notice = environment.ensure(data)

    from scripts.memory import jobs, paths, render

    names = {"BRAIN_PYTHON": python}
    if not os.environ.get("BRAIN_DATABASE_URL"):
        names["BRAIN_DB"] = paths.default_db_path()
    export(names)
    jobs.cleanup_jobs()
    active = jobs.list_jobs()
    answer = {}
    if active:
        lines = [f"- {render.job_brief(row)}" for row in active[:MAX_LINES]]
        if len(active) > MAX_LINES:
            lines.append(f"- ... and {len(active) - MAX_LINES} more (brain job list)")
        context = (f"brain-jobs: {len(active)} active job(s); `brain job subtasks ID` shows progress, "
                   "`brain job consolidate ID` the results.\n" + "\n".join(lines))
        answer["hookSpecificOutput"] = {"hookEventName": "SessionStart", "additionalContext": context}
    if notice:
        answer["systemMessage"] = notice
    return answer or None


if __name__ == "__main__":
    run("session_start", handle)

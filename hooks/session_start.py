"""SessionStart: one database for everyone, prepared packages, and a summary of active jobs.

* Exports ``BRAIN_DB`` (and ``BRAIN_PYTHON``) through ``$CLAUDE_ENV_FILE``
  so the agent's and the workers' Bash commands use the same store as the
  hooks and as the person at a terminal: ``~/.brain/jobs.db`` unless the
  user set ``BRAIN_DB`` or ``BRAIN_DATABASE_URL`` (see ``paths``).
* Makes the plugin's data directory 0700 (the host creates it 0755).
* Keeps ``~/.brain/bin/brain``, a launcher of this plugin's ``bin/brain``, so
  a person can put ``~/.brain/bin`` on PATH without knowing where the host
  installed the plugin.
* Starts the background preparation of optional packages when needed.
* Opens the store, sweeps expired jobs, and injects one line per active job.
"""

import os
import shlex
import stat

import environment
from hooklib import PLUGIN_ROOT, data_dir, debug, log, private_dirs, run, write_private

MAX_LINES = 20
LAUNCHER_MARK = "# brain-jobs launcher"


def export(names: dict) -> None:
    """Append ``export NAME=value`` lines to the host's per-session env file."""
    path = os.environ.get("CLAUDE_ENV_FILE")
    if not path:
        debug("session_start: no CLAUDE_ENV_FILE; Bash commands will not see BRAIN_DB")
        return
    with open(path, "a", encoding="utf-8") as fh:
        for name, value in names.items():
            fh.write(f"export {name}={shlex.quote(value)}\n")


def make_private(directory: str) -> None:
    """Create ``directory`` 0700, or make it 0700 if someone else (the host) made it wider."""
    private_dirs(directory)
    mode = stat.S_IMODE(os.stat(directory).st_mode)
    if mode != 0o700:
        os.chmod(directory, 0o700)


def keep_launcher(home: str, python: str) -> None:
    """Write ``<home>/bin/brain``, which runs this plugin's ``bin/brain`` with ``python``,
    unless it already does; never replace a file that is not our launcher."""
    path = os.path.join(home, "bin", "brain")
    text = (f"#!/bin/sh\n{LAUNCHER_MARK}, kept by its SessionStart hook: the brain command of the plugin\n"
            "# your last Claude Code session ran. Use it with: export PATH=\"$HOME/.brain/bin:$PATH\"\n"
            f"[ -n \"$BRAIN_PYTHON\" ] || BRAIN_PYTHON={shlex.quote(python)}\nexport BRAIN_PYTHON\n"
            f"exec {shlex.quote(os.path.join(PLUGIN_ROOT, 'bin', 'brain'))} \"$@\"\n")
    try:
        with open(path, encoding="utf-8") as fh:
            current = fh.read()
    except FileNotFoundError:
        current = None
    if current == text:
        return
    if current is not None and LAUNCHER_MARK not in current:
        log(f"session_start: {path} is not brain-jobs' launcher; left as it is")
        return
    private_dirs(os.path.dirname(path))
    write_private(path, text, mode=0o700)


def handle(payload: dict):
    data = data_dir()
    try:
        make_private(data)
    except OSError as exc:  # not ours to change: say so in the log, and carry on
        log(f"session_start: cannot make {data} private: {exc}")
    python, notice = environment.ensure(data)

    from brain_jobs import jobs, paths, render

    names = {"BRAIN_PYTHON": python}
    if not (os.environ.get("BRAIN_DB") or os.environ.get("BRAIN_DATABASE_URL")):
        names["BRAIN_DB"] = paths.default_db_path()  # the same store as at a terminal
    export(names)
    try:
        keep_launcher(paths.brain_home(), python)
    except OSError as exc:  # a convenience: the session works without it
        log(f"session_start: cannot write the brain launcher: {exc}")
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

"""Which Python runs brain, and preparing its optional packages.

The job queue needs only the standard library; the extras in
``requirements.txt`` (YAML, the Anthropic SDK, PostgreSQL) are prepared
once, in the background, into ``<data dir>/venv`` when the interpreter that
runs the hooks lacks them. Nothing blocks a session: until the venv is
ready everything runs on the plain interpreter.

State lives in ``<data dir>/environment.json``; ``<data dir>/python`` holds
the interpreter path that ``hooks/run`` and ``bin/brain`` start, so a ready
start costs no pyenv shim and no package probing.

Knobs: ``BRAIN_REQUIREMENTS_FILE`` (another list; an empty file disables
preparation), ``BRAIN_PIP_ARGS`` (extra pip arguments, e.g. a mirror).
"""

import hashlib
import importlib.util
import json
import os
import sys
import time

from hooklib import private_dirs, private_file, write_private

HERE = os.path.dirname(os.path.abspath(__file__))
RETRY_AFTER = 3600  # seconds before a failed preparation is tried again
STALE_AFTER = 1800  # seconds after which a "preparing" state is presumed dead
# The interpreter a venv is built from: never the plugin's own venv, which a rebuild replaces.
BASE_PYTHON = getattr(sys, "_base_executable", None) or sys.executable


def requirements_file() -> str:
    return os.environ.get("BRAIN_REQUIREMENTS_FILE") or os.path.join(HERE, "requirements.txt")


def requirements(path=None) -> list:
    """``[(import_name, pip_requirement), ...]`` from the requirements file."""
    pairs = []
    with open(path or requirements_file(), encoding="utf-8") as fh:
        for line in fh:
            line = line.split("#", 1)[0].strip()
            if line:
                module, _, requirement = line.partition(" ")
                pairs.append((module, requirement.strip() or module))
    return pairs


def requirements_key(reqs) -> str:
    """A short digest of the requirement list: the prepared virtualenv is reused while it is unchanged."""
    return hashlib.sha256(repr(reqs).encode()).hexdigest()[:16]


def state_path(data: str) -> str:
    return os.path.join(data, "environment.json")


def read_state(data: str) -> dict:
    try:
        with open(state_path(data), encoding="utf-8") as fh:
            value = json.load(fh)
        return value if isinstance(value, dict) else {}
    except (OSError, ValueError):
        return {}


def write_state(data: str, **state) -> dict:
    """Replace the state atomically; keep ``<data>/python`` in step with it."""
    private_dirs(data)
    state.setdefault("at", time.time())
    write_private(state_path(data), json.dumps(state))
    if state.get("python"):
        write_private(os.path.join(data, "python"), state["python"] + "\n")
    return state


def missing(reqs) -> list:
    return [(m, r) for m, r in reqs if importlib.util.find_spec(m) is None]


def _alive(pid) -> bool:
    try:
        os.kill(int(pid), 0)
        return True
    except (OSError, TypeError, ValueError):
        return False


def ensure(data: str):
    """Return ``(python, notice)``: the interpreter to run brain with, and a
    message for the user or None. Fast when ready: one small file read."""
    state = read_state(data)
    if state.get("status") == "ready" and os.access(state.get("python") or "", os.X_OK):
        if state.get("key") == requirements_key(requirements()):
            return state["python"], None
    reqs = requirements()
    key = requirements_key(reqs)
    lacking = missing(reqs)
    if not lacking:
        write_state(data, status="ready", python=sys.executable, key=key)
        return sys.executable, None
    me = BASE_PYTHON
    age = time.time() - state.get("at", 0)
    if state.get("key") == key:
        if state.get("status") == "preparing" and _alive(state.get("pid")) and age < STALE_AFTER:
            return me, None
        if state.get("status") == "failed" and age < RETRY_AFTER:
            if state.get("notified"):
                return me, None
            write_state(data, **dict(state, notified=True))
            return me, state.get("message")
    import subprocess  # only here: a ready start should not pay for it

    log = os.fdopen(private_file(os.path.join(data, "prepare.log")), "ab")
    try:
        proc = subprocess.Popen([BASE_PYTHON, os.path.join(HERE, "prepare_env.py"), data], stdin=subprocess.DEVNULL,
                                stdout=log, stderr=subprocess.STDOUT, start_new_session=True, close_fds=True)
    finally:
        log.close()
    write_state(data, status="preparing", python=me, key=key, pid=proc.pid)
    names = ", ".join(r for _, r in lacking)
    return me, (f"brain-jobs: preparing optional Python packages ({names}) in the background under "
                f"{os.path.join(data, 'venv')}; the job queue works meanwhile.")

"""Build ``<data dir>/venv`` with the optional packages (run detached by SessionStart).

Usage: prepare_env.py DATA_DIR. Exits 0 on success and 1 on failure; the
outcome, with a message that says what to do, is written to
``<data dir>/environment.json`` for the next SessionStart to show. That
message is two lines, what failed and the command that fixes it; the whole
output of venv and pip goes to ``<data dir>/prepare.log``.
"""

import fcntl
import os
import shlex
import shutil
import subprocess
import sys

import environment
from hooklib import private_dirs, private_file

VENV_TIMEOUT = 300
PIP_TIMEOUT = 900
REASON_LIMIT = 120  # characters of a tool's output quoted in the message


def _reason(text) -> str:
    """The line of a tool's output that says why it failed (pip's last ``ERROR:`` line, else
    the last line), cut short: pip's retry warnings can fill a screen."""
    lines = [line.strip() for line in (text or "").strip().splitlines() if line.strip()]
    errors = [line[len("ERROR:"):].strip() for line in lines if line.startswith("ERROR:")]
    reason = errors[-1] if errors else (lines[-1] if lines else "no output")
    return reason if len(reason) <= REASON_LIMIT else reason[:REASON_LIMIT - 1] + "…"


def prepare(data: str) -> bool:
    reqs = environment.requirements()
    key = environment.requirements_key(reqs)
    venv = os.path.join(data, "venv")
    python = os.path.join(venv, "bin", "python")
    names = " ".join(shlex.quote(r) for _, r in reqs)
    manual = (f"To install them yourself: python3 -m pip install --user {names} "
              f"(details: {os.path.join(data, 'prepare.log')})")

    def fail(why: str) -> bool:
        shutil.rmtree(venv, ignore_errors=True)
        environment.write_state(data, status="failed", python=environment.BASE_PYTHON, key=key,
                                message=f"brain-jobs: could not prepare optional Python packages ({why}); "
                                        f"the job queue works without them.\n{manual}")
        return False

    shutil.rmtree(venv, ignore_errors=True)
    try:
        made = subprocess.run([environment.BASE_PYTHON, "-m", "venv", venv], capture_output=True, text=True,
                              timeout=VENV_TIMEOUT)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return fail(f"python3 -m venv did not run: {_reason(str(exc))}")
    if made.returncode != 0:
        print(made.stdout, made.stderr, sep="\n", flush=True)
        return fail(f"python3 -m venv failed: {_reason(made.stderr or made.stdout)}; on Debian or Ubuntu "
                    "install the python3-venv package")
    cmd = [python, "-m", "pip", "install", "--disable-pip-version-check", "--quiet",
           *[r for _, r in reqs], *shlex.split(os.environ.get("BRAIN_PIP_ARGS", ""))]
    print("running:", " ".join(shlex.quote(c) for c in cmd), flush=True)
    try:
        pip = subprocess.run(cmd, capture_output=True, text=True, timeout=PIP_TIMEOUT)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return fail(f"pip did not finish: {_reason(str(exc))}")
    print(pip.stdout, pip.stderr, sep="\n", flush=True)
    if pip.returncode != 0:
        return fail(f"pip install failed: {_reason(pip.stderr or pip.stdout)}")
    check = subprocess.run([python, "-c", "import " + ", ".join(m for m, _ in reqs)],
                           capture_output=True, text=True, timeout=120)
    if check.returncode != 0:
        print(check.stderr, flush=True)
        return fail(f"the packages installed but do not import: {_reason(check.stderr)}")
    environment.write_state(data, status="ready", python=python, key=key)
    return True


def main() -> int:
    data = sys.argv[1]
    private_dirs(data)
    with os.fdopen(private_file(os.path.join(data, "prepare.lock"), os.O_WRONLY | os.O_CREAT), "w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            print("another preparation is running", flush=True)
            return 0
        return 0 if prepare(data) else 1


if __name__ == "__main__":
    sys.exit(main())

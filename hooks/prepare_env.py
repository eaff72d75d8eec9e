"""Build ``<data dir>/venv`` with the optional packages (run detached by SessionStart).

Usage: prepare_env.py DATA_DIR. Exits 0 on success and 1 on failure; the
outcome, with a message that says what to do, is written to
``<data dir>/environment.json`` for the next SessionStart to show.
"""

import fcntl
import os
import shlex
import shutil
import subprocess
import sys

import environment

VENV_TIMEOUT = 300
PIP_TIMEOUT = 900


def _tail(text, lines=3) -> str:
    return " | ".join(line.strip() for line in (text or "").strip().splitlines()[-lines:])


def prepare(data: str) -> bool:
    reqs = environment.requirements()
    key = environment._key(reqs)
    venv = os.path.join(data, "venv")
    python = os.path.join(venv, "bin", "python")
    names = " ".join(shlex.quote(r) for _, r in reqs)
    manual = (f"The job queue itself works. To get the extras, run `python3 -m pip install --user {names}` "
              f"(or fix the cause and start a new session); details in {os.path.join(data, 'prepare.log')}.")

    def fail(why: str) -> bool:
        shutil.rmtree(venv, ignore_errors=True)
        environment.write_state(data, status="failed", python=environment.BASE_PYTHON, key=key,
                                message=f"brain-jobs: could not prepare optional Python packages: {why}. {manual}")
        return False

    shutil.rmtree(venv, ignore_errors=True)
    try:
        made = subprocess.run([environment.BASE_PYTHON, "-m", "venv", venv], capture_output=True, text=True,
                              timeout=VENV_TIMEOUT)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return fail(f"`{environment.BASE_PYTHON} -m venv` did not run ({exc})")
    if made.returncode != 0:
        return fail(f"`python3 -m venv` failed ({_tail(made.stderr or made.stdout)}); on Debian or Ubuntu "
                    "install the python3-venv package")
    cmd = [python, "-m", "pip", "install", "--disable-pip-version-check", "--quiet",
           *[r for _, r in reqs], *shlex.split(os.environ.get("BRAIN_PIP_ARGS", ""))]
    print("running:", " ".join(shlex.quote(c) for c in cmd), flush=True)
    try:
        pip = subprocess.run(cmd, capture_output=True, text=True, timeout=PIP_TIMEOUT)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return fail(f"pip did not finish ({exc})")
    print(pip.stdout, pip.stderr, sep="\n", flush=True)
    if pip.returncode != 0:
        return fail(f"pip install failed ({_tail(pip.stderr or pip.stdout)})")
    check = subprocess.run([python, "-c", "import " + ", ".join(m for m, _ in reqs)],
                           capture_output=True, text=True, timeout=120)
    if check.returncode != 0:
        return fail(f"the packages installed but do not import ({_tail(check.stderr)})")
    environment.write_state(data, status="ready", python=python, key=key)
    return True


def main() -> int:
    data = sys.argv[1]
    os.makedirs(data, mode=0o700, exist_ok=True)
    with open(os.path.join(data, "prepare.lock"), "w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            print("another preparation is running", flush=True)
            return 0
        return 0 if prepare(data) else 1


if __name__ == "__main__":
    sys.exit(main())

"""The pinned Claude Code CLI, installed from npm once into a persistent cache.

The cache is ``$BRAIN_TEST_CACHE`` or ``<repo>/.cache/claude-code`` (git
ignores ``.cache/``); a second run finds the binary and installs nothing.
Where node or npm is missing the tests that need the CLI skip with the
reason, except under ``CI=true`` where they fail.
"""

import fcntl
import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
VERSION = "2.1.332"
PACKAGE = f"@anthropic-ai/claude-code@{VERSION}"
INSTALL_TIMEOUT = 600


def cache_dir() -> Path:
    return Path(os.environ.get("BRAIN_TEST_CACHE") or ROOT / ".cache" / "claude-code")


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def unavailable(reason: str):
    """Skip on a developer machine (saying why); fail in CI, where the host test must run."""
    if in_ci():
        pytest.fail(f"the real Claude Code host test must run in CI: {reason}")
    print(f"SKIP real Claude Code host test: {reason}")
    pytest.skip(reason)


def _version(binary: Path):
    try:
        out = subprocess.run([str(binary), "--version"], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.split()[0] if out.returncode == 0 and out.stdout.strip() else None


def claude_binary() -> Path:
    """Path of the pinned ``claude``; installs it on first use (cross-process locked)."""
    cache = cache_dir()
    binary = cache / "node_modules" / ".bin" / "claude"
    if _version(binary) == VERSION:
        return binary
    for tool in ("node", "npm"):
        if shutil.which(tool) is None:
            unavailable(f"{tool} is not installed (needed to install {PACKAGE})")
    cache.mkdir(parents=True, exist_ok=True)
    with open(cache / ".install.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if _version(binary) == VERSION:  # another process installed it meanwhile
            return binary
        started = time.monotonic()
        proc = subprocess.run(
            ["npm", "install", "--prefix", str(cache), "--no-audit", "--no-fund", "--no-save",
             "--loglevel=error", PACKAGE],
            capture_output=True, text=True, timeout=INSTALL_TIMEOUT)
        if proc.returncode != 0:
            unavailable(f"npm install {PACKAGE} failed: {proc.stderr.strip()[-500:]}")
        print(f"installed {PACKAGE} into {cache} in {time.monotonic() - started:.1f}s")
    found = _version(binary)
    if found != VERSION:
        unavailable(f"{binary} reports version {found!r}, expected {VERSION}")
    return binary


@pytest.fixture(scope="session")
def claude():
    return claude_binary()


def netns_available() -> bool:
    """Whether ``unshare -n`` works here (root or user namespaces), to run the CLI with loopback only."""
    try:
        return subprocess.run(["unshare", "-n", "--", "ip", "link", "set", "lo", "up"],
                              capture_output=True, timeout=30).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def isolated_command(cmd: list) -> "tuple[list, bool]":
    """``cmd`` in a network namespace of its own (loopback only; the scenario brings ``lo`` up
    when given ``--netns``) where ``unshare -n`` works, and whether it does; else ``cmd``."""
    if not netns_available():
        print("note: unshare -n is not available here; the run is isolated by environment only")
        return cmd, False
    return ["unshare", "-n", "--", *cmd, "--netns"], True


def claude_outputs(out: Path) -> dict:
    """What a scenario kept of its ``claude`` run in ``out``: exit code, stdout, stderr."""
    return {name: (out / f"claude.{name}").read_text() for name in ("rc", "stdout", "stderr")}


def api_requests(out: Path) -> list:
    """Every request the fake Messages API received in a scenario run (``requests.jsonl``)."""
    return [json.loads(line) for line in (out / "requests.jsonl").read_text().splitlines()]


def isolated_env(home: Path, tmp: Path, **extra) -> dict:
    """A clean environment for the CLI: its own HOME, config and temp dirs, no telemetry or updates.

    Nothing of the test process (``BRAIN_DB`` above all) leaks in; ``extra``
    adds variables. With these set the CLI connects only to its base URL.
    """
    return {
        "PATH": os.environ["PATH"], "HOME": str(home), "LANG": "C.UTF-8",
        "CLAUDE_CONFIG_DIR": str(home / ".claude"), "CLAUDE_CODE_TMPDIR": str(tmp), "TMPDIR": str(tmp),
        "ANTHROPIC_API_KEY": "dummy", "DISABLE_AUTOUPDATER": "1", "DISABLE_TELEMETRY": "1",
        "DISABLE_ERROR_REPORTING": "1", "DISABLE_BUG_COMMAND": "1",
        "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1", **extra,
    }

"""Shared fixtures: every test gets its own HOME and its own store.

No test touches the real home directory: ``HOME``, ``BRAIN_DB`` and the
host's variables are pointed into a temp dir for the test and for every
subprocess it starts.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from scripts.memory import clock, jobs  # noqa: E402

BRAIN = ROOT / "scripts" / "brain"
_HOST_VARS = ("BRAIN_DB", "BRAIN_DATABASE_URL", "BRAIN_CONFIG", "BRAIN_NOW", "CLAUDE_PLUGIN_DATA",
              "CLAUDE_PLUGIN_ROOT", "CLAUDE_CODE_SESSION_ID", "CLAUDE_ENV_FILE", "NO_COLOR",
              "LC_ALL", "LC_MESSAGES", "LANGUAGE", "BRAIN_DEBUG")


def pytest_configure(config):
    config.addinivalue_line("markers", "sqlite_only: the test is about the SQLite file itself; it runs once")


@pytest.fixture(autouse=True)
def brain_home(tmp_path, monkeypatch):
    """An isolated HOME and a fresh SQLite store for each test; yields the store path."""
    home = tmp_path / "home"
    home.mkdir()
    for name in _HOST_VARS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("LANG", "C.UTF-8")
    db = tmp_path / "store" / "jobs.db"
    monkeypatch.setenv("BRAIN_DB", str(db))
    yield db
    jobs.close_stores()
    clock.set_clock(None)


@pytest.fixture
def db(brain_home):
    """The store of this test, as the ``db`` argument of the API takes it."""
    return str(brain_home)


class Clock:
    """An injectable clock: tests move time without sleeping."""

    def __init__(self, start=1_900_000_000.0):
        self.t = start

    def __call__(self):
        return self.t

    def advance(self, seconds):
        self.t += seconds


@pytest.fixture
def fake_clock(monkeypatch):
    """Freeze time for the API and, through BRAIN_NOW, for CLI subprocesses."""
    c = Clock()
    clock.set_clock(c)

    class _Env:
        def advance(self, seconds):
            c.advance(seconds)
            monkeypatch.setenv("BRAIN_NOW", repr(c.t))

        def __call__(self):
            return c.t

    env = _Env()
    monkeypatch.setenv("BRAIN_NOW", repr(c.t))
    return env


def run_brain(*args, input=None, env=None, timeout=60):
    """Run the CLI as a subprocess; returns CompletedProcess with text output."""
    full_env = dict(os.environ)
    if env:
        full_env.update(env)
    return subprocess.run(
        [sys.executable, str(BRAIN), *map(str, args)],
        input=input, capture_output=True, text=True, env=full_env, timeout=timeout,
    )


@pytest.fixture
def brain():
    """``brain(*args)`` runs the CLI; ``brain.json(*args)`` also parses stdout and checks exit 0."""

    class _Brain:
        def __call__(self, *args, **kw):
            return run_brain(*args, **kw)

        def json(self, *args, **kw):
            proc = run_brain(*args, "--json", **kw)
            assert proc.returncode == 0, proc.stderr
            return json.loads(proc.stdout)

        def ok(self, *args, **kw):
            proc = run_brain(*args, **kw)
            assert proc.returncode == 0, proc.stderr
            return proc.stdout

    return _Brain()


def store_snapshot(target=None):
    """Every job row, through the storage contract, for 'nothing changed' assertions."""
    from scripts.memory.paths import default_target
    from scripts.memory.store import open_store

    store = open_store(str(target) if target else default_target())
    try:
        return store.read_all()
    finally:
        store.close()

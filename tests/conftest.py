"""Shared fixtures: every test gets its own HOME and its own store.

No test touches the real home directory: ``HOME``, ``BRAIN_DB`` and the
host's variables are pointed into a temp dir for the test and for every
subprocess it starts.

One suite, every backend: each test runs once on SQLite and once on
PostgreSQL (``test_x[sqlite]``, ``test_x[postgres]``), the latter in a
fresh schema of its own that is dropped afterwards. Tests about the SQLite
file itself are marked ``sqlite_only`` and run once. Without a reachable
server the postgres run skips, saying why; with ``CI=true`` it fails.
``BRAIN_TEST_DATABASE_URL`` names the server (default
``postgresql://postgres@127.0.0.1:5432/test``); ``BRAIN_TEST_BACKENDS=sqlite``
limits a local run to one backend. A test opts into other backends with
``@pytest.mark.backends(...)``: the unit tests run on ``memory`` (the
in-process store, ``memory://``) alone, the storage contract on all three.

Three tiers, each runnable alone (``./run-tests -m unit``): ``TIERS`` below
says which file is which (see docs/testing.md).
"""

import json
import os
import secrets
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from brain_jobs import clock, jobs  # noqa: E402

BRAIN = ROOT / "scripts" / "brain"
_HOST_VARS = ("BRAIN_DB", "BRAIN_DATABASE_URL", "BRAIN_CONFIG", "BRAIN_NOW", "CLAUDE_PLUGIN_DATA",
              "CLAUDE_PLUGIN_ROOT", "CLAUDE_CODE_SESSION_ID", "CLAUDE_ENV_FILE", "NO_COLOR",
              "LC_ALL", "LC_MESSAGES", "LANGUAGE", "BRAIN_DEBUG")


PG_URL = os.environ.get("BRAIN_TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test")
BACKENDS = ("sqlite", "postgres")

# Each test file's tier. unit: the rules and the API on the in-memory store, no subprocess,
# seconds in all. integration: the API, the stores, executors, runners and workers on the real
# backends. acceptance: the command line as a subprocess, the plugin's hooks, the real host.
TIERS = {
    "unit": (
        "test_unit_api.py", "test_unit_pool.py", "test_unit_memory_store.py", "test_unit_tiers.py",
        "test_cli_fast_path.py", "test_no_stopwatches.py", "test_seams.py", "test_unit_engine.py",
        "test_record.py",
    ),
    "integration": (
        "test_store_contract.py", "test_store.py", "test_postgres.py", "test_layout.py", "test_codec.py",
        "test_concurrency.py", "test_load.py", "test_crash_safety.py", "test_deadlines.py", "test_ttl.py",
        "test_retry_ownership.py", "test_hostile_lifecycle.py", "test_config.py", "test_executors.py",
        "test_executors_anthropic.py", "test_confinement.py", "test_runner.py", "test_runner_support.py",
        "test_worker.py", "fakes/test_fake_anthropic.py", "test_data_roundtrip.py", "test_usage.py",
        "test_retries.py", "test_process_bounds.py",
    ),
    "acceptance": (
        "test_cli.py", "test_hostile.py", "test_create_inputs.py", "test_watch.py", "test_wait.py",
        "test_hooks.py", "test_plugin_manifest.py", "test_seed_flow.py", "test_demo.py",
        "test_approval.py", "test_files.py", "test_full_disk.py", "test_limits.py", "test_session_store.py",
        "host/test_claude_code_e2e.py", "host/test_marketplace_install.py", "host/test_fanout_e2e.py",
        "host/test_interactive_tmux.py", "test_text_safety.py", "test_packaging.py",
    ),
}
UNLISTED_TIER = "integration"  # until TIERS names the file (test_unit_tiers.py fails meanwhile)
_TIER_OF = {name: tier for tier, names in TIERS.items() for name in names}


def pytest_configure(config):
    config.addinivalue_line("markers", "sqlite_only: the test is about the SQLite file itself; it runs once")
    config.addinivalue_line("markers", "postgres_only: the test is about the PostgreSQL backend itself")
    config.addinivalue_line("markers", "backends(*names): the backends the test runs on, among memory, sqlite and "
                                       "postgres (default: sqlite and postgres)")
    config.addinivalue_line("markers", "unit: the rules and the API on the in-memory store (tests/conftest.py TIERS)")
    config.addinivalue_line("markers", "integration: the API and the processes on the real backends (TIERS)")
    config.addinivalue_line("markers", "acceptance: the CLI as a subprocess, the plugin hooks, the real host (TIERS)")


def tier_of(path) -> str:
    """The tier of a test file (a path), as ``TIERS`` names it relative to ``tests/``."""
    try:
        relative = Path(path).resolve().relative_to(ROOT / "tests").as_posix()
    except ValueError:  # a test outside tests/
        return UNLISTED_TIER
    return _TIER_OF.get(relative, UNLISTED_TIER)


@pytest.hookimpl(tryfirst=True)  # before ``-m`` selects on the markers
def pytest_collection_modifyitems(config, items):
    """Mark every test with its file's tier."""
    for item in items:
        item.add_marker(tier_of(item.path))


def pytest_generate_tests(metafunc):
    """Run every test that has a store (all of them: ``brain_home`` is autouse) on each backend."""
    if "backend" not in metafunc.fixturenames:
        return
    wanted = os.environ.get("BRAIN_TEST_BACKENDS", "sqlite,postgres").split(",")
    names = [b for b in BACKENDS if b in wanted] or ["sqlite"]
    chosen = metafunc.definition.get_closest_marker("backends")
    if chosen:
        # The in-process store needs nothing and is always there; the real ones follow BRAIN_TEST_BACKENDS.
        names = [b for b in chosen.args if b == "memory" or b in wanted] or list(chosen.args[:1])
    elif metafunc.definition.get_closest_marker("sqlite_only"):
        names = ["sqlite"]
    elif metafunc.definition.get_closest_marker("postgres_only"):
        names = ["postgres"]
    metafunc.parametrize("backend", names, indirect=True)


def pytest_report_header(config):
    reason = _postgres_unreachable()
    return f"backends: sqlite, postgres ({PG_URL})" if reason is None else f"backends: sqlite (postgres skipped: {reason})"


_pg_state = {}


def _postgres_unreachable():
    """None when the test server answers, else why not (checked once per session)."""
    if "reason" not in _pg_state:
        try:
            import psycopg

            with psycopg.connect(PG_URL, connect_timeout=3, autocommit=True) as conn:
                conn.execute("SELECT 1")
            _pg_state["reason"] = None
        except ImportError:
            _pg_state["reason"] = "psycopg is not installed (pip install -e '.[postgres,dev]')"
        except Exception as exc:  # any failure to reach the server is the reason to skip
            _pg_state["reason"] = f"cannot reach {PG_URL}: {str(exc).strip().splitlines()[0]}"
    return _pg_state["reason"]


def _pg_admin():
    """One session-wide connection that drops the tests' schemas."""
    conn = _pg_state.get("admin")
    if conn is None or conn.closed or conn.broken:
        import psycopg

        conn = _pg_state["admin"] = psycopg.connect(PG_URL, autocommit=True, options="-c lock_timeout=5000")
    return conn


def _drop_schema(schema):
    conn = _pg_admin()
    # Processes a test left behind (a killed worker's server session) must not block the drop.
    conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = %s "
                 "AND pid <> pg_backend_pid()", (f"brain-test-{schema}",))
    conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


@pytest.fixture
def backend(request):
    """``sqlite``, ``postgres`` or ``memory``: the store this run of the test uses."""
    name = getattr(request, "param", "sqlite")
    if name == "postgres":
        reason = _postgres_unreachable()
        if reason is not None:
            if os.environ.get("CI", "").lower() == "true":
                pytest.fail(f"PostgreSQL is required in CI and {reason}", pytrace=False)
            pytest.skip(f"PostgreSQL run skipped: {reason}")
    return name


def postgres_url(schema):
    """The URL of ``schema`` on the test server; its sessions are named after it."""
    sep = "&" if "?" in PG_URL else "?"
    return f"{PG_URL}{sep}schema={schema}&application_name=brain-test-{schema}"


@pytest.fixture(autouse=True)
def brain_home(tmp_path, monkeypatch, backend):
    """An isolated HOME and a fresh store for each test; yields the store: the SQLite path
    (a ``Path``), on the postgres run the URL of a fresh schema, on the memory run a fresh
    ``memory://`` name (its data goes when ``close_stores`` closes the last store on it)."""
    home = tmp_path / "home"
    home.mkdir()
    for name in _HOST_VARS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("LANG", "C.UTF-8")
    db = tmp_path / "store" / "jobs.db"
    monkeypatch.setenv("BRAIN_DB", str(db))
    schema = None
    if backend == "postgres":
        schema = f"brain_t_{secrets.token_hex(6)}"
        db = postgres_url(schema)
        monkeypatch.setenv("BRAIN_DATABASE_URL", db)
    elif backend == "memory":
        db = f"memory://test-{secrets.token_hex(6)}"
        monkeypatch.setenv("BRAIN_DATABASE_URL", db)
    yield db
    jobs.close_stores()
    clock.set_clock(None)
    if schema is not None:
        _drop_schema(schema)


@pytest.fixture
def db(brain_home):
    """The store of this test, as the ``db`` argument of the API takes it: a path or a URL."""
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


def run_brain(*args, input=None, env=None, timeout=60, cwd=None):
    """Run the CLI as a subprocess; returns CompletedProcess with text output."""
    full_env = dict(os.environ)
    if env:
        full_env.update(env)
    return subprocess.run(
        [sys.executable, str(BRAIN), *map(str, args)],
        input=input, capture_output=True, text=True, env=full_env, timeout=timeout, cwd=cwd,
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
    from brain_jobs.paths import default_target
    from brain_jobs.store import open_store

    store = open_store(str(target) if target else default_target())
    try:
        return store.read_all()
    finally:
        store.close()

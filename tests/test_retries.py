"""Overloaded and rate-limited answers are tried again, with backoff, within the sub-task's deadline.

The ``anthropic`` executor against the fake Messages API (the real SDK, HTTP
on loopback) and the ``claude`` executor against a stand-in ``claude`` that
answers as ``claude -p --output-format json`` does after the CLI's own
retries gave up (``api_error_status`` 529). The sub-tasks run in this
process (``runner.run_here``), so the first pause can be made short.
"""

import os
import stat
import sys

import pytest

from brain_jobs import config, jobs, runner
from brain_jobs.executors import base
from tests.fakes.fake_anthropic import FakeAnthropic, error, text

pytestmark = pytest.mark.sqlite_only  # about the executors: the store only receives the reports


@pytest.fixture(autouse=True)
def short_backoff(monkeypatch):
    monkeypatch.setattr(base, "RETRY_FIRST", 0.01)


@pytest.fixture
def api(monkeypatch):
    with FakeAnthropic() as server:
        monkeypatch.setenv("ANTHROPIC_BASE_URL", server.url)
        monkeypatch.setenv("ANTHROPIC_API_KEY", "test-key")
        yield server


def run(db, tmp_path, executor, timeout=None, **settings):
    job = jobs.create_job_with_subtasks(300, {"prompt": "p"}, ["users"], db=db)
    runner.run_here(job, executor, settings=config.resolve(settings), timeout=timeout, workdir=str(tmp_path), db=db)
    return jobs.get_job(job, db=db)["sub_tasks"][0]


# -- anthropic -------------------------------------------------------------------

def test_anthropic_overload_is_retried_until_an_answer(api, db, tmp_path):
    api.enqueue(error(529, msg="Overloaded", retry_after=None), error(429, retry_after=0),
                text("42 users", usage={"input_tokens": 30, "output_tokens": 4}))
    sub = run(db, tmp_path, "anthropic", api_retries=3)
    assert (sub["status"], sub["result"]) == ("completed", "42 users")
    assert [r.status for r in api.messages_requests()] == [529, 429, 200]
    assert sub["usage"] == {"input_tokens": 30, "output_tokens": 4}  # refusals cost nothing


def test_anthropic_gives_up_after_api_retries(api, db, tmp_path):
    api.responder = lambda req: error(529, msg="Overloaded", retry_after=None)
    sub = run(db, tmp_path, "anthropic", api_retries=3)
    assert (sub["status"], sub["result"]) == ("failed", "API error 529: Overloaded (4 tries)")
    assert len(api.messages_requests()) == 4


def test_anthropic_does_not_retry_past_the_deadline(api, db, tmp_path):
    """A 3-second deadline leaves no room for another try after the 2 seconds asked for."""
    api.responder = lambda req: error(529, msg="Overloaded", retry_after=2)
    sub = run(db, tmp_path, "anthropic", timeout=3, api_retries=5)
    assert (sub["status"], sub["result"]) == ("failed", "API error 529: Overloaded")
    assert len(api.messages_requests()) == 1


def test_anthropic_does_not_retry_a_bad_request(api, db, tmp_path):
    api.responder = lambda req: error(400, msg="bad model", retry_after=None)
    sub = run(db, tmp_path, "anthropic", api_retries=3)
    assert (sub["status"], sub["result"]) == ("failed", "API error 400: bad model")
    assert len(api.messages_requests()) == 1


# -- claude ----------------------------------------------------------------------

# Answers like `claude -p --output-format json`: refused (529 or STATUS) for the first
# REFUSALS runs, then an answer. Each run is counted in CLAUDE_COUNT.
STAND_IN = """#!{python}
import json, os, sys
count = os.environ["CLAUDE_COUNT"]
n = len(open(count).read()) + 1 if os.path.exists(count) else 1
open(count, "a").write("x")
usage = {{"input_tokens": 10 * n, "output_tokens": 1}}
if n <= int(os.environ["REFUSALS"]):
    status = int(os.environ.get("STATUS", "529"))
    print(json.dumps({{"type": "result", "is_error": True, "api_error_status": status, "total_cost_usd": 0,
                      "result": "API Error: Repeated 529 Overloaded errors.", "usage": usage}}))
    sys.exit(1)
print(json.dumps({{"type": "result", "is_error": False, "result": "42 users", "total_cost_usd": 0.5,
                  "usage": usage}}))
"""


@pytest.fixture
def claude(tmp_path, monkeypatch):
    bindir = tmp_path / "fakebin"
    bindir.mkdir()
    script = bindir / "claude"
    script.write_text(STAND_IN.format(python=sys.executable))
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ['PATH']}")
    count = tmp_path / "runs"
    monkeypatch.setenv("CLAUDE_COUNT", str(count))

    def runs():
        return len(count.read_text()) if count.exists() else 0

    return runs


def test_claude_overload_is_retried_until_an_answer(claude, db, tmp_path, monkeypatch):
    monkeypatch.setenv("REFUSALS", "2")
    sub = run(db, tmp_path, "claude", api_retries=3)
    assert (sub["status"], sub["result"]) == ("completed", "42 users")
    assert claude() == 3
    # Every run is paid for: the refused ones too.
    assert sub["usage"] == {"input_tokens": 60, "output_tokens": 3, "cost_usd": 0.5}


def test_claude_gives_up_after_api_retries(claude, db, tmp_path, monkeypatch):
    monkeypatch.setenv("REFUSALS", "99")
    sub = run(db, tmp_path, "claude", api_retries=2)
    assert sub["status"] == "failed"
    assert sub["result"] == "claude -p failed (3 tries): API error 529: API Error: Repeated 529 Overloaded errors."
    assert claude() == 3 and sub["usage"]["input_tokens"] == 60


def test_claude_does_not_retry_past_the_deadline(claude, db, tmp_path, monkeypatch):
    monkeypatch.setenv("REFUSALS", "99")
    monkeypatch.setattr(base, "RETRY_FIRST", 2.0)  # at least 1 s: no room left in a 3-second deadline
    sub = run(db, tmp_path, "claude", timeout=3, api_retries=5)
    assert sub["status"] == "failed" and "API error 529" in sub["result"]
    assert claude() == 1


def test_claude_does_not_retry_what_a_retry_cannot_fix(claude, db, tmp_path, monkeypatch):
    monkeypatch.setenv("REFUSALS", "99")
    monkeypatch.setenv("STATUS", "401")
    sub = run(db, tmp_path, "claude", api_retries=3)
    assert sub["status"] == "failed" and sub["result"].startswith("claude -p failed: API error 401: ")
    assert claude() == 1


def test_a_claude_too_old_for_the_options_says_so(tmp_path, db, monkeypatch):
    bindir = tmp_path / "oldbin"
    bindir.mkdir()
    script = bindir / "claude"
    script.write_text("#!/bin/sh\necho \"error: unknown option '--permission-prompts'\" >&2\nexit 1\n")
    script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ['PATH']}")
    sub = run(db, tmp_path, "claude", api_retries=3)
    assert sub["status"] == "failed"
    assert sub["result"].startswith("claude -p: error: unknown option '--permission-prompts': this Claude Code is too old")

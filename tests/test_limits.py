"""Limits refused before any work: 10,001 sub-tasks and more (issue 12, item 11).

argparse's time grows with the square of the number of repeated options (six seconds for
10,000 ``--subtask``), so the count is checked on the raw command line, before argparse is
even imported: a refusal costs what any bad input costs.
"""

import json
import subprocess
import sys

import pytest

from conftest import ROOT, store_snapshot
from brain_jobs import cli
from brain_jobs.validate import MAX_SUBTASKS

pytestmark = pytest.mark.sqlite_only

COUNT = """
import json, sys
from brain_jobs import cli
rc = cli.main(json.loads(sys.stdin.read()))
print(rc, "argparse" in sys.modules)
"""


def _create(subtasks):
    argv = ["job", "create", "--distributed", "--ttl", "60", "--prompt", "p", *subtasks]
    return subprocess.run([sys.executable, "-c", COUNT], input=json.dumps(argv), cwd=ROOT, capture_output=True,
                          text=True, timeout=120)


@pytest.mark.parametrize("spelling", ["--subtask q", "--subtask=q"])
def test_too_many_subtasks_are_refused_before_parsing(db, spelling):
    many = [part for _ in range(2 * MAX_SUBTASKS) for part in spelling.split(" ")]
    proc = _create(many)
    assert proc.stdout == "2 False\n", proc.stderr  # exit 2, and argparse never ran
    assert proc.stderr == f"brain: error: {2 * MAX_SUBTASKS} sub-tasks; the limit is {MAX_SUBTASKS}\n"
    assert store_snapshot(db) == []


def test_a_few_subtasks_still_go_through_argparse(db):
    # No abbreviation of --subtask is left: each is also one of --subtasks-from.
    proc = _create(["--subtask", "a", "--subtask=b", "--subtask", "c"])
    assert proc.stdout.splitlines()[-1] == "0 True", proc.stderr
    assert [s["query"] for s in store_snapshot(db)[0]["sub_tasks"]] == ["a", "b", "c"]


@pytest.mark.parametrize("option", ["--file f", "--skills s", "--json", "--data {}", "--subtasks-from x"])
def test_too_many_options_of_any_kind_are_refused_before_parsing(db, option):
    """20,000 ``--file`` once took half a minute of argparse before a refusal."""
    many = [part for _ in range(2 * MAX_SUBTASKS) for part in option.split(" ")]
    proc = _create(many)
    assert proc.stdout == "2 False\n", proc.stderr
    limit = MAX_SUBTASKS + cli.OTHER_OPTIONS
    assert proc.stderr.startswith(f"brain: error: {2 * MAX_SUBTASKS + 3} options; the limit is {limit} ")
    assert store_snapshot(db) == []


def test_every_subtask_and_the_other_options_still_fit(db):
    """The largest job the limit allows leaves room for the rest of the command line."""
    many = [f"--subtask=q{i}" for i in range(MAX_SUBTASKS)] + ["--file", "f"] * (cli.OTHER_OPTIONS - 3)
    proc = _create(many)
    assert proc.stdout.splitlines()[-1] == "0 True", proc.stderr[-300:]

"""The report fast path parses exactly as argparse does.

``cli._fast_args`` skips argparse for the plain forms of ``job update`` and
``job subtasks`` (~7 ms of every worker report). For every command line
below it either declines (argparse then handles it, errors included) or
returns the very namespace argparse returns.
"""

import itertools

import pytest

from brain_jobs import cli
from brain_jobs.errors import InvalidInput

pytestmark = pytest.mark.sqlite_only  # no store involved: run once

J, S = "abc123", "sub_1"
CASES = [
    ["job", "update", J, S, "--status", "completed"],
    ["job", "update", J, S, "--agent-id", "agent_haiku_1a2b3c", "--status", "completed", "--result", "[200 OK] 5 items"],
    ["job", "update", f"job_{J}", S, "--status", "running", "--json"],
    ["job", "update", J, S, "--status", "failed", "--force", "--result", ""],
    ["job", "update", J, S, "--status", "completed", "--result", "-5"],
    ["job", "update", J, S, "--status", "completed", "--result", "-x"],
    ["job", "update", J, S, "--status", "completed", "--result", "- a list"],
    ["job", "update", J, S, "--status", "completed", "--result", "a", "--result", "b"],
    ["job", "update", J, S, "--status=completed"],
    ["job", "update", J, S, "--stat", "completed"],
    ["job", "update", J, S],
    ["job", "update", J, "--status", "completed", S],
    ["job", "update", "--status", "completed", J, S],
    ["job", "update", J, S, "extra", "--status", "completed"],
    ["job", "update", J, S, "--status", "completed", "extra"],
    ["job", "update", J, S, "--status", "completed", "--json", "--json"],
    ["job", "update", J, S, "--status", "completed", "-h"],
    ["job", "update", J, S, "--status", "completed", "--"],
    ["job", "update", J, S, "--status"],
    ["job", "update", J],
    ["job", "update"],
    ["--db", "/tmp/x.db", "job", "update", J, S, "--status", "completed"],
    ["job", "--db", "/tmp/x.db", "update", J, S, "--status", "completed"],
    ["job", "update", J, S, "--status", "completed", "--db", "/tmp/x.db"],
    ["--db", "/tmp/a.db", "job", "update", J, S, "--status", "completed", "--db", "/tmp/b.db"],
    ["--db", "/tmp/a.db", "job", "--db", "/tmp/b.db", "update", J, S, "--status", "completed"],
    ["--db=/tmp/x.db", "job", "update", J, S, "--status", "completed"],
    ["job", "subtasks", J],
    ["job", "subtasks", J, "--json"],
    ["job", "subtasks", J, "--json", "--db", ""],
    ["job", "subtasks", "--json", J],
    ["job", "subtasks"],
    ["job", "subtasks", J, J],
    ["job", "subtasks", "-1"],
    ["job", "subtasks", ""],
    ["job", "get", J],
    ["job"],
    [],
    ["--help"],
]


PERMUTED = [["job", "update", J, S] + list(itertools.chain(*p))
            for p in itertools.permutations([["--status", "completed"], ["--result", "r"], ["--agent-id", "a1"],
                                             ["--json"], ["--force"]])]


def argparse_view(argv):
    try:
        ns = cli.build_parser().parse_args(argv)
    except InvalidInput as exc:
        return f"error: {exc}"
    except SystemExit as exc:
        return f"exit {exc.code}"
    ns.db = getattr(ns, "db", None)
    return vars(ns)


@pytest.mark.parametrize("argv", CASES + PERMUTED, ids=lambda a: " ".join(a) or "(none)")
def test_the_fast_path_declines_or_agrees_with_argparse(argv):
    fast = cli._fast_args(argv)
    if fast is not None:
        assert vars(fast) == argparse_view(argv)


def test_the_plain_report_forms_take_the_fast_path():
    taken = [argv for argv in CASES + PERMUTED if cli._fast_args(argv) is not None]
    assert len(taken) >= 120  # every permutation of a worker's report options, and the seed's forms
    assert cli._fast_args(["job", "update", J, S, "--agent-id", "a1", "--status", "completed", "--result", "r"])
    assert cli._fast_args(["job", "subtasks", J])
    assert cli._fast_args(["job", "get", J]) is None

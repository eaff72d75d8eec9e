"""Check that the CLI's report fast path (``cli._fast_args``) parses exactly as argparse does.

    .venv/bin/python -m bench.fastpath_check

For every command line below: either the fast path declines (argparse then
handles it, errors included), or it returns the very namespace argparse
returns. Run after any change to the fast path or to the parser.
"""

import itertools
import sys

from scripts.memory import cli
from scripts.memory.errors import InvalidInput

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


def argparse_view(argv):
    try:
        ns = cli.build_parser().parse_args(argv)
    except InvalidInput as exc:
        return f"error: {exc}"
    except SystemExit as exc:
        return f"exit {exc.code}"
    ns.db = getattr(ns, "db", None)
    return vars(ns)


def main() -> int:
    bad = taken = 0
    extra = [["job", "update", J, S] + list(itertools.chain(*p))
             for p in itertools.permutations([["--status", "completed"], ["--result", "r"], ["--agent-id", "a1"],
                                              ["--json"], ["--force"]])]
    for argv in CASES + extra:
        fast = cli._fast_args(argv)
        if fast is None:
            continue
        taken += 1
        expected = argparse_view(argv)
        if vars(fast) != expected:
            bad += 1
            print(f"MISMATCH {argv}:\n  fast     {vars(fast)}\n  argparse {expected}")
    print(f"{taken} of {len(CASES) + len(extra)} command lines took the fast path; {bad} mismatches")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())

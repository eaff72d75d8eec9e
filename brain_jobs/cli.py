"""The ``brain`` command line.

Data goes to stdout, errors and hints to stderr. Exit codes, decided in
``main`` only: 0 success, 1 operational error (not found, expired, invalid
transition, refused report, store busy or broken, anything unexpected), 2
usage or invalid input, 130 Ctrl-C. Every error is one line on stderr;
``BRAIN_DEBUG=1`` adds the traceback. The one other way out: ``watch`` and
``wait`` end with their job's outcome, which is a result and not an error (1
some sub-tasks failed, 124 the wait's timeout ran out; ``commands._leave_with``).
"""

import os
import sys

from . import commands, render
from .errors import BrainError, InvalidInput
from .vocabulary import EXECUTORS

EPILOG = """examples:
  job=$(brain job create -q --distributed --ttl 300 --prompt "Validate endpoints" \\
        --subtask "GET /health" --subtask "POST /auth")
  brain job dispatch $job --json
  brain job update $job sub_1 --agent-id CREDENTIAL --status completed --result '[200 OK]'
  brain job subtasks $job
  brain job dispatch $job --executor http --base-url http://127.0.0.1:8080   # headless, no host
  brain job watch $job
  brain job wait $job --timeout 600      # silent until every sub-task has finished, then one answer
  brain job consolidate $job --json | jq '.results | map(select(.status == "completed")) | length'
  brain job create -q --ttl 600 --prompt "Check" --subtasks-from urls.txt     # one sub-task per line
  git ls-files | brain job create -q --ttl 600 --prompt "Review" --subtasks-from -
  brain job create -q --ttl 600 --prompt "TODOs" --glob 'src/**/*.py' --query 'Find TODOs in {file}'

exit codes: 0 success, 1 operational error (or, for watch and wait, some sub-tasks failed),
            2 usage or invalid input, 124 wait timed out, 130 interrupted (Ctrl-C)
environment: BRAIN_DB (SQLite file), BRAIN_DATABASE_URL (PostgreSQL), BRAIN_LOCK_TIMEOUT,
             BRAIN_RETENTION, NO_COLOR, BRAIN_CONFIG (settings file, default ~/.brain/config.yaml)"""


def _argparse():
    """argparse and our parser class, imported only off the report path (see ``_fast_args``)."""
    import argparse

    class _Parser(argparse.ArgumentParser):
        """argparse that reports a usage error as one line and exit code 2, with a
        "did you mean" for a mistyped command, choice or option."""

        def parse_known_args(self, args=None, namespace=None):
            _Parser.innermost = self  # the last parser to run is the command's own: its options
            return super().parse_known_args(args, namespace)

        def _check_value(self, action, value):
            try:
                super()._check_value(action, value)
            except argparse.ArgumentError:
                close = _closest(value, action.choices)
                if close is None:
                    raise
                raise argparse.ArgumentError(action, f"invalid choice: {value!r}; did you mean {close!r}?") from None

        def error(self, message):
            prog = self.prog
            prefix = "unrecognized arguments: "
            if message.startswith(prefix):  # the root reports them: the command's own parser knows its options
                own = getattr(_Parser, "innermost", self)
                prog = own.prog
                options = [o for a in own._actions for o in a.option_strings]
                for word in message[len(prefix):].split():
                    close = _closest(word.split("=", 1)[0], options) if word.startswith("--") else None
                    if close is not None:
                        message += f"; did you mean {close}?"
                        break
            raise InvalidInput(f"{message} (see {prog} --help)")

    return argparse, _Parser


def _closest(word, choices):
    """The one choice that ``word`` most likely misspells, or None."""
    import difflib

    close = difflib.get_close_matches(str(word), [str(c) for c in choices or ()], n=1, cutoff=0.6)
    return close[0] if close else None


# -- the parser -------------------------------------------------------------

def _positive_int(text):
    import argparse

    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number of at least 1, got {text!r}")
    return int(text)


def _seconds(text):
    import argparse

    try:
        return commands.seconds(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def build_parser():
    argparse, _Parser = _argparse()
    common = _Parser(add_help=False)
    common.add_argument("--db", default=argparse.SUPPRESS, metavar="PATH",
                        help="SQLite file or postgresql:// URL (env: BRAIN_DB, BRAIN_DATABASE_URL)")
    common.add_argument("--database-url", dest="db", default=argparse.SUPPRESS, metavar="URL",
                        help="the same, for a PostgreSQL URL: postgresql://user@host/db[?schema=NAME] "
                             "(env: BRAIN_DATABASE_URL; see docs/postgres.md)")
    reads = _Parser(add_help=False)
    reads.add_argument("--json", action="store_true", help="print JSON")

    root = _Parser(prog="brain", description="brain-jobs: a job queue with distributed sub-tasks.",
                   epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter, parents=[common])
    top = root.add_subparsers(dest="area", metavar="{job,worker}", parser_class=_Parser)
    top.required = True
    job = top.add_parser("job", help="create, dispatch, report on and consolidate jobs", epilog=EPILOG,
                         formatter_class=argparse.RawDescriptionHelpFormatter, parents=[common])
    sub = job.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True

    def command(name, func, help_text, *parents):
        p = sub.add_parser(name, help=help_text, description=help_text, parents=[common, *parents])
        p.set_defaults(func=func)
        return p

    p = command("create", commands.cmd_create, "create a job; prints job_<id> (the bare id with -q)", reads)
    p.add_argument("-q", "--quiet", action="store_true", help="print only the bare id (for job=$(...)), no hint")
    p.add_argument("--distributed", action="store_true", help="a job with parallel sub-tasks")
    p.add_argument("--ttl", required=True, help="seconds until the job expires (1 to 2592000)")
    p.add_argument("--prompt", required=True, help="what the job is for")
    p.add_argument("--subtask", action="append", default=[], metavar="QUERY", help="a sub-task query (repeatable, max 500 chars)")
    p.add_argument("--subtasks-from", action="append", default=[], metavar="FILE",
                   help="one sub-task per non-blank line of a UTF-8 file, verbatim (no comments); - reads "
                        "standard input (repeatable; after the --subtask ones)")
    p.add_argument("--glob", action="append", default=[], metavar="PATTERN",
                   help="one sub-task per regular file matching PATTERN under the current directory, sorted "
                        "(** any directories; symlinks and hidden names skipped unless named; repeatable)")
    p.add_argument("--query", metavar="TEMPLATE",
                   help="the query of each --glob match, where {file} is replaced by the file's relative path")
    p.add_argument("--file", action="append", default=[], metavar="PATH", help="a file the workers search (repeatable)")
    p.add_argument("--skills", action="append", default=[], metavar="NAME", help="a skill the workers use (repeatable)")
    p.add_argument("--data", metavar="JSON", help="extra job data, a JSON object")

    p = command("subtasks", commands.cmd_subtasks, "show the sub-tasks: ○ pending ◉ running ✓ completed ✗ failed", reads)
    p.add_argument("job")

    p = command("update", commands.cmd_update, "report on a sub-task (what a worker runs)", reads)
    p.add_argument("job")
    p.add_argument("sub", metavar="SUB", help="sub-task id, e.g. sub_1")
    p.add_argument("--status", required=True, help="pending, running, completed or failed")
    p.add_argument("--result", help="the answer, at most 200 characters (longer is cut, with a mark)")
    p.add_argument("--agent-id", help="the worker identity given in its prompt")
    p.add_argument("--force", action="store_true", help="override ownership (a person's correction; recorded in history)")

    p = command("dispatch", commands.cmd_dispatch, "start one background worker per pending sub-task", reads)
    p.add_argument("job")
    p.add_argument("--model", help="haiku, sonnet or opus (default: haiku; env: BRAIN_MODEL)")
    p.add_argument("--file", action="append", default=[], metavar="PATH", help="a file to search (repeatable)")
    p.add_argument("--timeout", type=_positive_int, metavar="SECONDS",
                   help="deadline per sub-task (default: 4/5 of the remaining TTL, never beyond it)")
    p.add_argument("--executor", choices=EXECUTORS,
                   help="who runs the sub-tasks: host (default: the Claude Code Agent tool) or a headless "
                        "runner in the background; see docs/executors.md (env: BRAIN_EXECUTOR)")
    p.add_argument("--concurrency", type=_positive_int, metavar="N",
                   help="headless: sub-tasks run at once (default: 4; env: BRAIN_CONCURRENCY)")
    p.add_argument("--base-url", metavar="URL", help="http executor: where METHOD /path goes (env: BRAIN_BASE_URL)")
    p.add_argument("--allow-shell", action="store_true",
                   help="shell executor: allow running each sub-task query as a shell command")
    p.add_argument("--pool", action="store_true",
                   help="queue the sub-tasks for `brain worker --executor NAME` processes (any machine that "
                        "reaches the store) instead of running them here; see docs/postgres.md")

    p = command("watch", commands.cmd_watch, "follow a job live until every sub-task has finished "
                "(exit 0 all completed, 1 some failed, 130 Ctrl-C)", reads)
    p.add_argument("job")

    p = command("wait", commands.cmd_wait, "block until every sub-task has finished, then print the "
                "consolidation: a header and one line per sub-task (exit 0 all completed, 1 some failed, "
                "124 --timeout ran out, 130 Ctrl-C)", reads)
    p.add_argument("job")
    p.add_argument("--timeout", type=_seconds, metavar="SECONDS",
                   help="stop waiting after this long (up to 86400) and print what is there, exit 124 "
                        "(default: until the job ends, at its expiry at the latest)")

    p = command("consolidate", commands.cmd_consolidate, "one summary of every result (works at any moment)", reads)
    p.add_argument("job")

    p = command("list", commands.cmd_list, "list active jobs", reads)
    p.add_argument("--all", action="store_true", help="include completed and failed jobs")

    p = command("get", commands.cmd_get, "show a job", reads)
    p.add_argument("job")

    p = command("delete", commands.cmd_delete, "delete a job now")
    p.add_argument("job")

    command("cleanup", commands.cmd_cleanup, "expire due jobs, time out overdue sub-tasks, purge old jobs", reads)
    command("stats", commands.cmd_stats, "counts of jobs and sub-tasks by status", reads)

    p = command("status", commands.cmd_status, "show a job's status, or move a normal job with --set", reads)
    p.add_argument("job")
    p.add_argument("--set", metavar="STATUS", help="pending, running, completed or failed")

    p = command("history", commands.cmd_history, "show a job's events", reads)
    p.add_argument("job")

    p = command("retry", commands.cmd_retry, "put failed or timed-out sub-tasks back to pending", reads)
    p.add_argument("job")
    p.add_argument("subs", nargs="*", metavar="SUB", help="sub-tasks to retry (default: every failed one)")
    p.add_argument("--max-attempts", type=_positive_int, metavar="N", help="refuse sub-tasks that used N attempts")

    p = command("cancel", commands.cmd_cancel, "fail every unfinished sub-task with 'cancelled'", reads)
    p.add_argument("job")

    w = top.add_parser("worker", help="run sub-tasks queued with `brain job dispatch --pool`, until stopped",
                       description="Claim sub-tasks queued for an executor's worker pool and run them, "
                                   "extending each claim's lease while it runs. SIGTERM, SIGHUP or Ctrl-C: finish "
                                   "within --grace, release the rest, exit.",
                       epilog=WORKER_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter, parents=[common])
    w.set_defaults(func=commands.cmd_worker)
    w.add_argument("--executor", metavar="NAME",
                   help="anthropic, claude, http, grep, shell, or package.module:Class (env: BRAIN_EXECUTOR)")
    w.add_argument("--concurrency", type=_positive_int, metavar="N",
                   help="sub-tasks run at once by this worker (default: 4; env: BRAIN_CONCURRENCY)")
    w.add_argument("--lease", type=_seconds, metavar="SECONDS",
                   help="a claim lasts this long unless renewed (every third of it); a dead worker's sub-task "
                        "is claimed again after it (default: 30; env: BRAIN_WORKER_LEASE)")
    w.add_argument("--poll", type=_seconds, metavar="SECONDS",
                   help="longest idle wait between two looks; commits wake it sooner "
                        "(default: 5; env: BRAIN_WORKER_POLL)")
    w.add_argument("--grace", type=_seconds, metavar="SECONDS",
                   help="on SIGTERM, time to finish running sub-tasks before releasing them "
                        "(default: 30; env: BRAIN_WORKER_GRACE)")
    w.add_argument("--drain", action="store_true",
                   help="exit once the pool has no pending or running sub-task (scripts, CI)")
    w.add_argument("--allow-shell", action="store_true",
                   help="shell executor: this worker may run queries as shell commands (the dispatch must opt in too)")
    w.add_argument("--workdir", metavar="DIR", help="the directory file-reading executors work in (default: here)")
    w.add_argument("--base-url", metavar="URL", help="http executor: where METHOD /path goes (env: BRAIN_BASE_URL)")
    return root


WORKER_EPILOG = """examples:
  brain job dispatch $job --executor grep --pool --file src/
  brain worker --executor grep --concurrency 4
  BRAIN_DATABASE_URL=postgresql://brain@db.internal/jobs brain worker --executor http   # on every machine
  brain worker --executor grep --drain            # exit when the pool is empty

environment: BRAIN_DATABASE_URL (PostgreSQL: workers on many machines), BRAIN_DB, BRAIN_EXECUTOR,
             BRAIN_CONCURRENCY, BRAIN_WORKER_LEASE, BRAIN_WORKER_POLL, BRAIN_WORKER_GRACE"""


# -- the report path ----------------------------------------------------------
# A worker starts one process per report (`brain job update`) and per progress
# read (`brain job subtasks`); importing argparse and building the parser above
# is a large share of each. Their plain form is parsed here instead. Anything else --
# help, an abbreviation, `=`, a value starting with "-", an option before the
# positionals, a repeated, unknown or missing one -- goes to argparse, so every
# error and exit code stays argparse's own.

_FAST = {  # command: (positionals, options with a value, flags, required option)
    "update": (("job", "sub"), ("--status", "--result", "--agent-id", "--db"), ("--json", "--force"), "--status"),
    "subtasks": (("job",), ("--db",), ("--json",), None),
}


class _FastArgs:
    """What argparse returns for the same command line."""

    def __init__(self, values):
        self.__dict__.update(values)


def _fast_args(argv):
    """The arguments of a plain ``[--db P] job [--db P] update|subtasks POS... [OPTIONS]``, or None."""
    rest = list(argv)
    given = set()
    values = {"db": None}

    def take_db():
        if rest[:1] == ["--db"] and len(rest) > 1 and not rest[1].startswith("-") and "--db" not in given:
            values["db"] = rest[1]
            given.add("--db")
            del rest[:2]

    take_db()
    if rest[:1] != ["job"]:
        return None
    del rest[0]
    take_db()
    spec = _FAST.get(rest[0]) if rest else None
    if spec is None:
        return None
    positionals, valued, flags, required = spec
    values.update(area="job", command=rest[0], func=commands.cmd_update if rest[0] == "update" else commands.cmd_subtasks)
    rest = rest[1:]
    if len(rest) < len(positionals) or any(v.startswith("-") for v in rest[: len(positionals)]):
        return None
    values.update(zip(positionals, rest))
    del rest[: len(positionals)]
    values.update((opt[2:].replace("-", "_"), None) for opt in valued if opt != "--db")
    values.update((opt[2:], False) for opt in flags)
    while rest:
        opt = rest.pop(0)
        if opt in given:
            return None
        given.add(opt)
        if opt in flags:
            values[opt[2:]] = True
        elif opt in valued and rest and not rest[0].startswith("-"):
            values[opt[2:].replace("-", "_")] = rest.pop(0)
        else:
            return None
    if required and required not in given:
        return None
    return _FastArgs(values)


# Only the whole name: every abbreviation of --subtask also abbreviates --subtasks-from,
# which argparse refuses as ambiguous.
_SUBTASK_OPTION = ("--subtask",)
OTHER_OPTIONS = 100  # options a command line may have besides its --subtask ones


def _refuse_too_many_options(argv) -> None:
    """Count ``--subtask`` and every other option before argparse parses them: its time grows
    with the square of the number of options, whichever they are (six seconds for 10,000,
    half a minute for 20,000 ``--file``), so a refusal must not wait for it."""
    from .validate import MAX_SUBTASKS

    count = sum(1 for arg in argv if arg.split("=", 1)[0] in _SUBTASK_OPTION)
    if count > MAX_SUBTASKS:
        raise InvalidInput(f"{count} sub-tasks; the limit is {MAX_SUBTASKS}")
    options = sum(1 for arg in argv if arg.startswith("-"))
    if options > MAX_SUBTASKS + OTHER_OPTIONS:
        raise InvalidInput(f"{options} options; the limit is {MAX_SUBTASKS + OTHER_OPTIONS} "
                           f"({MAX_SUBTASKS} --subtask and {OTHER_OPTIONS} others): use --subtasks-from for long lists")


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    render.tolerant_output()
    try:
        args = _fast_args(argv)
        if args is None:
            _refuse_too_many_options(argv)
            args = build_parser().parse_args(argv)
            args.db = getattr(args, "db", None)  # --db may stand before or after the command
        args.func(args)
        return 0
    except BrainError as exc:
        if os.environ.get("BRAIN_DEBUG"):
            raise
        print(f"brain: error: {render.printable(exc)}", file=sys.stderr)  # one line, whatever it quotes
        return exc.exit_code
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 1
    except Exception as exc:  # not ours to expect: a job row another program wrote, or a bug
        if os.environ.get("BRAIN_DEBUG"):
            raise
        what = " ".join(render.printable(exc).split())[:200]
        print(f"brain: error: unexpected {type(exc).__name__}" + (f": {what}" if what else "") +
              " (a job another program wrote may be unreadable; BRAIN_DEBUG=1 shows where)", file=sys.stderr)
        return 1

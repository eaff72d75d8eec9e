"""No test asserts a wall-clock duration (issue 13).

A bound such as ``assert elapsed < 0.3`` flakes on a loaded machine. Tests
prove behaviour with the injected clock, events, ordering or counts, and
bound their waits with generous timeouts that only fail when something
hangs; speed is measured in ``bench/``. This guard reads every test file
with ``ast`` and names each ``assert`` that compares a value taken from
``time.monotonic``/``time.time``/``time.perf_counter`` (directly, or through
a local name assigned from one, or a name or key such as ``elapsed`` that
says it holds a duration). ``time.monotonic() < deadline`` is a
bounded wait, not a duration, and passes.
"""

import ast
from pathlib import Path

import pytest

pytestmark = pytest.mark.backends("memory")  # reads source files, no store

TESTS = Path(__file__).resolve().parent
CLOCKS = {"monotonic", "time", "perf_counter"}  # the _ns forms name things uniquely here
# A measured duration handed on (a fixture's result["elapsed"]) is known by its name alone.
DURATION_NAMES = {"elapsed", "took", "latency", "wall"}


def _reads_clock(node, timed):
    """True if the expression calls a wall clock or uses a name assigned from one."""
    for sub in ast.walk(node):
        if isinstance(sub, ast.Call):
            f = sub.func
            if isinstance(f, ast.Attribute) and f.attr in CLOCKS and isinstance(f.value, ast.Name) \
                    and f.value.id == "time":
                return True
            if isinstance(f, ast.Name) and f.id in CLOCKS - {"time"}:  # from time import monotonic
                return True
        if isinstance(sub, ast.Name) and (sub.id in timed or sub.id in DURATION_NAMES):
            return True
        if isinstance(sub, ast.Subscript) and isinstance(sub.slice, ast.Constant) and sub.slice.value in DURATION_NAMES:
            return True
        if isinstance(sub, ast.Subscript) and isinstance(sub.value, ast.Name) and sub.value.id in timed:
            return True
    return False


def _target_names(target):
    """The local names a target binds: ``x``, ``a, b``, or the dict ``d`` in ``d["k"] = ...``."""
    if isinstance(target, ast.Name):
        return {target.id}
    if isinstance(target, (ast.Tuple, ast.List)):
        return set().union(*(_target_names(t) for t in target.elts))
    if isinstance(target, ast.Subscript) and isinstance(target.value, ast.Name):
        return {target.value.id}
    return set()  # an attribute such as ``ctx.deadline``: not a local stopwatch


def _own_nodes(scope):
    """The nodes of one function (or the module) without those of the functions defined in it."""
    todo = list(ast.iter_child_nodes(scope))
    while todo:
        node = todo.pop()
        yield node
        if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            todo.extend(ast.iter_child_nodes(node))


def _timed_names(scope, inherited):
    """The names a scope sees assigned a value derived from a wall clock (its own, and its enclosing ones).

    A dict written by a nested function (``woke["after"] = time.monotonic() - t`` in a thread's
    target) counts in the scope too: the dict is the scope's, read after the thread ends.
    """
    timed, own_nodes = set(inherited), set(_own_nodes(scope))
    while True:
        before = len(timed)
        for node in own_nodes if isinstance(scope, ast.Module) else ast.walk(scope):
            if isinstance(node, (ast.Assign, ast.AnnAssign, ast.AugAssign)) and node.value is not None:
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                own = node in own_nodes
                for t in targets:
                    if (own or isinstance(t, ast.Subscript)) and _reads_clock(node.value, timed):
                        timed |= _target_names(t)
        if len(timed) == before:
            return timed


def _stopwatch_lines(scope, inherited):
    timed = _timed_names(scope, inherited)
    lines = set()
    for node in _own_nodes(scope):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            lines |= _stopwatch_lines(node, timed)
        elif isinstance(node, ast.Assert) and any(
                isinstance(cmp, ast.Compare) and not _is_deadline_check(cmp) and _reads_clock(cmp, timed)
                for cmp in ast.walk(node.test)):
            lines.add(node.lineno)
    return lines


def stopwatch_asserts(source):
    """Line numbers of the asserts in ``source`` that compare a wall-clock-derived value."""
    return sorted(_stopwatch_lines(ast.parse(source), set()))


def _is_deadline_check(cmp):
    """``time.monotonic() < deadline``: a bounded wait that fails only when something hangs."""
    return len(cmp.ops) == 1 and isinstance(cmp.ops[0], (ast.Lt, ast.LtE)) and isinstance(cmp.left, ast.Call) \
        and isinstance(cmp.comparators[0], ast.Name) and cmp.comparators[0].id in ("deadline", "end")


def test_no_test_asserts_a_wall_clock_duration():
    found = [f"{path.relative_to(TESTS.parent)}:{line}"
             for path in sorted(TESTS.rglob("*.py"))
             for line in stopwatch_asserts(path.read_text())]
    assert found == [], "these asserts compare wall-clock times; use the injected clock, events, " \
                        "ordering or counts, and move timings to bench/: " + ", ".join(found)


def test_the_guard_sees_the_usual_forms():
    flagged = stopwatch_asserts(
        "import time\n"
        "start = time.monotonic()\n"
        "assert time.monotonic() - start < 3\n"            # 3: direct
        "elapsed = time.monotonic() - start\n"
        "assert 0.3 <= elapsed < 1.5\n"                     # 5: through a name
        "at = {}\n"
        "at['x'] = time.perf_counter()\n"
        "assert time.perf_counter() - at['x'] < 0.3\n"      # 8: through a dict
        "assert code == 1 and time.time() - start < 5\n"   # 9: inside a boolean
        "deadline = time.monotonic() + 5\n"
        "assert time.monotonic() < deadline, 'hung'\n"      # 11: a bounded wait, not a duration
        "def f():\n"
        "    t = time.monotonic()\n"
        "def g(t):\n"
        "    assert t < 3\n"                                 # 15: another function's t
        "def test_t(woke):\n"
        "    def waiter():\n"
        "        woke['after'] = time.monotonic() - 1\n"
        "    assert woke['after'] < 5\n"                     # 19: a dict a thread wrote
        "def h(run):\n"
        "    assert run['elapsed'] < 180\n"                  # 21: a duration measured elsewhere
    )
    assert flagged == [3, 5, 8, 9, 19, 21]

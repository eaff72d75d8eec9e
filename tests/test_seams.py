"""Public seams and one vocabulary: no module of ours uses another's private name, and the words
of brain-jobs (statuses, executor names, model aliases, the result limit and its truncation)
are spelled in ``brain_jobs/vocabulary.py`` only."""

import ast

import pytest

from conftest import ROOT
from brain_jobs import cli, vocabulary

pytestmark = pytest.mark.backends("memory")

PACKAGE = ROOT / "brain_jobs"
HOOKS = ROOT / "hooks"
SOURCES = sorted(PACKAGE.rglob("*.py")) + sorted(HOOKS.glob("*.py"))
HOOK_MODULES = {p.stem for p in HOOKS.glob("*.py")}  # the hooks import each other by bare name
VOCABULARY = PACKAGE / "vocabulary.py"


def _private(name):
    return name.startswith("_") and not name.startswith("__")


def _ours(module, level, path):
    """True when an import names one of our modules (not the standard library or a dependency)."""
    if level:
        return True
    module = module or ""
    return module == "brain_jobs" or module.startswith("brain_jobs.") or (
        path.parent == HOOKS and module in HOOK_MODULES)


def private_uses(path):
    """``file:line what`` for each import or attribute use of another module's private name."""
    tree = ast.parse(path.read_text())
    where, modules = path.relative_to(ROOT), set()  # local names bound to one of our modules
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and _ours(node.module, node.level, path):
            for alias in node.names:
                if _private(alias.name):
                    found.append(f"{where}:{node.lineno} from {'.' * node.level}{node.module or ''} import {alias.name}")
                else:
                    modules.add(alias.asname or alias.name)  # may be a module (from . import jobs)
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if _ours(alias.name, 0, path):
                    modules.add(alias.asname or alias.name.split(".")[0])
    for node in ast.walk(tree):
        if (isinstance(node, ast.Attribute) and _private(node.attr) and isinstance(node.value, ast.Name)
                and node.value.id in modules):
            found.append(f"{where}:{node.lineno} {node.value.id}.{node.attr}")
    return found


def test_no_module_uses_another_modules_private_names():
    found = [use for path in SOURCES for use in private_uses(path)]
    assert not found, "give these a public name in the module that owns them:\n" + "\n".join(found)


def string_collections(path):
    """``(line, frozenset of strings)`` of each literal tuple, list or set made only of strings."""
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, (ast.Tuple, ast.List, ast.Set)) and len(node.elts) >= 2 and all(
                isinstance(e, ast.Constant) and isinstance(e.value, str) for e in node.elts):
            yield node.lineno, frozenset(e.value for e in node.elts)


WORDS = {
    "STATUSES": frozenset(vocabulary.STATUSES),
    "FINAL": frozenset(vocabulary.FINAL),
    "EXECUTORS": frozenset(vocabulary.EXECUTORS),
    "HEADLESS": frozenset(vocabulary.HEADLESS),
    "MODEL_ALIASES": frozenset(vocabulary.MODEL_ALIASES),
}


def test_each_vocabulary_is_spelled_in_vocabulary_only():
    found = [
        f"{path.relative_to(ROOT)}:{line} spells vocabulary.{name}"
        for path in SOURCES if path != VOCABULARY
        for line, words in string_collections(path)
        for name, vocab in WORDS.items() if words == vocab
    ]
    assert not found, "import these from brain_jobs/vocabulary.py:\n" + "\n".join(found)


def test_the_result_limit_and_its_truncation_are_defined_once():
    names = {"MAX_RESULT", "TRUNCATION_MARK"}
    found = []
    for path in SOURCES:
        if path == VOCABULARY:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            targets = node.targets if isinstance(node, ast.Assign) else [getattr(node, "target", None)]
            if isinstance(node, (ast.Assign, ast.AnnAssign)) and any(
                    isinstance(t, ast.Name) and t.id in names for t in targets):
                found.append(f"{path.relative_to(ROOT)}:{node.lineno} defines {targets[0].id}")
            if isinstance(node, ast.Subscript) and isinstance(node.slice, ast.Slice) and any(
                    isinstance(n, ast.Name) and n.id in names for n in ast.walk(node.slice)):
                found.append(f"{path.relative_to(ROOT)}:{node.lineno} cuts a result (use vocabulary.truncate_result)")
    assert not found, "\n".join(found)


def test_truncation_keeps_the_limit_and_marks_the_cut():
    limit, mark = vocabulary.MAX_RESULT, vocabulary.TRUNCATION_MARK
    assert vocabulary.truncate_result("x" * limit) == "x" * limit
    cut = vocabulary.truncate_result("x" * (limit + 1))
    assert len(cut) == limit and cut.endswith(mark)


def _option(parser, path, option):
    """The argparse action of ``option`` on the sub-command reached by ``path`` (e.g. job, dispatch)."""
    for word in path:
        parser = next(a for a in parser._actions if isinstance(a.choices, dict) and word in a.choices).choices[word]
    return next(a for a in parser._actions if option in a.option_strings)


def test_the_executor_option_offers_the_one_list_of_executors():
    assert tuple(_option(cli.build_parser(), ("job", "dispatch"), "--executor").choices) == vocabulary.EXECUTORS

"""The tier table (``TIERS`` in tests/conftest.py) names every test file once, and the unit tier
stays fast: no subprocess and no real store in its files."""

import ast

import pytest

from conftest import ROOT, TIERS

pytestmark = pytest.mark.backends("memory")

TESTS = ROOT / "tests"


def test_every_test_file_has_exactly_one_tier():
    listed = [name for names in TIERS.values() for name in names]
    assert len(listed) == len(set(listed)), "a file is listed twice in TIERS"
    found = {p.relative_to(TESTS).as_posix() for p in TESTS.rglob("test_*.py")}
    assert not found - set(listed), f"add these files to TIERS in tests/conftest.py: {sorted(found - set(listed))}"
    assert not set(listed) - found, f"TIERS names files that do not exist: {sorted(set(listed) - found)}"


FORBIDDEN_MODULES = {"subprocess", "sqlite3", "psycopg", "multiprocessing"}
FORBIDDEN_NAMES = {"run_brain", "BRAIN", "postgres_url", "brain", "backend"}  # helpers and fixtures


@pytest.mark.parametrize("name", TIERS["unit"])
def test_unit_files_start_no_process_and_open_no_real_store(name):
    tree = ast.parse((TESTS / name).read_text())
    modules, names = set(), set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            modules |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            modules.add((node.module or "").split(".")[0])
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.FunctionDef) and node.name.startswith("test_"):
            names |= {a.arg for a in node.args.args}
    assert not modules & FORBIDDEN_MODULES, f"{name} imports {modules & FORBIDDEN_MODULES}: not a unit test"
    assert not names & FORBIDDEN_NAMES, f"{name} uses {names & FORBIDDEN_NAMES}: not a unit test"
    marks = [ast.unparse(n) for n in ast.walk(tree) if isinstance(n, ast.Call) and "backends" in ast.unparse(n.func)]
    assert all(m == "pytest.mark.backends('memory')" for m in marks), f"{name}: unit tests run on memory only: {marks}"

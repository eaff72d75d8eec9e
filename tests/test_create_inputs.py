"""Many sub-tasks without typing each: ``--subtasks-from FILE`` (or ``-``) and ``--glob`` with ``--query``.

Every query is still checked; the first refused one refuses the job, names
where it came from, exits 2 and creates nothing.
"""

import json
import os
import subprocess
import sys

import pytest

from conftest import BRAIN, store_snapshot
from brain_jobs import jobs, validate
from brain_jobs.errors import InvalidInput


def create(*args, cwd=None, input=None):
    """``brain job create --ttl 60 --prompt p ARGS`` run from ``cwd``, with ``input`` on stdin."""
    return subprocess.run([sys.executable, str(BRAIN), "job", "create", "--ttl", "60", "--prompt", "p", *args],
                          input=input, cwd=cwd, capture_output=True, text=True, timeout=60)


def queries_of(*args, cwd=None, input=None):
    proc = create(*args, "--json", cwd=cwd, input=input)
    assert proc.returncode == 0, proc.stderr
    return [s["query"] for s in json.loads(proc.stdout)["sub_tasks"]]


def refused(proc, text):
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith("brain: error: ") and proc.stderr.count("\n") == 1, proc.stderr
    assert text in proc.stderr, proc.stderr
    assert proc.stdout == ""


# -- from a file or standard input ------------------------------------------------

def test_one_subtask_per_line_after_the_subtask_options(tmp_path):
    listing = tmp_path / "list.txt"
    listing.write_bytes(b"GET /health\n\n   \n#1 is a query too\r\n  spaced  \nPOST /auth")
    assert queries_of("--subtask", "first", "--subtasks-from", str(listing)) == [
        "first", "GET /health", "#1 is a query too", "  spaced  ", "POST /auth"]


def test_standard_input_with_a_dash(brain):
    assert queries_of("--subtasks-from", "-", input="a\nb\n\nc\n") == ["a", "b", "c"]
    out = brain.ok("job", "create", "-q", "--ttl", "60", "--prompt", "p", "--subtasks-from", "-", input="x\n")
    assert jobs.get_job(out.strip())["sub_tasks"][0]["query"] == "x"


def test_a_refused_line_refuses_the_job_and_names_the_line(tmp_path, db):
    listing = tmp_path / "list.txt"
    lines = [f"GET /item/{i}" for i in range(1, 17)] + ["GET /\x07bell", "GET /fine"]
    listing.write_text("\n".join(lines) + "\n")
    before = store_snapshot(db)
    refused(create("--subtasks-from", str(listing)),
            f"line 17 of {listing}: sub-task query contains the control character U+0007")
    refused(create("--subtasks-from", "-",
                  input="ok\n" + "x" * 501 + "\n"), "line 2 of standard input: sub-task query is 501 characters")
    refused(create("--subtasks-from", "-",
                  input="ok\n" + "y" * 5_000_000 + "\n"), "line 2 of standard input: sub-task query is over 500")
    listing.write_bytes(b"caf\xe9\n")
    refused(create("--subtasks-from", str(listing)),
            f"line 1 of {listing}: sub-task query contains bytes that are not valid UTF-8")
    refused(create("--subtasks-from", str(tmp_path / "none")),
            "cannot read sub-tasks from")
    refused(create("--subtasks-from", "-", input="\n \n"),
            "no sub-tasks: standard input has no non-blank line")
    assert store_snapshot(db) == before


def test_an_endless_line_is_refused_without_reading_it_to_its_end(db):
    """/dev/zero is one line without end: it once kept create reading for ever. The timeout
    of ``create`` only fails the test when it hangs."""
    refused(create("--subtasks-from", "/dev/zero"), "line 1 of /dev/zero: sub-task query is over 500")
    assert store_snapshot(db) == []


def test_the_cap_stops_reading_at_the_first_line_too_many(db):
    # A bad line after the limit is never read: the count refuses first.
    text = "q\n" * validate.MAX_SUBTASKS + "one too many\n" + "\x07\n"
    refused(create("--subtasks-from", "-", input=text),
            f"too many sub-tasks: line {validate.MAX_SUBTASKS + 1} of standard input")
    # --subtask counts too.
    refused(create("--subtask", "first", "--subtasks-from", "-",
                  input="q\n" * validate.MAX_SUBTASKS), "too many sub-tasks")
    assert store_snapshot(db) == []


# -- one per file matching a glob ----------------------------------------------------

@pytest.fixture
def tree(tmp_path):
    """src/ with files at two depths, a hidden file and directory, a non-match, and symlinks."""
    root = tmp_path / "work"
    for rel in ("src/b.py", "src/a.py", "src/pkg/c.py", "src/.hidden.py", "src/.cache/d.py", "src/notes.txt",
                "README.md"):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text("x\n")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.py").write_text("x\n")
    os.symlink(outside, root / "src" / "escape")  # a directory link out of the working directory
    os.symlink(root / "src" / "a.py", root / "src" / "alias.py")  # a file link
    os.mkfifo(root / "src" / "pipe.py")  # not a regular file
    return root


def test_one_subtask_per_regular_file_sorted_and_relative(tree):
    assert queries_of("--glob", "src/**/*.py", "--query", "Find TODOs in {file}", cwd=tree) == [
        "Find TODOs in src/a.py", "Find TODOs in src/b.py", "Find TODOs in src/pkg/c.py"]
    # Hidden names only when the pattern names them; combined with --subtask, which comes first.
    assert queries_of("--subtask", "first", "--glob", "src/.*.py", "--glob", "src/.cache/*",
                      "--query", "{file}", cwd=tree) == ["first", "src/.hidden.py", "src/.cache/d.py"]
    assert queries_of("--glob", "src/**", "--query", "{file}", cwd=tree) == [
        "src/a.py", "src/b.py", "src/notes.txt", "src/pkg/c.py"]
    assert queries_of("--glob", "./src/*.py", "--query", "{file}: {x}", cwd=tree) == [
        "src/a.py: {x}", "src/b.py: {x}"]


def test_glob_mistakes_are_refused_and_create_nothing(tree, db):
    cases = [
        (("--glob", "src/*.py"), "--glob needs --query"),
        (("--query", "{file}"), "--query is the template of --glob"),
        (("--glob", "src/*.py", "--query", "no placeholder"), "must contain {file}"),
        (("--glob", "/etc/*", "--query", "{file}"), "is absolute"),
        (("--glob", "../outside/*.py", "--query", "{file}"), "leaves the current directory"),
        (("--glob", "src/escape/*.py", "--query", "{file}"), "no regular file matches src/escape/*.py"),
        (("--glob", "src/*.py", "--query", "{file}" + "x" * 495), "src/a.py (matched by src/*.py): sub-task query"),
    ]
    for args, text in cases:
        refused(create(*args, cwd=tree), text)
    assert store_snapshot(db) == []


# -- the Python API ---------------------------------------------------------------

def test_the_python_api_reads_files_and_globs(tree, tmp_path, db, monkeypatch):
    listing = tmp_path / "list.txt"
    listing.write_text("a\n\nb\n")
    assert jobs.subtasks_from_file(listing) == ["a", "b"]
    assert jobs.subtasks_from_glob("**/*.py", "Review {file}", root=tree) == [
        "Review src/a.py", "Review src/b.py", "Review src/pkg/c.py"]
    monkeypatch.chdir(tree)
    job = jobs.create_job_with_subtasks(60, {"prompt": "p"}, jobs.subtasks_from_glob("src/*.py", "{file}"), db=db)
    assert [s["query"] for s in jobs.get_job(job, db=db)["sub_tasks"]] == ["src/a.py", "src/b.py"]
    listing.write_text("fine\nbad\x00\n")
    with pytest.raises(InvalidInput, match=r"^line 2 of .*list.txt: sub-task query contains the control"):
        jobs.subtasks_from_file(listing)

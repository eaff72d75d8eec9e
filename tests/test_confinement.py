"""File-reading executors read only inside their working directory, and never block.

The grep executor (alone, under ``brain worker --workdir`` and under a
detached runner) and the anthropic executor's tools, against real trees:
paths outside the working directory, ``..``, symlinks out (also swapped in
by a thread while the tools read), a working directory of ``/``, and
special files (a FIFO with no writer, a socket, /dev/zero) that must be
skipped without blocking. Every wait is bounded; what could hang runs in a
subprocess with a timeout.
"""

import json
import os
import shutil
import socket
import subprocess
import sys
import textwrap
import threading

import pytest

from conftest import BRAIN, ROOT
from brain_jobs import config, executors, jobs
from brain_jobs.errors import InvalidInput
from brain_jobs.executors import Context, Failed, files
from brain_jobs.executors.anthropic_api import Tools
from tests.test_runner_support import finished, wait_until

SECRET = "root:x:0:0:TOPSECRET"


def grep(workdir, paths):
    ctx = Context(job_id="abc123", workdir=str(workdir), files=[str(p) for p in paths], settings=config.resolve({}))
    return executors.create("grep", ctx)


def refused(call):
    """The message of the refusal ``call()`` raises (any exception; a refusal is not a crash of the test)."""
    with pytest.raises(Exception) as info:
        call()
    return str(info.value)


@pytest.fixture
def world(tmp_path):
    """``work/`` (the working directory) and, next to it, ``outside/`` holding a secret.

    Inside: ``src/app.py``, ``notes.txt``; symlinks out (``link``: the secret,
    ``abslink``: the same by an absolute target, ``door``: the outside
    directory, ``src/escape``: the secret from inside a searched directory);
    symlinks that stay inside (``alias`` -> ``notes.txt``, ``src/up`` ->
    ``../notes.txt``, ``srcdir`` -> ``src``).
    """
    work, outside = tmp_path / "work", tmp_path / "outside"
    (work / "src").mkdir(parents=True)
    outside.mkdir()
    (outside / "passwd").write_text(SECRET + "\n")
    (work / "src" / "app.py").write_text("def users():\n    return 'users'\n")
    (work / "notes.txt").write_text("users are listed in src\n")
    (work / "link").symlink_to("../outside/passwd")
    (work / "abslink").symlink_to(outside / "passwd")
    (work / "door").symlink_to(outside, target_is_directory=True)
    (work / "src" / "escape").symlink_to(outside / "passwd")
    (work / "alias").symlink_to("notes.txt")
    (work / "src" / "up").symlink_to("../notes.txt")
    (work / "srcdir").symlink_to("src", target_is_directory=True)
    return work, outside


# -- the anthropic executor's tools ----------------------------------------------------

@pytest.mark.sqlite_only  # no store involved
def test_the_tools_refuse_every_way_out(world):
    work, outside = world
    tools = Tools(work)
    ways_out = [("read_file", {"path": str(outside / "passwd")}), ("read_file", {"path": "../outside/passwd"}),
                ("read_file", {"path": "src/../../outside/passwd"}), ("read_file", {"path": "link"}),
                ("read_file", {"path": "abslink"}), ("read_file", {"path": "door/passwd"}),
                ("read_file", {"path": "srcdir/escape"}), ("list_dir", {"path": ".."}),
                ("list_dir", {"path": "door"}), ("grep", {"pattern": "TOP", "path": "door"}),
                ("grep", {"pattern": "TOP", "path": "link"})]
    for name, args in ways_out:
        message = refused(lambda: tools.call(name, args))
        assert "outside the working directory" in message, (name, args, message)
    # A whole-tree grep skips the symlinks out; it reads symlinks to files inside (alias, src/up)
    # but does not descend the symlinked directory srcdir.
    assert tools.grep("TOPSECRET|users").splitlines() == [
        "alias:1: users are listed in src", "notes.txt:1: users are listed in src",
        "src/app.py:1: def users():", "src/app.py:2:     return 'users'", "src/up:1: users are listed in src"]


@pytest.mark.sqlite_only  # no store involved
def test_the_tools_follow_symlinks_that_stay_inside(world):
    work, _ = world
    (work / "inabs").symlink_to(work / "src" / "app.py")  # an absolute target inside
    tools = Tools(work)
    assert tools.read_file("alias") == "users are listed in src\n"
    assert tools.read_file("src/up") == "users are listed in src\n"
    assert tools.read_file("srcdir/app.py").startswith("def users()")
    assert tools.read_file("inabs").startswith("def users()")
    assert tools.read_file(str(work / "src" / "app.py")).startswith("def users()")
    assert tools.grep("listed", "srcdir") == "srcdir/up:1: users are listed in src"
    assert tools.list_dir("srcdir") == "app.py\nescape\nup"
    assert tools.list_dir() == "abslink\nalias\ndoor\ninabs\nlink\nnotes.txt\nsrc/\nsrcdir"


@pytest.mark.sqlite_only  # no store involved
def test_a_symlink_loop_is_refused_not_followed_for_ever(tmp_path):
    (tmp_path / "a").symlink_to("b")
    (tmp_path / "b").symlink_to("a")
    (tmp_path / "self").symlink_to("self/x")
    tools = Tools(tmp_path)
    assert refused(lambda: tools.read_file("a")) == "refused: a is behind too many symbolic links"
    assert "too many symbolic links" in refused(lambda: tools.read_file("self"))
    assert tools.grep("x") == "no matches"


@pytest.mark.sqlite_only  # no store involved
def test_a_working_directory_of_root_reads_what_is_under_it(tmp_path):
    (tmp_path / "a.txt").write_text("needle here\n")
    tools = Tools("/")
    assert tools.read_file(str(tmp_path / "a.txt")) == "needle here\n"
    assert tools.read_file(str(tmp_path / "a.txt").lstrip("/")) == "needle here\n"
    assert "a.txt" in tools.list_dir(str(tmp_path)).splitlines()
    rel = str(tmp_path / "a.txt").lstrip("/")
    assert grep("/", [tmp_path]).run("needle") == f"1 match in 1 file, first: {rel}:1"


# -- a symlink swapped in while the tools read (the race) ------------------------------

class Swapper(threading.Thread):
    """Replaces ``path`` again and again by ``make_inside()`` or a symlink to ``outside``.

    A file is replaced atomically (the name always exists); a directory,
    which no rename can replace, is moved aside first.
    """

    def __init__(self, path, outside, make_inside, limit=20_000):
        super().__init__(daemon=True)
        self.path, self.outside, self.make_inside, self.limit = path, outside, make_inside, limit
        self.stop = threading.Event()
        self.swaps = 0
        self.error = None

    def run(self):
        try:
            self._swap()
        except Exception as exc:  # seen by __exit__: a broken swapper would prove nothing
            self.error = exc

    def _swap(self):
        spare = self.path.with_name(self.path.name + ".new")
        while not self.stop.is_set() and self.swaps < self.limit:
            if self.swaps % 2:
                self.make_inside(spare)
            else:
                spare.symlink_to(self.outside)
            if self.make_inside is _inside_file:
                os.replace(spare, self.path)
            else:
                aside = self.path.with_name(self.path.name + ".old")
                os.rename(self.path, aside)
                os.rename(spare, self.path)
                if aside.is_symlink():
                    aside.unlink()
                else:
                    shutil.rmtree(aside)
            self.swaps += 1

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.join(timeout=60)
        assert not self.is_alive() and self.error is None, self.error


def _inside_file(path):
    path.write_text("INSIDE\n")


def _inside_dir(path):
    path.mkdir()
    (path / "passwd").write_text("INSIDE\n")


def race(read, rounds=1500):
    """Call ``read()`` ``rounds`` times; return the texts it gave and how many calls were refused."""
    seen, refusals = [], 0
    for _ in range(rounds):
        try:
            seen.append(read())
        except Exception as exc:  # refused, swapped or gone: the safe outcomes
            assert SECRET not in str(exc)
            refusals += 1
    return seen, refusals


@pytest.mark.sqlite_only  # no store involved
@pytest.mark.parametrize("swapped, make_inside, name, target", [
    ("x", _inside_file, "x", "passwd"),  # x: a file, or a symlink to outside/passwd
    ("d", _inside_dir, "d/passwd", "."),  # d: a directory, or a symlink to outside/
], ids=["file", "directory"])
def test_a_symlink_swapped_in_during_reads_is_never_followed_out(world, swapped, make_inside, name, target):
    work, outside = world
    path = work / swapped
    make_inside(path)
    tools = Tools(work)
    before = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)  # switch threads often: the swaps land between the reader's steps
    try:
        with Swapper(path, outside / target, make_inside):
            outcomes = [race(lambda: tools.read_file(name)),
                        race(lambda: tools.grep("root|INSIDE", swapped), rounds=500),
                        race(lambda: grep(work, [path]).run("INSIDE"), rounds=500)]
    finally:
        sys.setswitchinterval(before)
    seen = [text for texts, _ in outcomes for text in texts]
    assert not [text for text in seen if "TOPSECRET" in text or "root:" in text]
    # Both states were met: the inside file was read, the symlink out refused (or not found).
    assert any("INSIDE" in text for text in seen) and sum(n for _, n in outcomes) > 0


# -- special files: skipped, never blocking --------------------------------------------

CHILD = textwrap.dedent('''\
    import json, resource, sys
    resource.setrlimit(resource.RLIMIT_AS, (2 << 30, 2 << 30))  # a read of /dev/zero for ever stops here
    from brain_jobs import config, executors
    from brain_jobs.executors import Context
    from brain_jobs.executors.anthropic_api import Tools

    workdir, tree = sys.argv[1], sys.argv[2]
    def attempt(call):
        try:
            return call()
        except Exception as exc:
            return f"{type(exc).__name__}: {exc}"
    def grep(files):
        ctx = Context(job_id="abc123", workdir=workdir, files=files, settings=config.resolve({}))
        return attempt(lambda: executors.create("grep", ctx).run("needle"))
    tools = Tools(workdir)
    out = {"grep tree": grep([tree]),
           "grep fifo": grep([tree + "/fifo"]),
           "grep zero": grep([tree + "/zero"]),
           "tools grep": attempt(lambda: tools.grep("needle", tree)),
           "tools fifo": attempt(lambda: tools.read_file(tree + "/fifo")),
           "tools sock": attempt(lambda: tools.read_file(tree + "/sock")),
           "tools zero": attempt(lambda: tools.read_file(tree + "/zero"))}
    print(json.dumps(out))
''')


def run_bounded_child(workdir, tree, timeout=60):
    """Run CHILD; a hang fails the test (the child is killed), it does not hang the suite."""
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    try:
        proc = subprocess.run([sys.executable, "-c", CHILD, str(workdir), str(tree)], capture_output=True,
                              text=True, timeout=timeout, env=env, cwd=str(ROOT))
    except subprocess.TimeoutExpired:
        pytest.fail(f"an executor blocked on a special file for {timeout}s")
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


@pytest.mark.sqlite_only  # no store involved
@pytest.mark.parametrize("workdir", ["tree", "/"])
def test_fifos_sockets_and_devices_are_skipped_without_blocking(tmp_path, workdir):
    tree = tmp_path / "t"
    tree.mkdir()
    (tree / "a.txt").write_text("needle\n")
    os.mkfifo(tree / "fifo")  # no writer: an open() for reading would wait for ever
    with socket.socket(socket.AF_UNIX) as s:
        s.bind(str(tree / "sock"))
    (tree / "zero").symlink_to("/dev/zero")  # inside when the working directory is /
    out = run_bounded_child(tree if workdir == "tree" else "/", tree)
    shown = "a.txt" if workdir == "tree" else str(tree / "a.txt").lstrip("/")
    zero = "outside the working directory" if workdir == "tree" else "not a regular file"
    # Special files are skipped without a word; a symlink out is named (here /dev/zero, outside the tree).
    tail = "; unreadable: zero (outside the working directory)" if workdir == "tree" else ""
    assert out["grep tree"] == f"1 match in 1 file, first: {shown}:1{tail}"
    fifo = "fifo" if workdir == "tree" else str(tree / "fifo").lstrip("/")
    assert out["grep fifo"] == f"Failed: refused: {fifo} is not a regular file"
    assert out["grep zero"].startswith("Failed: refused: ") and out["grep zero"].endswith(zero)
    assert out["tools grep"] == f"{shown}:1: needle"
    assert out["tools fifo"].endswith("is not a regular file")
    assert out["tools sock"].endswith("is not a regular file")
    assert out["tools zero"].endswith(zero)


SWAP_AFTER_CHECK = textwrap.dedent('''\
    import json, os, sys
    from brain_jobs import config, executors
    from brain_jobs.executors import Context, files
    from brain_jobs.executors.anthropic_api import Tools

    work, outside = sys.argv[1], sys.argv[2]
    path, spare = os.path.join(work, "x"), os.path.join(work, "x.new")
    swap_in = None
    examine = files._lstat
    def examine_then_swap(d, name):
        """The attacker's best moment: right after x was examined, before it is opened."""
        st = examine(d, name)
        if name == "x" and swap_in:
            os.mkfifo(spare) if swap_in == "fifo" else os.symlink(outside, spare)
            os.replace(spare, path)
        return st
    files._lstat = examine_then_swap

    tools = Tools(work)
    grep = executors.create("grep", Context(job_id="abc123", workdir=work, files=[path], settings=config.resolve({})))
    out = {}
    for swap_in in ("fifo", "link"):
        for name, call in (("read_file", lambda: tools.read_file("x")), ("grep", lambda: grep.run("INSIDE"))):
            with open(spare, "w") as f:
                f.write("INSIDE\\n")
            os.replace(spare, path)
            try:
                out[f"{name} {swap_in}"] = call()
            except Exception as exc:
                out[f"{name} {swap_in}"] = str(exc)
    print(json.dumps(out))
''')


@pytest.mark.sqlite_only  # no store involved
def test_a_fifo_or_symlink_swapped_in_after_the_check_is_refused_without_blocking(world):
    work, outside = world
    try:
        proc = subprocess.run([sys.executable, "-c", SWAP_AFTER_CHECK, str(work), str(outside / "passwd")],
                              capture_output=True, text=True, timeout=60, env=dict(os.environ, PYTHONPATH=str(ROOT)),
                              cwd=str(ROOT))
    except subprocess.TimeoutExpired:
        pytest.fail("opening a FIFO swapped in after the check blocked for 60s")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == {
        f"{name} {swap_in}": "refused: x is being changed (swapped while opened)"
        for swap_in in ("fifo", "link") for name in ("read_file", "grep")}


# -- the grep executor: named paths and walked trees -----------------------------------

@pytest.mark.sqlite_only  # no store involved
def test_grep_refuses_named_paths_outside_and_reports_links_out_of_a_tree(world):
    work, outside = world
    for path in (outside / "passwd", work / ".." / "outside" / "passwd"):
        ctx_path = os.path.normpath(path)  # as the runner and the worker make them
        with pytest.raises(InvalidInput, match=f"refused: {ctx_path} is outside the working directory"):
            grep(work, [ctx_path]).check()
        with pytest.raises(Failed, match="outside the working directory"):
            grep(work, [ctx_path]).run("TOPSECRET")
    for name in ("link", "abslink", "door"):
        grep(work, [work / name]).check()  # inside by its name: refused when opened
        with pytest.raises(Failed, match=f"^refused: {name} is outside the working directory$"):
            grep(work, [work / name]).run("TOPSECRET")
    assert grep(work, [work / "src"]).run("TOPSECRET") == (
        "no matches in 2 files; unreadable: src/escape (outside the working directory)")
    assert grep(work, [work / "src"]).run("users") == (
        "3 matches in 2 files, first: src/app.py:1; unreadable: src/escape (outside the working directory)")
    assert grep(work, [work / "alias"]).run("users") == "1 match in 1 file, first: alias:1"


# -- files.Root itself: a directory moved out mid-walk; the portable fallback -----------

@pytest.mark.sqlite_only  # no store involved
@pytest.mark.skipif(not files._PROC, reason="the check through /proc/self/fd is Linux's")
def test_a_directory_moved_out_during_a_walk_is_not_read_from(world):
    work, outside = world
    (work / "d").mkdir()
    (work / "d" / "a.txt").write_text("INSIDE\n")
    (work / "d" / "b.txt").write_text(SECRET + "\n")
    walk = files.Root(work).walk("d")
    first = next(walk)
    assert (first.path, first.file.read()) == ("d/a.txt", b"INSIDE\n")
    first.file.close()
    os.rename(work / "d", outside / "d")  # the walk still holds the directory's descriptor
    second = next(walk)
    assert (second.path, second.file, second.problem) == ("d/b.txt", None, "outside the working directory")
    walk.close()


@pytest.mark.sqlite_only  # no store involved
def test_without_dir_fd_every_symlink_is_refused(world, monkeypatch):
    work, outside = world
    monkeypatch.setattr(files, "_AT", False)  # as on a platform that cannot open relative to a directory
    root = files.Root(work)
    with root.open("src/app.py") as f:
        assert f.read().startswith(b"def users()")
    for path in ("alias", "link", "srcdir/app.py"):
        assert refused(lambda: root.open(path)) == (
            f"refused: {path} is reached through a symlink, which this platform cannot follow safely")
    assert "outside the working directory" in refused(lambda: root.open("../outside/passwd"))
    os.mkfifo(work / "fifo")
    assert refused(lambda: root.open("fifo")) == "refused: fifo is not a regular file"
    assert [(e.path, e.problem) for e in root.walk("src")] == [
        ("src/app.py", ""), ("src/escape", "reached through a symlink, which this platform cannot follow safely"),
        ("src/up", "reached through a symlink, which this platform cannot follow safely")]
    assert root.list("src") == [("app.py", False), ("escape", False), ("up", False)]


# -- through the processes a user starts -----------------------------------------------

def test_a_grep_worker_reads_nothing_a_job_names_outside_its_workdir(brain, world, db):
    work, outside = world
    named = [str(outside / "passwd"), "../outside/passwd", "../../../../../../../../" + str(outside / "passwd"),
             "link", "door/passwd", "src"]
    created = {}
    for files in named:
        job = brain.json("job", "create", "--distributed", "--ttl", "300", "--prompt", "p", "--file", files,
                         "--subtask", "TOPSECRET")["job_id"]
        brain.json("job", "dispatch", job, "--executor", "grep", "--pool")
        created[files] = job
    proc = subprocess.run([sys.executable, str(BRAIN), "worker", "--executor", "grep", "--workdir", str(work),
                           "--drain"], cwd=str(outside), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    results = {files: jobs.get_job(job, db=db)["sub_tasks"][0] for files, job in created.items()}
    assert all("TOPSECRET" not in s["result"] and "match in" not in s["result"] for s in results.values()), results
    for files in named[:3]:
        assert results[files]["status"] == "failed"
        assert results[files]["result"].startswith(f"refused: {outside / 'passwd'} is outside the working directory")
    assert (results["link"]["status"], results["link"]["result"]) == (
        "failed", "refused: link is outside the working directory")
    assert (results["door/passwd"]["status"], results["door/passwd"]["result"]) == (
        "failed", "refused: door/passwd is outside the working directory")
    assert (results["src"]["status"], results["src"]["result"]) == (
        "completed", "no matches in 2 files; unreadable: src/escape (outside the working directory)")


def test_a_detached_grep_runner_is_confined_to_the_dispatch_directory(brain, world, db):
    work, outside = world
    job = brain.json("job", "create", "--distributed", "--ttl", "300", "--prompt", "p",
                     "--file", "../outside/passwd", "--subtask", "TOPSECRET")["job_id"]
    proc = subprocess.run([sys.executable, str(BRAIN), "job", "dispatch", job, "--executor", "grep"], cwd=str(work),
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert proc.stderr.startswith(f"brain: error: refused: {outside / 'passwd'} is outside the working directory")
    assert [s["status"] for s in jobs.get_job(job, db=db)["sub_tasks"]] == ["pending"]  # nothing changed

    job = brain.json("job", "create", "--distributed", "--ttl", "300", "--prompt", "p",
                     "--file", "link", "--subtask", "TOPSECRET")["job_id"]
    proc = subprocess.run([sys.executable, str(BRAIN), "job", "dispatch", job, "--executor", "grep"], cwd=str(work),
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    row = wait_until(lambda: finished(job, db), timeout=60, what="grep runner")
    assert (row["sub_tasks"][0]["status"], row["sub_tasks"][0]["result"]) == (
        "failed", "refused: link is outside the working directory")

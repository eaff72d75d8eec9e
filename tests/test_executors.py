"""The grep, shell, http and claude executors, each against the real thing.

Tests that touch no store are ``sqlite_only`` (they would run twice for nothing).

http runs against a real server on loopback; claude against a stand-in
``claude`` script on PATH that records its arguments; shell runs real
commands; grep reads real files. Every wait is bounded.
"""

import io
import json
import os
import random
import re
import socket
import stat
import subprocess
import sys
import threading
import time

import pytest

from brain_jobs import config, executors, jobs, runner
from brain_jobs.executors import Context, Failed
from brain_jobs.errors import InvalidInput
from tests.conftest import BRAIN, ROOT
from tests.test_runner_support import LocalHTTP, cli, finished, wait_until


def make(name, tmp_path, files=(), allow_shell=False, **settings):
    ctx = Context(job_id="abc123", workdir=str(tmp_path), files=[str(tmp_path / f) for f in files],
                  settings=config.resolve(settings), allow_shell=allow_shell)
    return executors.create(name, ctx)


# -- grep --------------------------------------------------------------------------

@pytest.fixture
def tree(tmp_path):
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "app.py").write_text("import os\n\ndef users():\n    return 'users'\n")
    (tmp_path / "src" / "db.py").write_text("# users table\nUSERS = []\n")
    (tmp_path / "src" / "blob.bin").write_bytes(b"users\x00\x01\x02")
    (tmp_path / "src" / ".hidden").write_text("users users\n")
    (tmp_path / "README").write_text("nothing here\n")
    return tmp_path


@pytest.mark.sqlite_only  # no store involved
def test_grep_counts_matches_and_names_the_first_file_line(tree):
    grep = make("grep", tree, files=["src"])
    assert grep.run("users") == "3 matches in 2 files, first: src/app.py:3"
    assert grep.run("USERS") == "1 match in 1 file, first: src/db.py:2"


@pytest.mark.sqlite_only  # no store involved
def test_grep_reports_no_matches_as_an_answer(tree):
    assert make("grep", tree, files=["src", "README"]).run("orders") == "no matches in 3 files"


@pytest.mark.sqlite_only  # no store involved
def test_grep_fails_on_a_missing_file_and_needs_files(tree):
    with pytest.raises(Failed, match="no such file: nope.txt"):
        make("grep", tree, files=["nope.txt"]).run("users")
    with pytest.raises(InvalidInput, match="--file"):
        make("grep", tree).check()


@pytest.mark.sqlite_only  # no store involved
def test_grep_counts_as_bytes_count_does_line_by_line_whatever_the_chunk(monkeypatch):
    """Read a piece at a time, the count and the first line are those of reading whole lines,
    matches across two pieces and self-overlapping queries included."""
    from brain_jobs.executors import grep_search

    def whole_lines(data, needle):
        count, first = 0, None
        for lineno, line in enumerate(io.BytesIO(data), 1):
            count += line.count(needle)
            first = first or (lineno if needle in line else None)
        return count, first

    rng = random.Random(13)
    for _ in range(2000):
        monkeypatch.setattr(grep_search, "CHUNK", rng.choice([1, 2, 3, 5, 8, 64]))
        data = bytes(rng.choice(b"aab\n") for _ in range(rng.randint(0, 200)))
        needle = bytes(rng.choice(b"ab") for _ in range(rng.randint(1, 4)))
        assert grep_search._count(io.BytesIO(data), needle) == whole_lines(data, needle), (data, needle)


@pytest.mark.sqlite_only  # no store involved
def test_grep_reads_a_file_of_one_endless_line_in_bounded_memory(tmp_path):
    """A 192 MB file with no newline (a minified bundle, a runaway log) is searched without
    holding it in memory: the process's peak stays far below the file's size."""
    size = 192 << 20
    with open(tmp_path / "one-line.txt", "wb") as f:
        block = b"x" * (1 << 20)
        for _ in range(size // len(block) - 1):
            f.write(block)
        f.write(b"x" * ((1 << 20) - 6) + b"needle")
    # VmHWM: this process image's peak RSS (ru_maxrss would carry over the forking parent's).
    probe = ("import re, sys; from brain_jobs import config, executors; "
             "ctx = executors.Context(job_id='abc123', workdir=sys.argv[1], files=[sys.argv[1] + '/one-line.txt'], "
             "settings=config.resolve({})); "
             "print(executors.create('grep', ctx).run('needle')); "
             "print(re.search(r'VmHWM:\\s*(\\d+) kB', open('/proc/self/status').read()).group(1))")
    proc = subprocess.run([sys.executable, "-c", probe, str(tmp_path)], capture_output=True, text=True,
                          timeout=120, env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert proc.returncode == 0, proc.stderr
    answer, peak_kb = proc.stdout.splitlines()
    assert answer == "1 match in 1 file, first: one-line.txt:1"
    assert int(peak_kb) * 1024 < size // 3, f"peak RSS {int(peak_kb) // 1024} MB for a {size >> 20} MB line"


def test_grep_uses_the_jobs_data_files_through_the_cli(tree, brain, db):
    job = brain.ok("job", "create", "--distributed", "--ttl", "60", "--prompt", "p", "--file", "src",
                   "--subtask", "users", "--subtask", "import os", "--subtask", "orders").strip()[4:]
    proc = cli("job", "dispatch", job, "--executor", "grep", "--json", cwd=tree)
    assert proc.returncode == 0, proc.stderr
    row = wait_until(lambda: finished(job, db), what="grep runner")
    assert [s["result"] for s in row["sub_tasks"]] == [
        "3 matches in 2 files, first: src/app.py:3", "1 match in 1 file, first: src/app.py:1", "no matches in 2 files"]
    assert all(s["agent_id"].startswith("agent_grep_") for s in row["sub_tasks"])


# -- shell -------------------------------------------------------------------------

def test_shell_needs_the_explicit_opt_in(brain, db, tmp_path):
    marker = tmp_path / "ran"
    job = jobs.create_job_with_subtasks(60, {"prompt": "p"}, [f"touch {marker}"], db=db)
    before = jobs.get_job(job, db=db)
    proc = cli("job", "dispatch", job, "--executor", "shell", cwd=tmp_path)
    assert proc.returncode == 2
    assert "--allow-shell" in proc.stderr
    assert jobs.get_job(job, db=db)["sub_tasks"] == before["sub_tasks"]  # nothing was dispatched
    time.sleep(0.2)
    assert not marker.exists()
    # Neither the environment nor a config file can opt in for the user.
    (tmp_path / "c.yaml").write_text("executor: shell\n")
    proc = cli("job", "dispatch", job, cwd=tmp_path,
               env={"BRAIN_CONFIG": str(tmp_path / "c.yaml"), "BRAIN_ALLOW_SHELL": "1"})
    assert proc.returncode == 2 and "--allow-shell" in proc.stderr
    assert not marker.exists()


def test_shell_with_opt_in_reports_exit_status_and_first_line(brain, db, tmp_path):
    job = jobs.create_job_with_subtasks(
        60, {"prompt": "p"}, ["echo; echo hello; echo more", "echo oops >&2; exit 3", "pwd"], db=db)
    proc = cli("job", "dispatch", job, "--executor", "shell", "--allow-shell", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    row = wait_until(lambda: finished(job, db), what="shell runner")
    subs = row["sub_tasks"]
    assert (subs[0]["status"], subs[0]["result"]) == ("completed", "exit 0: hello")
    assert (subs[1]["status"], subs[1]["result"]) == ("failed", "exit 3: oops")
    assert subs[2]["result"] == f"exit 0: {os.path.realpath(tmp_path)}"  # runs in the job's directory


@pytest.mark.sqlite_only  # no store involved
def test_shell_starts_nothing_once_the_deadline_has_passed(tmp_path):
    ran = tmp_path / "ran"
    shell = make("shell", tmp_path, allow_shell=True)
    shell.ctx.deadline = time.time() - 1
    with pytest.raises(Failed, match="^timed out: the sub-task's deadline has passed$"):
        shell.run(f"touch {ran}")
    assert not ran.exists()


@pytest.mark.sqlite_only  # no store involved
def test_shell_timeout_kills_the_command(tmp_path):
    """The command and what it started in the background are dead when run() gives up on them."""
    shell = make("shell", tmp_path, allow_shell=True, shell_timeout=0.5)
    pids = tmp_path / "pids"
    with pytest.raises(Failed, match="timed out after 0.5s"):
        shell.run(f"sleep 60 & echo $$ $! > {pids}; sleep 60; echo late")
    for pid in map(int, pids.read_text().split()):
        assert not _alive(pid), pid


def _alive(pid):
    """Whether ``pid`` still runs after up to 10 s of waiting for it to end (a zombie counts as ended)."""
    end = time.monotonic() + 10
    while time.monotonic() < end:
        try:
            with open(f"/proc/{pid}/stat") as f:
                state = f.read().rsplit(")", 1)[1].split()[0]
        except (FileNotFoundError, ProcessLookupError):
            return False
        if state == "Z":
            return False
        time.sleep(0.02)
    return True


@pytest.mark.sqlite_only  # no store involved
def test_a_command_that_floods_its_output_does_not_fill_the_runners_memory(tmp_path):
    """A command's whole output was kept: ``yes`` grew a runner by ~400 MB a second until its
    timeout (the OOM killer's way to stop every other sub-task). Now at most OUTPUT_LIMIT bytes
    of each stream are kept; the rest is read and dropped, and the answer is the same."""
    import resource
    import subprocess

    from brain_jobs.executors import base

    size = 128 << 20
    command = f"echo first; head -c {size} /dev/zero; echo last >&2; head -c {size} /dev/zero >&2"
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    code, out, err = base.run_bounded(command, 60, "the command", shell=True, stderr=subprocess.PIPE)
    grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
    assert code == 0
    assert len(out) < size and len(err) < size
    assert (len(out), len(err)) == (base.OUTPUT_LIMIT, base.OUTPUT_LIMIT)
    assert out.startswith(b"first\n") and err.startswith(b"last\n")
    assert grown * 1024 < size  # far less than one stream's whole output
    shell = make("shell", tmp_path, allow_shell=True)
    assert shell.run(f"echo first; head -c {size} /dev/zero") == "exit 0: first"


# -- http --------------------------------------------------------------------------

@pytest.fixture
def away():
    try:
        server = LocalHTTP(host="127.0.0.2")  # another host on loopback
    except OSError:
        server = LocalHTTP()  # no 127.0.0.2 here: another port is another origin too
    with server:
        yield server


@pytest.fixture
def api(away):
    with LocalHTTP(away_url=away.url) as server:
        yield server


@pytest.mark.sqlite_only  # no store involved
def test_http_results_read_like_the_seed(api, tmp_path):
    http = make("http", tmp_path, base_url=api.url)
    assert http.run("GET /api/users") == "[200 OK] 5 items"
    assert http.run("GET /api/posts") == "[200 OK] 3 items (data)"
    assert http.run("get /health") == "[200 OK] keys: status"
    assert http.run("GET /text") == "[200 OK] hello there"
    assert http.run("POST /auth") == "[201 Created] keys: token"
    assert http.run("GET /redirect-same") == "[200 OK] 5 items"  # same origin: followed
    with pytest.raises(Failed, match=r"^\[404 Not Found\] keys: error$"):
        http.run("GET /nope")
    with pytest.raises(Failed, match=r"^\[500 Internal Server Error\]"):
        http.run("GET /boom")
    with pytest.raises(Failed, match="expected 'METHOD /path'"):
        http.run("Buscar endpoints")
    assert ("POST", "/auth") in api.hits


@pytest.mark.sqlite_only  # no store involved
def test_http_refuses_a_redirect_to_another_host(api, away, tmp_path):
    with pytest.raises(Failed, match=r"\[302 Found\] redirect to another host refused: http://127\.0\.0\.\d+:\d+/stolen"):
        make("http", tmp_path, base_url=api.url).run("GET /redirect-away")
    assert away.hits == []


@pytest.mark.sqlite_only  # no store involved
def test_http_per_request_timeout_and_unreachable_server(api, tmp_path):
    # /slow answers after 3 s: the timeout's own message (not "[200 OK] keys: late") proves it cut the wait.
    with pytest.raises(Failed, match="^timed out after 0.3s"):
        make("http", tmp_path, base_url=api.url, request_timeout=0.3).run("GET /slow")
    with LocalHTTP() as dead:
        url = dead.url
    with pytest.raises(Failed, match="cannot reach"):
        make("http", tmp_path, base_url=url).run("GET /health")


class DripServer:
    """A loopback server that answers one byte every ``pause`` seconds, in the headers or in the body,
    until it is closed: no request to it ends unless the client ends it."""

    def __init__(self, pause=0.2):
        self.pause = pause
        self.stop = threading.Event()
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._drip, args=(conn,), daemon=True).start()

    def _drip(self, conn):
        with conn:
            path = conn.recv(4096).split(b" ")[1]
            head = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nConnection: close\r\n"
            if path == b"/headers":  # a header that never ends
                conn.sendall(head + b"X-Slow: ")
            else:  # headers at once, then a body that never ends
                conn.sendall(head + b"\r\n")
            while not self.stop.wait(self.pause):
                try:
                    conn.sendall(b"b")
                except OSError:
                    return  # the client gave up: what the test wants

    def close(self):
        self.stop.set()
        self.sock.close()


@pytest.mark.sqlite_only  # no store involved
@pytest.mark.parametrize("where", ["headers", "body"])
def test_http_timeout_bounds_the_whole_request_against_a_server_that_drips(tmp_path, where):
    """Each read gets a byte well within the timeout; only a bound on the whole request ends it."""
    server = DripServer()
    try:
        outcome = in_thread(make("http", tmp_path, base_url=server.url, request_timeout=1).run, f"GET /{where}")
    finally:
        server.close()
    assert isinstance(outcome, Failed) and str(outcome) == f"timed out after 1s: GET /{where}"


@pytest.mark.sqlite_only  # no store involved
def test_http_stops_at_the_sub_tasks_deadline_before_its_own_timeout(tmp_path):
    server = DripServer()
    http = make("http", tmp_path, base_url=server.url, request_timeout=600)
    try:
        http.ctx.deadline = time.time() + 1
        outcome = in_thread(http.run, "GET /body")
        http.ctx.deadline = time.time() - 1  # past it: no request is even started
        with pytest.raises(Failed, match="deadline has passed"):
            http.run("GET /body")
    finally:
        server.close()
    assert isinstance(outcome, Failed) and re.fullmatch(r"timed out after (0\.\d+|1)s: GET /body", str(outcome))


def in_thread(fn, *args, timeout=30):
    """What ``fn(*args)`` returned or raised, run in a thread; fails the test if it has not ended in ``timeout`` s."""
    box = []

    def target():
        try:
            box.append(fn(*args))
        except BaseException as exc:  # handed to the test
            box.append(exc)

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(timeout)
    assert not thread.is_alive(), f"{fn} still running after {timeout}s"
    return box[0]


def test_http_needs_a_base_url(brain, db):
    job = jobs.create_job_with_subtasks(60, {"prompt": "p"}, ["GET /health"], db=db)
    proc = brain("job", "dispatch", job, "--executor", "http")
    assert proc.returncode == 2 and "--base-url" in proc.stderr
    assert jobs.get_job(job, db=db)["sub_tasks"][0]["status"] == "pending"


def test_http_end_to_end_from_a_plain_terminal(api, brain, db):
    """The issue's 'done when': dispatch returns at once, watch sees the end, consolidate has every result."""
    job = brain.ok("job", "create", "--distributed", "--ttl", "300", "--prompt", "Validate endpoints",
                   "--subtask", "GET /health", "--subtask", "POST /auth", "--subtask", "GET /api/users",
                   "--subtask", "GET /boom").strip()[4:]
    # That dispatch returns while the work runs is proven at a gate in test_runner.py (no stopwatch here).
    out = brain.ok("job", "dispatch", job, "--executor", "http", "--base-url", api.url)
    # One line: what an agent reads is context it pays for (the log is in the history).
    assert out.startswith(f"job_{job}: 4 sub-tasks running with the http executor (runner pid ") and "\n" not in out[:-1]
    assert "runners/" in brain.ok("job", "history", job)
    watch = brain("job", "watch", job, timeout=30)
    assert watch.returncode == 1  # GET /boom failed, alone
    summary = brain.json("job", "consolidate", job)
    assert (summary["completed"], summary["failed"]) == (3, 1)
    assert [r["result"] for r in summary["results"]] == [
        "[200 OK] keys: status", "[201 Created] keys: token", "[200 OK] 5 items", "[500 Internal Server Error] keys: error"]


# -- claude --------------------------------------------------------------------------

STAND_IN = """#!{python}
import json, os, sys
with open(os.environ["CLAUDE_RECORD"], "a") as f:
    f.write(json.dumps({{"argv": sys.argv[1:], "cwd": os.getcwd(), "env": dict(os.environ),
                        "db": os.environ.get("BRAIN_DATABASE_URL") or os.environ.get("BRAIN_DB")}}) + "\\n")
prompt = sys.argv[sys.argv.index("-p") + 1]
if "broken" in prompt:
    print("claude: cannot read its settings", file=sys.stderr)
    sys.exit(1)
print(json.dumps({{"type": "result", "subtype": "success", "is_error": False, "api_error_status": None,
                  "result": "Found 42 users\\nin db.py", "total_cost_usd": 0.0123, "permission_denials": [],
                  "usage": {{"input_tokens": 40, "cache_creation_input_tokens": 1000,
                            "cache_read_input_tokens": 3000, "output_tokens": 12}}}}))
"""
# A session's Bash tool marks its commands with these (tests/host showed them);
# a worker started from there must not pass for that session's child.
SESSION_ENV = {"CLAUDECODE": "1", "CLAUDE_CODE_SESSION_ID": "7d3e", "CLAUDE_CODE_CHILD_SESSION": "1",
               "CLAUDE_CODE_CHILD_NOTES_DIR": "/tmp/notes", "CLAUDE_CODE_MESSAGING_SOCKET": "/tmp/s.sock",
               "CLAUDE_CODE_MESSAGING_TOKEN": "t0k", "CLAUDE_CODE_ENTRYPOINT": "sdk-cli", "CLAUDE_PID": "1"}


@pytest.fixture
def stand_in(tmp_path):
    bindir = tmp_path / "fakebin"
    bindir.mkdir()
    script = bindir / "claude"
    script.write_text(STAND_IN.format(python=sys.executable))
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    record = tmp_path / "claude-calls.jsonl"
    return {"PATH": f"{bindir}{os.pathsep}{os.environ['PATH']}", "CLAUDE_RECORD": str(record)}, record


def test_claude_runs_claude_p_per_subtask_with_the_worker_instructions(stand_in, brain, db, tmp_path):
    env, record = stand_in
    job = brain.ok("job", "create", "--distributed", "--ttl", "300", "--prompt", "p", "--file", "db.py",
                   "--subtask", "users", "--subtask", "broken thing").strip()[4:]
    proc = cli("job", "dispatch", job, "--executor", "claude", "--model", "sonnet", env={**env, **SESSION_ENV},
               cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    row = wait_until(lambda: finished(job, db), what="claude runner")
    ok, bad = row["sub_tasks"]
    assert (ok["status"], ok["result"]) == ("completed", "Found 42 users in db.py")
    # Every input token counts, cached or not; the cost is the CLI's own figure.
    assert ok["usage"] == {"input_tokens": 4040, "output_tokens": 12, "cost_usd": 0.0123}
    assert (bad["status"], bad["result"]) == ("failed", "claude exited 1: claude: cannot read its settings")
    calls = [json.loads(line) for line in record.read_text().splitlines()]
    assert len(calls) == 2
    (call,) = [c for c in calls if "Search users" in c["argv"][c["argv"].index("-p") + 1]]
    argv = call["argv"]
    prompt = argv[argv.index("-p") + 1]
    assert prompt.startswith("Search users in db.py. Return ONLY the result (max 200 chars).\nReport: ")
    # The runner's credential for the sub-task (not its public label), which its report used too.
    assert re.search(rf"brain job update {job} sub_1 --agent-id [0-9a-f]{{32}} --status completed", prompt)
    assert ok["agent_id"] not in prompt
    assert argv[argv.index("--model") + 1] == "claude-sonnet-4-5"
    assert "200 characters" in argv[argv.index("--append-system-prompt") + 1]
    assert argv[argv.index("--tools") + 1] == "Read,Grep,Glob,Bash"
    assert argv[argv.index("--allowedTools") + 1] == "Bash(brain job update:*)"
    assert argv[argv.index("--permission-prompts") + 1] == "none"
    assert argv[argv.index("--output-format") + 1] == "json"
    assert "--safe-mode" in argv and "--no-session-persistence" in argv
    assert call["cwd"] == os.path.realpath(tmp_path) and call["db"] == db
    assert not set(SESSION_ENV) & set(call["env"]), "the worker passed for the dispatching session's child"


def test_claude_missing_from_path_is_a_clear_error(brain, db, tmp_path):
    job = jobs.create_job_with_subtasks(60, {"prompt": "p"}, ["users"], db=db)
    proc = brain("job", "dispatch", job, "--executor", "claude", env={"PATH": str(tmp_path)})
    assert proc.returncode == 1
    assert "`claude` is not on PATH" in proc.stderr and "npm install -g @anthropic-ai/claude-code" in proc.stderr
    assert jobs.get_job(job, db=db)["sub_tasks"][0]["status"] == "pending"


def test_a_worker_that_reports_itself_keeps_its_report(stand_in, db, tmp_path, monkeypatch):
    """When `claude -p` reports through brain job update, the runner does not overwrite it, and still
    stores what the run cost."""
    env, _ = stand_in
    script = tmp_path / "fakebin" / "claude"
    script.write_text(f"""#!{sys.executable}
import re, subprocess, sys
prompt = sys.argv[sys.argv.index("-p") + 1]
job, sub, agent = re.search(r"brain job update (\\w+) (sub_\\d+) --agent-id (\\S+)", prompt).groups()
subprocess.run([{sys.executable!r}, {str(BRAIN)!r}, "job", "update", job, sub,
                "--agent-id", agent, "--status", "completed", "--result", "reported by the worker"], check=True)
print('{{"type": "result", "is_error": false, "result": "a longer final message", "total_cost_usd": 0.25, '
      '"usage": {{"input_tokens": 9, "output_tokens": 3}}}}')
""")
    job = jobs.create_job_with_subtasks(60, {"prompt": "p"}, ["users"], db=db)
    monkeypatch.setenv("PATH", env["PATH"])
    failed = runner.run_here(job, "claude", settings=config.resolve(), workdir=str(tmp_path), db=db)
    assert failed == 0
    sub = jobs.get_job(job, db=db)["sub_tasks"][0]
    assert sub["result"] == "reported by the worker"
    assert sub["usage"] == {"input_tokens": 9, "output_tokens": 3, "cost_usd": 0.25}  # stored after the report

"""``brain worker`` and the worker pool, on every backend.

Real worker processes (the CLI, as a user starts it) run a scripted
executor of this test's own, written to a temp dir: each query says what
to do (``sleep 0.01``, ``hang-once 60``: hang on the first attempt only,
``fail``). Every wait is bounded.
"""

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time

import pytest

from conftest import BRAIN, ROOT
from brain_jobs import jobs, pool
from brain_jobs.errors import InvalidInput, InvalidTransition, Refused

EXECUTOR = textwrap.dedent('''\
    import os, time
    from brain_jobs.executors import Executor, Failed

    class Scripted(Executor):
        name = "scripted"

        def run(self, query, task=None):
            kind, _, arg = query.partition(" ")
            if kind == "fail":
                raise Failed("asked to fail")
            if kind == "hang-once" and task["attempt"] == 1 or kind == "hang":
                with open(os.environ["HANG_MARK"] + "." + task["sub_task_id"], "w") as f:
                    f.write(str(os.getpid()))
                time.sleep(float(arg))
            elif kind == "sleep":
                time.sleep(float(arg))
            return f"done {query} by {os.getpid()}"
''')
SCRIPTED = "wexec:Scripted"


@pytest.fixture
def scripted(tmp_path, monkeypatch):
    """Makes ``wexec:Scripted`` importable by worker processes; returns the hang-mark prefix."""
    lib = tmp_path / "lib"
    lib.mkdir()
    (lib / "wexec.py").write_text(EXECUTOR)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(lib), str(ROOT)]))
    monkeypatch.syspath_prepend(str(lib))
    mark = tmp_path / "hang"
    monkeypatch.setenv("HANG_MARK", str(mark))
    return mark


def start_worker(*args, tmp_path):
    """A ``brain worker`` process; its stderr (the log) goes to a file, read with ``log_of``."""
    path = tmp_path / f"worker-{time.monotonic_ns()}.log"
    with open(path, "w") as log:
        proc = subprocess.Popen([sys.executable, str(BRAIN), "worker", *map(str, args)], stdout=subprocess.DEVNULL,
                                stderr=log, env=dict(os.environ))
    proc.log_path = path
    return proc


def log_of(proc):
    return proc.log_path.read_text()


def wait_for(predicate, timeout, what):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def stop_all(procs):
    for p in procs:
        if p.poll() is None:
            p.kill()
        p.wait(timeout=10)


def reports(history, sub_task_id=None):
    return [e for e in history if e["event"] == "report" and (sub_task_id is None or e["sub_task_id"] == sub_task_id)]


# -- the rules, through the API (no processes) ---------------------------------

def test_claim_renew_reclaim_and_refuse_the_lost_worker(fake_clock):
    job = jobs.create_job_with_subtasks(600, {"prompt": "p"}, ["a", "b"])
    assert pool.queue_job(job, "grep", files=["x"])["sub_tasks"] == ["sub_1", "sub_2"]
    first = pool.claim("grep", "host-a:1", lease=10)
    assert (first["sub_task_id"], first["attempt"], first["files"]) == ("sub_1", 1, ["x"])
    assert pool.claim("other", "host-a:1", lease=10) is None  # another pool's workers see nothing
    fake_clock.advance(8)
    assert pool.renew(job, {"sub_1": first["agent_id"]}, lease=10) == []
    fake_clock.advance(8)  # 16 s after the claim, but renewed at 8 s: still held
    second = pool.claim("grep", "host-b:2", lease=10)
    assert second["sub_task_id"] == "sub_2"
    assert pool.claim("grep", "host-b:2", lease=10) is None
    fake_clock.advance(11)  # host-a stopped renewing: sub_1 (and sub_2's lease) ran out
    again = pool.claim("grep", "host-b:2", lease=10)
    assert (again["sub_task_id"], again["attempt"]) == ("sub_1", 2)
    assert again["agent_id"] != first["agent_id"]
    with pytest.raises(Refused, match="superseded"):
        jobs.update_subtask_status(job, "sub_1", "completed", "late", agent_id=first["agent_id"])
    assert pool.renew(job, {"sub_1": first["agent_id"]}, lease=10) == ["sub_1"]
    jobs.update_subtask_status(job, "sub_1", "completed", "ok", agent_id=again["agent_id"])
    history = jobs.get_history(job)
    assert [e["event"] for e in history if e.get("sub_task_id") == "sub_1"] == [
        "claim", "lease_expired", "claim", "refused", "report"]
    sub_1 = jobs.get_job_subtasks(job)[0]
    assert (sub_1["status"], sub_1["result"], sub_1["past_agents"]) == ("completed", "ok", [first["label"]])


def test_a_sub_task_whose_workers_keep_dying_fails_instead_of_looping(fake_clock):
    job = jobs.create_job_with_subtasks(600, {"prompt": "p"}, ["poison"])
    pool.queue_job(job, "http")
    for attempt in (1, 2, 3):
        claim = pool.claim("http", "w", lease=5)
        assert claim["attempt"] == attempt
        fake_clock.advance(6)
    assert pool.claim("http", "w", lease=5) is None
    sub = jobs.get_job_subtasks(job)[0]
    assert sub["status"] == "failed" and sub["result"].startswith("abandoned: 3 workers stopped")
    assert jobs.get_job(job)["status"] == "failed"
    assert [e["event"] for e in jobs.get_history(job)][-3:] == ["lease_expired", "abandoned", "consolidated"]


def test_release_puts_the_sub_task_back_in_the_pool_under_a_new_identity():
    job = jobs.create_job_with_subtasks(600, {"prompt": "p"}, ["a"])
    pool.queue_job(job, "http")
    claim = pool.claim("http", "w1", lease=30)
    pool.release(job, "sub_1", claim["agent_id"], "worker stopped (SIGTERM)")
    sub = jobs.get_job_subtasks(job)[0]
    assert (sub["status"], sub["agent_id"], sub["pool"]) == ("pending", None, "http")
    with pytest.raises(Refused, match="does not hold"):
        pool.release(job, "sub_1", claim["agent_id"], "twice")
    again = pool.claim("http", "w2", lease=30)
    assert again["sub_task_id"] == "sub_1" and again["agent_id"] != claim["agent_id"]
    with pytest.raises(Refused, match="superseded"):
        jobs.update_subtask_status(job, "sub_1", "completed", "late", agent_id=claim["agent_id"])


def test_queue_refuses_what_it_cannot_queue():
    normal = jobs.create_job(60, {"prompt": "p"})
    with pytest.raises(InvalidTransition, match="normal job"):
        pool.queue_job(normal, "grep")
    job = jobs.create_job_with_subtasks(600, {"prompt": "p"}, ["a"])
    for bad in ("host", "../x", "", "a b", "x" * 65):
        with pytest.raises(InvalidInput, match="worker pool"):
            pool.queue_job(job, bad)
    with pytest.raises(InvalidInput, match="--allow-shell"):
        pool.queue_job(job, "shell")
    pool.queue_job(job, "grep")
    with pytest.raises(InvalidTransition, match="already queued for the grep pool"):
        pool.queue_job(job, "grep")
    assert pool.queue_job(job, "http")["pool"] == "http"  # moved to another pool
    pool.claim("http", "w", lease=30)
    with pytest.raises(InvalidTransition, match="no pending sub-tasks"):
        pool.queue_job(job, "grep")


def test_host_dispatch_and_retry_take_sub_tasks_out_of_the_pool(fake_clock):
    job = jobs.create_job_with_subtasks(600, {"prompt": "p"}, ["a", "b"])
    pool.queue_job(job, "http")
    claim = pool.claim("http", "w", lease=5)
    jobs.update_subtask_status(job, "sub_1", "failed", "boom", agent_id=claim["agent_id"])
    jobs.retry_subtasks(job, ["sub_1"])
    jobs.dispatch_job(job)  # the host takes both pending sub-tasks
    assert all("pool" not in s and "lease_until" not in s for s in jobs.get_job_subtasks(job))
    fake_clock.advance(60)
    assert pool.claim("http", "w", lease=5) is None  # no stale lease makes a host sub-task claimable


# -- worker processes -------------------------------------------------------------

def test_three_workers_drain_120_sub_tasks_and_one_is_killed_mid_sub_task(scripted, tmp_path):
    queries = ["sleep 0.005"] * 120
    queries[6] = "hang-once 60"  # whoever claims sub_7 first hangs in it: that worker is killed
    job = jobs.create_job_with_subtasks(600, {"prompt": "fan out"}, queries)
    pool.queue_job(job, SCRIPTED)
    workers = [start_worker("--executor", SCRIPTED, "--concurrency", 2, "--lease", 1.5, "--poll", 0.5, "--drain",
                            tmp_path=tmp_path) for _ in range(3)]
    try:
        mark = scripted.parent / (scripted.name + ".sub_7")
        victim = int(wait_for(lambda: mark.exists() and mark.read_text(), 30, "sub_7 to be claimed"))
        assert victim in [w.pid for w in workers]
        os.kill(victim, signal.SIGKILL)
        for w in workers:
            w.wait(timeout=60)  # a bound for a hang; how fast workers drain is bench/ row 4's measure
    finally:
        stop_all(workers)
    survivors = [w for w in workers if w.pid != victim]
    assert [w.returncode for w in survivors] == [0, 0], [log_of(w) for w in survivors]
    row = jobs.get_job(job)
    assert row["status"] == "completed", jobs.consolidate_subtask_results(job)
    assert all(s["status"] == "completed" for s in row["sub_tasks"])
    history = row["history"]
    # Nothing completed twice: one accepted report per sub-task, and it came from the last identity.
    for sub in row["sub_tasks"]:
        done = reports(history, sub["sub_task_id"])
        assert len(done) == 1 and done[0]["agent_id"] == sub["agent_id"], sub
    # What the killed worker held (claimed, never reported) was reclaimed under new identities, and only that.
    claimed = {e["agent_id"]: e["sub_task_id"] for e in history
               if e["event"] == "claim" and e["worker"].endswith(f":{victim}")}
    reported = {e["agent_id"] for e in history if e["event"] == "report"}
    held = {sub: agent for agent, sub in claimed.items() if agent not in reported}
    assert "sub_7" in held
    expired = {e["sub_task_id"]: e["agent_id"] for e in history if e["event"] == "lease_expired"}
    assert expired == held
    for sub_task_id, lost in held.items():
        sub = row["sub_tasks"][int(sub_task_id[4:]) - 1]
        assert sub["attempt"] == 2 and sub["past_agents"] == [lost] and not sub["worker"].endswith(f":{victim}")
    assert sum(e["event"] == "claim" for e in history) == 120 + len(held)
    assert sum(e["event"] == "consolidated" for e in history) == 1
    # A report under the lost worker's (public) label is refused as superseded; only its
    # credential, which died with it, would have put the refusal on record.
    with pytest.raises(Refused, match="superseded"):
        jobs.update_subtask_status(job, "sub_7", "completed", "late", agent_id=held["sub_7"])
    assert jobs.get_history(job) == history


def test_sigterm_finishes_what_it_can_and_releases_the_rest(scripted, tmp_path):
    job = jobs.create_job_with_subtasks(600, {"prompt": "p"}, ["sleep 0.6", "hang 600"])
    pool.queue_job(job, SCRIPTED)
    worker = start_worker("--executor", SCRIPTED, "--concurrency", 2, "--grace", 2, "--poll", 0.5,
                          tmp_path=tmp_path)
    try:
        wait_for(lambda: (scripted.parent / (scripted.name + ".sub_2")).exists(), 30, "both sub-tasks to run")
        assert jobs.get_job_subtasks(job)[0]["status"] == "running"
        worker.send_signal(signal.SIGTERM)
        worker.wait(timeout=60)  # ends long before sub_2's 600 s: it gave sub_2 up after the grace period
    finally:
        stop_all([worker])
    assert worker.returncode == 0, log_of(worker)
    sub_1, sub_2 = jobs.get_job_subtasks(job)
    assert sub_1["status"] == "completed"  # finished within the grace period
    assert (sub_2["status"], sub_2["agent_id"], sub_2["pool"]) == ("pending", None, SCRIPTED)  # released
    assert len(sub_2["past_agents"]) == 1
    assert [e["reason"] for e in jobs.get_history(job) if e["event"] == "release"] == ["worker stopped (SIGTERM)"]
    log = log_of(worker)
    assert "released back to the pool" in log and "1 completed" in log
    # The released sub-task is claimable again by the next worker.
    assert pool.claim(SCRIPTED, "next", lease=5)["sub_task_id"] == "sub_2"


def test_a_second_signal_releases_at_once(scripted, tmp_path):
    job = jobs.create_job_with_subtasks(600, {"prompt": "p"}, ["hang 60"])
    pool.queue_job(job, SCRIPTED)
    worker = start_worker("--executor", SCRIPTED, "--grace", 60, "--poll", 0.5, tmp_path=tmp_path)
    try:
        wait_for(lambda: (scripted.parent / (scripted.name + ".sub_1")).exists(), 30, "the sub-task to run")
        worker.send_signal(signal.SIGTERM)
        wait_for(lambda: "finishing 1 sub-task" in log_of(worker), 10, "the grace period to start")
        worker.send_signal(signal.SIGINT)
        worker.wait(timeout=10)
    finally:
        stop_all([worker])
    assert worker.returncode == 130
    assert jobs.get_job_subtasks(job)[0]["status"] == "pending"


def test_an_idle_worker_wakes_when_work_is_queued(scripted, tmp_path):
    # The poll is 3600 s, beyond the bounded wait below: only a notification (PostgreSQL) or the
    # data-version look (SQLite) can wake it. (The latency itself is no test's business.)
    worker = start_worker("--executor", SCRIPTED, "--poll", 3600, tmp_path=tmp_path)
    try:
        wait_for(lambda: "executor wexec:Scripted" in log_of(worker), 30, "the worker to start")
        time.sleep(0.5)  # idle, waiting
        job = jobs.create_job_with_subtasks(600, {"prompt": "p"}, ["sleep 0"])
        pool.queue_job(job, SCRIPTED)
        wait_for(lambda: jobs.get_job(job)["status"] == "completed", 60, "the worker to run it")
        worker.send_signal(signal.SIGTERM)
        worker.wait(timeout=10)
    finally:
        stop_all([worker])
    assert worker.returncode == 0, log_of(worker)


def test_cli_dispatch_to_the_pool_and_a_grep_worker(brain, tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "app.py").write_text("def users():\n    return '/api/users'\n")
    job = brain.json("job", "create", "--distributed", "--ttl", "300", "--prompt", "find routes",
                     "--subtask", "/api/users", "--subtask", "/api/none")["job_id"]
    out = brain.json("job", "dispatch", job, "--executor", "grep", "--pool", "--file", str(src / "app.py"))
    assert out == {"job_id": job, "pool": "grep", "sub_tasks": ["sub_1", "sub_2"]}
    assert {s["status"] for s in brain.json("job", "subtasks", job)} == {"pending"}
    proc = subprocess.run([sys.executable, str(BRAIN), "worker", "--executor", "grep", "--drain"], cwd=src,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    results = {r["sub_task_id"]: r["result"] for r in brain.json("job", "consolidate", job)["results"]}
    assert results["sub_1"].startswith("1 match") and "app.py:2" in results["sub_1"]
    assert results["sub_2"].startswith("no matches")


def test_worker_usage_errors(brain):
    assert brain("worker").returncode == 2
    proc = brain("worker", "--executor", "nope")
    assert proc.returncode == 2 and "unknown executor" in proc.stderr
    proc = brain("worker", "--executor", "shell", "--drain")
    assert proc.returncode == 2 and "--allow-shell" in proc.stderr
    assert "BRAIN_DATABASE_URL" in brain.ok("worker", "--help")


def test_watch_sleeps_until_a_commit_instead_of_polling(monkeypatch):
    from brain_jobs import watch

    job = jobs.create_job_with_subtasks(600, {"prompt": "p"}, ["a"])
    reads, woken = [], []
    real_get_job, real_wait = jobs.get_job, jobs.wait_for_commit
    monkeypatch.setattr(jobs, "get_job", lambda *a, **k: reads.append(1) or real_get_job(*a, **k))
    monkeypatch.setattr(jobs, "wait_for_commit", lambda t, db=None: woken.append(real_wait(t, db=db)) or woken[-1])
    row = jobs.get_job(job)
    reads.clear()
    unchanged = watch.wait_for_change(job, watch.fingerprint(row), max_wait=1.5)  # nothing happens
    assert watch.fingerprint(unchanged) == watch.fingerprint(row)
    assert len(reads) <= 5  # a look when listening starts, then one per POLL_MAX; polling read ~8 times
    assert len(reads) == len(woken) + 1 and woken[1:] == [False] * (len(woken) - 1)  # slept out each timeout

    reported = {}

    def report_soon():
        time.sleep(0.6)
        subprocess.run([sys.executable, str(BRAIN), "job", "update", job, "sub_1", "--status", "completed"],
                       check=True, timeout=60, capture_output=True)
        reported["done"] = True

    monkeypatch.setattr(watch, "POLL_MAX", 120)  # no look comes by polling: only the commit can wake the wait
    woken.clear()
    thread = threading.Thread(target=report_soon)
    thread.start()
    row = watch.wait_for_change(job, watch.fingerprint(row), max_wait=120)  # bounds a hang
    thread.join(60)
    assert reported == {"done": True} and row["sub_tasks"][0]["status"] == "completed"
    assert woken[-1] is True  # the wait that saw the report was ended by its commit


# -- bounds: settings, leases, rows nobody can read ------------------------------------------

@pytest.mark.parametrize("args, env, message", [
    (["--lease", "0.001"], {}, "--lease (BRAIN_WORKER_LEASE) must be at least 1 second (a claim is renewed every "
                               "third of it), got 0.001"),
    ([], {"BRAIN_WORKER_LEASE": "0.5"}, "--lease (BRAIN_WORKER_LEASE) must be at least 1 second (a claim is "
                                        "renewed every third of it), got 0.5"),
    (["--poll", "0.001"], {}, "--poll (BRAIN_WORKER_POLL) must be at least 0.1 seconds (each look is a write to "
                              "the store), got 0.001"),
    ([], {"BRAIN_WORKER_GRACE": "nan"}, "BRAIN_WORKER_GRACE='nan': expected a number of seconds above 0 "
                                        "(at most 86400), got 'nan'"),
])
def test_a_worker_refuses_timings_below_their_floor_and_runs_nothing(brain, tmp_path, args, env, message):
    """--lease 0.001 once made one healthy worker run the same command three times."""
    ran = tmp_path / "ran"
    job = jobs.create_job_with_subtasks(600, {"prompt": "p"}, [f"echo x >> {ran}"])
    pool.queue_job(job, "shell", allow_shell=True)
    before = jobs.get_job(job)
    proc = brain("worker", "--executor", "shell", "--allow-shell", "--drain", *args, env=env)
    assert proc.returncode == 2
    assert proc.stderr.strip() == f"brain: error: {message}"
    assert jobs.get_job(job) == before and not ran.exists()


def test_a_worker_whose_lease_lapsed_while_it_was_paused_runs_its_sub_task_once(tmp_path):
    """Paused past its lease, a worker that claims its own sub-task again keeps the one run it has."""
    runs = tmp_path / "runs"
    job = jobs.create_job_with_subtasks(600, {"prompt": "p"}, [f"echo run >> {runs}; sleep 4; echo done"])
    pool.queue_job(job, "shell", allow_shell=True)
    worker = start_worker("--executor", "shell", "--allow-shell", "--concurrency", 2, "--lease", 1, "--poll", 0.2,
                          "--drain", tmp_path=tmp_path)
    try:
        wait_for(runs.exists, 30, "the command to start")
        worker.send_signal(signal.SIGSTOP)
        time.sleep(2.5)  # paused for more than the lease: it lapses (a pause, not a measurement)
        worker.send_signal(signal.SIGCONT)
        worker.wait(timeout=60)
    finally:
        worker.send_signal(signal.SIGCONT)
        stop_all([worker])
    assert worker.returncode == 0, log_of(worker)
    assert runs.read_text() == "run\n"  # one run, not one per claim
    sub = jobs.get_job_subtasks(job)[0]
    assert (sub["status"], sub["result"]) == ("completed", "exit 0: done"), log_of(worker)


NOT_JSON = "not JSON at all {"
# What another program could leave in a queued job: (column, its new content from the job's sub-tasks).
HOSTILE = {
    "a value nested deeper than any JSON reader goes": ("sub_tasks", lambda subs: json.dumps(
        [dict(subs[0], note="[" * 3000 + "]" * 3000)]).replace('"[[', "[[").replace(']]"', "]]")),
    "numbers instead of sub-tasks": ("sub_tasks", lambda subs: "[1, 2, 3]"),
    "an object instead of a list": ("sub_tasks", lambda subs: '{"pool": "grep", "status": "pending"}'),
    "not JSON": ("sub_tasks", lambda subs: NOT_JSON),
    "a history of numbers": ("history", lambda subs: "[1, 2, 3]"),
}


def write_with_sql(db, job_id, column, value):
    """Overwrite one column of a job with plain SQL, as another program (or an older version) could."""
    if "://" in db:
        import psycopg
        from brain_jobs.store.postgres import split_url

        libpq_url, schema = split_url(db)
        cast = "::jsonb" if column in ("sub_tasks", "history", "data") else ""
        with psycopg.connect(libpq_url, autocommit=True, options=f"-c search_path={schema}") as conn:
            conn.execute(f"UPDATE jobs SET {column} = %s{cast} WHERE job_id = %s", (value, job_id))
    else:
        import sqlite3

        conn = sqlite3.connect(db)
        with conn:
            conn.execute(f"UPDATE jobs SET {column} = ? WHERE job_id = ?", (value, job_id))
        conn.close()


@pytest.mark.parametrize("content, expired", [
    *((name, expired) for name in HOSTILE for expired in (False, True) if HOSTILE[name][0] == "sub_tasks"),
    ("a history of numbers", False),  # expired, it is swept like any job: the sweep never reads old events
], ids=lambda v: ("expired" if v else "live") if isinstance(v, bool) else v)
def test_a_row_nobody_can_read_never_stops_a_worker(db, backend, tmp_path, content, expired):
    if content == "not JSON" and backend == "postgres":
        pytest.skip("a jsonb column holds only JSON")
    (tmp_path / "f.txt").write_text("hello\n")
    bad = jobs.create_job_with_subtasks(600, {"prompt": "bad"}, ["hello"])  # the oldest: looked at first
    pool.queue_job(bad, "grep", files=["f.txt"])
    good = jobs.create_job_with_subtasks(600, {"prompt": "good"}, ["hello", "nope", "hello again"])
    pool.queue_job(good, "grep", files=["f.txt"])
    column, spoil = HOSTILE[content]
    write_with_sql(db, bad, column, spoil(jobs.get_job(bad)["sub_tasks"]))
    if expired:  # every write's housekeeping now meets it too
        write_with_sql(db, bad, "expires_at", "2001-01-01T00:00:00.000Z")
    proc = subprocess.run([sys.executable, str(BRAIN), "worker", "--executor", "grep", "--drain", "--poll", "0.5"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    assert [s["status"] for s in jobs.get_job(good)["sub_tasks"]] == ["completed"] * 3
    about_it = [line for line in proc.stderr.splitlines() if bad in line]
    assert len(about_it) == 1 and "its stored row cannot be read or claimed" in about_it[0], proc.stderr


def test_a_sub_task_past_its_deadline_gives_its_slot_back(scripted, tmp_path):
    """An executor that ignores its deadline cannot keep a worker from the rest of the pool."""
    job = jobs.create_job_with_subtasks(600, {"prompt": "p"}, ["hang 120", "sleep 0"])
    pool.queue_job(job, SCRIPTED, timeout=1)
    worker = start_worker("--executor", SCRIPTED, "--concurrency", 1, "--poll", 0.2, "--drain", tmp_path=tmp_path)
    try:
        worker.wait(timeout=60)
    finally:
        stop_all([worker])
    assert worker.returncode == 0, log_of(worker)
    sub_1, sub_2 = jobs.get_job_subtasks(job)
    assert sub_1["status"] == "failed" and sub_1["result"].startswith("timed out: no report by")
    assert (sub_2["status"], sub_2["result"].split(" by ")[0]) == ("completed", "done sleep 0")
    assert "sub_1: still running past its deadline" in log_of(worker)

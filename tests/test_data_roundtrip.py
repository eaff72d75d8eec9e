"""Job data round-trips: what ``create`` accepts reads back identical, forever, everywhere.

Identical means same types and same values (``-0.0`` is not ``0.0``, ``1e16``
is not ``10**16``), after many writes through the standard-library codec and
through orjson, on SQLite and PostgreSQL, and through the processes that use
orjson: a headless runner and a ``brain worker``. What would not read back
unchanged is refused at ``create`` (tests/test_hostile.py lists the refusals).
A row written by another program is read exactly too.
"""

import json
import sqlite3
import subprocess
import sys

import pytest

from conftest import BRAIN, store_snapshot
from brain_jobs import codec, jobs, pool, validate
from tests.test_runner_support import cli, finished, wait_until


def nested(depth):
    """An object ``depth`` levels deep, the job data itself being level 1."""
    value = {"leaf": 1}
    for _ in range(depth - 2):
        value = {"down": value}
    return value


EDGE = {
    "prompt": "edges ✓",
    "max_int": 2 ** 63 - 1, "min_int": -(2 ** 63), "u32": 2 ** 32, "zero": 0, "minus_one": -1,
    "floats": [0.1, 0.30000000000000004, 1e-05, 1.5e-300, 5e-324, 2.0, -2.5, 0.0, 1e15,
               9999999999999998.0, -9999999999999998.0, 123456.789],
    "text": "ü ✓ 中 😀 \"quoted\" \\ back/slash",
    "digits_in_text": "12345678901234567890123456789",  # a run of digits the fast codec double-checks
    "flags": [True, False, None],
    "empty": {}, "empty_list": [],
    "keys": {"b": 1, "a": 2, "": 3, "1": 4},
    "deep": nested(31),  # levels 2 to 32: the deepest data accepted
}


def same(a, b) -> bool:
    """Equal with the same types all the way down; floats compared bit for bit."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(map(same, a, b))
    if isinstance(a, float):
        return a.hex() == b.hex()
    return a == b


@pytest.fixture(autouse=True)
def fresh_codec():
    codec.use_stdlib()
    yield
    codec.use_stdlib()


def test_the_edge_values_are_accepted_whole():
    assert validate.data(json.dumps(EDGE)) == EDGE and same(validate.data(json.dumps(EDGE)), EDGE)
    assert validate.data(EDGE) is EDGE
    big = {"prompt": "p", "blob": "x" * (100_000 - 30)}  # the limit: 100,000 characters of compact JSON
    assert len(json.dumps(big, separators=(",", ":"))) <= 100_000
    assert validate.data(big) is big


def _writes(job, subs, db):
    """Two write transactions per sub-task (running, then completed): each one re-encodes the row."""
    for sub in subs:
        jobs.update_subtask_status(job, sub, "running", agent_id="a1", db=db)
        jobs.update_subtask_status(job, sub, "completed", f"{sub} ✓", agent_id="a1", db=db)


def test_accepted_data_reads_back_identical_after_many_writes_through_both_codecs(brain, db):
    data = {k: v for k, v in EDGE.items() if k != "prompt"}
    created = brain.json("job", "create", "--distributed", "--ttl", "300", "--prompt", EDGE["prompt"],
                         "--data", json.dumps(data), *sum((["--subtask", f"q{i}"] for i in range(6)), []))
    job = created["job_id"]
    assert same(created["data"], EDGE)  # the one-shot create, read back by the same process
    api_job = jobs.create_job_with_subtasks(300, EDGE, [f"q{i}" for i in range(6)], db=db)
    for j in (job, api_job):
        _writes(j, ["sub_1", "sub_2", "sub_3"], db)   # the standard library writes
        assert codec.use_orjson()
        _writes(j, ["sub_4", "sub_5", "sub_6"], db)   # orjson writes, as a busy process does
        assert same(jobs.get_job(j, db=db)["data"], EDGE)
        codec.use_stdlib()
        assert same(jobs.get_job(j, db=db)["data"], EDGE)
        assert same(brain.json("job", "get", j)["data"], EDGE)  # another process, another read
    assert same(next(r for r in store_snapshot(db) if r["job_id"] == job)["data"], EDGE)


def test_a_runner_and_a_worker_keep_accepted_data_identical(db, tmp_path):
    """Both processes switch to orjson at their second write: three sub-tasks, one at a time."""
    src = tmp_path / "src"
    src.mkdir()
    (src / "app.py").write_text("q1 q2\n")
    queries = ["q1", "q2", "q3"]
    by_runner = jobs.create_job_with_subtasks(300, EDGE, queries, db=db)
    proc = cli("job", "dispatch", by_runner, "--executor", "grep", "--concurrency", "1", "--file", "app.py", cwd=src)
    assert proc.returncode == 0, proc.stderr
    by_worker = jobs.create_job_with_subtasks(300, EDGE, queries, db=db)
    pool.queue_job(by_worker, "grep", files=["app.py"], db=db)
    worker = subprocess.run([sys.executable, str(BRAIN), "worker", "--executor", "grep", "--concurrency", "1",
                             "--drain"], cwd=src, capture_output=True, text=True, timeout=60)
    assert worker.returncode == 0 and "Traceback" not in worker.stderr, worker.stderr
    for job in (by_runner, by_worker):
        row = wait_until(lambda: finished(job, db), what=f"the sub-tasks of {job}")
        assert [s["status"] for s in row["sub_tasks"]] == ["completed"] * 3, row["sub_tasks"]
        assert same(row["data"], EDGE)


# -- rows written by another program ------------------------------------------------

def write_data(db, job_id, text):
    """Store ``text`` as the job's data with plain SQL, as another program would."""
    if "://" not in db:
        with sqlite3.connect(db) as conn:
            conn.execute("UPDATE jobs SET data = ? WHERE job_id = ?", (text, job_id))
        conn.close()
        return
    import psycopg

    from brain_jobs.store.postgres import split_url

    url, schema = split_url(db)
    with psycopg.connect(url, autocommit=True, options=f"-c search_path={schema}") as conn:
        conn.execute("UPDATE jobs SET data = %s::jsonb WHERE job_id = %s", (text, job_id))


BIG = 123456789012345678901234567890
HUGE = int("7" * 400)  # beyond a float: orjson refuses it
NEAR = [2 ** 64, -(2 ** 63) - 1, 2 ** 70 + 1]  # orjson reads these as floats


def test_integers_beyond_64_bits_written_by_another_program_are_read_exactly(db, tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "app.py").write_text("q1\n")
    job = jobs.create_job_with_subtasks(300, {"prompt": "p"}, ["q1", "q2", "q3"], db=db)
    pool.queue_job(job, "grep", files=["app.py"], db=db)
    write_data(db, job, json.dumps({"prompt": "p", "big": BIG, "huge": HUGE, "near": NEAR, "f": 0.5}))
    expected = {"prompt": "p", "big": BIG, "huge": HUGE, "near": NEAR, "f": 0.5}
    for fast in (False, True):
        if fast:
            assert codec.use_orjson()
        assert same(jobs.get_job(job, db=db)["data"], expected)
    # A worker (orjson from its second write) reads and rewrites the row: nothing changes, nothing crashes.
    worker = subprocess.run([sys.executable, str(BRAIN), "worker", "--executor", "grep", "--concurrency", "1",
                             "--drain"], cwd=src, capture_output=True, text=True, timeout=60)
    assert worker.returncode == 0 and "Traceback" not in worker.stderr, worker.stderr
    row = jobs.get_job(job, db=db)
    assert [s["status"] for s in row["sub_tasks"]] == ["completed"] * 3
    assert same(row["data"], expected)

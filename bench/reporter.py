"""One contending reporter process (rows 2 and 5); started by ``contended.py``.

Protocol: one JSON order on stdin's first line; the process prepares
(imports, connection), prints ``ready``, waits for ``go`` on stdin, then
reports sub_k of every job in turn (running, then completed) and prints one
JSON line: its start and end (``time.monotonic``, system-wide on Linux),
per-report latencies, the CPU time it used while reporting (user and system),
successes and errors.

Modes: ``api`` (``jobs.update_subtask_status`` on a SQLite path or a
PostgreSQL URL), ``sqlite-raw`` (``BEGIN IMMEDIATE`` + one ``json_set``
statement; busy waits are SQLite's own handler), ``sqlite-raw-flock`` (the same behind a
blocking ``flock``, the fair queue brain's store uses), ``pg-raw`` (one ``jsonb_set`` statement per transaction).
"""

import json
import sys
import time


def _api(order):
    from brain_jobs import jobs
    from brain_jobs.errors import BrainError

    db = order["db"]
    jobs.get_job(order["jobs"][0], db=db)  # open the store before the clock starts

    def report(job, k, status, agent, result):
        jobs.update_subtask_status(job, f"sub_{k}", status, result=result, agent_id=agent, db=db)

    return report, BrainError


def _event(status, k, agent, now):
    return json.dumps({"at": now, "event": "report", "sub_task_id": f"sub_{k}", "status": status, "agent_id": agent})


def _stamp():
    t = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S.", time.gmtime(t)) + f"{int(t % 1 * 1000):03d}Z"


def _sqlite_raw(order):
    import sqlite3

    conn = sqlite3.connect(order["db"], timeout=30, isolation_level=None)
    conn.execute(f"PRAGMA synchronous = {order['synchronous']}")

    def report(job, k, status, agent, result):
        i = k - 1
        now = _stamp()
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.execute(
                f"UPDATE jobs SET sub_tasks = json_set(sub_tasks, '$[{i}].status', ?, '$[{i}].agent_id', ?, "
                f"'$[{i}].result', ?, '$[{i}].updated_at', ?), history = json_insert(history, '$[#]', json(?)) "
                "WHERE job_id = ?",
                (status, agent, result, now, _event(status, k, agent, now), job),
            )
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    return report, sqlite3.Error


def _sqlite_raw_flock(order):
    """The same statement, writers queued fairly by a blocking ``flock`` as brain's store does."""
    import fcntl
    import os

    inner, error = _sqlite_raw(order)
    fd = os.open(order["db"] + ".rawlock", os.O_RDWR | os.O_CREAT, 0o600)

    def report(*args):
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            inner(*args)
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)

    return report, error


def _pg_raw(order):
    import psycopg

    conn = psycopg.connect(order["url"], autocommit=False)
    conn.execute(f"SET search_path TO {order['schema']}")
    conn.commit()

    def report(job, k, status, agent, result):
        now = _stamp()
        patch = json.dumps({"status": status, "agent_id": agent, "result": result, "updated_at": now})
        with conn.transaction():
            conn.execute(
                "UPDATE jobs SET sub_tasks = jsonb_set(sub_tasks, %s, (sub_tasks -> %s) || %s::jsonb), "
                "history = history || jsonb_build_array(%s::jsonb) WHERE job_id = %s",
                ([str(k - 1)], k - 1, patch, _event(status, k, agent, now), job),
            )

    return report, psycopg.Error


MODES = {"api": _api, "sqlite-raw": _sqlite_raw, "sqlite-raw-flock": _sqlite_raw_flock, "pg-raw": _pg_raw}


def main():
    order = json.loads(sys.stdin.readline())
    report, error = MODES[order["mode"]](order)
    k = order["k"]
    agent = f"bench_{k}"
    print("ready", flush=True)
    if sys.stdin.readline().strip() != "go":
        return 1
    latencies, ok, errors = [], 0, []
    cpu0 = time.process_time()
    start = time.monotonic()
    for job in order["jobs"]:
        for status, result in (("running", None), ("completed", f"r{k}")):
            t0 = time.perf_counter()
            try:
                report(job, k, status, agent, result)
                ok += 1
            except error as exc:
                errors.append(str(exc)[:200])
            latencies.append(time.perf_counter() - t0)
    end = time.monotonic()
    cpu = time.process_time() - cpu0
    print(json.dumps({"k": k, "start": start, "end": end, "cpu": cpu, "latencies": latencies, "ok": ok,
                      "errors": errors}),
          flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

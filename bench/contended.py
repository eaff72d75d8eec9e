"""Rows 2 and 5: contended reporting. J jobs of 16 sub-tasks; 16 processes,
process k reports sub_k of every job in turn (running, then completed), so all
16 hammer the same job at the same moment. brain's API against the raw limit
(one single-statement ``json_set`` / ``jsonb_set`` per transaction), run
alternately in the same run on freshly seeded stores. SQLite's raw limit is
the faster of two: waits left to SQLite's busy handler (what the issue names),
and the same statement queued behind a blocking ``flock``. Every report is then
checked in the stored rows: a report that returned success but is not there
is lost.
"""

import json
import os
import secrets
import subprocess
import sys

from .common import ROOT, TempDir, child_env, median, ms, percentile, progress

PROCESSES = 16
GOAL_RATIO = 0.5
GOAL_P99_MS = 50.0


def _seed(db, n_jobs, environ):
    """Create ``n_jobs`` distributed jobs of 16 sub-tasks through the API, in a child process
    (the store's settings come from ``environ``, as the reporters' do)."""
    code = (
        "import json, sys\n"
        "from brain_jobs import jobs\n"
        "db, n = sys.argv[1], int(sys.argv[2])\n"
        "ids = [jobs.create_job_with_subtasks(3600, {'prompt': 'contended'},"
        " [f'GET /api/{i}' for i in range(1, 17)], db=db) for _ in range(n)]\n"
        "print(json.dumps(ids))\n"
    )
    out = subprocess.run([sys.executable, "-c", code, db, str(n_jobs)], env=environ, cwd=ROOT,
                         capture_output=True, text=True)
    if out.returncode:
        raise RuntimeError(f"seeding failed: {out.stderr[-500:]}")
    return json.loads(out.stdout)


def _race(mode, job_ids, environ, **extra):
    """Start the 16 reporters, release them at once, collect their figures."""
    procs = []
    for k in range(1, PROCESSES + 1):
        p = subprocess.Popen([sys.executable, "-m", "bench.reporter"], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=environ, cwd=ROOT)
        p.stdin.write(json.dumps(dict(extra, mode=mode, k=k, jobs=job_ids)) + "\n")
        p.stdin.flush()
        procs.append(p)
    for p in procs:
        line = p.stdout.readline()
        if line.strip() != "ready":
            raise RuntimeError(f"{mode} reporter did not start: {line}{p.stderr.read()[-800:]}")
    for p in procs:
        p.stdin.write("go\n")
        p.stdin.flush()
    results = []
    for p in procs:
        out, err = p.communicate()
        if p.returncode:
            raise RuntimeError(f"{mode} reporter failed: {err[-800:]}")
        results.append(json.loads(out))
    wall = max(r["end"] for r in results) - min(r["start"] for r in results)
    latencies = [x for r in results for x in r["latencies"]]
    ok = sum(r["ok"] for r in results)
    errors = [e for r in results for e in r["errors"]]
    return {
        "reports": len(latencies), "ok": ok, "errors": len(errors), "error_samples": errors[:3],
        "seconds": round(wall, 3), "per_second": round(ok / wall, 1),
        "cpu_us_per_report": round(sum(r["cpu"] for r in results) / max(1, len(latencies)) * 1e6, 1),
        "p50_ms": ms(percentile(latencies, 50)), "p99_ms": ms(percentile(latencies, 99)),
        "max_ms": ms(max(latencies)),
    }


def _check(rows, n_jobs):
    """``(applied, wrong)``: reports found in the stored rows, and sub-tasks not in their final state."""
    applied = wrong = 0
    for row in rows:
        applied += sum(1 for ev in row["history"] if ev.get("event") == "report")
        for i, sub in enumerate(row["sub_tasks"], 1):
            if (sub["status"], sub["agent_id"], sub["result"]) != ("completed", f"bench_{i}", f"r{i}"):
                wrong += 1
    return applied, wrong


def _verify(target, job_ids):
    code = (
        "import json, sys\n"
        "from brain_jobs import jobs\n"
        "rows = [jobs.get_job(j, db=sys.argv[1]) for j in json.loads(sys.stdin.read())]\n"
        "print(json.dumps([{'history': r['history'], 'sub_tasks': r['sub_tasks']} for r in rows]))\n"
    )
    out = subprocess.run([sys.executable, "-c", code, target], input=json.dumps(job_ids), capture_output=True,
                         text=True, cwd=ROOT, env=child_env())
    if out.returncode:
        raise RuntimeError(f"verification failed: {out.stderr[-500:]}")
    return _check(json.loads(out.stdout), len(job_ids))


def _side(runs):
    side = {
        "per_second": median([r["per_second"] for r in runs]),
        "p50_ms": median([r["p50_ms"] for r in runs]),
        "p99_ms": median([r["p99_ms"] for r in runs]),
        "max_ms": max(r["max_ms"] for r in runs),
        "cpu_us": median([r["cpu_us_per_report"] for r in runs]),
        "errors": sum(r["errors"] for r in runs),
        "lost": sum(r["lost"] for r in runs),
        "wrong_final_state": sum(r["wrong"] for r in runs),
    }
    return side


def _summarise(runs, n_jobs):
    """``runs``: mode -> [figures]. The raw limit is the fastest raw mode.

    The ratio is the median of the rounds' own ratios: each round runs the raw
    limit and brain one after the other, so a burst of machine load falls on
    one pair rather than on one side of the comparison.
    """
    sides = {mode: _side(r) for mode, r in runs.items()}
    api = sides["api"]
    limit = max((m for m in sides if m != "api"), key=lambda m: sides[m]["per_second"])
    paired = [a["per_second"] / raw["per_second"] for a, raw in zip(runs["api"], runs[limit])]
    ratio = round(median(paired), 3)
    return {
        "jobs": n_jobs, "processes": PROCESSES, "reports_per_run": n_jobs * PROCESSES * 2,
        "rounds": len(runs["api"]), "sides": sides, "limit": limit, "runs": runs,
        "ratio": ratio, "round_ratios": [round(r, 3) for r in paired], "goal_ratio": GOAL_RATIO, "goal_p99_ms": GOAL_P99_MS,
        "goal_met": {
            "throughput": ratio >= GOAL_RATIO,
            "p99": api["p99_ms"] <= GOAL_P99_MS,
            "lost": api["lost"] == 0 and api["wrong_final_state"] == 0 and api["errors"] == 0,
        },
    }


def _rounds(modes, rounds, label, one):
    runs = {m: [] for m in modes}
    for r in range(rounds):
        for mode in modes:
            fig = one(mode)
            runs[mode].append(fig)
            progress(f"contended {label} {mode} round {r + 1}/{rounds}: {fig['per_second']}/s, "
                     f"p99 {fig['p99_ms']} ms, lost {fig['lost']}")
    return runs


def run_sqlite(n_jobs=200, rounds=2, synchronous="FULL"):
    environ = child_env({"BRAIN_SYNCHRONOUS": synchronous})

    def one(mode):
        with TempDir() as tmp:
            db = os.path.join(tmp, "jobs.db")
            job_ids = _seed(db, n_jobs, environ)
            fig = _race(mode, job_ids, environ, db=db, synchronous=synchronous)
            applied, wrong = _verify(db, job_ids)
            fig.update(applied=applied, lost=fig["ok"] - applied, wrong=wrong)
            return fig

    out = _summarise(_rounds(("sqlite-raw", "sqlite-raw-flock", "api"), rounds, "sqlite", one), n_jobs)
    out["synchronous"] = synchronous
    return out


def postgres_url():
    return os.environ.get("BENCH_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")


def postgres_available():
    """``None`` when a server is reachable and brain has a PostgreSQL store, else why not."""
    try:
        import psycopg
    except ImportError:
        return "psycopg is not installed"
    if not os.path.exists(os.path.join(ROOT, "brain_jobs", "store", "postgres.py")):
        return "brain has no PostgreSQL store yet (brain_jobs/store/postgres.py)"
    try:
        psycopg.connect(postgres_url(), connect_timeout=3).close()
    except psycopg.Error as exc:
        return f"no server at {postgres_url()}: {str(exc).strip()[:120]}"
    return None


def run_postgres(n_jobs=200, rounds=2):
    import psycopg

    url = postgres_url()
    environ = child_env()

    def one(mode):
        schema = f"brain_bench_{secrets.token_hex(4)}"
        target = f"{url}?schema={schema}"
        try:
            job_ids = _seed(target, n_jobs, environ)
            fig = _race(mode, job_ids, environ, db=target, url=url, schema=schema)
            applied, wrong = _verify(target, job_ids)
            fig.update(applied=applied, lost=fig["ok"] - applied, wrong=wrong)
            return fig
        finally:
            with psycopg.connect(url, autocommit=True) as conn:
                conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")

    out = _summarise(_rounds(("pg-raw", "api"), rounds, "postgres", one), n_jobs)
    out["server"] = url
    return out

"""``python -m bench``: run every row, print the table, write bench/results/latest.json.

    ./bench/run                 the issue's numbers (about 5-10 minutes on 2 cores)
    ./bench/run --quick         smaller counts, for a smoke run
    ./bench/run --only 1,3      some rows
"""

import argparse
import os
import subprocess
import sys
import time

from . import common

QUICK = {"latency_rounds": 12, "contended_jobs": 50, "contended_rounds": 1, "fanout_rounds": 2,
         "headless_tasks": 300, "headless_rounds": 1}
FULL = {"latency_rounds": 40, "contended_jobs": 200, "contended_rounds": 5, "fanout_rounds": 5,
        "headless_tasks": 1000, "headless_rounds": 2}


def _verdict(ok):
    return "INFO" if ok is None else ("PASS" if ok else "MISS")


def _f(value, unit="", digits=1):
    if value is None:
        return "-"
    return f"{value:,.{digits}f}{unit}"


def row_latency(scale, figures, rows):
    from . import latency

    out = figures["1_latency"] = latency.run(rounds=scale["latency_rounds"])
    c = out["commands"]
    base = c["python -c pass"]["median_ms"]
    for cmd in ("update", "subtasks"):
        for env, label, goal in (("real", "bin/brain, BRAIN_PYTHON=real interpreter", True),
                                 ("venv", "bin/brain, BRAIN_PYTHON=plugin venv", None),
                                 ("shim", "bin/brain, no BRAIN_PYTHON (pyenv shim)", None)):
            x = c[f"{cmd} ({env})"]
            rows.append(("1", f"`brain job {cmd}` ({label})", _f(x["median_ms"], " ms"),
                         f"`python -c pass` {_f(base, ' ms')}", f"{x['ratio_to_pass']:.2f}x",
                         "<= 2.5x" if goal else "", _verdict(x["ratio_to_pass"] <= latency.GOAL if goal else None)))
    for name in ("python -c 'import sqlite3'", "venv python -c pass"):
        rows.append(("1", f"`{name}` (reference)", _f(c[name]["median_ms"], " ms"), f"`python -c pass` {_f(base, ' ms')}",
                     f"{c[name]['ratio_to_pass']:.2f}x", "", "INFO"))


def row_contended(scale, figures, rows, synchronous):
    from . import contended

    out = figures["2_contended_sqlite"] = contended.run_sqlite(
        n_jobs=scale["contended_jobs"], rounds=scale["contended_rounds"], synchronous=synchronous)
    _contended_rows("2", "SQLite", out, rows)


def _contended_rows(n, label, out, rows):
    api, limit = out["sides"]["api"], out["sides"][out["limit"]]
    what = f"{out['processes']} procs x {out['jobs']} jobs x 16 sub-tasks"
    rows.append((n, f"contended reports, {label} ({what})", _f(api["per_second"], "/s"),
                 f"raw {out['limit']} {_f(limit['per_second'], '/s')}", f"{out['ratio']:.2f}x", ">= 0.5x",
                 _verdict(out["goal_met"]["throughput"])))
    rows.append((n, "  ratio of each round (raw, then brain; the median is the ratio)",
                 " / ".join(f"{r:.2f}x" for r in out["round_ratios"]), "", "", "", "INFO"))
    for mode, side in out["sides"].items():
        if mode not in ("api", out["limit"]):
            rows.append((n, f"  other raw mode: {mode}", _f(side["per_second"], "/s"), "", "", "",
                         "INFO"))
    rows.append((n, f"  CPU per report, all reporters ({label})", _f(api["cpu_us"], " us"),
                 f"raw {_f(limit['cpu_us'], ' us')}", "", "", "INFO"))
    rows.append((n, f"  report latency p50 / p99 / max ({label})",
                 f"{_f(api['p50_ms'])} / {_f(api['p99_ms'])} / {_f(api['max_ms'])} ms",
                 f"raw {_f(limit['p50_ms'])} / {_f(limit['p99_ms'])} / {_f(limit['max_ms'])} ms", "",
                 "p99 <= 50 ms", _verdict(out["goal_met"]["p99"])))
    total = out["reports_per_run"] * out["rounds"]
    rows.append((n, f"  lost reports ({label})",
                 f"{api['lost']} of {total:,} ({api['errors']} errors, {api['wrong_final_state']} wrong)",
                 "", "", "0", _verdict(out["goal_met"]["lost"])))


def row_fanout(scale, figures, rows, synchronous):
    from . import fanout

    out = figures["3_fanout"] = fanout.run(rounds=scale["fanout_rounds"], synchronous=synchronous)
    s = out["sizes"]
    rows.append(("3", f"report on 1,000 vs 10 sub-tasks (synchronous={synchronous})", _f(s["1000"]["report_ms"], " ms"),
                 f"10 sub-tasks {_f(s['10']['report_ms'], ' ms')}", f"{out['ratio']:.2f}x", "<= 2x",
                 _verdict(out["goal_met"])))
    for ref, what in (("raw_json_set", "one json_set statement"), ("raw_splice", "text splice, no JSON decoding"),
                      ("raw_slack", "same splice, constant-size record")):
        rows.append(("3", f"  physical reference: bare sqlite3, {what}", _f(s["1000"][f"{ref}_ms"], " ms"),
                     f"10 sub-tasks {_f(s['10'][f'{ref}_ms'], ' ms')}", f"{out[f'{ref}_ratio']:.2f}x", "", "INFO"))
    for n in ("10", "1000", "5000"):
        x = s[n]
        rows.append(("3", f"  {int(n):,} sub-tasks: create / report / subtasks / consolidate",
                     " / ".join(_f(x[k], "", 2) for k in ("create_ms", "report_ms", "subtasks_ms", "consolidate_ms"))
                     + " ms", "", "", "", "INFO"))
    if synchronous != "NORMAL":
        # fsync dominates a report under FULL; NORMAL shows what the row costs in Python.
        cpu = figures["3_fanout_normal"] = fanout.run(rounds=scale["fanout_rounds"], synchronous="NORMAL")
        rows.append(("3", "  same, synchronous=NORMAL (no fsync per commit)", _f(cpu["sizes"]["1000"]["report_ms"], " ms"),
                     f"10 sub-tasks {_f(cpu['sizes']['10']['report_ms'], ' ms')}", f"{cpu['ratio']:.2f}x", "",
                     "INFO"))


def row_headless(scale, figures, rows):
    from . import headless

    out = figures["4_headless"] = headless.run(n=scale["headless_tasks"], rounds=scale["headless_rounds"])
    rows.append(("4", f"headless: {out['sub_tasks']:,} trivial sub-tasks, {out['workers']} workers "
                      f"({out['executor']} executor)", _f(out["brain_per_second"], "/s"),
                 f"Huey SqliteStorage {_f(out['huey_per_second'], '/s')}", f"{out['ratio']:.2f}x", ">= 1.0x",
                 _verdict(out["goal_met"])))
    figures["6_memory"] = {"runner_peak_rss_mib": out["runner_peak_rss_mib"],
                           "huey_consumer_peak_rss_mib": out["huey_consumer_peak_rss_mib"],
                           "sub_tasks": out["sub_tasks"]}
    rows.append(("6", f"runner peak RSS, {out['sub_tasks']:,} sub-tasks", _f(out["runner_peak_rss_mib"], " MiB"),
                 f"Huey consumer + 2 workers {_f(out['huey_consumer_peak_rss_mib'], ' MiB')}", "", "", "INFO"))


def row_hooks(scale, figures, rows):
    from . import hooks_time

    out = figures["7_hooks"] = hooks_time.run(rounds=scale["latency_rounds"])
    for name, x in out["hooks"].items():
        rows.append(("7", f"ready plugin hook `{name}` (hooks.json command, as the host starts it)",
                     _f(x["median_ms"], " ms"), f"`{x['reference']}` {_f(x['reference_ms'], ' ms')}",
                     f"{x['ratio_to_reference']:.2f}x", f"<= {x['goal_ms']:g} ms", _verdict(x["goal_met"])))


def row_context(scale, figures, rows):
    from . import context

    out = figures["8_context"] = context.run(only=("8",))
    if "skipped" in out:
        rows.append(("8", "orchestrator context per sub-task, real Claude Code CLI", "not measured", out["skipped"],
                     "", "", "N/A"))
        return
    labels = {"headless": "plugin, headless claude workers + background wait",
              "headless, read the output file": "  same, join read from the output file (Read)",
              "host": "plugin, host agents", "plain": "no plugin, host agents with the full instruction",
              "workflow": "no plugin, the host's Workflow tool"}
    by = out["context"]
    for label_key, label in labels.items():
        small, big = by[f"{label_key} @ 10"], by[f"{label_key} @ 50"]
        goal = "<= 80 B at 50" if label_key == "headless" else ""
        verdict = _verdict(big["per_sub_task"] <= 80) if label_key == "headless" else "INFO"
        rows.append(("8", f"orchestrator context per sub-task: {label}",
                     f"{_f(big['per_sub_task'], ' B', 0)} at 50", f"{_f(small['per_sub_task'], ' B', 0)} at 10",
                     "", goal, verdict))


def row_wall(scale, figures, rows):
    from . import context

    out = figures["9_wall"] = context.run(only=("9",))
    if "skipped" in out:
        rows.append(("9", "dispatch to join, 50 headless sub-tasks", "not measured", out["skipped"], "", "", "N/A"))
        return
    w = out["wall"]
    rows.append(("9", f"dispatch to join: {w['sub_tasks']} headless claude workers, concurrency {w['concurrency']}, "
                      f"each answer {w['worker_delay_s']:g} s", _f(w["seconds"], " s"),
                 f"the answer delays alone {_f(w['delays_alone_s'], ' s')}; instant answers "
                 f"{_f(w['instant_answers_s'], ' s')}", f"+{w['overhead_per_worker_s']:.2f} s per worker", "",
                 "INFO"))


def row_postgres(scale, figures, rows):
    from . import contended

    why = contended.postgres_available()
    if why:
        figures["5_postgres"] = {"skipped": why}
        rows.append(("5", "contended reports, PostgreSQL", "not measured", why, "", ">= 0.5x", "N/A"))
        return
    out = figures["5_postgres"] = contended.run_postgres(n_jobs=scale["contended_jobs"],
                                                         rounds=scale["contended_rounds"])
    _contended_rows("5", "PostgreSQL", out, rows)


def print_table(rows, machine, synchronous):
    print(f"\nbrain-jobs benchmarks: {machine['cores']} cores ({machine['cpu']}), Python {machine['python']}, "
          f"SQLite {machine['sqlite']}, synchronous={synchronous}, load at start {machine['load_average_at_start']}")
    head = ("row", "measure", "brain", "reference (same run)", "ratio", "goal", "result")
    widths = [max(len(str(r[i])) for r in rows + [head]) for i in range(len(head))]
    line = "  ".join(h.ljust(w) for h, w in zip(head, widths))
    print(line)
    print("-" * len(line))
    for r in rows:
        print("  ".join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip())


def markdown(rows) -> str:
    out = ["| row | measure | brain | reference (same run) | ratio | goal | result |",
           "|---|---|---|---|---|---|---|"]
    for r in rows:
        out.append("| " + " | ".join(str(c).replace("|", "\\|") for c in r) + " |")
    return "\n".join(out)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="bench/run", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="smaller counts (a smoke run, not the issue's numbers)")
    parser.add_argument("--only", default="1,2,3,4,5,6,7,8,9",
                        help="rows to run, e.g. 1,3 (6 comes with 4; 8 and 9 need the real Claude Code CLI)")
    parser.add_argument("--synchronous", default="FULL", choices=("OFF", "NORMAL", "FULL", "EXTRA"),
                        help="SQLite synchronous for brain and the raw limit (default FULL, brain's default)")
    parser.add_argument("--out", default=os.path.join(common.RESULTS, "latest.json"), help="JSON figures file")
    args = parser.parse_args(argv)
    # brain refuses a store that other users can read; the raw sqlite3 sides create their
    # files with the umask, so under the usual 022 a store they made first would be refused.
    os.umask(0o077)
    only = set(args.only.split(","))
    scale = QUICK if args.quick else FULL
    started = time.time()
    machine = common.machine()
    figures = {"machine": machine, "scale": "quick" if args.quick else "full", "counts": scale,
               "synchronous": args.synchronous, "commit": _commit()}
    rows = []
    steps = [("1", lambda: row_latency(scale, figures, rows)),
             ("2", lambda: row_contended(scale, figures, rows, args.synchronous)),
             ("3", lambda: row_fanout(scale, figures, rows, args.synchronous)),
             ("4", lambda: row_headless(scale, figures, rows)),
             ("5", lambda: row_postgres(scale, figures, rows)),
             ("7", lambda: row_hooks(scale, figures, rows)),
             ("8", lambda: row_context(scale, figures, rows)),
             ("9", lambda: row_wall(scale, figures, rows))]
    for key, step in steps:
        if key in only or (key == "4" and "6" in only):
            common.progress(f"row {key} ...")
            step()
    rows.sort(key=lambda r: r[0])
    figures["table"] = [dict(zip(("row", "measure", "brain", "reference", "ratio", "goal", "result"), r)) for r in rows]
    figures["table_markdown"] = markdown(rows)
    figures["seconds"] = round(time.time() - started, 1)
    common.write_json(figures, args.out)
    print_table(rows, machine, args.synchronous)
    missed = [r for r in rows if r[-1] == "MISS"]
    print(f"\n{len(missed)} goal(s) missed; figures in {os.path.relpath(args.out)} ({figures['seconds']:.0f} s)")
    return 0


def _commit():
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=common.ROOT, capture_output=True,
                              text=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=common.ROOT,
                               capture_output=True, text=True).stdout.strip()
        return head + ("-dirty" if dirty else "")
    except OSError:
        return None


if __name__ == "__main__":
    sys.exit(main())

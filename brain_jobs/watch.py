"""``brain job watch`` and ``brain job wait``: follow a job until every sub-task has finished.

``watch``, on a terminal: each finished sub-task as a line (glyph, id,
result) above a progress bar with counts, redrawn in place. Otherwise (a
pipe, a file, a log): one line per change and a last summary line. With
``--json``: one JSON object per change, then the consolidation.

``wait`` (``join``): nothing until the end, then the consolidation in a
compact form (a header, one line per sub-task) or as JSON: one answer, for
an agent that runs it in the background and is told once.

Both tell a running sub-task that has started (``◉``) from one that waits
for a runner's free slot (``◌``, ``state.waiting``).

Exit codes (``cli`` maps them): 0 every sub-task completed; 1 at least
one failed (failed, timed out, cancelled or expired), or an operational
error; 2 usage; 124 ``wait --timeout`` ran out first; 130 interrupted with
Ctrl-C before the end.

Reading the job applies deadlines and expiry, so a followed job whose
runner died still ends, at its deadline. ``watch`` waits in
``wait_for_change``; ``join`` sleeps until a commit or the job's next
deadline, whichever comes first.
"""

import time

from . import clock, jobs, render
from .state import next_due, waiting
from .vocabulary import FINAL, STATUSES

POLL_MAX = 0.5      # seconds: the longest pause between two reads
BAR_WIDTH = 24


def fingerprint(row) -> tuple:
    return tuple((s["sub_task_id"], s["status"], s["agent_id"], s["result"], waiting(s))
                 for s in row["sub_tasks"]) + (row["status"],)


def counts(row) -> dict:
    """Sub-tasks by status, with ``waiting`` (running, not started) apart from ``running``."""
    c = dict(jobs.state.counts(row))
    c["waiting"] = sum(1 for s in row["sub_tasks"] if waiting(s)) if c["running"] else 0
    c["running"] -= c["waiting"]
    return c


def _unfinished(c) -> str:
    """``, 2 running, 4 waiting, 1 pending``: what is not finished yet (waiting only when some are)."""
    return (f", {c['running']} running" + (f", {c['waiting']} waiting" if c["waiting"] else "")
            + f", {c['pending']} pending")


def wait_for_change(job_id, previous, db=None, max_wait=5.0):
    """Return the job's row once its fingerprint differs from ``previous``, or after ``max_wait`` seconds.

    Between two reads it sleeps until a write is committed to the store
    (``jobs.wait_for_commit``: PostgreSQL LISTEN/NOTIFY, SQLite's data
    version), at most POLL_MAX, since a deadline passing commits nothing.
    The one place ``watch`` waits.
    """
    end = time.monotonic() + max_wait
    while True:
        row = jobs.get_job(job_id, db=db)
        left = end - time.monotonic()
        if fingerprint(row) != previous or left <= 0:
            return row
        jobs.wait_for_commit(min(POLL_MAX, left), db=db)


def finished(row) -> bool:
    """Every sub-task is final (a normal job, without sub-tasks: the job itself is)."""
    subs = row["sub_tasks"]
    return row["status"] in FINAL or bool(subs) and all(s["status"] in FINAL for s in subs)


def exit_code(row) -> int:
    return 1 if row["status"] == "failed" or any(s["status"] == "failed" for s in row["sub_tasks"]) else 0


class _Lines:
    """One line per change: for pipes, files and logs."""

    def __init__(self, stream, colour):
        self.stream, self.colour = stream, colour

    def glyph(self, status):
        g = render.WAITING if status == "waiting" else render.GLYPHS[status]
        code = render.WAITING_COLOUR if status == "waiting" else render.COLOURS[status]
        return f"\x1b[{code}m{g}\x1b[0m" if self.colour else g

    def sub_line(self, sub):
        detail = sub["result"] if sub["status"] in FINAL else sub["agent_id"] if sub["status"] == "running" else ""
        status = "waiting" if waiting(sub) else sub["status"]
        text = f"{self.glyph(status)} {render.printable(sub['sub_task_id'])} {status}"
        return text + (f": {render.printable(detail)}" if detail else "")

    def start(self, row):
        c = counts(row)
        self.write(f"job {row['job_id']}: {len(row['sub_tasks'])} sub-tasks "
                   f"({c['completed']} completed, {c['failed']} failed{_unfinished(c)})")
        for sub in row["sub_tasks"]:
            if sub["status"] in FINAL:
                self.write(self.sub_line(sub))

    def change(self, row, subs):
        for sub in subs:
            self.write(self.sub_line(sub))

    def end(self, row):
        c = jobs.state.counts(row)
        self.write(f"job {row['job_id']} {row['status']}: {c['completed']} completed, {c['failed']} failed")

    def interrupted(self):
        pass

    def write(self, text):
        self.stream.write(text + "\n")
        self.stream.flush()


class _Bar(_Lines):
    """A progress bar redrawn in place, finished sub-tasks printed above it."""

    def bar(self, row):
        c = counts(row)
        total = len(row["sub_tasks"]) or 1
        done = c["completed"] + c["failed"]
        filled = round(BAR_WIDTH * done / total)
        return (f"[{'█' * filled}{'░' * (BAR_WIDTH - filled)}] {done}/{total}  "
                f"{self.glyph('completed')} {c['completed']}  {self.glyph('failed')} {c['failed']}  "
                f"{self.glyph('running')} {c['running']}  "
                + (f"{self.glyph('waiting')} {c['waiting']}  " if c["waiting"] else "")
                + f"{self.glyph('pending')} {c['pending']}")

    def draw(self, row):
        self.stream.write("\r\x1b[K" + self.bar(row))
        self.stream.flush()

    def start(self, row):
        self.stream.write(f"job {row['job_id']}: {render.printable((row['data'] or {}).get('prompt', ''))[:60]}\n")
        for sub in row["sub_tasks"]:
            if sub["status"] in FINAL:
                self.stream.write(self.sub_line(sub) + "\n")
        self.draw(row)

    def change(self, row, subs):
        lines = [self.sub_line(s) for s in subs if s["status"] in FINAL]
        if lines:
            self.stream.write("\r\x1b[K" + "\n".join(lines) + "\n")
        self.draw(row)

    def end(self, row):
        self.draw(row)
        self.stream.write("\n")
        super().end(row)

    def interrupted(self):
        self.stream.write("\n")
        self.stream.flush()


class _Json(_Lines):
    def start(self, row):
        for sub in row["sub_tasks"]:
            self.emit(sub)

    def change(self, row, subs):
        for sub in subs:
            self.emit(sub)

    def emit(self, sub):
        event = {k: sub[k] for k in ("sub_task_id", "status", "agent_id", "result")}
        event["started_at"] = sub.get("started_at")  # null while it waits for a slot
        self.write(render.json_text(event))

    def end(self, row):
        summary = row["consolidated_result"] or jobs.state.summary(row, clock.now())
        self.write(render.json_text(summary))


def watch(job_id, stream, db=None, tty=None, as_json=False) -> int:
    """Follow ``job_id`` until every sub-task is final; return the exit code (0 or 1).

    ``tty`` chooses the bar (default: whether ``stream`` is a terminal).
    KeyboardInterrupt propagates after the display is left tidy.
    """
    if tty is None:
        tty = hasattr(stream, "isatty") and stream.isatty()
    colour = render.use_colour(stream)
    view = _Json(stream, False) if as_json else _Bar(stream, colour) if tty else _Lines(stream, colour)
    row = jobs.get_job(job_id, db=db)
    view.start(row)
    try:
        while not finished(row):
            before = {s["sub_task_id"]: (s["status"], s["result"], waiting(s)) for s in row["sub_tasks"]}
            row = wait_for_change(job_id, fingerprint(row), db=db)
            changed = [s for s in row["sub_tasks"]
                       if before.get(s["sub_task_id"]) != (s["status"], s["result"], waiting(s))]
            if changed:
                view.change(row, changed)
    except KeyboardInterrupt:
        view.interrupted()
        raise
    view.end(row)
    return exit_code(row)


# -- brain job wait -------------------------------------------------------------

TIMED_OUT = 124  # like timeout(1): the wait ran out before the job finished


def join(job_id, timeout=None, db=None) -> "tuple[dict, bool]":
    """Block until every sub-task of ``job_id`` is final, or ``timeout`` seconds pass;
    return ``(row, timed_out)``.

    Costs nothing while it waits: it sleeps until a write is committed
    (``jobs.wait_for_commit``) or the job's next deadline or expiry comes
    (``state.next_due``: a deadline passing commits nothing), whichever
    is first, then reads the job again (which applies what is due).
    """
    end = None if timeout is None else time.monotonic() + timeout
    row = jobs.get_job(job_id, db=db)
    while not finished(row):
        pause = _until(next_due(row))
        if end is not None:
            left = end - time.monotonic()
            if left <= 0:
                return row, True
            pause = min(pause, left)
        jobs.wait_for_commit(pause, db=db)
        row = jobs.get_job(job_id, db=db)
    return row, False


def _until(due) -> float:
    """Seconds from now (``clock``) until ``due`` (ISO UTC), a little past it so the read finds it due."""
    return max(0.01, clock.epoch(due) - clock.now() + 0.001)


def joined_text(summary, row=None, timed_out=None) -> str:
    """A consolidation as compact text, to be read by an agent: a header, then one line per
    sub-task (glyph, id, result). ``row`` (the same job) tells waiting sub-tasks apart;
    ``timed_out`` is the wait's timeout in seconds when it ran out first."""
    idle = {s["sub_task_id"] for s in row["sub_tasks"] if waiting(s)} if row is not None else set()
    c = {k: summary[k] for k in STATUSES}
    c["waiting"] = len(idle)
    c["running"] -= c["waiting"]
    head = f"job {summary['job_id']} {summary['status']}: {c['completed']} completed, {c['failed']} failed"
    if not summary["complete"]:
        head += _unfinished(c)
    if timed_out is not None:
        head += f" (wait timed out after {timed_out:g}s)"
    lines = [head]
    for r in summary["results"]:
        glyph = render.WAITING if r["sub_task_id"] in idle else render.GLYPHS[r["status"]]
        result = render.printable(r["result"]) if r["result"] is not None else ""
        lines.append(f"{glyph} {r['sub_task_id']}: {result}" if result else f"{glyph} {r['sub_task_id']}")
    return "\n".join(lines)

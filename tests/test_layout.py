"""The SQLite store's layout (store/layout.py): a report rewrites its sub-task's slot, not the job.

Checked on the real file with the sqlite3 module: the stored text stays
JSON any reader reads, its byte size stays put, the WAL receives a handful
of pages instead of the whole row, and the tally that lets a report skip
the other sub-tasks is dropped by any other program's write and rebuilt.
"""

import json
import os
import sqlite3

import pytest

from brain_jobs import jobs
from brain_jobs.errors import Refused
from brain_jobs.store import layout
from brain_jobs.store import sqlite as sqlite_store
from brain_jobs.store.sqlite import MIGRATIONS, _migration_1

pytestmark = pytest.mark.sqlite_only


def _raw(db, sql, *args):
    with sqlite3.connect(db) as conn:
        return conn.execute(sql, args).fetchall()


def _sizes(db, job):
    return _raw(db, "SELECT length(CAST(sub_tasks AS BLOB)), length(CAST(history AS BLOB)), json_valid(sub_tasks),"
                    " json_valid(history) FROM jobs WHERE job_id = ?", job)[0]


def _frames_written(db, write):
    """WAL frames (pages) that ``write()`` appended, counted from an emptied WAL."""
    _raw(db, "PRAGMA wal_checkpoint(TRUNCATE)")
    write()
    return _raw(db, "PRAGMA wal_checkpoint(PASSIVE)")[0][1]


def _tally(db, job):
    return _raw(db, "SELECT pending, running, completed, failed, next_deadline FROM job_tally WHERE job_id = ?", job)


def test_a_report_on_a_big_job_writes_a_few_pages_and_keeps_the_record_size(db):
    job = jobs.create_job_with_subtasks(3600, {"prompt": "p"}, [f"GET /items/{i}" for i in range(1, 501)])
    before = _sizes(db, job)
    frames = _frames_written(db, lambda: jobs.update_subtask_status(job, "sub_250", "completed", "[200 OK] 3 items",
                                                                    agent_id="w250"))
    assert _sizes(db, job) == before and before[2:] == (1, 1)
    assert frames <= 8  # the slot's page(s), the history's last page, the tally; the row is ~200 pages
    assert _raw(db, "SELECT json_extract(sub_tasks, '$[249].result'), json_extract(sub_tasks, '$[249].agent_id'),"
                    " json_extract(history, '$[#-1].sub_task_id') FROM jobs") == [("[200 OK] 3 items", "w250", "sub_250")]
    assert _tally(db, job) == [(499, 0, 1, 0, None)]
    # Every other reader sees plain JSON: the seed's own json.loads included.
    subs = json.loads(_raw(db, "SELECT sub_tasks FROM jobs")[0][0])
    assert len(subs) == 500 and subs[249]["status"] == "completed" and subs[248]["status"] == "pending"


@pytest.mark.skipif(not sqlite_store._IN_PLACE, reason="writing in place needs Python 3.11's sqlite3 blobopen")
def test_a_report_on_a_big_job_writes_its_slot_and_event_in_place(db):
    """No UPDATE re-serialises the 1,000-sub-task record: the slot and the event are written
    over their bytes (incremental blob I/O), and every reader sees the change."""
    job = jobs.create_job_with_subtasks(3600, {"prompt": "p"}, [f"GET /items/{i}" for i in range(1, 1001)])
    jobs.update_subtask_status(job, "sub_1", "running", agent_id="w1")  # the job starts: its status changes
    before = _sizes(db, job)
    statements = []
    jobs.store_for(db)._conn.set_trace_callback(statements.append)
    try:
        jobs.update_subtask_status(job, "sub_500", "completed", "[200 OK] in place", agent_id="w500")
    finally:
        jobs.store_for(db)._conn.set_trace_callback(None)
    assert not [s for s in statements if s.startswith("UPDATE jobs")]
    assert _sizes(db, job) == before
    assert _raw(db, "SELECT json_extract(sub_tasks, '$[499].result'), json_extract(history, '$[#-1].sub_task_id'),"
                    " typeof(sub_tasks), typeof(history) FROM jobs") == [("[200 OK] in place", "sub_500", "text", "text")]
    assert _tally(db, job) == [(998, 1, 1, 0, None)]
    # The tally written with it is trusted by the next report, which finishes the job's count right.
    jobs.update_subtasks(job, [{"sub_task_id": f"sub_{i}", "status": "completed", "agent_id": f"w{i}"}
                               for i in range(1, 1001) if i != 500])
    assert jobs.get_job(job)["status"] == "completed"
    assert jobs.consolidate_subtask_results(job)["results"][499]["result"] == "[200 OK] in place"


def test_a_result_that_outgrows_its_slot_lays_the_job_out_again(db):
    job = jobs.create_job_with_subtasks(3600, {"prompt": "p"}, [f"q{i}" for i in range(1, 201)])
    before = _sizes(db, job)
    long_result = "é" * 200  # 400 bytes of UTF-8: more than the room a slot keeps
    frames = _frames_written(db, lambda: jobs.update_subtask_status(job, "sub_7", "completed", long_result))
    after = _sizes(db, job)
    assert after[0] > before[0] and after[2:] == (1, 1) and frames > 20
    assert jobs.get_job_subtasks(job)[6]["result"] == long_result
    # The new width has room for such results: the next one rewrites its slot only.
    frames = _frames_written(db, lambda: jobs.update_subtask_status(job, "sub_8", "completed", "ü" * 200))
    assert _sizes(db, job)[0] == after[0] and frames <= 8
    assert [s["result"] for s in jobs.get_job_subtasks(job)[6:9]] == [long_result, "ü" * 200, None]


def test_the_history_grows_past_its_room_and_loses_no_event(db):
    n = 120  # ~110 bytes an event: the first room (2 KiB) runs out several times
    job = jobs.create_job_with_subtasks(3600, {"prompt": "p"}, [f"q{i}" for i in range(1, n + 1)])
    for i in range(1, n + 1):
        jobs.update_subtask_status(job, f"sub_{i}", "running", agent_id=f"w{i}")
        jobs.update_subtask_status(job, f"sub_{i}", "completed", f"r{i}", agent_id=f"w{i}")
    history = jobs.get_history(job)
    reports = [(e["sub_task_id"], e["status"]) for e in history if e["event"] == "report"]
    assert reports == [(f"sub_{i}", s) for i in range(1, n + 1) for s in ("running", "completed")]
    assert history[-1]["event"] == "consolidated" and _sizes(db, job)[2:] == (1, 1)
    assert jobs.consolidate_subtask_results(job)["completed"] == n


def test_another_programs_write_drops_the_tally_and_the_rules_still_see_everything(db):
    n = layout.SLOTTED_FROM
    job = jobs.create_job_with_subtasks(3600, {"prompt": "p"}, [f"q{i}" for i in range(1, n + 1)])
    assert _tally(db, job) == [(n, 0, 0, 0, None)]
    # Another program finishes two sub-tasks with plain SQL (and compacts the text doing so).
    _raw(db, "UPDATE jobs SET sub_tasks = json_set(sub_tasks, '$[1].status', 'completed', '$[1].result', 'by sql',"
             " '$[2].status', 'failed', '$[2].result', 'by sql') WHERE job_id = ?", job)
    assert _tally(db, job) == []
    # brain's next report counts them, and lays the job out again with a true tally.
    jobs.update_subtask_status(job, "sub_1", "completed", "by brain")
    summary = jobs.consolidate_subtask_results(job)
    assert (summary["completed"], summary["failed"], summary["pending"]) == (2, 1, n - 3)
    assert _tally(db, job) == [(n - 3, 0, 2, 1, None)]
    # The last reports finish the job from the tally alone.
    jobs.update_subtasks(job, [{"sub_task_id": f"sub_{i}", "status": "completed"} for i in range(4, n + 1)])
    assert jobs.get_job(job)["status"] == "failed" and _tally(db, job) == [(0, 0, n - 1, 1, None)]
    _raw(db, "DELETE FROM jobs WHERE job_id = ?", job)
    assert _raw(db, "SELECT count(*) FROM job_tally") == [(0,)]


def test_a_deadline_is_applied_by_a_report_that_decodes_one_sub_task(db, fake_clock):
    n = layout.SLOTTED_FROM
    job = jobs.create_job_with_subtasks(3600, {"prompt": "p"}, [f"q{i}" for i in range(1, n + 1)])
    agents = [c["prompt"].split()[2].rstrip(":") for c in jobs.dispatch_job(job, timeout=10)["agent_calls"]]
    deadline = jobs.get_job_subtasks(job)[0]["deadline"]
    assert _tally(db, job) == [(0, n, 0, 0, deadline)]
    fake_clock.advance(5)
    jobs.update_subtask_status(job, "sub_1", "completed", "in time", agent_id=agents[0])
    fake_clock.advance(6)
    with pytest.raises(Refused, match="already failed"):
        jobs.update_subtask_status(job, "sub_2", "completed", "too late", agent_id=agents[1])
    subs = jobs.get_job_subtasks(job)
    assert [s["status"] for s in subs] == ["completed"] + ["failed"] * (n - 1)
    assert all(s["result"].startswith("timed out") for s in subs[1:])
    assert jobs.get_job(job)["status"] == "failed"


def test_a_store_from_before_the_tally_is_migrated_and_its_jobs_work(db):
    # A store at migration 1, with a job written the old compact way and no tally.
    os.makedirs(os.path.dirname(db), exist_ok=True)
    conn = sqlite3.connect(db)
    conn.execute("PRAGMA journal_mode = WAL")
    _migration_1(conn)
    n = layout.SLOTTED_FROM
    subs = [{"sub_task_id": f"sub_{i}", "query": f"q{i}", "agent_id": None, "status": "pending", "result": None,
             "attempt": 1, "deadline": None, "updated_at": None} for i in range(1, n + 1)]
    conn.execute("INSERT INTO jobs VALUES ('old1', '2026-11-29T00:00:00.000Z', 86400, '2099-01-01T00:00:00.000Z',"
                 " '{\"prompt\":\"p\"}', 0, 'pending', '[]', '[]', 'distributed_search', ?, 'null')",
                 (json.dumps(subs, separators=(",", ":")),))
    conn.execute("PRAGMA user_version = 1")
    conn.commit()
    conn.close()
    os.chmod(db, 0o600)  # sqlite3 made it with the umask's mode; a store others can read is refused
    jobs.update_subtask_status("old1", "sub_2", "completed", "r2", db=db)
    assert _raw(db, "PRAGMA user_version") == [(len(MIGRATIONS),)]
    assert _tally(db, "old1") == [(n - 1, 0, 1, 0, None)]
    jobs.update_subtasks("old1", [{"sub_task_id": f"sub_{i}", "status": "completed"} for i in range(1, n + 1)
                                  if i != 2], db=db)
    assert jobs.get_job("old1", db=db)["status"] == "completed"


def test_a_small_job_stays_compact_and_has_no_tally(db):
    job = jobs.create_job_with_subtasks(3600, {"prompt": "p"}, ["a", "b"])
    jobs.update_subtask_status(job, "sub_1", "completed", "r")
    text, history = _raw(db, "SELECT sub_tasks, history FROM jobs")[0]
    assert " " not in text and not history.endswith(" ") and _tally(db, job) == []
    assert json.loads(text)[0]["result"] == "r"
    assert [e["event"] for e in json.loads(history)] == ["created", "report"]


# -- the views themselves ------------------------------------------------------------------

def test_slots_read_and_write_like_a_list_in_bytes_not_characters():
    subs = [{"sub_task_id": f"sub_{i}", "query": q, "status": "pending", "result": None}
            for i, q in enumerate(["plain", "ação", "日本語"], 1)]
    text, width = layout.subtasks_text(subs)
    assert json.loads(text) == subs and len(text) == 3 * (width + 1) + 1
    counts, earliest = layout.tally(subs)
    view = layout.Slots(text, width, counts, earliest)
    assert len(view) == 3 and view == subs and view[-1]["query"] == "日本語"
    view[1]["status"] = "completed"
    view[1]["result"] = "ok ✓"
    assert view.counts() == {"pending": 2, "running": 0, "completed": 1, "failed": 0}
    patched = view.patched()
    assert len(patched) == len(text)
    assert [s["status"] for s in json.loads(patched)] == ["pending", "completed", "pending"]
    assert view.earliest_deadline() is None
    view[0].update(status="running", deadline="2026-11-29T10:00:00.000Z")  # what a write gives, the tally counts
    assert view.earliest_deadline() == "2026-11-29T10:00:00.000Z"
    view[2]["result"] = "x" * (width + 1)
    assert view.patched() is None  # does not fit: the store lays everything out again


def test_edits_write_over_bytes_and_keep_the_size():
    text = layout.history_text([{"event": "created"}])
    view = layout.History(text)
    view.append({"event": "report", "n": 1})
    (at, tail), = view.edits()
    assert at == text.index(b"]") and tail == b',{"event":"report","n":1}]'
    assert view.edits().apply(text) == view.patched() and len(view.patched()) == len(text)
    assert layout.History(text).edits() == ()  # nothing new: nothing to write
    assert layout.Edits([(1, b"XY"), (5, b"Z")]).apply(b"0123456789") == b"0XY34Z6789"
    subs = [{"sub_task_id": f"sub_{i}", "status": "pending"} for i in (1, 2, 3)]
    slotted, width = layout.subtasks_text(subs)
    slots = layout.Slots(slotted, width, *layout.tally(subs))
    slots[2]["status"] = "completed"
    (offset, data), = slots.edits()
    assert offset == 1 + 2 * (width + 1) and len(data) == width
    assert json.loads(slots.edits().apply(slotted))[2]["status"] == "completed"


def test_history_appends_in_its_room_and_reads_in_order():
    text = layout.history_text([{"event": "created"}])
    view = layout.History(text)
    view.append({"event": "report", "n": 1})
    view.append({"event": "report", "n": 2})
    patched = view.patched()
    assert len(patched) == len(text)
    assert json.loads(patched) == [{"event": "created"}, {"event": "report", "n": 1}, {"event": "report", "n": 2}]
    assert [e["event"] for e in reversed(view)] == ["report", "report", "created"] and len(view) == 3
    empty = layout.History(b"[]")
    empty.append({"event": "x"})
    assert empty.patched() is None and json.loads(empty.relaid()) == [{"event": "x"}]


# -- the same operations, laid out or compact, give the same answers -----------------------

def test_random_operations_give_the_same_rows_and_answers_laid_out_or_compact(tmp_path, fake_clock, monkeypatch):
    """A seeded random walk of reports, batches, links, dispatches, retries, another program's
    SQL writes and passing time, run on three stores: one lays its 80-sub-task job out in slots
    (the lazy path) and writes its edits in place, one does the same with UPDATEs of the whole
    text (Python before 3.11), the third stores it compact (read whole, as every job was
    before). Every answer, error and row must be the same, and both slotted stores must hold
    the same bytes."""
    import random

    from brain_jobs.errors import BrainError

    rng = random.Random(20261129)
    stores = {kind: str(tmp_path / f"{kind}.db") for kind in ("slots", "rewritten", "compact")}
    counters = {}
    in_place = sqlite_store._IN_PLACE

    def on(kind, fn):
        """Run ``fn(db)`` on one store, with its layout threshold and its own id sequence."""
        monkeypatch.setattr(layout, "SLOTTED_FROM", 10 ** 9 if kind == "compact" else 64)
        monkeypatch.setattr(sqlite_store, "_IN_PLACE", kind == "slots" and in_place)
        seq = counters.setdefault(kind, iter(range(10 ** 6)))
        for module in (jobs, jobs.state, jobs.credentials):
            monkeypatch.setattr(module, "_token", lambda n, seq=seq: f"{next(seq):0{2 * n}x}")
        try:
            return ("ok", fn(stores[kind]))
        except BrainError as exc:
            return ("error", type(exc).__name__, str(exc))

    def both(fn):
        a, b, c = on("slots", fn), on("rewritten", fn), on("compact", fn)
        assert a == b == c
        return a

    n = 80
    job = both(lambda db: jobs.create_job_with_subtasks(3600, {"prompt": "walk"},
                                                          [f"q{i} " + "ü" * (i % 7) for i in range(1, n + 1)],
                                                          db=db))[1]
    results = ["ok", "[200 OK] 5 items", "é" * 200, "x" * 200, "line\twith tab", "日本" * 40, None]
    credentials = {}  # sub-task -> the credential of its last dispatch (stale once retried)
    laid_out = 0
    for step in range(400):
        sub = f"sub_{rng.randint(1, n)}"
        kind = rng.random()
        if kind < 0.45:
            status = rng.choice(["running", "completed", "failed", "completed"])
            by_owner, result, force = rng.random() < 0.8, rng.choice(results), rng.random() < 0.1

            def report(db, sub=sub, status=status, by_owner=by_owner, result=result, force=force):
                owner = credentials.get(sub) or jobs.get_job_subtasks(job, db=db)[int(sub[4:]) - 1]["agent_id"]
                agent = owner if by_owner else "stranger"
                return jobs.update_subtask_status(job, sub, status, result, agent_id=agent, force=force, db=db)

            both(report)
        elif kind < 0.6:
            batch = [{"sub_task_id": f"sub_{rng.randint(1, n)}", "status": rng.choice(["running", "completed", "failed"]),
                      "result": "batch"} for _ in range(rng.randint(1, 6))]
            both(lambda db: [o if isinstance(o, dict) else str(o) for o in jobs.update_subtasks(job, batch, db=db)])
        elif kind < 0.67:
            both(lambda db: jobs.link_host_agent(job, sub, f"host{step}", credentials.get(sub, "none"), db=db))
        elif kind < 0.74:
            timeout = rng.choice([5, 20, 60])
            # Every store issues the same credentials (the same id sequence): the workers keep them.
            calls = both(lambda db: jobs.dispatch_job(job, timeout=timeout, db=db)["agent_calls"])
            if calls[0] == "ok":
                credentials.update((s, c) for _, s, c in (jobs.parse_subtask_prompt(x["prompt"]) for x in calls[1]))
        elif kind < 0.8:
            both(lambda db: jobs.retry_subtasks(job, db=db))
        elif kind < 0.84:
            # Another program puts a sub-task back to pending with plain SQL.
            i = rng.randint(0, n - 1)
            for db in stores.values():
                _raw(db, "UPDATE jobs SET sub_tasks = json_set(sub_tasks, ?, 'pending', ?, NULL) WHERE job_id = ?",
                     f"$[{i}].status", f"$[{i}].result", job)
        elif kind < 0.9:
            fake_clock.advance(rng.choice([1, 5, 30]))
        else:
            both(lambda db: jobs.consolidate_subtask_results(job, db=db))
        both(lambda db: jobs.get_job(job, db=db))
        assert _raw(stores["slots"], "SELECT sub_tasks, history FROM jobs") == \
            _raw(stores["rewritten"], "SELECT sub_tasks, history FROM jobs")
        laid_out += bool(_tally(stores["slots"], job))
    history = both(lambda db: jobs.get_history(job, db=db))[1]
    # The walk went through the paths it means to test, mostly on the laid-out store.
    assert {"report", "link", "dispatch", "retry", "timeout"} <= {e["event"] for e in history}
    assert laid_out > 300 and not _tally(stores["compact"], job)


# -- the job record through the store ------------------------------------------------------

class StoredSide:
    """The slotted record as the SQLite store keeps it: every write is a transaction of the
    store, whose ``get`` hands the rules its views and whose ``replace`` writes them back."""

    def __init__(self, store, row):
        self.store, self.job_id = store, row["job_id"]
        with store.write() as tx:
            tx.insert(row)

    def transact(self, apply):
        with self.store.write() as tx:
            row = tx.get(self.job_id)
            assert isinstance(row["sub_tasks"], layout.Slots) and isinstance(row["history"], layout.History)
            answer, commit = apply(row)
            if commit:
                tx.replace(row)
        return answer

    def row(self):
        return json.loads(json.dumps(self.store.read(self.job_id)))


@pytest.mark.parametrize("in_place", [True, False], ids=["in-place", "update"])
def test_the_record_walk_gives_the_same_rows_through_the_sqlite_store(tmp_path, monkeypatch, in_place):
    """tests/test_record.py's walk, its slotted side stored in a SQLite file: each rule runs on the
    views the store hands out, and what the store then holds (text, tally) is the plain record's row."""
    from test_record import PlainSide, walk

    from brain_jobs.record import SubTasks
    from brain_jobs.store import open_store
    from brain_jobs.vocabulary import STATUSES

    monkeypatch.setattr(sqlite_store, "_IN_PLACE", in_place and sqlite_store._IN_PLACE)
    db = str(tmp_path / "jobs.db")
    store = open_store(db)
    checked = []

    class Checked(StoredSide):
        def row(self):
            row = super().row()
            counts = SubTasks(row["sub_tasks"]).counts()
            assert _tally(db, self.job_id)[0][:4] == tuple(counts[s] for s in STATUSES)
            assert _sizes(db, self.job_id)[2:] == (1, 1)  # JSON any reader reads
            checked.append(1)
            return row

    try:
        walk({"plain": PlainSide, "stored": lambda row: Checked(store, row)}, monkeypatch, steps=250)
    finally:
        store.close()
    assert len(checked) == 250

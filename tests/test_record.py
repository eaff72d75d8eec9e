"""The job record (brain_jobs/record.py): one interface, two implementations, the same rules.

The rules of ``state.py`` run on the plain record (lists) and on the SQLite
store's slotted views (``store/layout.py``), here over bytes in memory, with
no file: a seeded random walk of every kind of rule (reports, batches,
dispatches, starts, retries, cancels, the pool's queue, claims, renewals
and releases, links, final messages, usage, consolidation, passing
deadlines and expiry) gives the same answers, rows, counts and deadlines on
both. tests/test_layout.py runs the same walk through the SQLite store
itself. A guard keeps ``state.py`` free of storage knowledge and the API
free of a storage flag.
"""

import ast
import itertools
import json
import random

import orjson
import pytest

from conftest import ROOT
from brain_jobs import credentials, record, state
from brain_jobs.clock import iso
from brain_jobs.errors import BrainError
from brain_jobs.store import layout
from brain_jobs.vocabulary import DEFAULT_MODEL, HOST

pytestmark = pytest.mark.backends("memory")

MEMORY = ROOT / "brain_jobs"
T0 = 1_900_000_000.0
POOL = "grep"


# -- the guard -------------------------------------------------------------------

def test_the_rules_know_nothing_of_storage_and_no_storage_flag_crosses_the_api():
    source = (MEMORY / "state.py").read_text()
    assert "hasattr(" not in source
    imported = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom):
            imported.add(node.module or "")
            imported |= {f"{node.module or ''}.{a.name}".lstrip(".") for a in node.names}
        elif isinstance(node, ast.Import):
            imported |= {a.name for a in node.names}
    assert not [m for m in imported if m == "store" or m.startswith("store.") or ".store" in m], imported
    for path in (MEMORY / "store" / "contract.py", MEMORY / "jobs.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                names = [a.arg for a in node.args.args + node.args.kwonlyargs]
                assert "lazy" not in names, f"{path.name}: {node.name}() takes lazy"


# -- the two implementations -------------------------------------------------------

def _subs(n=3):
    return [dict(state.new_subtask(i, f"q{i} ação"), status=s, deadline=d)
            for i, (s, d) in enumerate([("running", "2030-01-01T00:00:09.000Z"), ("pending", None),
                                        ("running", "2030-01-01T00:00:05.000Z")][:n], 1)]


def _views(subs, events):
    text, width = layout.subtasks_text(subs)
    return layout.Slots(text, width, *layout.tally(subs)), layout.History(layout.history_text(events))


def test_both_implementations_are_the_record_and_answer_alike():
    subs, events = _subs(), [{"at": "x", "event": "created"}, {"at": "y", "event": "dispatch"}]
    plain, history = record.SubTasks(json.loads(json.dumps(subs))), record.Events(json.loads(json.dumps(events)))
    slots, view = _views(subs, events)
    for s in (plain, slots):
        assert isinstance(s, record.SubTaskRecord) and len(s) == 3 and s == subs
        assert s.counts() == {"pending": 1, "running": 2, "completed": 0, "failed": 0}
        assert s.earliest_deadline() == "2030-01-01T00:00:05.000Z"
        assert s.find("sub_2") is s[1] and s.find("sub_9") is None and s.find("x") is None
        s.find("sub_3")["status"] = "completed"  # changed in place, through the dict handed out
        assert s.counts()["completed"] == 1 and s[2]["status"] == "completed"
        assert s.earliest_deadline() <= "2030-01-01T00:00:09.000Z"  # a lower bound, exact when plain
    assert plain.earliest_deadline() == "2030-01-01T00:00:09.000Z"
    for h in (history, view):
        assert isinstance(h, record.EventLog)
        h.append({"at": "z", "event": "report"})
        assert len(h) == 3 and [e["event"] for e in reversed(h)] == ["report", "dispatch", "created"]
        assert list(h) == events + [{"at": "z", "event": "report"}]


def test_a_status_brain_never_writes_is_counted_under_its_name():
    subs = [{"status": "pending"}, {"status": "paused"}, {"status": "pending"}]  # another program's write
    assert record.SubTasks(subs).counts() == {"pending": 2, "running": 0, "completed": 0, "failed": 0, "paused": 1}


def test_the_plain_record_is_a_list_to_json_orjson_and_equality():
    subs, events = _subs(), [{"at": "x", "event": "created"}]
    plain, history = record.SubTasks(subs), record.Events(events)
    for value, as_list in ((plain, subs), (history, events)):
        assert isinstance(value, list) and value == as_list and as_list == value and repr(value) == repr(as_list)
        assert json.dumps(value) == json.dumps(as_list)
        assert json.dumps(value, indent=2) == json.dumps(as_list, indent=2)
        assert orjson.dumps(value) == orjson.dumps(as_list)


def test_plain_reads_a_view_whole_with_its_changes_and_leaves_what_is_not_an_array():
    slots, view = _views(_subs(), [{"at": "x", "event": "created"}])
    slots[1]["status"] = "failed"
    view.append({"at": "y", "event": "report"})
    row = record.plain({"sub_tasks": slots, "history": view})
    assert type(row["sub_tasks"]) is record.SubTasks and type(row["history"]) is record.Events
    assert [s["status"] for s in row["sub_tasks"]] == ["running", "failed", "running"]
    assert [e["event"] for e in row["history"]] == ["created", "report"]
    odd = {"sub_tasks": {"not": "an array"}, "history": None}
    assert record.plain(odd) == {"sub_tasks": {"not": "an array"}, "history": None}


def test_a_view_decodes_the_whole_text_once_when_iterated_and_keeps_what_it_handed_out():
    subs = _subs()
    slots, _ = _views(subs, [])
    first = slots[0]
    first["result"] = "changed"
    assert [s["sub_task_id"] for s in slots] == ["sub_1", "sub_2", "sub_3"]
    assert next(iter(slots)) is first and slots[0]["result"] == "changed"
    assert slots.earliest_deadline() == "2030-01-01T00:00:05.000Z"  # exact once all are read


# -- the same rules on both: a random walk ------------------------------------------

class PlainSide:
    """The plain record, kept as the memory store keeps a row: JSON text, decoded by each write."""

    def __init__(self, row):
        self.text = json.dumps(row)

    def transact(self, apply):
        row = record.plain(json.loads(self.text))
        answer, commit = apply(row)
        if commit:
            self.text = json.dumps(row)
        return answer

    def row(self):
        return json.loads(self.text)


class SlottedSide:
    """The slotted record, kept as the SQLite store keeps a laid-out job: texts and a tally;
    each write hands the rules ``layout``'s views and keeps what they write back."""

    def __init__(self, row):
        self.scalars = {k: v for k, v in row.items() if k not in ("sub_tasks", "history")}
        self.subs, self.width = layout.subtasks_text(row["sub_tasks"])
        self.counts, self.earliest = layout.tally(row["sub_tasks"])
        self.history = layout.history_text(row["history"])

    def view(self):
        row = json.loads(json.dumps(self.scalars))
        row["sub_tasks"] = layout.Slots.over(self.subs, self.width, dict(self.counts), self.earliest)
        row["history"] = layout.History.over(self.history)
        assert row["sub_tasks"] is not None and row["history"] is not None
        return row

    def transact(self, apply):
        row = self.view()
        answer, commit = apply(row)
        if commit:
            self.subs, (self.counts, self.earliest, self.width) = layout.encode_subtasks(row["sub_tasks"])
            self.history = layout.encode_history(row["history"], compact=False)
            self.scalars = {k: v for k, v in row.items() if k not in ("sub_tasks", "history")}
        return answer

    def row(self):
        return dict(self.scalars, sub_tasks=json.loads(self.subs), history=json.loads(self.history))

    def tally(self):
        return self.counts, self.earliest

    def full_look(self):
        """The earliest deadline of a fresh view once every sub-task was read (exact then)."""
        subs = self.view()["sub_tasks"]
        list(subs)
        return subs.earliest_deadline()


def deterministic_tokens(monkeypatch, step):
    """Every side issues the same credentials and labels in a step."""
    counter = itertools.count()
    for module in (state, credentials):
        monkeypatch.setattr(module, "_token", lambda n: f"{step:04x}{next(counter):0{2 * n - 4}x}")


def transaction(op, now):
    """What ``jobs.mutate`` does around a rule: sweep, apply, commit unless refused cleanly;
    the answer and what the record says within the transaction."""

    def apply(row):
        swept = state.sweep(row, now)
        commit = True
        try:
            answer = ("ok", json.loads(json.dumps(op(row, now))))
        except BrainError as exc:
            answer = ("error", type(exc).__name__, str(exc))
            commit = swept or getattr(exc, "recorded", False)
        subs = row["sub_tasks"]
        return (answer, subs.counts(), subs.earliest_deadline(), state.needs_sweep(row, now),
                state.next_due(row)), commit

    return apply


RESULTS = ["ok", "[200 OK] 5 items", "é" * 200, "x" * 200, None, "日本" * 40]


def random_op(rng, n, creds, past, pooled):
    """One rule call (``op(row, now)``), chosen at random, or None for time passing."""
    sub = f"sub_{rng.randint(1, n)}"
    who = rng.choice([creds.get(sub)] * 6 + [rng.choice(past.get(sub) or [None]), "stranger", None])
    kind = rng.random()
    if kind < 0.25:
        status, result, force = rng.choice(["running", "completed", "failed", "completed"]), rng.choice(RESULTS), \
            rng.random() < 0.1
        return lambda row, now: state.report(row, sub, status, result, who, force, now)
    if kind < 0.31:
        batch = [(f"sub_{rng.randint(1, n)}", rng.choice(["running", "completed", "failed"]), rng.choice(RESULTS))
                 for _ in range(rng.randint(1, 6))]

        def reports(row, now):
            out = []
            for s, status, result in batch:
                try:
                    out.append(state.report(row, s, status, result, creds.get(s), False, now))
                except BrainError as exc:
                    out.append(str(exc))
            return out

        return reports
    if kind < 0.35:
        executor, timeout = rng.choice([HOST, "grep"]), rng.choice([10, 60, 300, None])
        return lambda row, now: state.dispatch(row, DEFAULT_MODEL, timeout, "session", executor, now)
    if kind < 0.39:
        back = rng.choice([0, 1, 3])
        return lambda row, now: state.start(row, sub, who, now - back, now)
    if kind < 0.47:
        ids = rng.choice([[], [sub], [sub, f"sub_{rng.randint(1, n)}"]])
        limit = rng.choice([None, None, 3])
        return lambda row, now: state.retry(row, ids, limit, now)
    if kind < 0.475:
        return state.cancel
    if kind < 0.53:
        timeout = rng.choice([None, 30])
        return lambda row, now: state.queue(row, POOL, DEFAULT_MODEL, timeout, {"files": None}, now)
    if kind < 0.66:
        lease, worker = rng.choice([5, 30]), f"worker{rng.randint(1, 3)}"
        return lambda row, now: state.claim(row, POOL, worker, lease, now)
    if kind < 0.69:
        held = {s: c for s, c in creds.items() if rng.random() < 0.3}
        return lambda row, now: state.renew(row, held, 30, now)
    if kind < 0.72:
        held = rng.choice(sorted(pooled) or [sub])  # a sub-task some worker claimed
        return lambda row, now: state.release(row, held, creds.get(held), "shutting down", now)
    if kind < 0.76:
        host = f"host_{sub}"
        return lambda row, now: state.link_host_agent(row, sub, host, who, now)
    if kind < 0.79:
        message = rng.choice(["final words", None])
        return lambda row, now: state.recover_final_message(row, sub, f"host_{sub}", message, who, now)
    if kind < 0.82:
        usage = {"input_tokens": rng.randint(1, 99), "output_tokens": 7, "cost_usd": rng.choice([None, 0.25])}
        return lambda row, now: state.add_usage(row, sub, who, usage, now)
    if kind < 0.85:
        return state.mark_read
    if kind < 0.88:
        return state.summary
    return None


def learn(answer, creds, past, pooled):
    """Keep the credentials a dispatch or a claim handed out (the workers' side)."""
    if answer[0] != "ok":
        return
    handed = answer[1] if isinstance(answer[1], list) else [answer[1]]
    for view in handed:
        if isinstance(view, dict) and "label" in view and view.get("agent_id"):
            old = creds.get(view["sub_task_id"])
            if old:
                past.setdefault(view["sub_task_id"], []).append(old)
            creds[view["sub_task_id"]] = view["agent_id"]
            (pooled.add if view.get("pool") else pooled.discard)(view["sub_task_id"])


def walk(sides, monkeypatch, steps=400, seed=20261129, n=layout.SLOTTED_FROM + 6, ttl=800):
    """Run one seeded walk on ``sides`` (``{name: factory(row) -> side}``; the first is the
    reference) and check, at every step, that every side agrees with it. Returns the reference's last row."""
    rng = random.Random(seed)
    deterministic_tokens(monkeypatch, 0)
    created = state.new_row("job1", ttl, {"prompt": "walk"}, state.DISTRIBUTED,
                            [f"q{i} " + "ü" * (i % 7) for i in range(1, n + 1)], [], T0)
    made = {name: factory(json.loads(json.dumps(created))) for name, factory in sides.items()}
    (reference, plain), *others = made.items()
    creds, past, pooled = {}, {}, set()
    now = T0
    for step in range(1, steps + 1):
        op = random_op(rng, n, creds, past, pooled)
        if op is None:
            now += rng.choice([1, 5, 20, 60])
            op = lambda row, now: None  # noqa: E731 (a write that only sweeps)
        deterministic_tokens(monkeypatch, step)
        want = plain.transact(transaction(op, now))
        answer, counts, earliest, due, next_due = want
        for name, side in others:
            deterministic_tokens(monkeypatch, step)
            got = side.transact(transaction(op, now))
            where = f"step {step}, {name}"
            assert got[0] == answer and got[1] == counts and got[3] == due, where
            _lower_bound(got[2], earliest, where)
            _lower_bound(got[4], next_due, where)
            assert side.row() == plain.row(), where
            if hasattr(side, "tally"):
                stored_counts, stored_earliest = side.tally()
                assert stored_counts == counts, where
                _lower_bound(stored_earliest, record.SubTasks(plain.row()["sub_tasks"]).earliest_deadline(), where)
                assert side.full_look() == record.SubTasks(plain.row()["sub_tasks"]).earliest_deadline(), where
        learn(answer, creds, past, pooled)
    return plain.row()


def _lower_bound(bound, exact, where):
    """``bound`` is what a view may answer for the ``exact`` earliest time: never later."""
    if exact is None:
        return
    assert bound is not None and bound <= exact, f"{where}: {bound} is not a lower bound of {exact}"


def test_the_rules_give_the_same_rows_on_the_plain_record_and_on_the_slotted_views(monkeypatch):
    events = set()
    for seed in (20261129, 1):
        last = walk({"plain": PlainSide, "slotted": SlottedSide}, monkeypatch, seed=seed)
        events |= {e["event"] for e in last["history"]}
    # The walks went through every kind of rule.
    assert {"report", "late_report", "refused", "dispatch", "retry", "timeout", "cancel", "queue", "claim",
            "lease_expired", "abandoned", "release", "link", "consolidated", "consolidate_read", "expired"} <= events

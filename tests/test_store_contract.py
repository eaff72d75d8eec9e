"""The storage contract (``store/contract.py``), checked on every store: memory, SQLite, PostgreSQL.

Each test states one promise of a ``Store`` or ``Transaction`` method and
holds each store to it through ``open_store``, the way the job logic uses
them; "another connection" is a second store opened on the same target.
"""

import inspect
import re
import threading
import time

import pytest

from conftest import ROOT
from brain_jobs import record, state
from brain_jobs.clock import iso
from brain_jobs.errors import StoreBusy, StoreError
from brain_jobs.store import contract, open_store
from brain_jobs.store.memory import MemoryStore
from brain_jobs.store.postgres import PostgresStore
from brain_jobs.store.sqlite import SQLiteStore

pytestmark = pytest.mark.backends("memory", "sqlite", "postgres")

T0 = 1_900_000_000.0
PATIENCE = 30  # seconds: only a hang takes this long


@pytest.fixture
def open_(db):
    """``open_()`` opens another store (another connection) on this test's target; all closed at the end."""
    opened = []

    def _open():
        store = open_store(db)
        opened.append(store)
        return store

    yield _open
    for store in opened:
        store.close()


def row(job_id, at=0.0, status="pending", ttl=60, subs=(), summary_at=None):
    """A job row created ``at`` seconds after T0, with ``subs``: dicts merged into fresh sub-tasks."""
    r = state.new_row(job_id, ttl, {"prompt": "p", "n": 0}, state.DISTRIBUTED, [f"q{i}" for i in range(len(subs))],
                      [], T0 + at)
    for sub, fields in zip(r["sub_tasks"], subs):
        sub.update(fields)
    r["status"] = status
    if summary_at is not None:
        r["consolidated_result"] = {"job_id": job_id, "consolidated_at": iso(T0 + summary_at)}
    return r


def insert(store, *rows):
    with store.write() as tx:
        for r in rows:
            tx.insert(r)


# -- the shape ---------------------------------------------------------------

def _methods(protocol):
    return {name: value for name, value in vars(protocol).items() if callable(value) and not name.startswith("_")}


def _parameters(function):
    """Names, kinds and defaults; annotations are the protocol's business."""
    return [(p.name, p.kind, p.default) for p in inspect.signature(function).parameters.values()]


@pytest.mark.parametrize("cls", [MemoryStore, SQLiteStore, PostgresStore])
@pytest.mark.backends("memory")  # about classes, not data: once
def test_every_store_class_has_the_contracts_methods_with_its_signatures(cls):
    for name, method in _methods(contract.Store).items():
        assert _parameters(getattr(cls, name)) == _parameters(method), f"{cls.__name__}.{name}"


def test_an_open_store_and_its_transaction_are_the_protocols(open_):
    store = open_()
    assert isinstance(store, contract.Store)
    with store.write() as tx:
        assert isinstance(tx, contract.Transaction)
        for name, method in _methods(contract.Transaction).items():
            assert _parameters(getattr(type(tx), name)) == _parameters(method), f"{type(tx).__name__}.{name}"


@pytest.mark.backends("memory")  # reads the source, once
def test_the_protocols_name_every_method_the_job_logic_calls():
    """Every ``store.X`` / ``tx.X`` call above the stores is a method of the contract."""
    sources = [*(ROOT / "brain_jobs").glob("*.py"), *(ROOT / "hooks").glob("*.py")]
    called = {"store": set(), "tx": set()}
    for path in sources:
        text = path.read_text()
        called["tx"] |= set(re.findall(r"\btx\.(\w+)\(", text))
        called["store"] |= set(re.findall(r"(?:\bstore|_store\([^()]*\))\.(\w+)\(", text))
    assert called["tx"] and called["store"]
    for kind, protocol in (("tx", contract.Transaction), ("store", contract.Store)):
        missing = called[kind] - set(_methods(protocol))
        assert not missing, f"{kind}.{sorted(missing)} called but not in contract.{protocol.__name__}: state it there"


# -- read and read_all ---------------------------------------------------------

def test_read_gives_the_committed_row_and_none_for_another_id(open_):
    store, other = open_(), open_()
    r = row("a1")
    insert(store, r)
    assert other.read("a1") == r
    assert other.read("zz9") is None


def test_read_sees_only_what_is_committed(open_):
    store, other = open_(), open_()
    insert(store, row("a1"))
    with store.write() as tx:
        changed = tx.get("a1")
        changed["iteration"] = 7
        tx.replace(changed)
        tx.insert(row("b2"))
        assert other.read("a1")["iteration"] == 0  # not yet
        assert other.read("b2") is None
        assert [r["job_id"] for r in other.read_all()] == ["a1"]
    assert other.read("a1")["iteration"] == 7
    assert other.read("b2") is not None


def test_every_row_handed_out_carries_the_job_record(open_):
    """``sub_tasks`` and ``history`` are the record interface (``record.py``) in every row the rules
    may get: reads hand the plain record (lists), a write's ``get`` any implementation."""
    store = open_()
    big = row("b1", subs=[{}] * 70)  # big enough for SQLite to lay it out (store/layout.py)
    insert(store, row("a1", subs=[{}, {}]), big)
    for r in (store.read("a1"), store.read("b1"), *store.read_all()):
        assert type(r["sub_tasks"]) is record.SubTasks and type(r["history"]) is record.Events
    with store.write() as tx:
        for job_id in ("a1", "b1"):
            r = tx.get(job_id)
            assert isinstance(r["sub_tasks"], record.SubTaskRecord) and isinstance(r["history"], record.EventLog)
            assert r["sub_tasks"].counts()["pending"] == len(r["sub_tasks"])
            assert r["sub_tasks"].find("sub_2")["query"] == "q1"
            assert record.plain(r) == (big if job_id == "b1" else store.read("a1"))


def test_a_row_handed_out_is_the_callers_own(open_):
    store = open_()
    r = row("a1", subs=[{}])
    insert(store, r)
    r["data"]["prompt"] = "changed after insert"
    store.read("a1")["sub_tasks"][0]["status"] = "completed"
    store.read_all()[0]["history"].append({"event": "forged"})
    with store.write() as tx:
        tx.get("a1")["data"]["n"] = 99  # got, changed, never replaced
    stored = store.read("a1")
    assert stored["data"] == {"prompt": "p", "n": 0}
    assert stored["sub_tasks"][0]["status"] == "pending"
    assert [e["event"] for e in stored["history"]] == ["created"]


def test_read_all_is_newest_first_then_by_id_and_active_only_keeps_the_unfinished(open_):
    store = open_()
    insert(store, row("b1", at=1), row("a1", at=1), row("c0", at=0, status="completed"),
           row("d3", at=3, status="running"), row("e2", at=2, status="failed"))
    assert [r["job_id"] for r in store.read_all()] == ["d3", "e2", "a1", "b1", "c0"]
    assert [r["job_id"] for r in store.read_all(active_only=True)] == ["d3", "a1", "b1"]


# -- write: the transaction --------------------------------------------------

def test_get_insert_replace_delete(open_):
    store = open_()
    with store.write() as tx:
        assert tx.get("a1") is None
        tx.insert(row("a1"))
        assert tx.get("a1")["status"] == "pending"  # a transaction sees its own writes
        changed = tx.get("a1")
        changed.update(status="running", iteration=2)
        changed["sub_tasks"] = [state.new_subtask(1, "added")]
        tx.replace(changed)
        assert tx.get("a1") == changed
    assert store.read("a1") == changed
    with store.write() as tx:
        tx.replace(row("zz9"))  # not stored: an update of nothing, never an insert
        assert tx.delete("a1") is True
        assert tx.delete("a1") is False
        assert tx.get("a1") is None
    assert store.read("a1") is None and store.read("zz9") is None


def test_a_block_that_raises_rolls_back_every_change_and_the_error_goes_on(open_):
    store = open_()
    insert(store, row("a1"), row("b2"))
    with pytest.raises(RuntimeError, match="boom"):
        with store.write() as tx:
            tx.insert(row("c3"))
            changed = tx.get("a1")
            changed["iteration"] = 5
            tx.replace(changed)
            tx.delete("b2")
            tx.housekeeping(iso(T0 + 10_000), iso(T0 + 10_000))  # would pick a1 and b2 as due
            raise RuntimeError("boom")
    assert [r["job_id"] for r in store.read_all()] == ["a1", "b2"]
    assert store.read("a1")["iteration"] == 0
    with store.write() as tx:  # the store is usable after a rollback
        tx.insert(row("c3"))
    assert store.read("c3") is not None


def test_inserting_an_existing_id_is_a_store_error_and_nothing_of_it_is_kept(open_):
    store = open_()
    insert(store, row("a1"))
    with pytest.raises(StoreError):
        with store.write() as tx:
            tx.insert(row("b2"))
            tx.insert(row("a1"))
    assert [r["job_id"] for r in store.read_all()] == ["a1"]


def test_concurrent_read_modify_writes_lose_nothing(open_):
    """Four threads, each with its own store, increment one counter: every increment is kept.
    The yield inside the transaction invites any interleaving the store would allow."""
    stores = [open_() for _ in range(4)]
    insert(stores[0], row("a1"))
    errors = []

    def increment(store):
        try:
            for _ in range(10):
                with store.write() as tx:
                    r = tx.get("a1")
                    time.sleep(0.001)
                    r["data"]["n"] += 1
                    tx.replace(r)
        except Exception as exc:  # reported below: a thread's failure must fail the test
            errors.append(exc)

    threads = [threading.Thread(target=increment, args=(s,)) for s in stores]
    for t in threads:
        t.start()
    for t in threads:
        t.join(PATIENCE)
    assert not errors and not any(t.is_alive() for t in threads)
    assert stores[0].read("a1")["data"]["n"] == 40


def test_a_writer_waits_its_turn_and_then_sees_the_first_writers_commit(open_):
    first, second = open_(), open_()
    insert(first, row("a1"))
    holding, done = threading.Event(), threading.Event()
    seen = []

    def later_writer():
        holding.wait(PATIENCE)
        with second.write() as tx:
            r = tx.get("a1")
            seen.append(r["iteration"])
            r["iteration"] += 10
            tx.replace(r)
        done.set()

    thread = threading.Thread(target=later_writer)
    thread.start()
    with first.write() as tx:
        r = tx.get("a1")
        holding.set()
        assert not done.wait(0.3)  # the second writer cannot get in while this one holds the job
        r["iteration"] = 1
        tx.replace(r)
    thread.join(PATIENCE)
    assert seen == [1]
    assert first.read("a1")["iteration"] == 11


def test_a_writer_kept_waiting_past_the_lock_timeout_gets_store_busy(open_, monkeypatch):
    first = open_()
    insert(first, row("a1"))
    monkeypatch.setenv("BRAIN_LOCK_TIMEOUT", "0.2")
    impatient = open_()
    outcome = []

    def try_to_write():
        try:
            with impatient.write() as tx:
                tx.get("a1")
            outcome.append("wrote")
        except StoreBusy as exc:
            outcome.append(exc)

    with first.write() as tx:
        tx.get("a1")
        thread = threading.Thread(target=try_to_write)
        thread.start()
        thread.join(PATIENCE)
    assert len(outcome) == 1 and isinstance(outcome[0], StoreBusy), outcome
    assert "BRAIN_LOCK_TIMEOUT" in str(outcome[0])


# -- housekeeping and claimable ------------------------------------------------

def test_housekeeping_names_the_due_and_purges_what_is_past_retention(open_):
    store = open_()
    now, cutoff = iso(T0 + 100), iso(T0 + 50)  # ttl 60: a job created at ``at`` expires at at + 60
    insert(store,
           row("due1", at=40, status="running"),               # expires at 100 = now: due
           row("due2", at=0, status="pending"),                # expired at 60: due
           row("live", at=41, status="running"),               # expires at 101: not yet
           row("gone1", at=-20, status="completed", summary_at=30),  # expired 40, finished 30: purged
           row("gone2", at=-20, status="failed"),              # no summary: its expiry (40) counts
           row("kept1", at=-20, status="completed", summary_at=50),  # finished at the cutoff: kept
           row("kept2", at=-10, status="failed", summary_at=10))     # expires at the cutoff (50): kept
    with store.write() as tx:
        due, purged = tx.housekeeping(now, cutoff)
    assert sorted(due) == ["due1", "due2"]
    assert purged == 2
    assert sorted(r["job_id"] for r in store.read_all()) == ["due1", "due2", "kept1", "kept2", "live"]
    assert store.read("due1")["status"] == "running"  # named, not changed: expiring is the caller's rule


def test_claimable_finds_queued_work_oldest_first_within_the_limit(open_):
    store = open_()
    now = iso(T0 + 100)
    insert(store,
           row("late", at=5, subs=[{"pool": "grep"}]),                                    # pending
           row("lost", at=3, subs=[{"pool": "grep", "status": "running", "lease_until": now}]),  # lease ran out
           row("b1", at=1, subs=[{"status": "completed"}, {"pool": "grep"}]),
           row("a1", at=1, subs=[{"pool": "grep"}]),
           row("held", at=0, subs=[{"pool": "grep", "status": "running", "lease_until": iso(T0 + 101)}]),
           row("nolease", at=0, subs=[{"pool": "grep", "status": "running"}]),
           row("other", at=0, subs=[{"pool": "http"}]),
           row("host", at=0, subs=[{}]),
           row("done", at=0, status="completed", subs=[{"pool": "grep"}]))
    with store.write() as tx:
        assert tx.claimable("grep", now, limit=8) == ["a1", "b1", "lost", "late"]
        assert tx.claimable("grep", now) == ["a1"]
        assert tx.claimable("grep", now, limit=2, wait=True) == ["a1", "b1"]
        assert tx.claimable("http", now, limit=8) == ["other"]
        assert tx.claimable("shell", now, limit=8) == []


# -- wait ---------------------------------------------------------------------

def test_wait_is_true_at_once_when_it_starts_listening_then_false_without_a_commit(open_):
    store = open_()
    assert store.wait(PATIENCE) is True
    assert store.wait(0.05) is False


def test_wait_wakes_on_another_connections_commit_and_on_its_own(open_):
    watcher, writer = open_(), open_()
    watcher.wait(0)
    insert(writer, row("a1"))  # committed before the call: still seen
    assert watcher.wait(PATIENCE) is True
    timer = threading.Timer(0.05, insert, args=(writer, row("b2")))  # committed while it waits
    timer.start()
    try:
        assert watcher.wait(PATIENCE) is True
    finally:
        timer.join(PATIENCE)
    insert(watcher, row("c3"))
    assert watcher.wait(PATIENCE) is True


def test_a_transaction_that_changed_nothing_wakes_no_one(open_):
    """An idle worker's empty claim must not wake the others: they would wake each other for ever."""
    watcher, writer = open_(), open_()
    insert(writer, row("a1"))
    watcher.wait(0)
    with writer.write() as tx:
        tx.get("a1")
        tx.claimable("grep", iso(T0), limit=8)
        tx.housekeeping(iso(T0), iso(T0 - 3600))
    assert watcher.wait(0.2) is False


# -- close ----------------------------------------------------------------------

def test_closing_a_store_keeps_what_it_committed_for_the_others(open_, db):
    store, other = open_store(db), open_()
    insert(store, row("a1"))
    store.close()
    assert other.read("a1")["job_id"] == "a1"
    with other.write() as tx:
        tx.insert(row("b2"))
    assert {r["job_id"] for r in other.read_all()} == {"a1", "b2"}

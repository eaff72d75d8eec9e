"""Unit tier: what is the in-memory store's own (its lifetime, names, misuse); the promises it
shares with the real stores are in tests/test_store_contract.py."""

import pytest

from brain_jobs import jobs, state
from brain_jobs.errors import InvalidInput, StoreError
from brain_jobs.store import open_store
from brain_jobs.store.memory import MemoryStore

pytestmark = pytest.mark.backends("memory")


def _row(job_id):
    return state.new_row(job_id, 60, {"prompt": "p"}, state.NORMAL, [], [], 1_900_000_000.0)


def test_open_store_opens_memory_urls_and_names_the_schemes_it_knows():
    store = open_store("memory://picked")
    assert isinstance(store, MemoryStore) and store.name == "picked"
    store.close()
    with pytest.raises(InvalidInput, match="memory://NAME for an in-process test store"):
        open_store("redis://x")


def test_a_named_database_lives_while_a_store_is_open_on_it():
    first = open_store("memory://lifetime")
    second = open_store("memory://lifetime")
    with first.write() as tx:
        tx.insert(_row("abc123"))
    first.close()
    assert second.read("abc123")["job_id"] == "abc123"  # shared, and kept while ``second`` is open
    second.close()
    third = open_store("memory://lifetime")
    assert third.read_all() == []  # the last store took it with it
    third.close()


def test_the_api_drops_its_databases_with_close_stores():
    job = jobs.create_job(60, {"prompt": "p"}, db="memory://api")
    assert jobs.get_job(job, db="memory://api")["job_id"] == job
    jobs.close_stores()
    store = open_store("memory://api")
    assert store.read(job) is None
    store.close()


def test_memory_without_a_name_is_private_to_its_store():
    one, two = open_store("memory://"), open_store("memory://")
    with one.write() as tx:
        tx.insert(_row("abc123"))
    assert one.read("abc123") is not None and two.read("abc123") is None
    one.close()
    two.close()


def test_a_write_inside_a_write_is_refused_and_the_outer_one_still_commits():
    store = open_store("memory://nested")
    with store.write() as tx:
        tx.insert(_row("abc123"))
        with pytest.raises(StoreError, match="transactions do not nest"):
            with store.write():
                pass
    assert store.read("abc123") is not None
    store.close()


def test_a_closed_store_says_so_and_closing_twice_is_harmless():
    store = open_store("memory://closed")
    store.close()
    store.close()
    for use in (lambda: store.read("abc123"), store.read_all, lambda: store.write().__enter__(),
                lambda: store.wait(0)):
        with pytest.raises(StoreError, match="is closed; open it again"):
            use()

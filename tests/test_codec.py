"""The stored-JSON codec: the standard library for a one-shot report, orjson once a process is busy."""

import json
import subprocess
import sys

import pytest

from conftest import ROOT
from brain_jobs import codec, jobs

pytestmark = pytest.mark.sqlite_only  # about this process's codec, not a backend


@pytest.fixture(autouse=True)
def fresh_codec():
    codec.use_stdlib()
    yield
    codec.use_stdlib()


def test_a_busy_process_switches_to_orjson_at_its_second_write(db):
    job = jobs.create_job_with_subtasks(60, {"prompt": "p"}, ["a", "b"], db=db)  # first write
    assert codec.dumps is codec._std_dumps
    jobs.update_subtask_status(job, "sub_1", "completed", "one", db=db)  # second write
    assert codec.dumps is not codec._std_dumps and codec.loads is not codec._std_loads and "orjson" in sys.modules
    jobs.update_subtask_status(job, "sub_2", "completed", "två ✓", db=db)
    assert [s["result"] for s in jobs.get_job(job, db=db)["sub_tasks"]] == ["one", "två ✓"]


def test_a_one_shot_report_never_imports_orjson(db):
    job = jobs.create_job_with_subtasks(60, {"prompt": "p"}, ["a"], db=db)
    code = ("import sys; from brain_jobs import cli; "
            f"rc = cli.main(['job', 'update', '{job}', 'sub_1', '--status', 'completed', '--result', 'r']); "
            "print(rc, 'orjson' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=30)
    assert out.stdout.split()[-2:] == ["0", "False"], out.stderr


def test_brain_json_stdlib_keeps_the_standard_library(db, monkeypatch):
    monkeypatch.setenv("BRAIN_JSON", "stdlib")
    job = jobs.create_job(60, {"prompt": "p"}, db=db)
    jobs.set_job_status(job, "running", db=db)
    jobs.set_job_status(job, "completed", db=db)
    assert codec.dumps is codec._std_dumps


@pytest.mark.parametrize("value", [
    {"prompt": "p", "nested": {"list": [1, 2.5, None, True, "ü ✓ 中"]}},
    {"1": "keys stay text", "big": 2 ** 70 + 1, "neg": -(2 ** 65) - 1, "u64": 2 ** 64 - 1, "below": -(2 ** 63) - 1},
    {"beyond a float": int("7" * 400), "digits in text": "1234567890" * 3, "fraction": 0.5},
    [{"sub_task_id": "sub_1", "result": None, "query": "quote \" and \\\\ backslash"}],
    "plain text",
])
def test_either_codec_reads_what_the_other_wrote(value):
    fast_ok = codec.use_orjson()
    assert fast_ok, "orjson is a declared dependency"
    fast_text = codec.dumps(value)
    codec.use_stdlib()
    std_text = codec.dumps(value)
    assert json.loads(fast_text) == json.loads(std_text) == value
    codec.use_orjson()
    assert codec.loads(std_text) == value
    # Non-text keys become text, as json.dumps does.
    assert codec.loads(codec.dumps({1: "a"})) == {"1": "a"}


@pytest.mark.parametrize("fast", [False, True], ids=["stdlib", "orjson"])
def test_reading_integers_beyond_64_bits_is_exact(fast):
    if fast:
        assert codec.use_orjson()
    for n in (2 ** 64, -(2 ** 63) - 1, 2 ** 70 + 1, 10 ** 30 + 7, -int("9" * 400)):
        text = f'{{"n":[{n}]}}'
        for read in (codec.loads(text), codec.loads_bytes(text.encode())):
            assert type(read["n"][0]) is int and read["n"][0] == n


@pytest.mark.parametrize("fast", [False, True], ids=["stdlib", "orjson"])
@pytest.mark.parametrize("text", ["[NaN]", '{"a":Infinity}', "[-Infinity]", "[1e400]", "[-1.5e999]"])
def test_a_number_that_is_not_json_or_not_a_float_is_an_error_not_another_value(fast, text):
    if fast:
        assert codec.use_orjson()
    for read in (codec.loads, codec.loads_bytes):
        with pytest.raises(ValueError):
            read(text)

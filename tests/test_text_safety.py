"""Text is inert: nothing invisible or direction-changing reaches a terminal or a prompt raw.

One class of characters (``render.invisible()``), one neutralisation for text
(``render.printable``), one for JSON (``render.json_text``), used by every
output: each command's text and ``--json``, ``dispatch``'s Agent calls, the
runner's and the worker's logs, error lines, and the hooks' words to the
agent. Queries refuse the class outright (tests/test_hostile.py).
"""

import json
import subprocess
import sys
import unicodedata

import pytest

from conftest import BRAIN
from brain_jobs import jobs, pool, render
from tests.test_hooks import data, hook, recorded  # noqa: F401 -- ``data`` is a fixture
from tests.test_runner_support import cli, dispatch_event, finished, wait_until

# Each class the neutralisation covers, once: bidi override, line and paragraph separators, Arabic
# letter mark, zero-width space, BOM, soft hyphen, tags spelling "ok", a Hangul filler, a variation
# selector, CSI, a C1 control, a word joiner, an isolate, interlinear annotation.
HOSTILE = ("ok\u202e\u2028\u2029\u061c\u200b\ufeff\u00ad\U000e006f\U000e006b\u3164\ufe0f\x1b[31m\x85"
           "\u2060\u2066\ufff9")
FORMAT_ONLY = HOSTILE.replace("\x1b", "").replace("\x85", "")  # what a prompt may hold: it refuses controls


def invisible(text):
    """The characters of ``text`` a screen would not show as themselves (line breaks aside)."""
    return [f"U+{ord(c):04X}" for c in render.invisible().findall(text.replace("\n", ""))]


# -- the class ---------------------------------------------------------------------

# Unicode's Default_Ignorable_Code_Point characters outside Cc, Cf, Zl, Zp (DerivedCoreProperties.txt):
# the combining grapheme joiner, Hangul fillers, Khmer invisible vowels, Mongolian and other variation
# selectors, and code points reserved as ignorable.
IGNORABLE = {0x034F, 0x115F, 0x1160, 0x17B4, 0x17B5, 0x180B, 0x180C, 0x180D, 0x180F, 0x3164, 0xFFA0,
             *range(0x2065, 0x2066), *range(0xFE00, 0xFE10), *range(0xFFF0, 0xFFF9), *range(0xE0000, 0xE1000)}


def test_the_class_is_every_control_format_separator_surrogate_and_ignorable_character():
    expected = {cp for cp in range(0x110000)
                if unicodedata.category(chr(cp)) in ("Cc", "Cf", "Zl", "Zp", "Cs") or cp in IGNORABLE}
    everything = "".join(map(chr, range(0x110000)))
    matched = {ord(c) for c in render.invisible().findall(everything)}
    # Characters a later Unicode made format controls (Egyptian hieroglyph format controls) count too.
    assert matched - expected <= set(range(0x13430, 0x13440))
    assert expected - matched == set()


def test_printable_shows_every_hidden_character_as_an_escape():
    shown = render.printable(HOSTILE)
    assert shown == ("ok\\u202e\\u2028\\u2029\\u061c\\u200b\\ufeff\\xad\\U000e006f\\U000e006b\\u3164\\ufe0f"
                     "\\x1b[31m\\x85\\u2060\\u2066\\ufff9")
    assert render.printable("\U000e006f\U000e006b") != "ok" and not invisible(shown)
    assert render.printable("ü ✓ 中 😀 a b\u00a0c") == "ü ✓ 中 😀 a b\u00a0c"  # visible text is left alone


@pytest.mark.parametrize("value", [HOSTILE, {"k" + HOSTILE: [HOSTILE, 1, None]}, "lone \udcff surrogate", "😀"])
def test_json_text_escapes_them_and_means_the_same_value(value):
    for indent in (None, 2):
        text = render.json_text(value, indent=indent)
        assert json.loads(text) == value and not invisible(text)
    assert "\\udb40\\udc6f" in render.json_text("\U000e006f")  # beyond U+FFFF: a surrogate pair, as JSON spells it


# -- every output -------------------------------------------------------------------

def hostile_job(db, *queries, prompt="p " + FORMAT_ONLY):
    """A job whose queries hold ``HOSTILE`` as another program could store them (brain refuses them)."""
    job = jobs.create_job_with_subtasks(300, {"prompt": prompt, "note": HOSTILE}, ["q"] * len(queries), db=db)

    def store_queries(row, now):
        for sub, query in zip(row["sub_tasks"], queries):
            sub["query"] = query

    jobs.mutate(job, store_queries, db)
    return job


def test_every_text_and_json_output_of_the_cli_is_inert(brain, db):
    job = hostile_job(db, "GET /a " + HOSTILE, "GET /b " + HOSTILE, "GET /c")
    brain.ok("job", "update", job, "sub_1", "--status", "completed", "--result", HOSTILE)
    brain.ok("job", "update", job, "sub_2", "--status", "failed", "--result", "no: " + HOSTILE)
    brain.ok("job", "update", job, "sub_3", "--status", "running", "--agent-id", "a1")
    row = jobs.get_job(job, db=db)
    for args in (["subtasks", job], ["consolidate", job], ["list"], ["list", "--all"], ["get", job],
                 ["history", job], ["status", job], ["stats"]):
        text = brain.ok("job", *args)
        assert not invisible(text), (args, text)
        assert not invisible(brain.ok("job", *args, "--json")), args
    assert json.loads(brain.ok("job", "subtasks", job, "--json")) == row["sub_tasks"]
    assert json.loads(brain.ok("job", "get", job, "--json"))["data"] == row["data"]
    shown = brain.ok("job", "subtasks", job)
    assert "ok\\u202e\\u2028" in shown and "\\x1b[31m" in shown  # each escape is visible; CSI is never sent
    jobs.update_subtask_status(job, "sub_3", "completed", HOSTILE, agent_id="a1", db=db)
    for args in (["watch", job], ["watch", job, "--json"]):
        proc = brain("job", *args)
        assert proc.returncode == 1, proc.stderr  # sub_2 failed
        assert not invisible(proc.stdout) and "ok\\u202e" in proc.stdout, (args, proc.stdout)


def test_dispatch_prints_inert_agent_calls_that_carry_the_same_prompt(brain, db):
    job = hostile_job(db, "GET /a " + HOSTILE, "GET /b \u202etxt.exe")
    text = brain.ok("job", "dispatch", job)
    assert not invisible(text), text
    calls = [json.loads(line) for line in text.splitlines()[1:]]
    assert "GET /a " + HOSTILE in calls[0]["prompt"]  # a JSON reader gets the query back as stored
    again = hostile_job(db, "GET /c \u202etxt.exe")
    text = brain.ok("job", "dispatch", again, "--json")
    assert not invisible(text)
    assert "\u202etxt.exe" in json.loads(text)["agent_calls"][0]["prompt"]


def test_an_error_line_is_inert(brain):
    proc = brain("job", "get", "x\u3164\u200b\U000e0041")
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1
    assert not invisible(proc.stderr) and "\\u3164" in proc.stderr


def test_output_the_terminal_cannot_encode_is_escaped_not_a_traceback(brain, db):
    job = jobs.create_job_with_subtasks(300, {"prompt": "p"}, ["é", "b"], db=db)
    jobs.update_subtask_status(job, "sub_2", "completed", "✓ done", db=db)
    for args in (["subtasks", job], ["consolidate", job], ["list"], ["get", "é"]):
        proc = brain("job", *args, env={"PYTHONIOENCODING": "ascii"})
        assert "Traceback" not in proc.stderr, proc.stderr
        assert proc.stdout.isascii() and proc.stderr.isascii()
    proc = brain("job", "subtasks", job, env={"PYTHONIOENCODING": "ascii"})
    assert proc.returncode == 0 and "\\u25cb sub_1: \\xe9" in proc.stdout and "\\u2713 done" in proc.stdout


# -- logs and hooks --------------------------------------------------------------------

def hostile_tree(tmp_path):
    """A directory whose only file's name holds invisible characters and contains ``needle``."""
    src = tmp_path / "src"
    src.mkdir()
    (src / "a\u2028b\U000e006f\U000e006b.txt").write_text("needle\n")
    return src


def test_the_runner_log_is_inert(db, tmp_path):
    src = hostile_tree(tmp_path)
    job = jobs.create_job_with_subtasks(300, {"prompt": "p"}, ["needle"], db=db)
    proc = cli("job", "dispatch", job, "--executor", "grep", "--file", ".", cwd=src)
    assert proc.returncode == 0, proc.stderr
    row = wait_until(lambda: finished(job, db), what="the runner's report")
    assert "\u2028" in row["sub_tasks"][0]["result"]  # stored as found
    log = dispatch_event(job, db)["runner"]["log"]
    text = wait_until(lambda: _read_when(log, ": done, "), what="the runner's last log line")
    assert not invisible(text) and "a\\u2028b\\U000e006f\\U000e006b.txt" in text, text


def test_a_runner_whose_output_is_ascii_logs_escapes_and_finishes_every_sub_task(db, tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "é✓.txt").write_text("needle haystack\n")
    job = jobs.create_job_with_subtasks(300, {"prompt": "p"}, ["needle", "haystack"], db=db)
    proc = cli("job", "dispatch", job, "--executor", "grep", "--concurrency", "1", "--file", ".", cwd=src,
               env={"PYTHONIOENCODING": "ascii"})
    assert proc.returncode == 0, proc.stderr
    log = dispatch_event(job, db)["runner"]["log"]
    text = wait_until(lambda: _read_when(log, ": done, ") or _read_when(log, "Traceback"), what="the runner's end")
    assert "Traceback" not in text and "\\xe9\\u2713.txt" in text, text
    assert [s["status"] for s in jobs.get_job(job, db=db)["sub_tasks"]] == ["completed", "completed"]


def _read_when(path, mark):
    with open(path, encoding="utf-8") as f:
        text = f.read()
    return text if mark in text else None


def test_the_worker_log_is_inert(db, tmp_path):
    src = hostile_tree(tmp_path)
    job = jobs.create_job_with_subtasks(300, {"prompt": "p"}, ["needle"], db=db)
    pool.queue_job(job, "grep", files=["."], db=db)
    proc = subprocess.run([sys.executable, str(BRAIN), "worker", "--executor", "grep", "--drain"], cwd=src,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "completed" in proc.stderr and not invisible(proc.stderr), proc.stderr
    assert "a\\u2028b\\U000e006f\\U000e006b.txt" in proc.stderr


def test_the_session_start_summary_is_inert(data, tmp_path):  # noqa: F811 -- the fixture
    jobs.create_job(300, {"prompt": "Validate\u2028" + FORMAT_ONLY})
    jobs.close_stores()
    out, _ = hook("session_start", recorded("session_start.json", TMP="/tmp"),
                  env={"CLAUDE_ENV_FILE": str(tmp_path / "env.sh")})
    context = out["hookSpecificOutput"]["additionalContext"]
    assert not invisible(context) and "ok\\u202e" in context, context

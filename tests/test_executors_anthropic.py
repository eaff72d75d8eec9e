"""The anthropic executor against the fake Messages API: the real SDK, real HTTP, loopback only.

Most cases run the sub-tasks in this process (``runner.run_here``: the same
code the detached runner runs) and touch the store only to report, so they
run on SQLite alone; one case goes through the CLI and a detached runner.
"""

import json
import os
import subprocess
import sys

import pytest

from brain_jobs import config, jobs, paths, runner
from tests.fakes.fake_anthropic import FakeAnthropic, error, message, text, tool_results, tool_use
from tests.test_runner_support import finished, wait_until

ROOT = paths.PACKAGE_PARENT


@pytest.fixture
def api(monkeypatch):
    with FakeAnthropic() as server:
        monkeypatch.setenv("ANTHROPIC_BASE_URL", server.url)
        monkeypatch.setenv("ANTHROPIC_API_KEY", "test-key")
        yield server


def first_user_text(req):
    content = req.body["messages"][0]["content"]
    return content if isinstance(content, str) else content[0]["text"]


def run(db, tmp_path, queries, model="haiku", files=None, **settings):
    job = jobs.create_job_with_subtasks(300, {"prompt": "p"}, queries, db=db)
    settings.setdefault("api_retries", 2)
    runner.run_here(job, "anthropic", settings=config.resolve(settings), model=model, files=files,
                    workdir=str(tmp_path), db=db)
    return {s["query"]: s for s in jobs.get_job(job, db=db)["sub_tasks"]}



@pytest.mark.sqlite_only
def test_plain_answers_with_the_seed_prompt_and_the_mapped_model(api, db, tmp_path, monkeypatch):
    api.responder = lambda req: text(f"answer to {first_user_text(req).split(' in ')[0][7:]}")
    monkeypatch.setenv("BRAIN_MODEL_SONNET", "claude-sonnet-custom")
    subs = run(db, tmp_path, ["users", "posts", "comments"], model="sonnet", files=["api.py"])
    assert {q: (s["status"], s["result"]) for q, s in subs.items()} == {
        "users": ("completed", "answer to users"), "posts": ("completed", "answer to posts"),
        "comments": ("completed", "answer to comments")}
    assert all(s["agent_id"].startswith("agent_anthropic_") for s in subs.values())
    reqs = api.messages_requests()
    assert len(reqs) == 3
    body = reqs[0].body
    assert first_user_text(reqs[0]).endswith("in api.py. Return ONLY the result (max 200 chars).")
    assert body["model"] == "claude-sonnet-custom" and body["max_tokens"] == 1024
    assert [t["name"] for t in body["tools"]] == ["read_file", "grep", "list_dir"]
    # ANTHROPIC_API_KEY reaches the server (this SDK version sends it as a bearer token).
    assert all("test-key" in (r.headers.get("x-api-key", "") + r.headers.get("authorization", "")) for r in reqs)
    assert all(r.client == "127.0.0.1" for r in reqs)


@pytest.mark.sqlite_only
def test_a_tool_use_round_trip(api, db, tmp_path):
    work = tmp_path / "work"
    (work / "sub").mkdir(parents=True)
    (work / "notes.txt").write_text("users: 42\nposts: 7\n")
    (work / "sub" / ".cache").write_text("posts: 99\n")  # grep skips hidden files, as the grep executor does

    def responder(req):
        results = tool_results(req.body)
        if not results:
            return message([{"type": "tool_use", "name": "read_file", "input": {"path": "notes.txt"}},
                            {"type": "tool_use", "name": "grep", "input": {"pattern": "posts"}},
                            {"type": "tool_use", "name": "list_dir", "input": {}}])
        return text(" | ".join(results.values()).replace("\n", " ")[:150])

    api.responder = responder
    subs = run(db, work, ["users"])
    assert subs["users"]["status"] == "completed"
    assert subs["users"]["result"] == "users: 42 posts: 7 | notes.txt:2: posts: 7 | notes.txt sub/"
    second = api.messages_requests()[1].body
    assert second["messages"][1]["role"] == "assistant"
    assert [b["type"] for b in second["messages"][2]["content"]] == ["tool_result"] * 3


@pytest.mark.sqlite_only
def test_a_429_is_retried_then_succeeds(api, db, tmp_path):
    api.enqueue(error(429, retry_after=None, headers={"retry-after-ms": "20"}), text("found it"))
    subs = run(db, tmp_path, ["users"])
    assert (subs["users"]["status"], subs["users"]["result"]) == ("completed", "found it")
    assert [r.status for r in api.messages_requests()] == [429, 200]


@pytest.mark.sqlite_only
def test_a_500_fails_only_its_own_subtask(api, db, tmp_path):
    def responder(req):
        if "broken" in first_user_text(req):
            return error(500, msg="upstream exploded", retry_after=None, headers={"retry-after-ms": "1"})
        return text("fine")

    api.responder = responder
    subs = run(db, tmp_path, ["broken", "users", "posts"], api_retries=2)
    assert (subs["broken"]["status"], subs["broken"]["result"]) == ("failed",
                                                                    "API error 500: upstream exploded (3 tries)")
    assert [subs[q]["status"] for q in ("users", "posts")] == ["completed", "completed"]
    assert sum("broken" in first_user_text(r) for r in api.messages_requests()) == 3  # 1 + 2 retries


@pytest.mark.sqlite_only
def test_an_oversized_answer_is_cut_to_200_characters(api, db, tmp_path):
    api.enqueue(text("x" * 500))
    result = run(db, tmp_path, ["users"])["users"]["result"]
    assert len(result) == 200 and result.endswith("…")


@pytest.mark.sqlite_only
def test_tool_calls_outside_the_working_directory_are_refused(api, db, tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    secret = tmp_path / "secret.txt"
    secret.write_text("TOPSECRET")
    (work / "link").symlink_to(secret)
    (work / "door").symlink_to(tmp_path, target_is_directory=True)
    calls = [("read_file", {"path": "../secret.txt"}), ("read_file", {"path": str(secret)}),
             ("read_file", {"path": "link"}), ("read_file", {"path": "door/secret.txt"}),
             ("list_dir", {"path": ".."}), ("grep", {"pattern": "TOP", "path": "door"})]

    def responder(req):
        if not tool_results(req.body):
            return message([{"type": "tool_use", "id": f"toolu_{i}", "name": n, "input": a}
                            for i, (n, a) in enumerate(calls)])
        return text("nothing reachable")

    api.responder = responder
    job = jobs.create_job_with_subtasks(300, {"prompt": "p"}, ["secrets"], db=db)
    runner.run_here(job, "anthropic", settings=config.resolve({"api_retries": 0}), workdir=str(work), db=db)
    assert jobs.get_job(job, db=db)["sub_tasks"][0]["result"] == "nothing reachable"
    second = api.messages_requests()[1]
    blocks = second.body["messages"][2]["content"]
    assert len(blocks) == len(calls)
    assert all(b["is_error"] and "outside the working directory" in b["content"] for b in blocks), blocks
    assert all(b"TOPSECRET" not in r.raw for r in api.requests)


@pytest.mark.sqlite_only
def test_turns_are_bounded(api, db, tmp_path):
    api.responder = lambda req: tool_use("list_dir", {})
    subs = run(db, tmp_path, ["users"], max_turns=3)
    assert (subs["users"]["status"], subs["users"]["result"]) == ("failed", "no answer after 3 turns")
    assert len(api.messages_requests()) == 3


@pytest.mark.sqlite_only
def test_the_token_budget_is_bounded(api, db, tmp_path):
    api.responder = lambda req: tool_use("list_dir", {}, usage={"input_tokens": 900, "output_tokens": 200})
    subs = run(db, tmp_path, ["users"], max_total_tokens=2000, max_turns=10)
    assert subs["users"]["status"] == "failed"
    assert subs["users"]["result"] == "token budget spent (2200 of 2000) before an answer"
    assert len(api.messages_requests()) == 2


@pytest.mark.sqlite_only
def test_without_a_key_nothing_is_dispatched(brain, db, monkeypatch):
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    monkeypatch.delenv("ANTHROPIC_AUTH_TOKEN", raising=False)
    job = jobs.create_job_with_subtasks(60, {"prompt": "p"}, ["users"], db=db)
    proc = brain("job", "dispatch", job, "--executor", "anthropic")
    assert proc.returncode == 1 and "ANTHROPIC_API_KEY" in proc.stderr
    assert jobs.get_job(job, db=db)["sub_tasks"][0]["status"] == "pending"


def test_detached_runner_end_to_end_and_the_sdk_stays_out_of_the_cli(api, db, tmp_path):
    api.responder = lambda req: text("42 users")
    job = jobs.create_job_with_subtasks(300, {"prompt": "p"}, ["users", "posts"], db=db)
    # Dispatch through cli.main in a fresh interpreter, then ask it whether it imported the SDK.
    probe = ("import sys; from brain_jobs import cli; rc = cli.main(sys.argv[1:]); "
             "print('SDK imported' if 'anthropic' in sys.modules else 'SDK not imported', file=sys.stderr); "
             "sys.exit(rc)")
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.run([sys.executable, "-c", probe, "job", "dispatch", job, "--executor", "anthropic",
                           "--json"], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=30)
    assert proc.returncode == 0, proc.stderr
    assert "SDK not imported" in proc.stderr
    out = json.loads(proc.stdout)
    row = wait_until(lambda: finished(job, db), timeout=30, what="anthropic runner")
    assert [(s["status"], s["result"]) for s in row["sub_tasks"]] == [("completed", "42 users")] * 2
    assert "executor anthropic, 2 sub-tasks" in open(out["log"]).read()


BACKTRACK = '''
import json, sys, threading, time
from brain_jobs.executors import Context, Failed
from brain_jobs.executors.anthropic_api import Tools

workdir = sys.argv[1]
tools = Tools(workdir)
tools.time_left = Context(job_id="abc123", workdir=workdir, deadline=time.time() + 2).time_left  # a sub-task's
ticks = []
ticker = threading.Thread(target=lambda: [ticks.append(time.sleep(0.01)) for _ in range(50)], daemon=True)
ticker.start()
try:
    out = tools.grep("(a+)+$")
except Failed as exc:
    out = f"Failed: {exc}"
ticker.join(10)
after = Tools(workdir)  # the deadline above has passed
print(json.dumps({"backtracking": out, "ticks": len(ticks), "words": after.grep(r"def \\w+"),
                  "text": after.grep("main")}))
'''


@pytest.mark.sqlite_only  # no store involved
def test_a_pattern_that_backtracks_for_ever_stops_at_the_deadline_and_holds_nothing_else(tmp_path):
    """``(a+)+$`` against a line of a's once ran in the runner, holding the GIL for ever: no other
    sub-task, no deadline, no signal handler could run. It now runs apart and is killed in time.
    The subprocess's timeout only fails the test when it hangs."""
    (tmp_path / "f.txt").write_text("a" * 64 + "!\ndef main():\n")
    proc = subprocess.run([sys.executable, "-c", BACKTRACK, str(tmp_path)], cwd=ROOT, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["backtracking"].startswith("Failed: grep timed out after")
    assert out["ticks"] == 50  # another thread ran while it searched
    assert out["words"] == "f.txt:2: def main():" and out["text"] == "f.txt:2: def main():"

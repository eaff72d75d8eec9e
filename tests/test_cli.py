"""The brain command line as a subprocess: outputs, formats, ids and exit codes."""

import json
import os
import pty
import re
import subprocess
import sys


from conftest import BRAIN, ROOT
from brain_jobs import jobs, prompts


def create(brain, *subtasks, ttl=300):
    args = ["job", "create", "--distributed", "--ttl", ttl, "--prompt", "Validate endpoints"]
    for q in subtasks or ("GET /health", "POST /auth", "GET /users"):
        args += ["--subtask", q]
    out = brain.ok(*args)
    return re.search(r"job_(\w+)", out).group(1)


def test_create_names_the_job_exactly_once_on_stdout(brain):
    proc = brain("job", "create", "--distributed", "--ttl", "60", "--prompt", "p", "--subtask", "a", "--subtask", "b")
    assert proc.returncode == 0
    assert re.findall(r"job_\w+", proc.stdout) == [proc.stdout.strip()]
    assert re.fullmatch(r"job_[0-9a-f]{12}\n", proc.stdout)
    assert "dispatch" in proc.stderr  # the hint goes to stderr


def test_create_json_and_normal_jobs(brain):
    row = brain.json("job", "create", "--ttl", "60", "--prompt", "plain", "--data", '{"k": 1}')
    assert row["type"] == "normal" and row["status"] == "pending" and row["sub_tasks"] == []
    assert row["data"] == {"k": 1, "prompt": "plain"}
    row = brain.json("job", "create", "--distributed", "--ttl", "60", "--prompt", "p", "--subtask", "q",
                     "--file", "a.py", "--skills", "python-pro-skill")
    assert row["type"] == "distributed_search"
    assert row["data"]["files"] == ["a.py"] and row["data"]["skills"] == ["python-pro-skill"]
    assert row["sub_tasks"][0] == {"sub_task_id": "sub_1", "query": "q", "agent_id": None, "status": "pending",
                                   "result": None, "attempt": 1, "deadline": None, "updated_at": None}


def test_ids_are_accepted_with_or_without_prefix_and_printed_bare(brain):
    job = create(brain)
    for form in (job, f"job_{job}"):
        assert brain.json("job", "get", form)["job_id"] == job
        assert brain.json("job", "consolidate", form)["job_id"] == job
        assert f"Sub-tasks of job {job}:" in brain.ok("job", "subtasks", form)
    assert brain.json("job", "dispatch", f"job_{job}")["job_id"] == job


def test_subtasks_layout_matches_the_seed(brain):
    job = create(brain, "GET /api/users", "GET /api/posts", "GET /api/comments")
    calls = brain.json("job", "dispatch", job)["agent_calls"]
    label2 = brain.json("job", "subtasks", job)[1]["agent_id"]  # the public label, not the prompt's credential
    agent3 = jobs.parse_subtask_prompt(calls[2]["prompt"])[2]
    brain.ok("job", "update", job, "sub_3", "--status", "completed", "--result", "[200 OK] 5 items", "--agent-id", agent3)
    # A person puts sub_1 back to pending through a retry after failing it.
    brain.ok("job", "update", job, "sub_1", "--status", "failed", "--result", "x", "--force")
    brain.ok("job", "retry", job, "sub_1")
    expected = (
        f"Sub-tasks do job {job}:\n\n"
        "  ○ sub_1: GET /api/users\n"
        "  ◉ sub_2: GET /api/posts\n"
        f"      Agent: {label2}\n"
        "  ✓ sub_3: GET /api/comments\n"
        "      Resultado: [200 OK] 5 items\n"
    )
    assert brain.ok("job", "subtasks", job, env={"LANG": "pt_BR.UTF-8"}) == expected
    english = brain.ok("job", "subtasks", job, env={"LANG": "en_US.UTF-8"})
    assert english == expected.replace("Sub-tasks do job", "Sub-tasks of job").replace("Resultado:", "Result:")
    assert brain.ok("job", "subtasks", job, env={"LC_ALL": "pt_PT.UTF-8", "LANG": "en_US.UTF-8"}) == expected


def test_failed_subtasks_show_the_cross_and_their_reason(brain):
    job = create(brain, "GET /a")
    brain.ok("job", "update", job, "sub_1", "--status", "failed", "--result", "connection refused")
    out = brain.ok("job", "subtasks", job)
    assert "  ✗ sub_1: GET /a\n      Result: connection refused" in out


def _tty_output(args, env):
    """Run the CLI with stdout on a pseudo-terminal; return what it wrote."""
    master, slave = pty.openpty()
    proc = subprocess.Popen([sys.executable, str(BRAIN), *args], stdout=slave, stderr=subprocess.PIPE,
                            env={**os.environ, **env})
    os.close(slave)
    chunks = []
    while True:
        try:
            data = os.read(master, 65536)
        except OSError:
            break
        if not data:
            break
        chunks.append(data)
    proc.wait(timeout=30)
    os.close(master)
    return b"".join(chunks).decode()


def test_colour_only_on_a_terminal_and_never_with_no_color(brain):
    job = create(brain, "GET /a")
    assert "\x1b[" not in brain.ok("job", "subtasks", job)
    assert "\x1b[" in _tty_output(["job", "subtasks", job], {})
    assert "\x1b[" not in _tty_output(["job", "subtasks", job], {"NO_COLOR": "1"})


def test_untrusted_text_is_neutralised_before_a_terminal(brain):
    job = create(brain, "GET /a")
    hostile = "ok\x1b[2J\x1b]0;pwned\x07\u202eevil\rback"
    brain.ok("job", "update", job, "sub_1", "--status", "completed", "--result", hostile)
    for out in (brain.ok("job", "subtasks", job), _tty_output(["job", "subtasks", job], {"NO_COLOR": "1"}),
                brain.ok("job", "consolidate", job), brain.ok("job", "history", job)):
        assert "\x1b" not in out and "\x07" not in out and "\u202e" not in out and "\r" not in out.replace("\r\n", "\n")
    assert "\\x1b[2J" in brain.ok("job", "subtasks", job)
    # JSON keeps the exact text (escaped by JSON itself).
    assert brain.json("job", "consolidate", job)["results"][0]["result"] == hostile


def test_dispatch_leaves_the_worker_agents_own_model_unnamed(brain):
    """haiku is the worker agent's own model: naming it in every call would cost the orchestrator bytes."""
    front = (ROOT / "agents" / "subtask-worker.md").read_text().split("---")[1]
    assert f"\nmodel: {prompts.DEFAULT_MODEL}\n" in front
    job = create(brain)
    for call in brain.json("job", "dispatch", job)["agent_calls"]:
        assert set(call) == {"subagent_type", "description", "prompt", "run_in_background"}


def test_dispatch_json_is_ready_for_the_agent_tool(brain):
    job = create(brain)
    out = brain.json("job", "dispatch", job, "--model", "sonnet", "--file", "api/routes.py")
    assert out["job_id"] == job and len(out["agent_calls"]) == 3
    row = brain.json("job", "get", job)
    for call, sub in zip(out["agent_calls"], row["sub_tasks"]):
        assert set(call) == {"subagent_type", "description", "prompt", "model", "run_in_background"}
        assert call["run_in_background"] is True and call["model"] == "sonnet"
        assert call["subagent_type"] == "brain-jobs:subtask-worker"
        # A short pointer: job, sub-task, credential, and the seed's "Search {query} in {file}".
        credential = jobs.parse_subtask_prompt(call["prompt"])[2]
        assert re.fullmatch(r"[0-9a-f]{32}", credential) and credential not in json.dumps(row)
        assert call["prompt"] == f"{job} {sub['sub_task_id']} {credential}: Search {sub['query']} in api/routes.py."
        assert call["description"] == sub["sub_task_id"]
        assert sub["status"] == "running" and sub["agent_id"].startswith("agent_sonnet_")
    assert row["status"] == "running" and row["iteration"] == 1
    assert row["history"][-1]["event"] == "dispatch"


def test_dispatch_plain_prints_one_call_per_subtask(brain):
    job = create(brain)
    out = brain.ok("job", "dispatch", job).splitlines()
    calls = [json.loads(line) for line in out[1:]]
    assert len(calls) == 3 and all(c["run_in_background"] for c in calls)
    # Nothing is left to dispatch: a second dispatch is an operational error.
    proc = brain("job", "dispatch", job)
    assert proc.returncode == 1 and "no pending sub-tasks" in proc.stderr


def test_the_worker_agent_reports_with_the_pointer_it_was_given(brain):
    """The worker definition turns the pointer into the exact report command."""
    job = create(brain, "GET /a")
    prompt = brain.json("job", "dispatch", job)["agent_calls"][0]["prompt"]
    job_id, sub, agent = jobs.parse_subtask_prompt(prompt)
    worker = (ROOT / "agents" / "subtask-worker.md").read_text()
    template = re.search(r"`(brain job update <job> <sub_N> --agent-id <agent id> [^`]*)`", worker).group(1)
    command = (template.replace("<job>", job_id).replace("<sub_N>", sub).replace("<agent id>", agent)
               .replace("'<answer>'", "RESULT"))
    args = command.split()[1:]
    args[args.index("RESULT")] = "[200 OK] 3 items"
    brain.ok(*args)
    assert brain.json("job", "consolidate", job)["results"][0]["result"] == "[200 OK] 3 items"
    # The worker definition and the library spell the command the same way.
    assert command.replace("RESULT", "'<result>'") == prompts.report_command(job_id, {"sub_task_id": sub, "agent_id": agent})


def test_consolidate_has_the_seed_shape_and_works_at_any_moment(brain):
    job = create(brain)
    early = brain.json("job", "consolidate", job)
    assert early["complete"] is False and early["pending"] == 3
    calls = brain.json("job", "dispatch", job)["agent_calls"]
    for i, call in enumerate(calls, 1):
        agent = jobs.parse_subtask_prompt(call["prompt"])[2]
        status = "failed" if i == 2 else "completed"
        brain.ok("job", "update", job, f"sub_{i}", "--status", status, "--result", f"r{i}", "--agent-id", agent)
    final = brain.json("job", "consolidate", job)
    assert {"job_id", "total_tasks", "completed", "failed", "results", "consolidated_at"} <= set(final)
    assert (final["total_tasks"], final["completed"], final["failed"]) == (3, 2, 1)
    assert final["results"][1] == {"sub_task_id": "sub_2", "query": "POST /auth", "status": "failed", "result": "r2",
                                   "source": "report"}
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", final["consolidated_at"])
    assert final["complete"] is True and final["status"] == "failed"
    assert brain.json("job", "consolidate", job) == final  # stored once, read many times
    assert "2 completed, 1 failed" in brain.ok("job", "consolidate", job)


def test_job_status_follows_its_subtasks(brain):
    job = create(brain, "a", "b")
    assert brain.json("job", "get", job)["status"] == "pending"
    brain.ok("job", "update", job, "sub_1", "--status", "completed", "--result", "x")
    assert brain.json("job", "get", job)["status"] == "running"
    brain.ok("job", "update", job, "sub_2", "--status", "completed", "--result", "y")
    row = brain.json("job", "get", job)
    assert row["status"] == "completed" and row["consolidated_result"]["completed"] == 2


def test_normal_job_lifecycle_and_history(brain):
    job = re.search(r"job_(\w+)", brain.ok("job", "create", "--ttl", "60", "--prompt", "one thing")).group(1)
    assert brain.ok("job", "status", job).strip() == "pending"
    assert brain.ok("job", "status", job, "--set", "running").strip() == "running"
    proc = brain("job", "status", job, "--set", "pending")
    assert proc.returncode == 1 and "cannot go from running to pending" in proc.stderr
    assert brain.ok("job", "status", job, "--set", "completed").strip() == "completed"
    proc = brain("job", "status", job, "--set", "failed")
    assert proc.returncode == 1 and "already completed" in proc.stderr
    events = brain.json("job", "history", job)
    assert [e["event"] for e in events] == ["created", "status", "status", "consolidated"]
    assert [e.get("status") for e in events[1:]] == ["running", "completed", "completed"]
    assert all(re.fullmatch(r".*T.*\.\d{3}Z", e["at"]) for e in events)
    text = brain.ok("job", "history", job)
    assert "status" in text and "completed" in text


def test_list_get_delete_cleanup_stats(brain):
    a = create(brain, "x")
    b = re.search(r"job_(\w+)", brain.ok("job", "create", "--ttl", "60", "--prompt", "n")).group(1)
    brain.ok("job", "update", a, "sub_1", "--status", "completed", "--result", "done")
    active = brain.json("job", "list")
    assert [j["job_id"] for j in active] == [b]
    assert {j["job_id"] for j in brain.json("job", "list", "--all")} == {a, b}
    assert b in brain.ok("job", "list") and a not in brain.ok("job", "list")
    stats = brain.json("job", "stats")
    assert stats["total_jobs"] == 2 and stats["jobs"]["completed"] == 1 and stats["sub_tasks"]["completed"] == 1
    assert "jobs: 2" in brain.ok("job", "stats")
    assert brain.json("job", "cleanup") == {"expired": 0, "timed_out": 0, "purged": 0}
    assert "job_id: " + a in brain.ok("job", "get", a)
    brain.ok("job", "delete", f"job_{a}")
    proc = brain("job", "get", a)
    assert proc.returncode == 1 and "not found" in proc.stderr
    assert brain("job", "delete", a).returncode == 1


def test_db_flag_beats_the_environment(brain, tmp_path):
    other = tmp_path / "other" / "jobs.db"
    out = brain.ok("--db", other, "job", "create", "--ttl", "60", "--prompt", "p")
    job = out.strip()[4:]
    assert brain("job", "get", job).returncode == 1  # not in BRAIN_DB
    assert brain.json("job", "get", job, "--db", other)["job_id"] == job
    assert other.exists()


def test_errors_are_one_line_with_documented_exit_codes(brain):
    cases = [
        (("job", "get", "abc123"), 1, "not found"),
        (("job", "frobnicate"), 2, "invalid choice"),
        (("job", "create", "--ttl", "60"), 2, "--prompt"),
        (("job",), 2, "required"),
        (("job", "update", "abc123", "sub_1"), 2, "--status"),
    ]
    for args, code, text in cases:
        proc = brain(*args)
        assert proc.returncode == code, (args, proc.stderr)
        assert text in proc.stderr
        assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("brain: error: ")
        assert "Traceback" not in proc.stderr and proc.stdout == ""


def test_help_documents_every_command_with_examples(brain):
    top = brain.ok("job", "--help")
    for name in ("create", "subtasks", "update", "dispatch", "watch", "wait", "consolidate", "list", "get",
                 "delete", "cleanup", "stats", "status", "history", "retry", "cancel"):
        assert name in top
        assert brain(("job"), name, "--help").returncode == 0
    assert "exit codes" in brain.ok("--help") and "BRAIN_DB" in brain.ok("--help")


# -- terminal manners ----------------------------------------------------------------

def test_a_mistyped_command_or_option_gets_one_suggestion(brain):
    cases = [
        (("job", "craete", "--ttl", "60"), "invalid choice: 'craete'; did you mean 'create'? (see brain job --help)"),
        (("jbo", "list"), "did you mean 'job'?"),
        (("job", "create", "--ttl", "60", "--prompt", "p", "--sbtask", "x"),
         "unrecognized arguments: --sbtask x; did you mean --subtask? (see brain job create --help)"),
        (("job", "list", "--jsno"), "did you mean --json?"),
        (("job", "dispatch", "abc", "--executor", "htp"), "did you mean 'http'?"),
        (("job", "wiat", "abc"), "did you mean 'wait'?"),
    ]
    for args, text in cases:
        proc = brain(*args)
        assert proc.returncode == 2, (args, proc.stderr)
        assert text in proc.stderr, proc.stderr
        assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("brain: error: ") and proc.stdout == ""
    # Nothing close: no guess, argparse's list of choices.
    proc = brain("job", "frobnicate")
    assert proc.returncode == 2 and "did you mean" not in proc.stderr and "choose from" in proc.stderr


def test_create_quiet_prints_only_the_bare_id_for_scripts(brain, tmp_path):
    proc = brain("job", "create", "-q", "--ttl", "60", "--prompt", "p", "--subtask", "a")
    assert proc.returncode == 0 and proc.stderr == ""
    assert re.fullmatch(r"[0-9a-f]{12}\n", proc.stdout)
    assert brain.json("job", "get", proc.stdout.strip())["type"] == "distributed_search"
    # The shell form of the help's examples: POSIX sh, no grep at all (macOS has no grep -P).
    script = (f'job=$("{sys.executable}" "{BRAIN}" job create --quiet --ttl 60 --prompt p --subtask b) && '
              f'"{sys.executable}" "{BRAIN}" job subtasks "$job"')
    out = subprocess.run(["sh", "-c", script], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("Sub-tasks of job ") and "○ sub_1: b" in out.stdout


def test_the_help_examples_need_no_grep_p(brain):
    from brain_jobs import cli

    help_text = brain.ok("job", "--help")
    assert "grep -P" not in cli.EPILOG and "grep -oP" not in cli.EPILOG and "grep -oP" not in help_text
    assert "job=$(brain job create -q " in help_text
    assert "brain job wait $job" in help_text and "124" in brain.ok("--help")

"""What a worker is told: a short pointer, not a manual.

The orchestrating agent pays output tokens for every byte it copies into
an ``Agent`` call, and input tokens for every byte of ``dispatch`` output it
reads, so each launch prompt is a pointer of about 75 bytes::

    6b326d39d30d sub_1 9f2c4e0d5b7a18e36c0f4d2a8b1e7c53: Search GET /health in api/.

job, sub-task, the worker's credential (what it passes as ``--agent-id``;
see ``state``: known only to this prompt, never printed by a read), then
the seed's instruction ("Search {query} in {file}"). The public label
(``agent_haiku_c46509``, what reads show) is left out: reporting does not
need it, and the orchestrator pays for every byte here twice. The standing instructions (answer in at most 200
characters, report with ``brain job update JOB SUB --agent-id ID --status
completed --result '...'``, report ``failed`` with a reason) live once in the
worker agent's definition, ``agents/subtask-worker.md``, and in
:func:`instruction` / :func:`report_command` for workers outside the host.
Carrying them in every prompt cost about 850 bytes per sub-task; the
pointer costs about 540 (budget: 600, measured by the real-host test).
"""

import re

from .vocabulary import DEFAULT_MODEL  # the worker agent's own ``model:`` (agents/subtask-worker.md)

WORKER_AGENT = "brain-jobs:subtask-worker"
_POINTER = re.compile(r"([A-Za-z0-9]{1,64}) (sub_[1-9][0-9]*) ([A-Za-z0-9][A-Za-z0-9_.:@-]*): ")


def instruction(query: str, files) -> str:
    """The seed's full instruction for one sub-task."""
    where = ", ".join(files) if files else "the current directory"
    return f"Search {query} in {where}. Return ONLY the result (max 200 chars)."


def report_command(job_id: str, sub: dict, status: str = "completed", result: str = "<result>") -> str:
    """The exact command a worker runs to report; ``sub`` is what the worker was handed
    (``credentials.worker_view``: its ``agent_id`` is the credential)."""
    return (
        f"brain job update {job_id} {sub['sub_task_id']} --agent-id {sub['agent_id']} "
        f"--status {status} --result '{result}'"
    )


def worker_prompt(job_id: str, sub: dict, files) -> str:
    """The pointer: ``<job> <sub> <credential>: Search <query>[ in <files>].``

    ``sub`` is what dispatch hands the worker (``credentials.worker_view``).
    """
    where = f" in {', '.join(files)}" if files else ""
    return f"{job_id} {sub['sub_task_id']} {sub['agent_id']}: Search {sub['query']}{where}."




def agent_call(job_id: str, sub: dict, files, model: str) -> dict:
    """One background sub-agent call, ready for the host's ``Agent`` tool.

    ``model`` is named only when it is not the worker agent's own model: the
    orchestrator reads and copies every byte of every call.
    """
    call = {"subagent_type": WORKER_AGENT, "description": sub["sub_task_id"],
            "prompt": worker_prompt(job_id, sub, files)}
    if model != DEFAULT_MODEL:
        call["model"] = model
    call["run_in_background"] = True
    return call


def parse_subtask_prompt(prompt):
    """``(job_id, sub_task_id, credential)`` from a launch prompt, or None.

    Anything shaped like a pointer parses: whether the credential is the one
    issued for that sub-task is for ``state`` to verify.
    """
    match = _POINTER.match((prompt or "").lstrip())
    return match.groups() if match else None


def is_launch_prompt(prompt, job_id, sub, credential) -> bool:
    """True when ``prompt`` is the pointer :func:`worker_prompt` writes for ``sub`` with
    ``credential``: nothing before it, and after its query only `` in <files>`` and the
    final period (the files a dispatch named are not stored, so any printable ones)."""
    head = f"{job_id} {sub['sub_task_id']} {credential}: Search {sub['query']}"
    if not isinstance(prompt, str) or not prompt.startswith(head):
        return False
    rest = prompt[len(head):]
    return rest == "." or (rest.startswith(" in ") and rest.endswith(".") and rest.isprintable())

"""What a worker is told: a short pointer, not a manual.

The orchestrating agent pays output tokens for every byte it copies into
an ``Agent`` call, so each launch prompt carries only the seed's
instruction and the exact command that reports the answer. Standing
instructions live in the worker agent's definition
(``agents/subtask-worker.md``).
"""

import re

WORKER_AGENT = "brain-jobs:subtask-worker"
_REPORT = re.compile(r"brain job update ([A-Za-z0-9]+) (sub_[0-9]+) --agent-id ([A-Za-z0-9_.:@-]+)")


def where(files) -> str:
    return ", ".join(files) if files else "the current directory"


def instruction(query: str, files) -> str:
    """The seed's instruction for one sub-task."""
    return f"Search {query} in {where(files)}. Return ONLY the result (max 200 chars)."


def report_command(job_id: str, sub: dict) -> str:
    return (
        f"brain job update {job_id} {sub['sub_task_id']} --agent-id {sub['agent_id']} "
        '--status completed --result "<result>"'
    )


def worker_prompt(job_id: str, sub: dict, files) -> str:
    return f"{instruction(sub['query'], files)}\nReport: {report_command(job_id, sub)}"


def agent_call(job_id: str, sub: dict, files, model: str) -> dict:
    """One background sub-agent call, ready for the host's ``Agent`` tool."""
    return {
        "subagent_type": WORKER_AGENT,
        "description": f"{sub['sub_task_id']}: {sub['query'][:40]}",
        "prompt": worker_prompt(job_id, sub, files),
        "model": model,
        "run_in_background": True,
    }


def parse_subtask_prompt(prompt):
    """``(job_id, sub_task_id, agent_id)`` from a dispatch prompt, or None."""
    match = _REPORT.search(prompt or "")
    return match.groups() if match else None

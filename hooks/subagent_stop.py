"""SubagentStop: save the result of a worker that ended without reporting.

If the worker's sub-task is still running, its final message (cut to 200
characters) becomes the result; with no final message the sub-task is
marked failed with a reason. So a result survives a worker that forgot to
run ``brain job update``, and a completion notice the host dropped.
"""

import json

from hooklib import debug, run

MAX_RESULT = 200
TRANSCRIPT_SCAN = 64 * 1024  # bytes of the transcript read to find the first prompt


def _prompt_from_transcript(path):
    """The first user message of a worker transcript (JSONL), or None."""
    if not path:
        return None
    with open(path, "r", encoding="utf-8", errors="replace") as fh:
        head = fh.read(TRANSCRIPT_SCAN)
    for line in head.splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        message = entry.get("message") if isinstance(entry, dict) else None
        if not isinstance(message, dict) or message.get("role") != "user":
            continue
        content = message.get("content")
        if isinstance(content, list):
            content = "\n".join(b.get("text", "") for b in content if isinstance(b, dict))
        return content if isinstance(content, str) else None
    return None


def handle(payload: dict):
    from scripts.memory import jobs
    from scripts.memory.errors import BrainError

    host_agent_id = payload.get("agent_id")
    found = jobs.find_subtask_by_agent(host_agent_id) if host_agent_id else None
    if not found:
        # No link yet (the host can end a worker before PostToolUse(Agent) ran):
        # fall back on the prompt the worker was given.
        try:
            parsed = jobs.parse_subtask_prompt(_prompt_from_transcript(payload.get("agent_transcript_path")))
        except OSError:
            parsed = None
        found = parsed[:2] if parsed else None
    if not found:
        return None
    job_id, sub_task_id = found
    job = jobs.get_job(job_id)
    sub = next((s for s in job["sub_tasks"] if s["sub_task_id"] == sub_task_id), None)
    if sub is None or sub["status"] != "running":
        return None
    owner = host_agent_id if host_agent_id == sub.get("host_agent_id") else sub["agent_id"]
    message = " ".join((payload.get("last_assistant_message") or "").split())
    try:
        if message:
            jobs.update_subtask_status(job_id, sub_task_id, "completed", result=message[:MAX_RESULT], agent_id=owner)
        else:
            jobs.update_subtask_status(job_id, sub_task_id, "failed", agent_id=owner,
                                       result="worker ended without a report or a final message")
    except BrainError as exc:  # e.g. the job expired meanwhile: nothing left to save
        debug(f"subagent_stop: {job_id}/{sub_task_id} not recorded: {exc}")
        return None
    debug(f"subagent_stop: recovered {job_id}/{sub_task_id} from {host_agent_id} ({'message' if message else 'empty'})")
    return None


if __name__ == "__main__":
    run("subagent_stop", handle)

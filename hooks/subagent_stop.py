"""SubagentStop: save the result of a worker that ended without reporting.

If the worker's sub-task is still running, its final message (on one line,
cut like any result) becomes the result; with no final message the
sub-task is marked failed with a reason. If the sub-task had failed already
(its deadline passed), the message is kept in the job's history as a
``late_report``. So a result survives a worker that forgot to run
``brain job update``, and a completion notice the host dropped.

The library checks that the stopping agent is the sub-task's worker: the
host agent linked by PostToolUse(Agent), or, before that link exists, the
plugin's worker agent whose launch prompt carries the sub-task's credential.
"""

import json

from hooklib import debug, log, run

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
    from brain_jobs import jobs, prompts
    from brain_jobs.errors import BrainError

    host_agent_id = payload.get("agent_id")
    try:
        found = jobs.find_subtask_by_agent(host_agent_id) if host_agent_id else None
    except Exception as exc:  # some job's row cannot be read: the worker's own prompt may still say
        log(f"subagent_stop: jobs not searched for {host_agent_id}: {type(exc).__name__}: {exc}")
        found = None
    credential = None
    if not found and payload.get("agent_type") == prompts.WORKER_AGENT:
        # No link yet (the host can end a worker before PostToolUse(Agent) ran):
        # fall back on the prompt the worker was given, and its credential.
        try:
            parsed = jobs.parse_subtask_prompt(_prompt_from_transcript(payload.get("agent_transcript_path")))
        except OSError:
            parsed = None
        if parsed:
            found, credential = parsed[:2], parsed[2]
    if not found:
        return None
    job_id, sub_task_id = found
    message = payload.get("last_assistant_message")
    try:
        outcome = jobs.recover_final_message(job_id, sub_task_id, host_agent_id, message, credential)
    except BrainError as exc:  # not this sub-task's worker, or the job expired meanwhile
        log(f"subagent_stop: {job_id}/{sub_task_id} not recorded: {exc}")
        return None
    if outcome is not None:
        kind = "late message" if outcome == "late_report" else "message" if outcome == "completed" else "empty"
        debug(f"subagent_stop: recovered {job_id}/{sub_task_id} from {host_agent_id} ({kind})")
    return None


if __name__ == "__main__":
    run("subagent_stop", handle)

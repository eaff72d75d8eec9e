"""PostToolUse(Agent): link the host's ``agentId`` to the sub-task of the launched prompt.

The host's SubagentStop payload names the worker only by the host's agent
id, never by its prompt; this link is what lets that hook find the sub-task.
Only the plugin's worker agent, launched with the credential dispatch issued
for the sub-task, is linked: any other agent whose prompt merely looks like a
worker pointer is refused (logged), so its final message never becomes a result.
"""

from hooklib import debug, log, run


def handle(payload: dict):
    if payload.get("tool_name") not in ("Agent", "Task"):
        return None
    tool_input = payload.get("tool_input") or {}
    response = payload.get("tool_response")
    host_agent_id = response.get("agentId") if isinstance(response, dict) else None
    if not host_agent_id:
        return None
    from brain_jobs import jobs, prompts
    from brain_jobs.errors import BrainError

    found = jobs.parse_subtask_prompt(tool_input.get("prompt"))
    if not found:
        return None
    job_id, sub_task_id, credential = found
    agent_type = tool_input.get("subagent_type")
    if agent_type != prompts.WORKER_AGENT:
        log(f"post_tool_use: {host_agent_id} not linked to {job_id}/{sub_task_id}: "
            f"agent type {agent_type!r} is not {prompts.WORKER_AGENT}")
        return None
    try:
        jobs.link_host_agent(job_id, sub_task_id, host_agent_id, credential)
    except BrainError as exc:
        log(f"post_tool_use: {host_agent_id} not linked to {job_id}/{sub_task_id}: {exc}")
        return None
    debug(f"post_tool_use: linked {host_agent_id} to {job_id}/{sub_task_id}")
    return None


if __name__ == "__main__":
    run("post_tool_use", handle)

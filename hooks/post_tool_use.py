"""PostToolUse(Agent): link the host's ``agentId`` to the sub-task of the launched prompt.

The host's SubagentStop payload names the worker only by the host's agent
id, never by its prompt; this link is what lets that hook find the sub-task.
"""

from hooklib import debug, run


def handle(payload: dict):
    if payload.get("tool_name") not in ("Agent", "Task"):
        return None
    tool_input = payload.get("tool_input") or {}
    response = payload.get("tool_response")
    host_agent_id = response.get("agentId") if isinstance(response, dict) else None
    if not host_agent_id:
        return None
    from scripts.memory import jobs

    found = jobs.parse_subtask_prompt(tool_input.get("prompt"))
    if not found:
        return None
    job_id, sub_task_id, _identity = found
    jobs.link_host_agent(job_id, sub_task_id, host_agent_id)
    debug(f"post_tool_use: linked {host_agent_id} to {job_id}/{sub_task_id}")
    return None


if __name__ == "__main__":
    run("post_tool_use", handle)

"""The words of brain-jobs, each defined here once; every other module imports them.

Statuses, executor names, model aliases and the result limit with its
truncation rule. Stdlib-free and tiny: it sits on the report path.
"""

STATUSES = ("pending", "running", "completed", "failed")
FINAL = ("completed", "failed")

# ``--executor``: ``host`` is the Claude Code Agent tool; the others are headless
# executors, each a module of ``executors/`` (imported only when one runs).
HOST = "host"
EXECUTOR_MODULES = {
    "anthropic": "anthropic_api",
    "claude": "claude_code",
    "http": "http_check",
    "grep": "grep_search",
    "shell": "shell_command",
}
HEADLESS = tuple(EXECUTOR_MODULES)
EXECUTORS = (HOST, *HEADLESS)

# ``--model``: the aliases a config file maps to API model ids (see ``config``).
MODEL_ALIASES = ("haiku", "sonnet", "opus")
DEFAULT_MODEL = "haiku"  # also the worker agent's own ``model:`` (agents/subtask-worker.md)

MAX_RESULT = 200  # characters of a sub-task's result
TRUNCATION_MARK = "…"


def truncate_result(text: str) -> str:
    """``text`` cut to ``MAX_RESULT`` characters, the last being ``TRUNCATION_MARK`` when cut."""
    if len(text) > MAX_RESULT:
        return text[: MAX_RESULT - len(TRUNCATION_MARK)] + TRUNCATION_MARK
    return text

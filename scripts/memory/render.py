"""Text output for people: the seed's sub-task layout, safely.

Queries and results are untrusted text. ``printable`` neutralises control
characters, escape sequences and bidirectional overrides before they reach
a terminal, so a result cannot move the cursor, recolour the screen or
hide text.
"""

import os
import re
import sys

from .state import waiting

GLYPHS = {"pending": "○", "running": "◉", "completed": "✓", "failed": "✗"}
_COLOURS = {"pending": "2", "running": "33", "completed": "32", "failed": "31"}
WAITING, _WAITING_COLOUR = "◌", "2;33"  # running, but waiting for a runner's free slot (state.waiting)
LABELS = {
    "en": {"header": "Sub-tasks of job {job_id}:", "result": "Result:", "waiting": "waiting for a slot"},
    "pt": {"header": "Sub-tasks do job {job_id}:", "result": "Resultado:", "waiting": "aguardando uma vaga"},
}
_UNSAFE = re.compile(r"[\x00-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def printable(text) -> str:
    """Untrusted text made inert: control characters become visible escapes."""
    if text is None:
        return ""
    return _UNSAFE.sub(lambda m: "\\x%02x" % ord(m.group()) if ord(m.group()) < 0x100 else "\\u%04x" % ord(m.group()), str(text))


def language() -> str:
    """``pt`` when the locale is Portuguese, else ``en`` (LC_ALL > LC_MESSAGES > LANG > LANGUAGE)."""
    for name in ("LC_ALL", "LC_MESSAGES", "LANG"):
        value = os.environ.get(name)
        if value:
            return "pt" if value.lower().startswith("pt") else "en"
    value = os.environ.get("LANGUAGE", "")
    return "pt" if value.lower().startswith("pt") else "en"


def use_colour(stream=None) -> bool:
    stream = stream or sys.stdout
    if "NO_COLOR" in os.environ or os.environ.get("TERM") == "dumb":
        return False
    return hasattr(stream, "isatty") and stream.isatty()


def subtasks(job_id, subs, colour=False, lang=None) -> str:
    """The seed's layout::

        Sub-tasks do job abc123:

          ○ sub_1: GET /api/users
          ◉ sub_2: GET /api/posts
              Agent: agent_haiku
          ✓ sub_3: GET /api/comments
              Resultado: [200 OK] 5 items

    A running sub-task still waiting for a runner's free slot is shown
    ``◌`` with ``Agent: ... (waiting for a slot)``.
    """
    labels = LABELS[lang or language()]
    lines = [labels["header"].format(job_id=job_id), ""]
    for sub in subs:
        idle = waiting(sub)
        glyph = WAITING if idle else GLYPHS[sub["status"]]
        if colour:
            glyph = f"\x1b[{_WAITING_COLOUR if idle else _COLOURS[sub['status']]}m{glyph}\x1b[0m"
        lines.append(f"  {glyph} {sub['sub_task_id']}: {printable(sub['query'])}")
        if sub["status"] == "running":
            lines.append(f"      Agent: {printable(sub['agent_id'])}" + (f" ({labels['waiting']})" if idle else ""))
        elif sub["status"] in ("completed", "failed"):
            lines.append(f"      {labels['result']} {printable(sub['result'])}")
    return "\n".join(lines)


def consolidation(summary) -> str:
    """A short human summary of a consolidation dict."""
    head = (
        f"Job {summary['job_id']}: {summary['total_tasks']} sub-tasks, {summary['completed']} completed, "
        f"{summary['failed']} failed, {summary['pending']} pending, {summary['running']} running"
        + ("" if summary["complete"] else " (not complete yet)")
    )
    lines = [head]
    for r in summary["results"]:
        lines.append(f"  {GLYPHS[r['status']]} {r['sub_task_id']}: {printable(r['query'])} -> {printable(r['result'])}")
    return "\n".join(lines)


def progress(row) -> str:
    """`` 2/3 done, 1 failed`` for a job with sub-tasks; empty for a normal job."""
    subs = row["sub_tasks"]
    if not subs:
        return ""
    done = sum(s["status"] == "completed" for s in subs)
    failed = sum(s["status"] == "failed" for s in subs)
    return f" {done}/{len(subs)} done" + (f", {failed} failed" if failed else "")


def _prompt(row) -> str:
    return " ".join(printable((row["data"] or {}).get("prompt", "")).split())[:60]


def job_line(row) -> str:
    """One line per job, for ``brain job list``."""
    return (f"{row['job_id']}  {row['status']:<9} {row['type']:<18}{progress(row)}  "
            f"expires {row['expires_at']}  {_prompt(row)}").rstrip()


def job_brief(row) -> str:
    """One short line per job, for the agent's context (the SessionStart summary)."""
    prompt = _prompt(row)
    return f"job {row['job_id']} {row['status']}{progress(row)}" + (f": {prompt}" if prompt else "")

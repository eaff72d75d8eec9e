"""Text output for people: the seed's sub-task layout, safely.

Queries and results are untrusted text. ``printable`` is the one
neutralisation of every text output (this module's layouts, ``list``,
``get``, ``history``, ``watch``, the runner and worker logs, the hooks'
words to the agent): every invisible or direction-changing character
(``invisible()``) becomes a visible escape, so a result cannot move the
cursor, recolour the screen, reorder or hide text, or slip a line into a
prompt. ``json_text`` does the same for JSON output, as ``\\uXXXX`` escapes
that any JSON reader decodes back to the same value.
"""

import json
import os
import re
import sys

from .vocabulary import FINAL


GLYPHS = {"pending": "○", "running": "◉", "completed": "✓", "failed": "✗"}
COLOURS = {"pending": "2", "running": "33", "completed": "32", "failed": "31"}
WAITING, WAITING_COLOUR = "◌", "2;33"  # running, but waiting for a runner's free slot (state.waiting)
LABELS = {
    "en": {"header": "Sub-tasks of job {job_id}:", "result": "Result:", "waiting": "waiting for a slot"},
    "pt": {"header": "Sub-tasks do job {job_id}:", "result": "Resultado:", "waiting": "aguardando uma vaga"},
}
# Every character that is invisible or changes how the text around it is shown:
# the general categories Cc (controls: C0, DEL, C1 with CSI), Cf (format: soft
# hyphen, Arabic letter mark, zero-width space/joiners, LRM/RLM, embeddings,
# overrides, isolates, word joiner, BOM, interlinear annotation, tags), Zl and Zp
# (line and paragraph separators), Cs (lone surrogates, which no encoder accepts),
# and the rest of Unicode's Default_Ignorable_Code_Point: Hangul fillers, Khmer
# invisible vowels, variation selectors (an emoji can carry a hidden message in
# them), the combining grapheme joiner. tests/test_text_safety.py checks this
# class against ``unicodedata`` for every code point.
_INVISIBLE = (
    "["
    "\x00-\x1f\x7f-\x9f"                         # Cc
    "\u00ad\u034f\u061c\u0600-\u0605\u06dd\u070f\u0890\u0891\u08e2"
    "\u115f\u1160\u17b4\u17b5\u180b-\u180f"
    "\u200b-\u200f\u2028-\u202e\u2060-\u206f"  # zero-width, LRM/RLM, Zl, Zp, bidi, word joiner, isolates
    "\u3164\ufe00-\ufe0f\ufeff\uffa0\ufff0-\ufffb"
    "\ud800-\udfff"                                # Cs
    "\U000110bd\U000110cd\U00013430-\U0001343f\U0001bca0-\U0001bca3\U0001d173-\U0001d17a"
    "\U000e0000-\U000e0fff"                        # tags, variation selectors supplement
    "]"
)
_invisible = None


def invisible() -> "re.Pattern":
    """The class above, compiled at its first use (a report never needs it)."""
    global _invisible
    if _invisible is None:
        _invisible = re.compile(_INVISIBLE)
    return _invisible


def _escape(match) -> str:
    code = ord(match.group())
    return "\\x%02x" % code if code < 0x100 else "\\u%04x" % code if code < 0x10000 else "\\U%08x" % code


def printable(text) -> str:
    """Untrusted text made inert: each ``invisible()`` character becomes a visible escape
    (``\\x1b``, ``\\u202e``, ``\\U000e0041``), so the result is one line that shows all it holds."""
    if text is None:
        return ""
    return invisible().sub(_escape, str(text))


def _json_escape(match) -> str:
    code = ord(match.group())
    if code == 0x0A:
        return "\n"  # indentation's line break: JSON escapes every one inside a string
    if code < 0x10000:
        return "\\u%04x" % code
    code -= 0x10000  # JSON spells a character beyond U+FFFF as its UTF-16 surrogate pair
    return "\\u%04x\\u%04x" % (0xD800 + (code >> 10), 0xDC00 + (code & 0x3FF))


def json_text(value, indent=None) -> str:
    """``value`` as JSON for output: compact (or indented), non-ASCII text as is, but every
    ``invisible()`` character escaped as ``\\uXXXX``. A JSON reader gets the same value back;
    a terminal or a prompt that shows the text gets nothing invisible. (Outside strings
    JSON has only ASCII punctuation, spaces and, indented, line breaks, which stay;
    inside a string an escape means the same character.)"""
    separators = None if indent else (",", ":")
    return invisible().sub(_json_escape, json.dumps(value, ensure_ascii=False, indent=indent, separators=separators))


def tolerant_output() -> None:
    """Make stdout and stderr write what their encoding cannot (``PYTHONIOENCODING=ascii``,
    a C locale) as backslash escapes (``\\u25cb``) instead of raising: called first by
    every process that prints (the CLI, the runner)."""
    for stream in (sys.stdout, sys.stderr):
        if getattr(stream, "errors", None) == "strict" and hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="backslashreplace")


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
    from . import state  # not at the top: state imports validate, which imports this module
    labels = LABELS[lang or language()]
    lines = [labels["header"].format(job_id=printable(job_id)), ""]
    for sub in subs:
        idle = state.waiting(sub)
        glyph = WAITING if idle else GLYPHS[sub["status"]]
        if colour:
            glyph = f"\x1b[{WAITING_COLOUR if idle else COLOURS[sub['status']]}m{glyph}\x1b[0m"
        lines.append(f"  {glyph} {printable(sub['sub_task_id'])}: {printable(sub['query'])}")
        if sub["status"] == "running":
            lines.append(f"      Agent: {printable(sub['agent_id'])}" + (f" ({labels['waiting']})" if idle else ""))
        elif sub["status"] in FINAL:
            lines.append(f"      {labels['result']} {printable(sub['result'])}")
    return "\n".join(lines)


def consolidation(summary) -> str:
    """A short human summary of a consolidation dict."""
    head = (
        f"Job {summary['job_id']}: {summary['total_tasks']} sub-tasks, {summary['completed']} completed, "
        f"{summary['failed']} failed, {summary['pending']} pending, {summary['running']} running"
        + ("" if summary["complete"] else " (not complete yet)")
    )
    lines = [printable(head)]
    for r in summary["results"]:
        source = f"  ({r['source']})" if r.get("source") else ""  # where a finished result came from
        lines.append(f"  {GLYPHS[r['status']]} {printable(r['sub_task_id'])}: {printable(r['query'])} -> "
                     f"{printable(r['result'])}{source}")
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
    # A prompt may be several lines: shown as one, its whitespace runs as single spaces.
    return " ".join(str((row["data"] or {}).get("prompt", "")).split())[:60]


def job_line(row) -> str:
    """One line per job, for ``brain job list``."""
    return printable(f"{row['job_id']}  {row['status']:<9} {row['type']:<18}{progress(row)}  "
                     f"expires {row['expires_at']}  {_prompt(row)}").rstrip()


def job_brief(row) -> str:
    """One short line per job, for the agent's context (the SessionStart summary)."""
    prompt = _prompt(row)
    return printable(f"job {row['job_id']} {row['status']}{progress(row)}" + (f": {prompt}" if prompt else ""))

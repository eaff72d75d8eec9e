"""``anthropic``: one small agent per sub-task, on the Messages API.

The model gets the seed's instruction ("Search {query} in {files}. Return
ONLY the result (max 200 chars).") and three read-only tools confined to
the job's working directory: ``read_file``, ``grep`` and ``list_dir``. A
path outside that directory, including one reached through a symlink, is
refused with a tool error, as is a special file (FIFO, socket, device):
``files.Root`` checks each file as it is opened. The loop is bounded: ``max_turns`` model turns,
``max_tokens`` output tokens per turn and ``max_total_tokens`` per
sub-task. The SDK reads ``ANTHROPIC_API_KEY`` and ``ANTHROPIC_BASE_URL``.
An overloaded, rate-limited or failing answer (408, 409, 429, 5xx, 529),
a timeout or a lost connection is tried again with exponential backoff
(honouring ``retry-after``) up to ``api_retries`` times, and only while
the sub-task's deadline leaves time for another try; a request that still
fails fails only its own sub-task. What the turns cost (input tokens,
cached or not, and output tokens) is returned with the answer and stored
on the sub-task.

The SDK is imported when the first sub-task runs, inside the background
runner: importing it costs over a second.
"""

import importlib.util
import io
import os
import re
import sys
import threading
import time

from .. import prompts
from ..config import model_id
from ..paths import PACKAGE_PARENT
from .base import Answer, Executor as _Base, Failed, retry_pause, run_bounded, unavailable
from .files import Refused, Root

MAX_READ = 16_000
MAX_GREP_LINES = 60
MAX_LIST = 200
GREP_TIMEOUT = 30.0  # seconds a grep whose pattern repeats may take, in its own process
RETRYABLE = {408, 409, 429, 500, 502, 503, 504, 529}  # overloaded, rate-limited, or a passing server error

SYSTEM = (
    "You are a search worker of brain-jobs, running without a person. The working directory is "
    "{workdir}; the tools read_file, grep and list_dir see only that directory (paths relative to it). "
    "Look things up with the tools, then answer with ONLY the result: at most 200 characters, no preamble."
)
TOOLS = [
    {"name": "read_file", "description": "Read a text file (up to 16 kB from the offset).",
     "input_schema": {"type": "object", "properties": {
         "path": {"type": "string", "description": "file path, relative to the working directory"},
         "offset": {"type": "integer", "description": "byte offset to start from (default 0)"}},
         "required": ["path"]}},
    {"name": "grep", "description": "Search a regular expression in a file or, recursively, a directory; "
                                    "returns file:line: text for the first 60 matching lines.",
     "input_schema": {"type": "object", "properties": {
         "pattern": {"type": "string"},
         "path": {"type": "string", "description": "file or directory (default: the working directory)"}},
         "required": ["pattern"]}},
    {"name": "list_dir", "description": "List a directory (directories end with /).",
     "input_schema": {"type": "object", "properties": {
         "path": {"type": "string", "description": "directory (default: the working directory)"}}}},
]


class ToolRefused(Exception):
    """A tool call the worker may not make; its message goes back to the model."""


class Tools:
    """The read-only tools, confined to ``root`` by ``files.Root``: checked on each file as it is opened.
    ``time_left`` is the sub-task's ``Context.time_left`` (None: no deadline)."""

    def __init__(self, root, time_left=None):
        self.root = Root(root)
        self.time_left = time_left

    def call(self, name, args) -> str:
        if not isinstance(args, dict):
            raise ToolRefused("tool input must be an object")
        if name == "read_file":
            return self.read_file(args.get("path"), args.get("offset") or 0)
        if name == "grep":
            return self.grep(args.get("pattern"), args.get("path"))
        if name == "list_dir":
            return self.list_dir(args.get("path"))
        raise ToolRefused(f"unknown tool {name}: use read_file, grep or list_dir")

    def read_file(self, path, offset=0) -> str:
        if not isinstance(offset, int) or offset < 0:
            raise ToolRefused("offset must be a whole number of bytes")
        with self.root.open(path) as f:
            f.seek(offset)
            data = f.read(MAX_READ + 1)
        text = data[:MAX_READ].decode("utf-8", "replace")
        return text + (f"\n[cut at {MAX_READ} bytes; read on with offset {offset + MAX_READ}]" if len(data) > MAX_READ else "")

    def grep(self, pattern, path=None) -> str:
        """Search ``pattern`` (a regular expression; text that is not one is searched as text).

        Python's ``re`` holds the GIL for a whole match, and a pattern that
        repeats can backtrack for ever (``(a+)+$``): in this process it would
        stop every other sub-task and the deadline itself. Such a pattern is
        searched in a process of its own, killed at ``GREP_TIMEOUT`` or the
        deadline (``run_bounded``); one without repetition, whose match
        costs at most its length per character, is searched here.
        """
        if not isinstance(pattern, str) or not pattern:
            raise ToolRefused("grep needs a pattern")
        if "\x00" in pattern or "\x00" in (path or ""):
            raise ToolRefused("grep: a pattern or path may not hold a NUL character")
        regex = _compile(pattern)
        if _repeats(regex):
            return self._grep_apart(pattern, path)
        return self._grep(regex, path)

    def _grep_apart(self, pattern, path) -> str:
        timeout = self.time_left(GREP_TIMEOUT) if self.time_left else GREP_TIMEOUT
        argv = [sys.executable, "-I", "-c", _GREP_APART, PACKAGE_PARENT, self.root.path, pattern, path or ""]
        code, out, _ = run_bounded(argv, timeout, "grep")
        text = out.decode("utf-8", "replace")
        if code == 0:
            return text
        raise ToolRefused(text if code == 2 else f"grep failed (exit {code})")

    def _grep(self, regex, path=None) -> str:
        hits = []
        walk = self.root.walk(path or ".")
        try:
            for entry in walk:
                if entry.file is None:  # a symlink out, an unreadable file: skipped
                    continue
                try:
                    with io.TextIOWrapper(entry.file, encoding="utf-8", errors="replace") as f:
                        for lineno, line in enumerate(f, 1):
                            if regex.search(line):
                                hits.append(f"{entry.path}:{lineno}: {line.rstrip()[:200]}")
                                if len(hits) >= MAX_GREP_LINES:
                                    return "\n".join(hits) + "\n[more matches not shown]"
                except OSError:
                    continue
        finally:
            walk.close()
        return "\n".join(hits) or "no matches"

    def list_dir(self, path=None) -> str:
        entries = self.root.list(path or ".")
        shown = [name + "/" if is_dir else name for name, is_dir in entries[:MAX_LIST]]
        more = f"\n[{len(entries) - MAX_LIST} more]" if len(entries) > MAX_LIST else ""
        return ("\n".join(shown) or "(empty)") + more


def _compile(pattern):
    try:
        return re.compile(pattern)
    except re.error:
        return re.compile(re.escape(pattern))


_REPEATS = {"MAX_REPEAT", "MIN_REPEAT", "POSSESSIVE_REPEAT", "GROUPREF", "GROUPREF_EXISTS"}


def _repeats(regex) -> bool:
    """True when ``regex`` repeats something or refers back to a group: what can backtrack for ever."""
    try:
        from re import _parser as parser
    except ImportError:  # before Python 3.11
        import sre_parse as parser
    todo = [parser.parse(regex.pattern, regex.flags)]
    while todo:
        item = todo.pop()
        if isinstance(item, parser.SubPattern):
            for op, value in item:
                if str(op) in _REPEATS:
                    return True
                todo.append(value)
        elif isinstance(item, (list, tuple)):
            todo.extend(item)
    return False


# ``Tools._grep_apart``: the grep tool in a process of its own; its answer, or (exit 2) its refusal, on stdout.
_GREP_APART = ("import sys; sys.path.insert(0, sys.argv[1]); "
               "from brain_jobs.executors.anthropic_api import grep_main; sys.exit(grep_main(*sys.argv[2:]))")


def grep_main(root, pattern, path) -> int:
    """What ``_GREP_APART`` runs: ``Tools(root)._grep`` with the answer, or the refusal, on stdout."""
    code = 0
    try:
        text = Tools(root)._grep(_compile(pattern), path or None)
    except (ToolRefused, Refused) as exc:
        text, code = str(exc), 2
    except OSError as exc:
        text, code = f"error: {exc.strerror or exc}", 2
    sys.stdout.buffer.write(text.encode("utf-8", "replace"))
    return code


def _block(block) -> dict:
    """A response content block as request content (only what the API needs back)."""
    if block.type == "text":
        return {"type": "text", "text": block.text}
    if block.type == "tool_use":
        return {"type": "tool_use", "id": block.id, "name": block.name, "input": block.input}
    return block.model_dump(exclude_none=True)


class Executor(_Base):
    name = "anthropic"

    def __init__(self, ctx):
        super().__init__(ctx)
        self._client = None
        self._lock = threading.Lock()

    def check(self):
        if importlib.util.find_spec("anthropic") is None:
            raise unavailable("the anthropic executor needs the anthropic package: pip install anthropic")
        if not (os.environ.get("ANTHROPIC_API_KEY") or os.environ.get("ANTHROPIC_AUTH_TOKEN")):
            raise unavailable("the anthropic executor needs an API key: set ANTHROPIC_API_KEY "
                              "(or use --executor grep/http, which need none)")

    def client(self):
        with self._lock:
            if self._client is None:
                import anthropic  # here only: over a second to import

                # Retries are ours (``_create``): the SDK's own would not know the deadline.
                self._client = anthropic.Anthropic(max_retries=0, timeout=self.ctx.settings.get("api_timeout", 60.0))
            return self._client

    def _create(self, usage, **request):
        """One model turn. Refusals worth another try (``RETRYABLE``, a timeout, a lost
        connection) are retried ``api_retries`` times at most, never past the deadline."""
        import anthropic

        s = self.ctx.settings
        retries = int(s.get("api_retries", 4))
        for tried in range(1, retries + 2):
            try:
                return self.client().messages.create(**request, timeout=self.ctx.time_left(s.get("api_timeout", 60.0)))
            except anthropic.APIStatusError as exc:
                failure, after = f"API error {exc.status_code}: {_message(exc)}", _retry_after(exc)
                if exc.status_code not in RETRYABLE:
                    raise Failed(failure, usage) from None
            except anthropic.APITimeoutError:
                failure, after = "API request timed out", None
            except anthropic.APIConnectionError as exc:
                failure, after = f"cannot reach the API: {exc}", None
            pause = retry_pause(tried, after)
            if tried > retries or not self.ctx.may_retry(pause):
                raise Failed(failure + (f" ({tried} tries)" if tried > 1 else ""), usage)
            time.sleep(pause)

    def run(self, query: str, task=None) -> str:
        s = self.ctx.settings
        tools = Tools(self.ctx.workdir, self.ctx.time_left)
        files = [self.ctx.relative(f) for f in self.ctx.files]
        messages = [{"role": "user", "content": prompts.instruction(query, files)}]
        system = SYSTEM.format(workdir=self.ctx.workdir)
        budget = s.get("max_total_tokens", 60_000)
        usage = None
        for _turn in range(s.get("max_turns", 6)):
            resp = self._create(usage, model=model_id(s, self.ctx.model), max_tokens=s.get("max_tokens", 1024),
                                system=system, tools=TOOLS, messages=messages)
            usage = _add(usage, resp.usage)
            used = usage["input_tokens"] + usage["output_tokens"]
            calls = [b for b in resp.content if b.type == "tool_use"]
            if resp.stop_reason != "tool_use" or not calls:
                answer = " ".join(" ".join(b.text for b in resp.content if b.type == "text").split())
                if not answer:
                    raise Failed(f"empty answer (stop reason {resp.stop_reason})", usage)
                return Answer(answer, usage)
            if used >= budget:
                raise Failed(f"token budget spent ({used} of {budget}) before an answer", usage)
            messages.append({"role": "assistant", "content": [_block(b) for b in resp.content]})
            results = []
            for call in calls:
                try:
                    out, is_error = tools.call(call.name, call.input), False
                except (ToolRefused, Refused) as exc:
                    out, is_error = str(exc), True
                except OSError as exc:
                    out, is_error = f"error: {exc.strerror or exc}", True
                results.append({"type": "tool_result", "tool_use_id": call.id, "content": out, "is_error": is_error})
            messages.append({"role": "user", "content": results})
        raise Failed(f"no answer after {s.get('max_turns', 6)} turns", usage)

    def close(self):
        if self._client is not None:
            self._client.close()


def _add(usage, more) -> dict:
    """``usage`` plus one response's: every input token, cached or not, and the output tokens."""
    usage = usage or {"input_tokens": 0, "output_tokens": 0}
    read = sum(getattr(more, k, None) or 0 for k in ("input_tokens", "cache_creation_input_tokens",
                                                     "cache_read_input_tokens"))
    return {"input_tokens": usage["input_tokens"] + read,
            "output_tokens": usage["output_tokens"] + (more.output_tokens or 0)}


def _retry_after(exc):
    """The seconds a refusal asks to wait (``retry-after-ms`` or ``retry-after`` in seconds), or None."""
    headers = getattr(getattr(exc, "response", None), "headers", None) or {}
    for name, scale in (("retry-after-ms", 1000.0), ("retry-after", 1.0)):
        try:
            return float(headers.get(name)) / scale
        except (TypeError, ValueError):
            continue
    return None


def _message(exc) -> str:
    body = getattr(exc, "body", None)
    if isinstance(body, dict):
        err = body.get("error")
        if isinstance(err, dict) and err.get("message"):
            return str(err["message"])
    return str(exc)

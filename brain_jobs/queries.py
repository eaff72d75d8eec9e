"""Sub-task queries from a file, from lines, or one per file matching a glob.

What ``brain job create --subtasks-from FILE`` and ``--glob PATTERN --query
TEMPLATE`` use, and the Python API's ``jobs.subtasks_from_file`` and
``jobs.subtasks_from_glob``: they turn many items into queries, so nobody
types each one. Every query is checked like any other (``validate.query``);
the first refused one refuses them all, and its message names where it
came from (``line 17 of list.txt: ...``). Nothing reads more than the cap
of ``validate.MAX_SUBTASKS`` queries (plus one, to say it is too many) or
more than one query's length of a line.

Lines: every line that is not blank is one query, verbatim (only the line
ending is removed). There is no comment syntax: a line starting with ``#``
is a query like any other, because lists piped from other programs
(file names, grep patterns) may start with one.

Glob: ``*``, ``?`` and ``[...]`` match within one path component, ``**``
any number of directories. Matches are regular files under the current
directory (or ``root``), as relative paths, sorted. Symbolic links are
never followed or matched (so nothing outside the directory is reached),
and names starting with ``.`` are skipped unless the pattern component
itself starts with ``.`` (like the shell).
"""

import io
import os
import stat
import sys
from fnmatch import fnmatchcase

from . import validate
from .errors import InvalidInput

FILE_PLACEHOLDER = "{file}"


def from_lines(lines, source="input", limit=validate.MAX_SUBTASKS) -> list:
    """Queries from an iterable of lines (one query per non-blank line); at most ``limit``."""
    return _queries(((line, False) for line in lines), source, limit)


def _queries(lines, source, limit) -> list:
    """Queries from ``(line, cut)`` pairs; ``cut``: the line was longer than any query may be."""
    queries = []
    for number, (line, cut) in enumerate(lines, 1):
        text = line[:-1] if line.endswith("\n") else line
        if not (cut or text.strip()):
            continue
        if len(queries) == limit:
            raise InvalidInput(f"too many sub-tasks: line {number} of {source} goes past the limit of "
                               f"{validate.MAX_SUBTASKS} per job: split the list")
        try:
            if cut:
                raise InvalidInput(f"sub-task query is over {validate.MAX_QUERY} characters, the limit: "
                                   "shorten it or split it")
            queries.append(validate.query(text))
        except InvalidInput as exc:
            raise InvalidInput(f"line {number} of {source}: {exc}") from None
    return queries


def _bounded_lines(stream):
    """``(line, cut)`` for each line of ``stream``, holding no more of a line than one query may
    have: a longer line is given as ``("", True)`` as soon as it shows a character that is not
    blank (it is refused, so the rest is never read: ``/dev/zero`` is one endless line), or,
    read on in chunks to its end while it is all blanks, as a blank line."""
    cap = validate.MAX_QUERY + 2  # a whole query, its "\n", and one more to tell it is too long
    while True:
        line = stream.readline(cap)
        if not line:
            return
        if len(line) < cap or line.endswith("\n"):
            yield line, False
            continue
        blank = not line.strip()
        while blank and not line.endswith("\n"):
            line = stream.readline(65536)
            if not line:
                break
            blank = not line.strip()
        yield "", not blank


def from_file(path, limit=validate.MAX_SUBTASKS) -> list:
    """Queries from a UTF-8 text file, one per non-blank line; ``-`` reads standard input."""
    if path == "-":
        stream = io.TextIOWrapper(sys.stdin.buffer, encoding="utf-8", errors="surrogateescape")
        try:
            return _queries(_bounded_lines(stream), "standard input", limit)
        finally:
            stream.detach()
    path = os.fspath(path)
    try:
        with open(path, encoding="utf-8", errors="surrogateescape") as stream:
            return _queries(_bounded_lines(stream), path, limit)
    except (FileNotFoundError, IsADirectoryError, PermissionError) as exc:
        raise InvalidInput(f"cannot read sub-tasks from {path}: {exc.strerror}") from None


def from_glob(pattern, template, root=None, limit=validate.MAX_SUBTASKS) -> list:
    """One query per regular file matching ``pattern``: ``template`` with ``{file}`` replaced by its path."""
    if not isinstance(template, str) or FILE_PLACEHOLDER not in template:
        raise InvalidInput(f"the query template must contain {FILE_PLACEHOLDER}, e.g. 'Find TODOs in {{file}}'")
    queries = []
    for path in match(pattern, root, limit):
        try:
            queries.append(validate.query(template.replace(FILE_PLACEHOLDER, path)))
        except InvalidInput as exc:
            raise InvalidInput(f"{path} (matched by {pattern}): {exc}") from None
    return queries


def match(pattern, root=None, limit=validate.MAX_SUBTASKS) -> list:
    """The regular files under ``root`` (default: the current directory) matching ``pattern``, sorted."""
    parts = _parts(pattern)
    base = os.path.abspath(root or os.curdir)
    found = set()

    def add(rel):
        found.add(rel)
        if len(found) > limit:
            raise InvalidInput(f"too many sub-tasks: {pattern} matches more files than the limit of "
                               f"{validate.MAX_SUBTASKS} per job allows: narrow the pattern")

    def walk(rel, i):
        part, last = parts[i], i == len(parts) - 1
        if part == "**":
            if last:
                for name, is_dir in _entries(base, rel, "*"):  # every file below, at any depth
                    if is_dir:
                        walk(_join(rel, name), i)
                    else:
                        add(_join(rel, name))
                return
            walk(rel, i + 1)
            for name, is_dir in _entries(base, rel, "*"):
                if is_dir:
                    walk(_join(rel, name), i)
            return
        for name, is_dir in _entries(base, rel, part):
            if last and not is_dir:
                add(_join(rel, name))
            elif not last and is_dir:
                walk(_join(rel, name), i + 1)

    walk("", 0)
    return sorted(found)


def _parts(pattern) -> list:
    if not isinstance(pattern, str) or not pattern.strip():
        raise InvalidInput("the glob pattern is empty: e.g. --glob 'src/**/*.py'")
    if pattern.startswith("/") or os.path.isabs(pattern):
        raise InvalidInput(f"glob {validate.printable(pattern)} is absolute: give a pattern relative to "
                           "the current directory (cd there first)")
    parts = []
    for p in pattern.split("/"):
        if p not in ("", ".") and not (p == "**" and parts[-1:] == ["**"]):  # "**/**" is "**"
            parts.append(p)
    if ".." in parts:
        raise InvalidInput(f"glob {validate.printable(pattern)} leaves the current directory (..): "
                           "run it from a directory that contains the files")
    if not parts:
        raise InvalidInput(f"glob {validate.printable(pattern)} names no file: e.g. --glob 'src/**/*.py'")
    return parts


def _join(rel, name) -> str:
    return f"{rel}/{name}" if rel else name


def _entries(base, rel, part):
    """``(name, is_dir)`` of the entries of ``base/rel`` matching ``part``: directories and regular
    files, never a symbolic link; names starting with "." only when ``part`` does."""
    if not any(c in part for c in "*?["):
        try:
            st = os.lstat(os.path.join(base, rel, part))
        except (FileNotFoundError, NotADirectoryError, PermissionError):
            return
        if stat.S_ISDIR(st.st_mode) or stat.S_ISREG(st.st_mode):
            yield part, stat.S_ISDIR(st.st_mode)
        return
    hidden = part.startswith(".")
    try:
        with os.scandir(os.path.join(base, rel)) as it:
            entries = [(e.name, e.is_dir(follow_symlinks=False), e.is_file(follow_symlinks=False)) for e in it]
    except (FileNotFoundError, NotADirectoryError, PermissionError):
        return
    for name, is_dir, is_file in entries:
        if (is_dir or is_file) and (hidden or not name.startswith(".")) and fnmatchcase(name, part):
            yield name, is_dir

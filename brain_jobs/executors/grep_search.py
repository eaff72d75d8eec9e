"""``grep``: search the query, as literal text, in the job's files.

Files come from ``dispatch --file`` or the job's ``data.files``; a
directory is searched recursively (hidden entries, binary files and
special files such as FIFOs, sockets and devices are skipped). The result
is compact: ``3 matches in 2 files, first: src/app.py:12`` or ``no matches
in 4 files``. Finding nothing is an answer, not a failure; a file that
cannot be read is reported in the result.

Every file is read through ``files.Root``: only inside the working
directory, whoever named the path. A named path outside it (``/etc/shadow``,
``../x``, a symlink leading out) fails the sub-task with ``refused: ...``;
a symlink leading out met inside a searched directory is listed as
unreadable.
"""

from .base import Executor as _Base, Failed
from .files import Refused, Root

MAX_FILES = 10_000
_BINARY_PROBE = 8192
CHUNK = 1 << 20  # bytes read at a time


def _is_binary(f) -> bool:
    head = f.read(_BINARY_PROBE)
    f.seek(0)
    return b"\x00" in head


def _count(f, needle: bytes) -> "tuple[int, int | None]":
    """How many times ``needle`` occurs in ``f`` (as ``bytes.count`` counts, line by line),
    and the line of the first. A line is read ``CHUNK`` bytes at a time at most, so a file
    of one endless line costs no more memory than any other.

    A query holds no newline (``validate``), so a match never spans lines; one that spans
    two pieces of a long line is found in the bytes carried over from the first piece.
    """
    count, first, lineno = 0, None, 0
    carry, in_line = b"", False  # the long line's bytes where a match may still go on
    step = max(1, len(needle))
    while True:
        piece = f.readline(CHUNK)
        if not piece:
            return count, first
        if not in_line:
            lineno += 1
        ends = piece.endswith(b"\n")
        if not in_line and ends:  # the common case: a whole line at once
            n = piece.count(needle)
        else:  # a piece of a long line: find the matches one by one to know where the last ends
            text, n, at = carry + piece, 0, 0
            while True:
                i = text.find(needle, at)
                if i < 0:
                    break
                n, at = n + 1, i + step
            carry = b"" if ends else text[max(at, len(text) - step + 1):]
        in_line = not ends
        if n:
            count += n
            first = first or lineno


class Executor(_Base):
    name = "grep"

    def __init__(self, ctx):
        super().__init__(ctx)
        self.root = Root(ctx.workdir)

    def check(self):
        from ..errors import InvalidInput

        if not self.ctx.files:
            raise InvalidInput("the grep executor searches the job's files: pass --file PATH to dispatch "
                               "(or create the job with --file)")
        for path in self.ctx.files:
            try:
                self.root.inside(path)
            except Refused as exc:
                raise InvalidInput(f"{exc} {self.root.path}: name files inside it, or run from a "
                                   "directory that holds them") from None

    def entries(self):
        """The ``files.Entry`` of every file to search; ``Failed`` for a named path that cannot be."""
        seen = 0
        for given in self.ctx.files:
            shown = self.ctx.relative(given)
            try:
                for entry in self.root.walk(given):
                    seen += 1
                    if seen > MAX_FILES:
                        if entry.file:
                            entry.file.close()
                        raise Failed(f"more than {MAX_FILES} files to search: name fewer with --file")
                    yield entry
            except FileNotFoundError:
                raise Failed(f"no such file: {shown}") from None
            except Refused as exc:
                raise Failed(str(Refused(shown, exc.reason))) from None
            except OSError as exc:
                raise Failed(f"cannot read {shown}: {exc.strerror or exc}") from None

    def run(self, query: str, task=None) -> str:
        needle = query.encode("utf-8")
        matches = files_hit = searched = 0
        first = None
        unreadable = []
        for entry in self.entries():
            if entry.file is None:
                unreadable.append(f"{entry.path} ({entry.problem})")
                continue
            try:
                with entry.file as f:
                    if _is_binary(f):
                        continue
                    searched += 1
                    n, lineno = _count(f, needle)
                    if n:
                        matches += n
                        files_hit += 1
                        if first is None:
                            first = f"{entry.path}:{lineno}"
            except OSError as exc:
                unreadable.append(f"{entry.path} ({exc.strerror})")
        tail = f"; unreadable: {', '.join(unreadable)}" if unreadable else ""
        if not matches:
            return f"no matches in {searched} file{'s' * (searched != 1)}{tail}"
        return (f"{matches} match{'es' * (matches != 1)} in {files_hit} file{'s' * (files_hit != 1)}, "
                f"first: {first}{tail}")

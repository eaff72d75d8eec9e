"""``grep``: search the query, as literal text, in the job's files.

Files come from ``dispatch --file`` or the job's ``data.files``; a
directory is searched recursively (hidden entries and binary files are
skipped). The result is compact: ``3 matches in 2 files, first: src/app.py:12``
or ``no matches in 4 files``. Finding nothing is an answer, not a failure;
a file that cannot be read is reported in the result.
"""

import os

from .base import Executor as _Base, Failed, walk

MAX_FILES = 10_000
_BINARY_PROBE = 8192


def _is_binary(f) -> bool:
    head = f.read(_BINARY_PROBE)
    f.seek(0)
    return b"\x00" in head


class Executor(_Base):
    name = "grep"

    def check(self):
        if not self.ctx.files:
            from ..errors import InvalidInput

            raise InvalidInput("the grep executor searches the job's files: pass --file PATH to dispatch "
                               "(or create the job with --file)")

    def files(self):
        seen = 0
        for given in self.ctx.files:
            if not os.path.exists(given):
                raise Failed(f"no such file: {self.ctx.relative(given)}")
            for path in walk(given):
                seen += 1
                if seen > MAX_FILES:
                    raise Failed(f"more than {MAX_FILES} files to search: name fewer with --file")
                yield path

    def run(self, query: str, task=None) -> str:
        needle = query.encode("utf-8")
        matches = files_hit = searched = 0
        first = None
        unreadable = []
        for path in self.files():
            try:
                with open(path, "rb") as f:
                    if _is_binary(f):
                        continue
                    searched += 1
                    hit = False
                    for lineno, line in enumerate(f, 1):
                        n = line.count(needle)
                        if n:
                            matches += n
                            hit = True
                            if first is None:
                                first = f"{self.ctx.relative(path)}:{lineno}"
                    files_hit += hit
            except OSError as exc:
                unreadable.append(f"{self.ctx.relative(path)} ({exc.strerror})")
        tail = f"; unreadable: {', '.join(unreadable)}" if unreadable else ""
        if not matches:
            return f"no matches in {searched} file{'s' * (searched != 1)}{tail}"
        return (f"{matches} match{'es' * (matches != 1)} in {files_hit} file{'s' * (files_hit != 1)}, "
                f"first: {first}{tail}")

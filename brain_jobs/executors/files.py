"""Reading files confined to a working directory: what file-reading executors may open.

``Root(workdir)`` opens, lists and walks paths under ``workdir`` and
nothing else. The check is made on what is opened, not on a path string
looked at before: each path is followed one component at a time, every
step opened relative to the directory before it (``dir_fd``) with
``O_NOFOLLOW``, so a symlink swapped in between a check and an open cannot
lead out. The rules:

- A relative path is taken from the root; an absolute one must lie inside
  it; ``..`` never climbs above it.
- A symlink is followed while it stays inside the root (its target is
  resolved by these same rules, at most ``MAX_LINKS`` links); one that
  leads out is refused. A walk reads symlinks to files but does not
  descend into symlinked directories (no cycles, nothing counted twice).
- Only regular files are read. FIFOs, sockets and devices are refused when
  named and skipped in a walk, and never opened for reading: they are
  examined with ``lstat`` first, and the open uses ``O_NONBLOCK`` and is
  checked with ``fstat``, so one swapped in cannot block or stream for ever.
- On Linux the opened file's own path (``/proc/self/fd``) is checked as
  well, which also catches a directory moved out of the root mid-walk.

Where the platform cannot resolve a name relative to a directory
descriptor, the fallback refuses every symlink and checks that the file
opened is the one examined (device and inode).
"""

import errno
import io
import os
import stat
from typing import NamedTuple, Optional

MAX_LINKS = 40  # as the kernel's own limit on a path's symlinks
MAX_DEPTH = 64  # directory levels a walk descends (each holds a descriptor)

_AT = (os.open in os.supports_dir_fd and os.stat in os.supports_dir_fd and os.readlink in os.supports_dir_fd
       and os.scandir in os.supports_fd and hasattr(os, "O_NOFOLLOW") and hasattr(os, "O_DIRECTORY"))
_PROC = os.path.isdir("/proc/self/fd")
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_FILE_FLAGS = os.O_RDONLY | _NOFOLLOW | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0)
_DIR_FLAGS = os.O_RDONLY | _NOFOLLOW | getattr(os, "O_DIRECTORY", 0)
_SWAPPED = (errno.ELOOP, errno.EMLINK, errno.ENOTDIR)  # what O_NOFOLLOW/O_DIRECTORY say when a link was swapped in

OUTSIDE = "outside the working directory"
SPECIAL = "not a regular file"


class Refused(Exception):
    """A path that may not be read; ``str()`` is the whole sentence, ``reason`` its last words."""

    def __init__(self, path, reason):
        super().__init__(f"refused: {path} is {reason}")
        self.path = path
        self.reason = reason


class Entry(NamedTuple):
    """One file of a walk: ``path`` relative to the root, and either an open binary ``file``
    (the caller closes it) or, when it cannot be read, ``problem`` saying why."""

    path: str
    file: Optional[io.BufferedReader]
    problem: str = ""


class Root:
    """A directory that reads are confined to (``path``: its real path, resolved once)."""

    def __init__(self, path):
        self.path = os.path.realpath(path)
        self._prefix = self.path if self.path.endswith(os.sep) else self.path + os.sep

    # -- the public operations ---------------------------------------------------

    def inside(self, path) -> str:
        """``path`` relative to the root ("" for the root); ``Refused`` for an absolute path outside it.

        The early, friendly check, on the path as written (or, for another
        name of the root, as resolved now); what is opened is checked again,
        step by step, on the way down.
        """
        if not isinstance(path, str) or "\x00" in path:
            raise Refused(repr(path), "not a valid path")
        if not os.path.isabs(path):
            return path
        rel = self._strip(os.path.normpath(path))
        if rel is None:  # perhaps the root through another name (a symlinked parent)
            rel = self._strip(os.path.realpath(path))
        if rel is None:
            raise Refused(path, OUTSIDE)
        return rel

    def open(self, path) -> io.BufferedReader:
        """``path`` opened for binary reading; ``Refused``, or ``OSError`` (missing, a directory...)."""
        kind, handle = self._resolve(path)
        if kind == "dir":
            _release(handle)
            raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), path)
        return os.fdopen(handle, "rb")

    def list(self, path) -> list:
        """The directory ``path``'s entries, sorted: ``(name, is_dir)``, symlinks not followed."""
        kind, handle = self._resolve(path)
        if kind == "file":
            os.close(handle)
            raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), path)
        try:
            with os.scandir(handle) as it:
                return sorted((e.name, e.is_dir(follow_symlinks=False)) for e in it)
        finally:
            _release(handle)

    def walk(self, path):
        """Yield an ``Entry`` for ``path`` (a file) or each file under it (a directory), in a stable order.

        Below ``path``, hidden entries (a name starting with ".") and special
        files are skipped without a word; a symlink that leads out, or a file
        that cannot be opened, is yielded with its problem. ``path`` itself
        raises ``Refused`` or ``OSError`` when it cannot be opened.
        """
        shown = os.path.normpath(self.inside(path or ""))
        kind, handle = self._resolve(path)
        if kind == "file":
            yield Entry(shown, os.fdopen(handle, "rb"))
            return
        try:
            yield from self._walk(handle, "" if shown == "." else shown, 0)
        finally:
            _release(handle)

    # -- following a path --------------------------------------------------------

    def _strip(self, absolute) -> Optional[str]:
        if absolute == self.path:
            return ""
        return absolute[len(self._prefix):] if absolute.startswith(self._prefix) else None

    def _resolve(self, path) -> tuple:
        """Follow ``path`` from the root; return ``("file", fd)`` or ``("dir", directory handle)``."""
        todo = _split(self.inside(path or ""))
        todo.reverse()  # a stack: the next component last
        dirs = [_enter_root(self.path)]
        links = 0
        try:
            while todo:
                name = todo.pop()
                if name == "..":
                    if len(dirs) == 1:
                        raise Refused(path, OUTSIDE)
                    _release(dirs.pop())
                    continue
                st = _lstat(dirs[-1], name)
                if stat.S_ISLNK(st.st_mode):
                    links += 1
                    target = self._link(dirs[-1], name, path, links)
                    if os.path.isabs(target):
                        target = self._strip(os.path.normpath(target))
                        if target is None:
                            raise Refused(path, OUTSIDE)
                        while len(dirs) > 1:
                            _release(dirs.pop())
                    todo.extend(reversed(_split(target)))
                elif stat.S_ISDIR(st.st_mode):
                    dirs.append(_enter(dirs[-1], name, st, path))
                elif not stat.S_ISREG(st.st_mode):
                    raise Refused(path, SPECIAL)
                elif todo:
                    raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), path)
                else:
                    return "file", self._open_file(dirs[-1], name, st, path)
            self._check_opened(dirs[-1], path)
            return "dir", dirs.pop()
        finally:
            for d in dirs:
                _release(d)

    def _link(self, d, name, path, links) -> str:
        if not _AT:
            raise Refused(path, "reached through a symlink, which this platform cannot follow safely")
        if links > MAX_LINKS:
            raise Refused(path, "behind too many symbolic links")
        return os.readlink(name, dir_fd=d)

    def _open_file(self, d, name, st, path) -> int:
        """Open the regular file ``name`` examined as ``st``; refuse it if something else is there now."""
        try:
            fd = os.open(name, _FILE_FLAGS, dir_fd=d) if _AT else os.open(os.path.join(d, name), _FILE_FLAGS)
        except OSError as exc:
            if exc.errno in _SWAPPED:
                raise Refused(path, "being changed (swapped while opened)") from None
            raise
        try:
            now = os.fstat(fd)
            if not stat.S_ISREG(now.st_mode) or (now.st_dev, now.st_ino) != (st.st_dev, st.st_ino):
                raise Refused(path, "being changed (swapped while opened)")
            self._check_opened(fd, path)
        except BaseException:
            os.close(fd)
            raise
        return fd

    def _check_opened(self, handle, path) -> None:
        """Where the system can say which file a descriptor is, it must be inside the root."""
        if not (_PROC and isinstance(handle, int)):
            return
        try:
            real = os.readlink(f"/proc/self/fd/{handle}")
        except OSError:
            real = ""
        if real.endswith(" (deleted)"):
            real = real[: -len(" (deleted)")]
        if self._strip(real) is None:
            raise Refused(path, OUTSIDE)

    # -- walking a tree ------------------------------------------------------------

    def _walk(self, d, shown, depth):
        """The files of directory ``d`` (shown as ``shown``), then each subdirectory's, sorted by name."""
        with os.scandir(d) as it:
            names = sorted(e.name for e in it if not e.name.startswith("."))
        subdirs = []
        for name in names:
            rel = os.path.join(shown, name) if shown else name
            try:
                st = _lstat(d, name)
                if stat.S_ISDIR(st.st_mode):
                    subdirs.append((name, rel, st))
                elif stat.S_ISREG(st.st_mode):
                    yield Entry(rel, os.fdopen(self._open_file(d, name, st, rel), "rb"))
                elif stat.S_ISLNK(st.st_mode):
                    kind, handle = self._resolve(rel)
                    if kind == "dir":  # not descended: no cycles, nothing twice
                        _release(handle)
                    else:
                        yield Entry(rel, os.fdopen(handle, "rb"))
            except Refused as exc:
                if exc.reason != SPECIAL:
                    yield Entry(rel, None, exc.reason)
            except OSError as exc:
                yield Entry(rel, None, exc.strerror or str(exc))
        for name, rel, st in subdirs:
            if depth >= MAX_DEPTH:
                yield Entry(rel, None, f"nested deeper than {MAX_DEPTH} directories")
                continue
            try:
                sub = _enter(d, name, st, rel)
            except (Refused, OSError) as exc:
                yield Entry(rel, None, getattr(exc, "reason", None) or exc.strerror or str(exc))
                continue
            try:
                yield from self._walk(sub, rel, depth + 1)
            except OSError as exc:  # the directory cannot be listed
                yield Entry(rel, None, exc.strerror or str(exc))
            finally:
                _release(sub)


# -- directory handles: a descriptor, or a path where names cannot be resolved from one

def _split(path) -> list:
    if os.altsep:
        path = path.replace(os.altsep, os.sep)
    return [part for part in path.split(os.sep) if part not in ("", ".")]


def _enter_root(path):
    return os.open(path, _DIR_FLAGS) if _AT else path


def _enter(d, name, st, path):
    """The directory ``name`` in ``d``, examined as ``st``; refused if something else is there now."""
    if not _AT:
        return os.path.join(d, name)
    try:
        fd = os.open(name, _DIR_FLAGS, dir_fd=d)
    except OSError as exc:
        if exc.errno in _SWAPPED:
            raise Refused(path, "being changed (swapped while opened)") from None
        raise
    now = os.fstat(fd)
    if (now.st_dev, now.st_ino) != (st.st_dev, st.st_ino):
        os.close(fd)
        raise Refused(path, "being changed (swapped while opened)")
    return fd


def _lstat(d, name):
    return os.stat(name, dir_fd=d, follow_symlinks=False) if _AT else os.lstat(os.path.join(d, name))


def _release(d) -> None:
    if isinstance(d, int):
        os.close(d)

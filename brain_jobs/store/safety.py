"""The SQLite store's files must be ours alone.

A store file, its WAL, index or lock file, or its directory, that another
user owns, may read, may write or could swap is refused at open, in one
line that says what to do; ``BRAIN_ALLOW_SHARED_STORE=1`` shares a store on
purpose. A missing directory is created 0700 and a missing store file 0600.
The checks look at paths (``stat``/``lstat``), never open an existing store:
see ``prepare``.
"""

import os
import stat

from ..errors import StoreError
from ..paths import private_dirs

# Set to 1 to use a store that other users can read, write or own, or whose directory they
# can change (a store shared with a group on purpose); otherwise such a store is refused.
ALLOW_SHARED = "BRAIN_ALLOW_SHARED_STORE"
_SHARED_FIX = f"point BRAIN_DB at a file of your own, or set {ALLOW_SHARED}=1 if you share it on purpose"


def prepare(path: str) -> None:
    """Create missing directories 0700 and a new file 0600, then refuse a store that is not ours.

    An existing file is left to SQLite, which refuses one that is not a
    database without writing to it (see ``store.sqlite``). Opening and
    closing a descriptor of our own on it would drop every POSIX lock
    this process holds on the file, those of another open store
    included; another process would then take itself for the last
    connection and delete the WAL under that store ("disk I/O error").
    So the checks look at paths (``lstat``), never open the file.
    """
    directory = os.path.dirname(path)
    try:
        info = os.stat(directory)
    except FileNotFoundError:
        try:
            private_dirs(directory)
            info = os.stat(directory)
        except OSError as exc:
            raise StoreError(f"cannot create the store directory {directory}: {exc.strerror}") from None
    except OSError as exc:
        raise StoreError(f"cannot use the store directory {directory}: {exc.strerror}") from None
    shared = os.environ.get(ALLOW_SHARED) == "1"
    if not shared:
        refuse_unsafe_directory(directory, info)
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            pass  # another process created it first
        except OSError as exc:
            raise StoreError(f"cannot create the job store {path}: {exc.strerror}") from None
        else:
            os.close(fd)  # a new file: nobody in this process holds a lock on it yet
        info = os.lstat(path)
    except OSError as exc:
        raise StoreError(f"cannot open the job store {path}: {exc.strerror}; check the path and its "
                         "permissions") from None
    if not shared:
        refuse_unsafe_files(path, info)


def refuse_unsafe_directory(directory: str, info: os.stat_result) -> None:
    """Refuse a directory (``info``: its ``stat``) that another user owns or may write without the
    sticky bit: they could replace the store, or its WAL, with a file of their own."""
    if info.st_uid not in (os.geteuid(), 0):  # root can do anything anyway
        raise StoreError(f"the job store's directory {directory} belongs to another user (uid {info.st_uid}), "
                         f"who could swap the store: {_SHARED_FIX}")
    if info.st_mode & 0o022 and not info.st_mode & stat.S_ISVTX:
        raise StoreError(f"the job store's directory {directory} is writable by other users "
                         f"(mode {stat.S_IMODE(info.st_mode):04o}), who could swap the store: "
                         f"chmod go-w it, or {_SHARED_FIX}")


def refuse_unsafe_files(path: str, info: os.stat_result) -> None:
    """Refuse a store file (``info``: its ``lstat``), or a WAL, index or lock file beside it,
    that is not a plain file of ours readable by us alone. A store reached through a symbolic
    link is checked where it lives (SQLite puts the WAL there), its lock file where the link is."""
    lock = path + ".lock"
    if stat.S_ISLNK(info.st_mode):
        path = os.path.realpath(path)
        refuse_unsafe_directory(os.path.dirname(path), os.stat(os.path.dirname(path)))
        info = os.lstat(path)
    refuse_unsafe_file(path, info)
    for name in (path + "-wal", path + "-shm", lock):
        try:
            companion = os.lstat(name)
        except FileNotFoundError:
            continue
        refuse_unsafe_file(name, companion)


def refuse_unsafe_file(name: str, info: os.stat_result) -> None:
    if not stat.S_ISREG(info.st_mode):
        raise StoreError(f"{name} is not a regular file; point BRAIN_DB at a file")
    if info.st_uid != os.geteuid():
        raise StoreError(f"the job store file {name} belongs to another user (uid {info.st_uid}), who can read "
                         f"and change every job; it was left untouched: {_SHARED_FIX}")
    if info.st_mode & 0o066:
        raise StoreError(f"the job store file {name} can be read or written by other users "
                         f"(mode {stat.S_IMODE(info.st_mode):04o}); it was left untouched: chmod 600 it, or "
                         f"{_SHARED_FIX}")

"""Where the store lives, and making the directories that hold our files.

Precedence: an explicit path (``--db``), then ``BRAIN_DATABASE_URL`` (a
PostgreSQL URL), then ``BRAIN_DB``, then ``${CLAUDE_PLUGIN_DATA}/jobs.db``
when the host sets it, then ``~/.brain/jobs.db``.
"""

import os


def default_db_path() -> str:
    """The SQLite file to use when no ``--db`` is given."""
    env = os.environ.get("BRAIN_DB")
    if env:
        return os.path.abspath(os.path.expanduser(env))
    plugin_data = os.environ.get("CLAUDE_PLUGIN_DATA")
    if plugin_data:
        return os.path.join(plugin_data, "jobs.db")
    return os.path.join(os.path.expanduser("~"), ".brain", "jobs.db")


def default_target() -> str:
    """A database URL if one is configured, else the SQLite path."""
    return os.environ.get("BRAIN_DATABASE_URL") or default_db_path()


def private_dirs(directory: str) -> None:
    """Create ``directory`` and every missing parent 0700 (``os.makedirs`` gives the
    parents the umask's mode, 0755 by default, so another user could list them)."""
    missing = []
    while directory and not os.path.isdir(directory):
        missing.append(directory)
        parent = os.path.dirname(directory)
        if parent == directory:
            break
        directory = parent
    for path in reversed(missing):
        try:
            os.mkdir(path, 0o700)
        except FileExistsError:
            if not os.path.isdir(path):
                raise

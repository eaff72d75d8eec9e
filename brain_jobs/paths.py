"""Where the store lives, and making the directories that hold our files.

Precedence: an explicit path (``--db``), then ``BRAIN_DATABASE_URL`` (a
PostgreSQL URL), then ``BRAIN_DB``, then ``~/.brain/jobs.db``.

The default is the same for a person at a terminal and for their Claude
Code sessions, however the plugin was installed: SessionStart exports
``BRAIN_DB=~/.brain/jobs.db`` to the session's commands unless the user set
``BRAIN_DB`` or ``BRAIN_DATABASE_URL``, and the hooks resolve the same path.
The plugin's data directory (``CLAUDE_PLUGIN_DATA``, whose name depends on
how the plugin was installed) keeps only the plugin's own files: its
virtualenv, logs and session state.
"""

import os

# The directory that holds the ``brain_jobs`` package: the plugin root (with ``bin/``,
# ``agents/`` and ``hooks/``) in a checkout or an installed plugin; site-packages after
# ``pip install``, where those are absent and their users fall back (see executors.claude_code).
PACKAGE_PARENT = os.path.dirname(os.path.dirname(os.path.realpath(__file__)))


def brain_home() -> str:
    """``~/.brain``: the default store, runner logs for a database URL, and the ``brain`` launcher."""
    return os.path.join(os.path.expanduser("~"), ".brain")


def default_db_path() -> str:
    """The SQLite file to use when no ``--db`` is given."""
    env = os.environ.get("BRAIN_DB")
    if env:
        return os.path.abspath(os.path.expanduser(env))
    return os.path.join(brain_home(), "jobs.db")


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

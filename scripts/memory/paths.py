"""Where the store lives.

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

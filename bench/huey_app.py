"""The Huey peer of row 4: one trivial task that stores a result, on SqliteStorage.

The consumer loads ``bench.huey_app.huey``; its file comes from
``BENCH_HUEY_DB``. Huey's default leaves SQLite at ``synchronous=FULL``,
the same durability as brain's default.
"""

import os

from huey import SqliteHuey


def make(filename):
    h = SqliteHuey("brain-bench", filename=filename)

    @h.task(name="trivial")
    def trivial(i):
        return i

    return h, trivial


huey, trivial = make(os.environ["BENCH_HUEY_DB"]) if os.environ.get("BENCH_HUEY_DB") else (None, None)

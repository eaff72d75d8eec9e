"""The job record the rules work on: what ``row["sub_tasks"]`` and ``row["history"]`` are.

``state.py`` applies its rules to a row dict (the seed's twelve columns,
``store/contract.py``). Two of its values are collections with an
interface of their own, stated here as two abstract classes:

- ``row["sub_tasks"]`` is a :class:`SubTaskRecord`: ``len``, iteration in
  order, indexing, :meth:`~SubTaskRecord.find` by ``sub_task_id``,
  :meth:`~SubTaskRecord.counts` by status and
  :meth:`~SubTaskRecord.earliest_deadline` of the running sub-tasks.
- ``row["history"]`` is an :class:`EventLog`: ``append``, iteration
  (oldest first), ``len`` and ``reversed``.

Two implementations: the plain record (:class:`SubTasks`, :class:`Events`:
lists, which serialise and compare exactly as lists do) and the SQLite
store's slotted layout (``store/layout.py``: ``Slots``, ``History``, views
that decode only what a write touches and write back only what changed).
Every row a store hands out carries one of them; a value that is not an
array (another program's write) is handed as it was stored, and a rule
that meets it fails as it would on any unreadable row.

What the rules must keep, so that either implementation gives the same row
(``tests/test_record.py`` runs the same rules on both):

1. Never replace ``row["sub_tasks"]`` or ``row["history"]``. Only creation
   (``state.new_row``) builds them, as the plain record; every rule after
   that changes what they hold.
2. Sub-tasks are never inserted, removed, reordered or replaced
   (``subs[i] = ...``). A sub-task is changed by changing the dict the
   record hands out, in place (``sub["status"] = ...``, ``update``, ``pop``,
   ``clear`` then ``update``); one sub-task is the same dict every time it
   is asked for while the row lives. Sub-task *n* (``sub_<n>``) sits at
   index *n* - 1.
3. A sub-task dict holds JSON values under the keys of ``SUB_KEYS``, in
   that order (``state`` puts a key added after others in its place).
   ``status`` is one of ``vocabulary.STATUSES``; ``deadline`` and the other
   times are ``clock.iso`` text (fixed width, so they compare as text) or None.
4. The history is append-only: an event, once appended, is never changed
   or removed. Events are dicts of JSON values (``state.event``).
5. ``counts`` and ``earliest_deadline`` answer for the record as changed
   so far, and may be asked at any time.

Why the abstract classes are ``abc`` and not ``typing.Protocol``: every
report imports this module, and ``abc`` is loaded by the interpreter's start
where ``typing`` is not.
"""

import abc

from .vocabulary import STATUSES

# The order of a sub-task's keys as brain writes them. PostgreSQL's jsonb sorts keys
# its own way; its store puts them back in this order (store/postgres.py), and the
# rules that add a key after others keep to it (``state``), so a row reads the same,
# key order included, on every backend.
SUB_KEYS = ("sub_task_id", "query", "agent_id", "status", "result", "attempt", "deadline", "updated_at",
            "secret_hash", "started_at", "host_agent_id", "past_agents", "past_secrets", "pool", "timeout",
            "worker", "lease_until", "source", "usage")


def tally(subs) -> "tuple[dict, str | None]":
    """Counts by status of the sub-tasks ``subs``, and the earliest deadline of a running one (None if none)."""
    return count_statuses(subs), earliest_running_deadline(subs)


def count_statuses(subs) -> dict:
    """``{status: how many}`` of the sub-tasks ``subs`` (every status of ``STATUSES``, and any other found)."""
    counts = dict.fromkeys(STATUSES, 0)
    try:
        for s in subs:
            counts[s["status"]] += 1
    except KeyError:  # a status brain never writes (another program's): counted under its name
        counts = dict.fromkeys(STATUSES, 0)
        for s in subs:
            counts[s["status"]] = counts.get(s["status"], 0) + 1
    return counts


def earliest_running_deadline(subs):
    """The earliest deadline of a running sub-task of ``subs``, or None."""
    earliest = None
    for s in subs:
        if s["status"] == "running":
            deadline = s.get("deadline")
            if deadline and (earliest is None or deadline < earliest):
                earliest = deadline
    return earliest


class SubTaskRecord(abc.ABC):
    """A job's sub-tasks, in order: ``len``, iteration, indexing, and the methods below.

    The constraints the rules keep are in the module doc (2, 3, 5): the
    record is never resized or reordered, and a sub-task is changed through
    the dict it hands out.
    """

    __slots__ = ()

    @abc.abstractmethod
    def __len__(self) -> int:
        """How many sub-tasks the job has (fixed at creation)."""

    @abc.abstractmethod
    def __iter__(self):
        """Every sub-task, in order (index 0 is ``sub_1``)."""

    @abc.abstractmethod
    def __getitem__(self, index):
        """The sub-task at ``index`` (negative counts from the end)."""

    def find(self, sub_task_id):
        """The sub-task whose ``sub_task_id`` is ``sub_task_id``, or None.

        ``sub_<n>`` is looked for at index *n* - 1 first, so a big job is
        not scanned (nor, in a view, decoded) to find one sub-task.
        """
        digits = sub_task_id[4:] if sub_task_id.startswith("sub_") else ""
        n = int(digits) if digits.isascii() and digits.isdigit() else 0
        if 0 < n <= len(self):
            sub = self[n - 1]
            if sub["sub_task_id"] == sub_task_id:
                return sub
        for sub in self:
            if sub["sub_task_id"] == sub_task_id:
                return sub
        return None

    @abc.abstractmethod
    def counts(self) -> dict:
        """``{status: how many}`` for every status of ``vocabulary.STATUSES``, as changed so far."""

    @abc.abstractmethod
    def earliest_deadline(self):
        """A lower bound of the running sub-tasks' deadlines, as changed so far; None when
        no running sub-task has a deadline.

        No running sub-task's deadline is earlier. It may be earlier than
        every one of them (a view's bound, left by a sub-task that finished
        since): a rule that finds it due looks at the sub-tasks themselves.
        The plain record's is exact.
        """


class EventLog(abc.ABC):
    """A job's history, oldest event first: append-only (module doc, 4)."""

    __slots__ = ()

    @abc.abstractmethod
    def append(self, event: dict) -> None:
        """Add ``event`` after every other."""

    @abc.abstractmethod
    def __iter__(self):
        """Every event, oldest first."""

    @abc.abstractmethod
    def __len__(self) -> int:
        """How many events."""

    @abc.abstractmethod
    def __reversed__(self):
        """Every event, newest first (what the rules that look for the last event of a kind use)."""


class SubTasks(list, SubTaskRecord):
    """The plain record of sub-tasks: a list (JSON, equality and ``repr`` as a list's)."""

    __slots__ = ()

    def counts(self) -> dict:
        return count_statuses(self)

    def earliest_deadline(self):
        return earliest_running_deadline(self)


class Events(list, EventLog):
    """The plain history: a list (JSON, equality and ``repr`` as a list's)."""

    __slots__ = ()


def plain(row: dict) -> dict:
    """``row`` with its sub-tasks and history as the plain record, in place; returns ``row``.

    What a write hands back to a caller that uses the row, and what a
    store's reads hand out (see :func:`as_sub_tasks`, :func:`as_events`).
    """
    row["sub_tasks"] = as_sub_tasks(row["sub_tasks"])
    row["history"] = as_events(row["history"])
    return row


def as_sub_tasks(value):
    """``value`` as the plain record of sub-tasks: a list wrapped, a view read whole (the
    changes made through it included); a value that is not an array left as it is."""
    if type(value) is SubTasks or not isinstance(value, (list, SubTaskRecord)):
        return value
    return SubTasks(value)


def as_events(value):
    """``value`` as the plain history: a list wrapped, a view read whole; anything else as it is."""
    if type(value) is Events or not isinstance(value, (list, EventLog)):
        return value
    return Events(value)

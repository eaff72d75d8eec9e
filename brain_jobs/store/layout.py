"""How the SQLite store lays out a job's ``sub_tasks`` and ``history`` text.

Both stay plain JSON that any reader reads unchanged (``json.loads``,
``json_extract``, the seed's own code); what differs is insignificant
whitespace, placed so that a report rewrites the same number of bytes:

- ``sub_tasks`` is ``[slot,slot,...]``: each slot is one sub-task's compact
  JSON padded with spaces to one width shared by the whole job, with room
  left for a result. Sub-task *n* sits at a known byte offset.
- ``history`` is the compact array followed by spaces: room where new
  events are written in place.

Why: SQLite stores a row as one record. When a report changes the record's
size, SQLite frees and rewrites every overflow page of it (about 50 pages
at 1,000 sub-tasks, each one written to the WAL and synced). When the size
stays the same, it overwrites the record in place and writes only the pages
whose bytes changed; and the store can hand it only those bytes
(:class:`Edits`, written with incremental blob I/O) instead of an UPDATE
that re-serialises the whole record. With this layout a report on a big
job costs about what it costs on a small one (``bench/``, row 3).

Together with a *tally* of the job (how many sub-tasks are in each status,
and a lower bound of the running sub-tasks' deadlines, kept in the
``job_tally`` table), this lets a report decode only the sub-task it
changes. :class:`Slots` and :class:`History` are the second implementation
of the job record (``record.py``; the first is plain lists): the store
hands them to the rules (``state.py``) in every write, and they rely on
the constraints the rules keep there (sub-tasks changed in place, never
added, removed or reordered; the history only appended to). A write that
reads every sub-task decodes the text once, as a whole. When an edit does
not fit (a result longer than the room, a history that ran out of room),
or when most sub-tasks changed (a dispatch), the store lays the whole value
out again, with fresh room.

Jobs of fewer than ``SLOTTED_FROM`` sub-tasks are stored compact, with no
tally, and read whole, as before. Widths and offsets are in bytes of UTF-8,
never in characters.
"""

from .. import codec
from ..record import EventLog, SubTaskRecord, count_statuses, earliest_running_deadline, tally

SLOT_ROOM = 256  # bytes left in each slot for what a report adds (a result, mostly)
HISTORY_ROOM = 2048  # at least this much room after the history; more for long histories
# Below this many sub-tasks a job is stored compact and read whole: for small jobs the
# tally and the room cost more than decoding saves. The measured crossover is in
# docs/benchmarks.md (row 3).
SLOTTED_FROM = 64


# -- writing a whole value -------------------------------------------------

def subtasks_text(subs) -> "tuple[bytes, int]":
    """The slotted text of ``subs`` and its slot width."""
    return _slotted([codec.dumpb(s) for s in subs])


def _slotted(encoded: list) -> "tuple[bytes, int]":
    """The slotted text of sub-tasks encoded each as compact JSON, and its slot width."""
    width = (max(map(len, encoded)) if encoded else 0) + SLOT_ROOM
    return b"[" + b",".join(e.ljust(width) for e in encoded) + b"]", width


def history_text(events) -> bytes:
    """The compact history followed by room for the events to come (about half again its size)."""
    text = codec.dumpb(list(events))
    return text + b" " * max(HISTORY_ROOM, len(text) // 2)


# -- the record's views, for one write ---------------------------------------

class Edits(tuple):
    """Bytes to write over a stored text at byte offsets, the text keeping its size:
    ``((offset, bytes), ...)``. The store writes them in place (SQLite's incremental
    blob I/O: only the pages they touch), or splices them in with :meth:`apply`."""

    def apply(self, text: bytes) -> bytes:
        parts, at = [], 0
        for offset, data in self:
            parts += (text[at:offset], data)
            at = offset + len(data)
        parts.append(text[at:])
        return b"".join(parts)


class Slots(SubTaskRecord):
    """A job's sub-tasks read from slotted text: the record interface (``record``) of a write.

    Indexing and :meth:`find` decode one slot; the first full iteration
    decodes the whole text in one go (a rule that needs every sub-task pays
    what reading the job whole costs). A dict handed out may be changed in
    place; :meth:`edits` writes the changed ones back into their slots.
    :meth:`counts` and :meth:`earliest_deadline` answer from the tally,
    corrected for what this write changed, without decoding the rest.
    """

    @classmethod
    def over(cls, text, width: int, counts: dict, earliest):
        """The view of ``text``, or None when it is not ``sum(counts)`` slots of ``width``
        (a tally that does not match its text is not trusted)."""
        n = sum(counts.values())
        if text is None or len(text) != (n * (width + 1) + 1 if n else 2):
            return None
        return cls(text, width, counts, earliest)

    def __init__(self, text: bytes, width: int, counts: dict, earliest):
        self._text = text
        self._width = width
        self._n = (len(text) - 1) // (width + 1) if len(text) > 2 else 0
        self._counts = counts
        self._earliest = earliest
        self._cache = {}  # index -> decoded dict, handed out
        self._before = {}  # index -> (status, deadline) when decoded
        self._all = None  # every sub-task in order, once iterated (then the cache is not used)

    @property
    def width(self) -> int:
        return self._width

    @property
    def text(self) -> bytes:
        """The stored text the view reads (unchanged by the rules)."""
        return self._text

    def __len__(self):
        return self._n

    def __getitem__(self, i):
        if self._all is not None:
            return self._all[i]
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(self._n))]
        if i < 0:
            i += self._n
        if not 0 <= i < self._n:
            raise IndexError("sub-task index out of range")
        sub = self._cache.get(i)
        if sub is None:
            start = 1 + i * (self._width + 1)
            sub = self._cache[i] = codec.loads_bytes(self._text[start:start + self._width])
            self._before[i] = (sub["status"], sub.get("deadline"))
        return sub

    def __iter__(self):
        if self._all is None:
            # One decoding of the whole text, not one per slot; what was handed out stays.
            subs = codec.loads_bytes(self._text)
            for i, sub in self._cache.items():
                subs[i] = sub
            self._all = subs
        return iter(self._all)

    def _handed(self):
        """``(index, sub-task)`` of every sub-task handed out."""
        return enumerate(self._all) if self._all is not None else self._cache.items()

    def __eq__(self, other):
        return list(self) == list(other)

    def __repr__(self):
        return f"Slots({list(self)!r})"

    def counts(self) -> dict:
        if self._all is not None:
            return count_statuses(self._all)
        counts = dict(self._counts)
        for i, sub in self._cache.items():
            counts[self._before[i][0]] -= 1
            counts[sub["status"]] = counts.get(sub["status"], 0) + 1
        return counts

    def earliest_deadline(self):
        """A lower bound of the running sub-tasks' deadlines (None: none can be due).

        Exact once every sub-task has been decoded: a bound left behind by a
        sub-task that finished (or whose deadline moved, as when a runner
        starts it) is dropped then, so one full look refreshes the tally.
        """
        if self._all is not None:
            return earliest_running_deadline(self._all)
        earliest = self._earliest
        for sub in self._cache.values():
            d = sub.get("deadline")
            if sub["status"] == "running" and d and (earliest is None or d < earliest):
                earliest = d
        return earliest

    def encoded(self) -> dict:
        """``{index: compact JSON}`` of every sub-task handed out (what :meth:`edits` and
        :meth:`relaid` take, so that a write encodes each sub-task once)."""
        return {i: codec.dumpb(sub) for i, sub in self._handed()}

    def edits(self, encoded: dict = None):
        """The changed sub-tasks written back in their slots, as :class:`Edits` of the text
        (adjacent slots in one run). None when one no longer fits its slot, or when more than
        half of them changed: then the whole value is laid out again (:meth:`relaid`), with
        fresh room."""
        if encoded is None:
            encoded = self.encoded()
        runs = []  # [offset, [slot, slot, ...]] of adjacent changed slots
        width, step, text = self._width, self._width + 1, self._text
        most = self._n // 2
        for i in sorted(encoded):
            data = encoded[i]
            if len(data) > width:
                return None
            offset = 1 + i * step
            # The slot holds one JSON object and spaces: it starts with ``data`` only when it is ``data``.
            if text.startswith(data, offset):
                continue  # read, not changed
            if runs and runs[-1][0] + len(runs[-1][1]) * step == offset:
                runs[-1][1].append(data.ljust(width))
            else:
                runs.append([offset, [data.ljust(width)]])
            most -= 1
            if most < 0:
                return None
        return Edits((offset, b",".join(slots)) for offset, slots in runs)

    def patched(self):
        """The text with :meth:`edits` applied, same length; None when :meth:`edits` is None."""
        edits = self.edits()
        return None if edits is None else edits.apply(self._text)

    def relaid(self, encoded: dict = None) -> "tuple[bytes, int]":
        """The whole value laid out anew (:func:`subtasks_text`), reusing what ``encoded`` holds."""
        if encoded is None:
            encoded = self.encoded()
        return _slotted([encoded.get(i) or codec.dumpb(sub) for i, sub in enumerate(self)])


class History(EventLog):
    """A job's history read from text with room after it: the record interface (``record``)
    of a write, appended to without decoding.

    ``append`` and ``len`` need nothing decoded; reading the events (iteration,
    indexing, ``reversed``) decodes them once.
    """

    @classmethod
    def over(cls, text):
        """The view of ``text``, or None when it is not a JSON array (another program's write)."""
        if text is None:
            return None
        end = len(text.rstrip())
        if text[end - 1:end] != b"]" or not text.lstrip().startswith(b"["):
            return None
        return cls(text, end)

    def __init__(self, text: bytes, end: int = None):
        self._text = text
        self._end = len(text.rstrip()) if end is None else end  # just past the closing bracket
        self._old = None
        self._new = []

    def _events(self):
        if self._old is None:
            self._old = codec.loads_bytes(self._text[:self._end])
        return self._old

    def append(self, event):
        self._new.append(event)

    def __len__(self):
        return len(self._events()) + len(self._new)

    def __iter__(self):
        yield from self._events()
        yield from self._new

    def __reversed__(self):
        yield from reversed(self._new)
        yield from reversed(self._events())

    def __getitem__(self, i):
        return list(self)[i]

    def __eq__(self, other):
        return list(self) == list(other)

    def __repr__(self):
        return f"History({list(self)!r})"

    def _empty(self) -> bool:
        """Whether the stored array has no event (looked at from its closing bracket back,
        without copying a long history)."""
        i = self._end - 2
        while i >= 0 and self._text[i] in b" \t\r\n":
            i -= 1
        return i < 0 or self._text[i] == ord("[")

    def _tail(self) -> bytes:
        """What replaces the closing bracket: the new events and a closing bracket."""
        added = b",".join(codec.dumpb(e) for e in self._new)
        return b"".join((b"" if self._empty() else b",", added, b"]"))

    def _grown(self) -> bytes:
        return self._text[:self._end - 1] + self._tail()

    def edits(self):
        """The new events written into the room, as :class:`Edits` of the text (over the
        closing bracket and the spaces after it); None when they do not fit."""
        if not self._new:
            return Edits()
        tail = self._tail()
        at = self._end - 1  # the closing bracket
        if at + len(tail) > len(self._text):
            return None
        return Edits([(at, tail)])

    def patched(self):
        """The text with the new events written into the room, same length; None when they do not fit."""
        edits = self.edits()
        return None if edits is None else edits.apply(self._text)

    def compact(self) -> bytes:
        """The text with the new events and no room (a small job's history), nothing decoded."""
        return self._grown() if self._new else self._text[:self._end]

    def relaid(self) -> bytes:
        """The text with the new events and fresh room (nothing decoded): when ``patched`` is None."""
        grown = self._grown() if self._new else self._text[:self._end]
        return grown + b" " * max(HISTORY_ROOM, len(grown) // 2)


def encode_subtasks(subs, edits: bool = False) -> "tuple[bytes | Edits, tuple | None]":
    """The text to store for a job's sub-tasks, and the tally to keep with it.

    The tally is ``(counts, earliest_deadline, width)``, or None for a job
    stored compact: fewer than ``SLOTTED_FROM`` sub-tasks, or a value that is
    not an array (another program's write), stored as it is. A view whose
    changes fit their slots is patched in place (as :class:`Edits` of the
    stored text when ``edits``); anything else is laid out anew.
    """
    if isinstance(subs, Slots):
        encoded = subs.encoded()
        fitted = subs.edits(encoded)
        if fitted is not None:
            text = fitted if edits else fitted.apply(subs.text)
            return text, (subs.counts(), subs.earliest_deadline(), subs.width)
        if len(subs) >= SLOTTED_FROM:
            text, width = subs.relaid(encoded)
            return text, (*tally(subs), width)
    if not isinstance(subs, (list, Slots)) or len(subs) < SLOTTED_FROM:
        return codec.dumpb(list(subs) if isinstance(subs, Slots) else subs), None
    text, width = subtasks_text(subs)
    counts, earliest = tally(subs)
    return text, (counts, earliest, width)


def encode_history(events, compact: bool, edits: bool = False) -> "bytes | Edits":
    """The text to store for a job's history: with room, unless the job is stored ``compact``.

    A view's new events are written in place when they fit (as :class:`Edits`
    of the stored text when ``edits``), appended without decoding the old
    ones otherwise.
    """
    if isinstance(events, History):
        if compact:
            return events.compact()
        fitted = events.edits() if edits else events.patched()
        return fitted if fitted is not None else events.relaid()
    if compact or not isinstance(events, list):
        return codec.dumpb(events)
    return history_text(events)

"""The exception tree of brain-jobs.

Every error the library raises on purpose is a :class:`BrainError`. Its
message is one line that says what went wrong and what to do. The command
line maps the two families to exit codes in one place (``cli.main``):

- :class:`InvalidInput` (exit 2): the input itself is malformed.
- :class:`OperationalError` (exit 1): the input is well formed but the
  request cannot be carried out now: unknown job, expired job, illegal
  transition, refused report, busy or broken store.
"""


class BrainError(Exception):
    """Base of every error raised on purpose by brain-jobs."""

    exit_code = 1


class InvalidInput(BrainError, ValueError):
    """The input is malformed: fix the command or the call."""

    exit_code = 2


class OperationalError(BrainError):
    """The request is well formed but cannot be carried out."""

    exit_code = 1


class NotFound(OperationalError, LookupError):
    """No such job or sub-task: check the id with `brain job list`."""


class Expired(OperationalError):
    """The job has expired: its results are frozen; create a new job."""


class InvalidTransition(OperationalError):
    """The requested status change is not allowed from the current status."""


class Refused(InvalidTransition):
    """A report was refused: it comes from a worker that does not own the sub-task."""


class Refusal(Refused):
    """A refused report; ``recorded`` says a history event was appended (and is kept)."""

    def __init__(self, message, recorded=False):
        super().__init__(message)
        self.recorded = recorded


class StoreError(OperationalError):
    """The store cannot be used (corrupt, read-only, full disk, missing driver)."""


class StoreBusy(StoreError, TimeoutError):
    """Another writer held the store for too long: retry, or raise BRAIN_LOCK_TIMEOUT."""

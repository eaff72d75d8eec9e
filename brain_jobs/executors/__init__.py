"""Headless executors: what runs a sub-task when no host agent does.

Each executor is one module with one ``Executor`` subclass. The registry
below maps the names of ``brain job dispatch --executor NAME`` to them;
modules are imported only when used, so naming an executor costs nothing
until it runs (the ``anthropic`` SDK alone takes over a second to import).

The contract (see ``base.Executor``): ``check()`` runs in the dispatching
process before anything is marked running and raises a ``BrainError`` that
says what is missing; ``run(query)`` runs in the background runner and
returns the result text (completed; an ``Answer`` also carries what it cost)
or raises ``Failed`` (failed).
"""

import importlib

from ..errors import InvalidInput
from ..vocabulary import EXECUTOR_MODULES, HEADLESS
from .base import Answer, Context, Executor, Failed

__all__ = ["Answer", "Context", "Executor", "Failed", "NAMES", "REGISTRY", "create", "get"]

REGISTRY = EXECUTOR_MODULES  # name -> module of this package, defined in ``vocabulary``
NAMES = HEADLESS


def get(name):
    """The ``Executor`` class registered as ``name``."""
    if name not in REGISTRY:
        raise InvalidInput(f"unknown executor {name!r}: use host or one of {', '.join(NAMES)} (see docs/executors.md)")
    module = importlib.import_module(f"{__name__}.{REGISTRY[name]}")
    return module.Executor


def create(name, ctx):
    """An executor instance for one runner."""
    return get(name)(ctx)

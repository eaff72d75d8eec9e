"""The seed's import path for the Python API: ``from scripts.memory.jobs import ...``.

A thin re-export, not a copy: this module *is* :mod:`brain_jobs.jobs`, so what
one sets or patches the other sees. It works where ``scripts/`` sits beside
``brain_jobs/`` (the plugin root, a checkout); ``pip install`` installs only
``brain_jobs``, never a top-level ``scripts`` that another project's could
collide with.
"""

import sys

from brain_jobs import jobs

sys.modules[__name__] = jobs

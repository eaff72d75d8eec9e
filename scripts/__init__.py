"""Not a package of ours to install: only the seed's import path, ``scripts.memory.jobs``,
kept working from the plugin root and a checkout (see ``scripts/memory/jobs.py``).
The code is the ``brain_jobs`` package."""

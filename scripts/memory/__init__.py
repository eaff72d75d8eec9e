"""The seed's import path; the code is the ``brain_jobs`` package (see ``jobs.py`` here)."""

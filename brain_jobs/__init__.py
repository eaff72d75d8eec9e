"""The job store, its Python API (:mod:`brain_jobs.jobs`) and the ``brain`` command line."""

"""The job store, its Python API (:mod:`scripts.memory.jobs`) and the ``brain`` command line."""

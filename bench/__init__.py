"""The brain-jobs benchmark suite: every hot path measured side by side with
its physical limit or a peer, in the same run. Run it with ``./bench/run``
(see ``docs/benchmarks.md``); it is not part of the test run."""

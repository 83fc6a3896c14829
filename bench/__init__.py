"""Benchmarks of txwatch: scoring kernel, peers, the job end to end, latency.

``python -m bench.run`` (``make bench``) runs every section and writes
``bench/results.json`` and ``bench/results.md``; ``bench.run`` says what each
section measures and how.
"""

"""Posture's benchmarks against the numbers in GOALS.md; run ``python -m benchmarks``.

Benchmarks measure; tests never assert timings. See docs/performance.md for the figures,
the machine and how to read them.
"""

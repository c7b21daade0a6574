"""Benchmarks (not tests): ``python -m perf.receiver`` and ``python -m perf.workers``.

Each prints a short report ending with a ratio against a baseline measured in
the same run, since the machines they run on are small, shared and noisy.
"""

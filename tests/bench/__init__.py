"""Benchmarks run by ``make bench`` (``python -m tests.bench``).

Each ``bench_*.py`` module has a ``run()`` that sets up what it measures, prints its figures and
raises if something failed to run; a missed performance target is reported, not raised.
"""

"""Benchmarks against named peers; run them all with ``python -m bench.run_all``."""

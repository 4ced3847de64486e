"""Benchmarks and the command line: ``python -m fastconv``."""

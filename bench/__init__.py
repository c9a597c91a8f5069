"""Benchmarks run by ``make bench``; each writes its section of BENCHMARKS.md."""

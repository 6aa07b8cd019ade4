"""Reproducible load runs; results are recorded in docs/BENCHMARKS.md."""

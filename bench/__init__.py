"""Benchmarks (not part of the test run); see README.md."""

"""Benchmarks (`make bench`): measurements written to bench/results/*.json, never pass/fail."""

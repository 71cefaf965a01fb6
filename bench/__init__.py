"""Benchmarks: each script prints one JSON object (machine, versions, figures). Not tests."""

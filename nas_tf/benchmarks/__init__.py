"""Tabular NAS benchmarks: search spaces, lookup tables and baseline searches."""

"""Benchmark scripts for the targets of SPEC §7 (run by hand, never collected by pytest)."""

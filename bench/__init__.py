"""Benchmarks: every figure is reported beside a floor measured in the same run, as a ratio."""

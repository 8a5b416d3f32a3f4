"""``python -m bench``: run every benchmark and rewrite its section of docs/benchmarks.md."""

from __future__ import annotations

import runpy
import sys

BENCHES = (
    "bench.bench_publisher",
    "bench.bench_guard",
    "bench.bench_worker",
    "bench.bench_alerts",
    "bench.bench_integrations",
    "bench.bench_hotpaths",
)

for name in BENCHES:
    sys.argv = [name]
    runpy.run_module(name, run_name="__main__")

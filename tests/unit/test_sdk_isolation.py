"""The app-side SDK (publisher, enforcers, pricing, budgets) and the reports' pure half never import the worker's
dependencies.

Apps install plain ``costplane``; only ``costplane[worker]`` brings Faust and ClickHouse. A child interpreter with
an import hook that refuses those packages imports every SDK module: any import of them fails the test.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys

FORBIDDEN = ("faust", "mode", "aiokafka", "clickhouse_connect", "chdb")
#: The app-side packages; ``costplane.budgets`` joins them when the budget model package is installed.
SDK_PACKAGES = tuple(
    name for name in ("costplane.publisher", "costplane.enforcers", "costplane.pricing", "costplane.budgets",
                      "costplane.reports")
    if importlib.util.find_spec(name) is not None
)

PROBE = f"""
import importlib, pkgutil, sys
FORBIDDEN = {FORBIDDEN!r}

class Refuse:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in FORBIDDEN:
            raise ImportError("SDK imported worker-only package " + name)
        return None

sys.meta_path.insert(0, Refuse())
imported = []
for pkg_name in {SDK_PACKAGES!r}:
    pkg = importlib.import_module(pkg_name)
    imported.append(pkg_name)
    for info in pkgutil.walk_packages(pkg.__path__, pkg_name + "."):
        importlib.import_module(info.name)
        imported.append(info.name)
leaked = sorted(m for m in sys.modules if m.split(".")[0] in FORBIDDEN)
assert not leaked, leaked
print(len(imported))
"""


def test_sdk_modules_import_without_worker_dependencies() -> None:
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=120, check=False)
    assert out.returncode == 0, out.stderr
    assert {"costplane.publisher", "costplane.enforcers", "costplane.pricing", "costplane.reports"} <= set(SDK_PACKAGES)
    assert int(out.stdout.strip()) >= len(SDK_PACKAGES)


def test_the_probe_itself_catches_a_worker_import() -> None:
    leaking = PROBE.replace("imported = []", "import clickhouse_connect\nimported = []")
    out = subprocess.run([sys.executable, "-c", leaking], capture_output=True, text=True, timeout=120, check=False)
    assert out.returncode != 0 and "SDK imported worker-only package clickhouse_connect" in out.stderr

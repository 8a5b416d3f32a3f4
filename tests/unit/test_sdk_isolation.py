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
    name
    for name in (
        "costplane.publisher",
        "costplane.enforcers",
        "costplane.pricing",
        "costplane.budgets",
        "costplane.reports",
        "costplane.integrations",
    )
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
    assert {
        "costplane.publisher",
        "costplane.enforcers",
        "costplane.pricing",
        "costplane.reports",
        "costplane.integrations",
    } <= set(SDK_PACKAGES)
    assert int(out.stdout.strip()) >= len(SDK_PACKAGES)


def test_the_probe_itself_catches_a_worker_import() -> None:
    leaking = PROBE.replace("imported = []", "import clickhouse_connect\nimported = []")
    out = subprocess.run([sys.executable, "-c", leaking], capture_output=True, text=True, timeout=120, check=False)
    assert out.returncode != 0 and "SDK imported worker-only package clickhouse_connect" in out.stderr


#: Provider SDKs: an integration module imports its own SDK; nothing else in costplane may.
PROVIDER_SDKS = ("openai", "anthropic", "litellm", "opentelemetry", "google", "boto3")
#: The integration modules that are each one SDK's own.
SDK_MODULES = ("costplane.integrations.openai", "costplane.integrations.anthropic", "costplane.integrations.litellm")

LAZY_PROBE = f"""
import importlib, pkgutil, sys
FORBIDDEN = {PROVIDER_SDKS!r} + {FORBIDDEN!r}

class Refuse:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in FORBIDDEN:
            raise ImportError("imported provider SDK " + name)
        return None

sys.meta_path.insert(0, Refuse())
import costplane
assert callable(costplane.attributes)
pkg = importlib.import_module("costplane.integrations")
count = 0
for info in pkgutil.walk_packages(pkg.__path__, "costplane.integrations."):
    if info.name not in {SDK_MODULES!r}:
        importlib.import_module(info.name)
        count += 1
print(count)
"""


def test_integrations_import_no_provider_sdk_until_its_own_module_is_used() -> None:
    out = subprocess.run([sys.executable, "-c", LAZY_PROBE], capture_output=True, text=True, timeout=120, check=False)
    assert out.returncode == 0, out.stderr
    assert int(out.stdout.strip()) >= 5

"""The worker's garbage-collector tuning: young collections far apart, startup objects frozen."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from costplane.config import ConfigError, WorkerSettings, load_settings
from costplane.streams.worker.gctuning import collections_deferred, tune_gc


@pytest.fixture
def restore_gc() -> Iterator[None]:
    before = gc.get_threshold()
    yield
    gc.set_threshold(*before)
    gc.unfreeze()


def test_tune_gc_raises_the_young_threshold_and_freezes_startup_objects(restore_gc: None) -> None:
    _, gen1, gen2 = gc.get_threshold()
    threshold = load_settings(WorkerSettings).gc_threshold
    tune_gc(threshold)
    assert gc.get_threshold() == (threshold, gen1, gen2)
    assert threshold > 700
    assert gc.get_freeze_count() > 0  # what existed at startup is no longer walked by any collection


def test_gc_threshold_below_pythons_default_is_refused() -> None:
    with pytest.raises(ConfigError, match="COSTPLANE_WORKER_GC_THRESHOLD"):
        load_settings(WorkerSettings, gc_threshold=10)


def test_collections_are_deferred_inside_and_resume_after_even_on_error() -> None:
    assert gc.isenabled()
    with pytest.raises(RuntimeError), collections_deferred():
        assert not gc.isenabled()
        with collections_deferred():  # nested: the outer one re-enables
            assert not gc.isenabled()
        assert not gc.isenabled()
        raise RuntimeError("insert failed")
    assert gc.isenabled()


def test_lower_priority_raises_the_nice_value_of_the_thread_and_what_it_starts() -> None:
    """Run in a child process so the test's own priority is untouched."""
    import subprocess
    import sys

    code = (
        "import os, threading\n"
        "from costplane.streams.worker.priority import lower_priority\n"
        "before = os.getpriority(os.PRIO_PROCESS, 0)\n"
        "after = lower_priority(3)\n"
        "seen = []\n"
        "t = threading.Thread(target=lambda: seen.append(os.getpriority(os.PRIO_PROCESS, 0)))\n"
        "t.start(); t.join()\n"
        "print(before, after, seen[0], lower_priority(0))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    before, after, child, unchanged = (int(v) for v in out)
    assert after == min(before + 3, 19) and child == after and unchanged == after

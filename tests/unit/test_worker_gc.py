"""The worker's garbage-collector tuning: young collections far apart, startup objects frozen."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from costplane.config import ConfigError, WorkerSettings, load_settings
from costplane.streams.worker.run import tune_gc


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

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

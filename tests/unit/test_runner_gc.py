"""The collector tuning every daemon starts with (streamops.runner.tune_gc)."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from streamops.runner import GC_YOUNG, tune_gc


@pytest.fixture
def restored_gc() -> Iterator[None]:
    before = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*before)


def test_young_generation_and_frozen_start(restored_gc: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KES_GC_YOUNG", raising=False)
    gc.unfreeze()
    tune_gc()
    assert gc.get_threshold()[0] == GC_YOUNG == 700  # see streamops/runner.py: 10,000 grew the soak's RSS
    assert gc.get_freeze_count() > 1000  # modules, classes: out of every later walk


def test_override_from_environment(restored_gc: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KES_GC_YOUNG", "10000")
    tune_gc()
    assert gc.get_threshold()[0] == 10_000

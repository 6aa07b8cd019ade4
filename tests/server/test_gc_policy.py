"""The server's collector policy: the young generation collected less often, never lowered."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest

from lwm2m.server.gc_policy import (
    YOUNG_THRESHOLD,
    _freeze_survivors,
    hold_survivors,
    release_survivors,
    tune_collector,
)


@pytest.fixture
def thresholds() -> Iterator[None]:
    saved, enabled = gc.get_threshold(), gc.isenabled()
    yield
    gc.set_threshold(*saved)
    if enabled:
        gc.enable()


@pytest.mark.usefixtures("thresholds")
def test_raises_the_young_threshold_once_and_keeps_the_others() -> None:
    gc.set_threshold(700, 10, 10)
    assert tune_collector() is True
    assert gc.get_threshold() == (YOUNG_THRESHOLD, 10, 10)
    assert tune_collector() is False  # idempotent


@pytest.mark.usefixtures("thresholds")
def test_never_lowers_a_higher_threshold_nor_enables_a_disabled_collector() -> None:
    gc.set_threshold(YOUNG_THRESHOLD * 2, 10, 10)
    assert tune_collector() is False
    assert gc.get_threshold()[0] == YOUNG_THRESHOLD * 2
    gc.set_threshold(0)
    assert tune_collector() is False
    assert gc.get_threshold()[0] == 0
    gc.set_threshold(700, 10, 10)
    gc.disable()
    assert tune_collector() is False
    assert not gc.isenabled()


@pytest.fixture
def no_freeze() -> Iterator[None]:
    while _freeze_survivors in gc.callbacks:  # a server another test left running
        release_survivors()
    gc.unfreeze()
    yield
    while _freeze_survivors in gc.callbacks:
        release_survivors()
    gc.unfreeze()


class _Node:
    def __init__(self) -> None:
        self.other: _Node | None = None


@pytest.mark.usefixtures("thresholds", "no_freeze")
def test_survivors_of_a_young_collection_are_frozen_until_released() -> None:
    hold_survivors()
    hold_survivors()  # a second server in the process
    kept = [_Node() for _ in range(100)]  # alive across the collection: frozen
    gc.collect(0)
    assert gc.get_freeze_count() >= len(kept)
    old = {id(o) for g in (0, 1, 2) for o in gc.get_objects(g)}
    assert not any(id(n) in old for n in kept)  # no generation holds them: frozen
    release_survivors()
    assert _freeze_survivors in gc.callbacks  # the first server still runs
    release_survivors()
    assert _freeze_survivors not in gc.callbacks
    assert gc.get_freeze_count() == 0  # everything back where a full collection reaches it
    release_survivors()  # more releases than holds: nothing happens


@pytest.mark.usefixtures("thresholds", "no_freeze")
def test_a_cycle_that_dies_young_is_still_collected() -> None:
    hold_survivors()
    a, b = _Node(), _Node()
    a.other, b.other = b, a
    ref = weakref.ref(a)
    del a, b
    gc.collect(0)
    assert ref() is None
    release_survivors()


@pytest.mark.usefixtures("thresholds", "no_freeze")
def test_a_cycle_frozen_before_it_died_comes_back_with_the_release() -> None:
    hold_survivors()
    a, b = _Node(), _Node()
    a.other, b.other = b, a
    ref = weakref.ref(a)
    gc.collect(0)  # alive now: frozen with the rest
    del a, b
    gc.collect()
    assert ref() is not None  # the documented cost, until the server stops
    release_survivors()
    gc.collect()
    assert ref() is None

"""The server's collector policy: the young generation collected less often, never lowered."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from lwm2m.server.gc_policy import YOUNG_THRESHOLD, tune_collector


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

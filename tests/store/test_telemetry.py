"""Telemetry: bulk append, latest value per path, history by time range, retention."""

from __future__ import annotations

import math
import struct

import pytest

from lwm2m.model import Path, Value
from lwm2m.store import ReportedValue, Source, Store


def rv(
    path: str, value: Value, at: float, endpoint: str = "ep-1", source: Source = Source.NOTIFY
) -> ReportedValue:
    return ReportedValue(endpoint, Path.parse(path), value, at, source)


def append(store: Store, *values: ReportedValue, history: bool = True) -> None:
    with store.transaction() as tx:
        store.telemetry.append(tx, list(values), history=history)


def test_latest_keeps_the_newest_value_per_path(store: Store) -> None:
    append(
        store,
        rv("/3/0/9", Value.integer(80), at=10),
        rv("/3/0/9", Value.integer(79), at=20),
        rv("/3/0/9", Value.integer(81), at=15),  # same batch, older: history only
        rv("/3/0/9", Value.integer(99), at=5, endpoint="ep-2"),
    )
    append(store, rv("/3/0/9", Value.integer(50), at=12, source=Source.SEND))  # late Send
    with store.transaction() as tx:
        latest = store.telemetry.latest_value(tx, "ep-1", Path.parse("/3/0/9"))
        assert latest == rv("/3/0/9", Value.integer(79), at=20)
        assert store.telemetry.latest_value(tx, "ep-1", Path.parse("/3/0/10")) is None
    append(store, rv("/3/0/9", Value.integer(78), at=20, source=Source.READ))  # same time: newer
    with store.transaction() as tx:
        latest = store.telemetry.latest_value(tx, "ep-1", Path.parse("/3/0/9"))
        assert latest == rv("/3/0/9", Value.integer(78), at=20, source=Source.READ)


def test_latest_under_a_prefix_does_not_match_sibling_ids(store: Store) -> None:
    append(
        store,
        rv("/3/1/0", Value.string("a"), 1),
        rv("/3/1", Value.string("b"), 1),
        rv("/3/10/0", Value.string("c"), 1),
        rv("/3/1/0/2", Value.string("d"), 1),
        rv("/4/0/1", Value.string("e"), 1),
    )
    with store.transaction() as tx:
        under = store.telemetry.latest(tx, "ep-1", Path.parse("/3/1"))
        assert [str(v.path) for v in under] == ["/3/1", "/3/1/0", "/3/1/0/2"]
        everything = store.telemetry.latest(tx, "ep-1")
        assert [str(v.path) for v in everything] == [
            "/3/1",
            "/3/1/0",
            "/3/1/0/2",
            "/3/10/0",
            "/4/0/1",
        ]
        assert store.telemetry.latest(tx, "nobody") == []


def test_history_is_a_time_range_in_time_order(store: Store) -> None:
    append(store, *(rv("/3303/0/5700", Value.float_(20 + i / 10), at=100 + i) for i in range(10)))
    append(store, rv("/3303/0/5701", Value.string("Cel"), at=100))
    history = store.telemetry.history
    path = Path.parse("/3303/0/5700")
    with store.transaction() as tx:
        assert [v.at for v in history(tx, "ep-1", path)] == [100 + i for i in range(10)]
        window = history(tx, "ep-1", path, since=103, until=106)
        assert [v.at for v in window] == [103, 104, 105]
        assert window[0].value == Value.float_(20.3)
        newest = history(tx, "ep-1", path, limit=2, newest_first=True)
        assert [v.at for v in newest] == [109, 108]
        assert history(tx, "ep-2", path) == []
        with pytest.raises(ValueError):
            history(tx, "ep-1", path, limit=0)


def test_latest_only_appends_leave_no_history(store: Store) -> None:
    append(store, rv("/3/0/0", Value.string("acme"), 1), history=False)
    with store.transaction() as tx:
        assert store.telemetry.history(tx, "ep-1", Path.parse("/3/0/0")) == []
        assert store.telemetry.latest_value(tx, "ep-1", Path.parse("/3/0/0")) is not None


def test_prune_and_purge(store: Store) -> None:
    append(store, *(rv("/3/0/13", Value.time(1000 + i), at=i) for i in range(10)))
    append(store, rv("/3/0/13", Value.time(5), at=3, endpoint="ep-2"))
    tel = store.telemetry
    path = Path.parse("/3/0/13")
    with store.transaction() as tx:
        assert tel.prune(tx, before=5) == 6  # 5 of ep-1, 1 of ep-2
        assert [v.at for v in tel.history(tx, "ep-1", path)] == [5, 6, 7, 8, 9]
        assert tel.latest_value(tx, "ep-2", path) is not None  # latest values are kept
        assert tel.purge_endpoint(tx, "ep-1") == 6  # 5 history rows + 1 latest
        assert tel.latest(tx, "ep-1") == []


def _bits(x: float) -> int:
    return int(struct.unpack(">Q", struct.pack(">d", x))[0])


EDGE_VALUES = [
    Value.float_(-0.0),
    Value.float_(math.inf),
    Value.float_(-math.inf),
    Value.float_(struct.unpack(">d", bytes.fromhex("7ff8000000000abc"))[0]),
    Value.float_(5e-324),
    Value.float_(1.7976931348623157e308),
    Value.unsigned(2**64 - 1),
    Value.integer(-(2**63)),
    Value.opaque(bytes(range(256))),
    Value.objlnk(65535, 65535),
    Value.string("naïve \u0001 \U0001f600"),
    Value.boolean(True),
    Value.none(),
]


def test_values_round_trip_through_the_database_bit_for_bit(store: Store) -> None:
    append(store, *(rv(f"/9/0/{i}", v, at=1) for i, v in enumerate(EDGE_VALUES)))
    with store.transaction() as tx:
        back = [v.value for v in store.telemetry.latest(tx, "ep-1")]
        hist = [store.telemetry.history(tx, "ep-1", Path.of(9, 0, i))[0].value for i in range(13)]
    for stored in (back, hist):
        assert stored == EDGE_VALUES
        for a, b in zip(stored, EDGE_VALUES, strict=True):
            if isinstance(a.value, float) and isinstance(b.value, float):
                assert _bits(a.value) == _bits(b.value)

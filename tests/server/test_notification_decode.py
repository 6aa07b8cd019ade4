"""One read of a multi-format notification gives what two reads gave: the nodes (newest value
per leaf) and the telemetry rows (each value at its own time), for every multi-path format,
with absolute, relative, zero and missing times, single-path and composite observations."""

from __future__ import annotations

import json

import pytest

from lwm2m.codec import ContentFormat, encode_timestamped
from lwm2m.codec.api import TimestampedNodes
from lwm2m.model import DataType, MultipleResource, Path, SingleResource, Value
from lwm2m.server.notification_decode import decode_notification
from lwm2m.server.observations import report_values
from lwm2m.server.operations import Response, decode_content
from lwm2m.store import Source
from objects import BUILTIN_MODEL

NOW = 1_765_000_000.0
FORMATS = [
    ContentFormat.SENML_CBOR,
    ContentFormat.SENML_JSON,
    ContentFormat.LWM2M_CBOR,
    ContentFormat.LWM2M_JSON,
]


def _two_step(
    response: Response, paths: list[Path], composite: bool
) -> tuple[object, int, object, float]:
    nodes, fmt = decode_content(
        response, paths, BUILTIN_MODEL, composite=composite, accept=response.content_format
    )
    values, at = report_values("ep", response, nodes, fmt, BUILTIN_MODEL, NOW, Source.NOTIFY)
    return nodes, fmt, values, at


def _one_step(
    response: Response, paths: list[Path], composite: bool
) -> tuple[object, int, object, float]:
    return decode_notification(
        "ep",
        response,
        paths,
        BUILTIN_MODEL,
        composite=composite,
        accept=response.content_format,
        now=NOW,
        source=Source.NOTIFY,
    )


def _nodes(i: int) -> dict[Path, object]:
    return {
        Path.parse("/3/0/9"): SingleResource(9, Value.integer(50 + i)),
        Path.parse("/3/0/7"): MultipleResource(
            7, DataType.INTEGER, {0: Value.integer(3300 + i), 1: Value.integer(5000)}
        ),
    }


CASES = [
    pytest.param(fmt, times, id=f"{fmt.name}-{name}")
    for fmt in FORMATS
    for name, times in (("now", [None]), ("history", [NOW - 20, NOW - 10, NOW]))
    if not (fmt is ContentFormat.LWM2M_CBOR and name == "history")  # it carries no times
]


@pytest.mark.parametrize(("fmt", "times"), CASES)
def test_one_read_equals_two_reads(fmt: ContentFormat, times: list[float | None]) -> None:
    groups = [TimestampedNodes(t, _nodes(i)) for i, t in enumerate(times)]  # type: ignore[arg-type]
    payload = encode_timestamped(fmt, groups, BUILTIN_MODEL)
    response = Response(code=69, content_format=int(fmt), payload=payload)
    for paths, composite in (
        ([Path.parse("/3/0")], False),
        ([Path.parse("/3/0/9"), Path.parse("/3/0/7")], True),
    ):
        assert _one_step(response, paths, composite) == _two_step(response, paths, composite)


@pytest.mark.parametrize(
    "records",
    [
        # relative times (RFC 8428 §4.5.3): -10 s, -5 s and 0 ("now")
        [
            {"bn": "/3/0/", "bt": -10, "n": "9", "v": 40},
            {"bt": -5, "n": "9", "v": 41},
            {"bt": 0, "n": "9", "v": 42},
        ],
        # a timeless record beside timed ones
        [{"bn": "/3/0/", "n": "9", "v": 43}, {"n": "10", "v": 7, "t": NOW - 1}],
    ],
    ids=["relative", "mixed"],
)
def test_relative_and_missing_times_resolve_the_same(records: list[dict[str, object]]) -> None:
    payload = json.dumps(records).encode()
    response = Response(code=69, content_format=int(ContentFormat.SENML_JSON), payload=payload)
    paths = [Path.parse("/3/0")]
    one, two = _one_step(response, paths, False), _two_step(response, paths, False)
    assert one == two
    assert len(one[2]) == len(records)  # type: ignore[arg-type]


def test_a_text_notification_takes_the_two_step_path() -> None:
    response = Response(code=69, content_format=int(ContentFormat.TEXT), payload=b"77")
    paths = [Path.parse("/3/0/9")]
    assert _one_step(response, paths, False) == _two_step(response, paths, False)


def test_a_malformed_payload_raises_like_decode_content() -> None:
    response = Response(code=69, content_format=int(ContentFormat.SENML_CBOR), payload=b"\xff")
    with pytest.raises(Exception) as one:
        _one_step(response, [Path.parse("/3/0")], False)
    with pytest.raises(Exception) as two:
        _two_step(response, [Path.parse("/3/0")], False)
    assert type(one.value) is type(two.value) and str(one.value) == str(two.value)

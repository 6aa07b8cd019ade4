"""Shared checks and strategies for the multi-path codec tests (SenML JSON/CBOR, LwM2M JSON/CBOR).

The four codecs promise the same contract, so the properties — decode inverts encode, decoders
raise nothing but CodecError — are written once here and run by each format's test module.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from hypothesis import strategies as st

from lwm2m.codec.api import MultiNodeCodec, TimestampedNodes
from lwm2m.codec.errors import CodecError
from lwm2m.model import Node, Path, Value, iter_leaves
from tests.codec.models import TEST_MODEL
from tests.codec.strategies import nodes_with_paths

PROBE_PATHS = [Path.of(3), Path.of(3, 0), Path.of(3, 0, 7), Path.of(3, 0, 7, 0), Path.of(30000, 1)]


def decoder_calls(codec: MultiNodeCodec) -> list[Callable[[bytes], object]]:
    """Every decoding entry point of ``codec``, as one-argument callables."""
    calls: list[Callable[[bytes], object]] = [
        lambda p: codec.decode_nodes(p, TEST_MODEL),
        lambda p: codec.decode_nodes(p, TEST_MODEL, [*PROBE_PATHS, Path(())]),
        lambda p: codec.decode_timestamped(p, TEST_MODEL),
        codec.decode_paths,
    ]
    calls += [lambda p, path=path: codec.decode(p, path, TEST_MODEL) for path in PROBE_PATHS]
    return calls


def assert_only_codec_errors(codec: MultiNodeCodec, payload: bytes) -> int:
    """Run every decoder on ``payload``; anything but success or a CodecError fails the test.

    Returns how many decoders accepted the payload, so callers can check the fuzzing reaches
    past the parser."""
    accepted = 0
    for call in decoder_calls(codec):
        try:
            call(payload)
        except CodecError:
            continue
        accepted += 1
    return accepted


def leaf_set(nodes: dict[Path, Node]) -> set[tuple[Path, Value]]:
    return {leaf for path, node in nodes.items() for leaf in iter_leaves(node, path)}


def timed_leaves(data: Sequence[TimestampedNodes]) -> dict[float | None, set[tuple[Path, Value]]]:
    return {item.timestamp: leaf_set(dict(item.nodes)) for item in data}


@st.composite
def disjoint_nodes(draw: st.DrawFn) -> dict[Path, Node]:
    """Up to three non-empty nodes at paths none of which contains another."""
    picked: dict[Path, Node] = {}
    for path, node in draw(st.lists(nodes_with_paths(allow_empty=False), min_size=1, max_size=3)):
        if all(not path.startswith(p) and not p.startswith(path) for p in picked):
            picked[path] = node  # type: ignore[assignment]
    return picked


timestamps = st.one_of(
    st.none(),
    st.integers(2**28, 2**33).map(float),
    st.floats(2**28, 2**33, allow_nan=False),
    st.floats(-(10**6), -1e-3, allow_nan=False),  # relative: before the receiver's now
)


@st.composite
def timestamped_packs(draw: st.DrawFn) -> list[TimestampedNodes]:
    """Instants with distinct times (None first, then ascending), each with its nodes."""
    times = draw(st.lists(timestamps, min_size=1, max_size=3, unique=True))
    ordered = sorted(times, key=lambda t: (t is not None, t or 0.0))
    return [TimestampedNodes(t, draw(disjoint_nodes())) for t in ordered]


json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=8),
    st.sampled_from(["/3/0/", "/3/0", "/0", "0", "7/0", "/30000/1/", "3:0", "AAE", "", "/"]),
)
senml_labels = st.one_of(
    st.sampled_from(["bn", "bt", "bv", "n", "t", "v", "vs", "vb", "vd", "vlo", "u", "x_"]),
    st.sampled_from(["e", "sv", "ov"]),
    st.text(max_size=3),
)
json_documents = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(senml_labels, inner, max_size=5),
    max_leaves=25,
)
"""JSON-shaped values biased towards SenML and LwM2M JSON labels, so fuzzing gets past parsing."""

cbor_scalars = st.one_of(json_scalars, st.binary(max_size=8), st.integers(-(2**64), 2**64))
cbor_keys = st.one_of(
    st.integers(-8, 30),
    st.sampled_from(["vlo", "x_", "bn"]),
    st.lists(st.integers(-1, 70000), min_size=0, max_size=5).map(tuple),
)
cbor_documents = st.recursive(
    cbor_scalars,
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(cbor_keys, inner, max_size=5),
    max_leaves=25,
)
"""CBOR-shaped values biased towards SenML labels and LwM2M CBOR id keys (arrays as tuples)."""

plausible_items = st.one_of(
    st.sampled_from(["/3/0/", "/3/0", "/0", "9", "7/0", "/3/0/9", "/30000/0/", "1", "3", "5"]),
    st.sampled_from(["7", "107/1", "3:0", "AQ", "", "/", "65535:65535", "/3/0/7/"]),
    st.integers(-(2**64), 2**64),
    st.floats(allow_nan=False),
    st.booleans(),
)
senml_record_labels = st.sampled_from(["bn", "n", "bt", "t", "v", "vs", "vb", "vd", "vlo", "bv"])
senml_packs = st.lists(
    st.dictionaries(senml_record_labels, plausible_items, min_size=1, max_size=4),
    min_size=1,
    max_size=5,
)
"""Nearly valid SenML packs (label → item), so fuzzing reaches typing and grouping."""

CBOR_KEYS = {"bn": -2, "bt": -3, "bv": -5, "n": 0, "v": 2, "vs": 3, "vb": 4, "t": 6, "vd": 8}


def senml_cbor_pack(pack: list[dict[str, object]]) -> list[dict[object, object]]:
    """A label-keyed pack with SenML CBOR's integer keys (``vlo`` stays text)."""
    return [{CBOR_KEYS.get(label, label): item for label, item in r.items()} for r in pack]


lwm2m_cbor_trees = st.recursive(
    st.one_of(plausible_items, st.binary(max_size=4), st.none()),
    lambda inner: st.dictionaries(
        st.sampled_from([0, 1, 3, 7, 9, 30000, (3, 0), (3, 0, 9), (30000, 0), (7, 0), (0, 7, 1)]),
        inner,
        max_size=3,
    ),
    max_leaves=12,
)
"""Nearly valid LwM2M CBOR documents: small id maps, array keys, assorted leaves."""

"""Property tests: the loader never fails with anything but DdfError, and round-trips."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lwm2m.model import DataType, ObjectDefinition, Operations, ResourceDefinition
from objects import DdfError, dump_ddf, load_ddf, parse_ddf
from objects.builtin import DEVICE, FIRMWARE_UPDATE, FLEET_CONFIG

SEED_DOCUMENT = dump_ddf([DEVICE, FIRMWARE_UPDATE, FLEET_CONFIG])
FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def outcome(load: object) -> None:
    """Call ``load``; a list of definitions or a DdfError are the only acceptable outcomes."""
    assert callable(load)
    try:
        result = load()
    except DdfError as exc:
        assert str(exc)  # always explains itself
        return
    assert isinstance(result, list)
    assert all(isinstance(d, ObjectDefinition) for d in result)


@FUZZ
@given(st.binary(max_size=2048))
def test_arbitrary_bytes_raise_only_ddf_error(data: bytes) -> None:
    outcome(lambda: load_ddf(data))


@FUZZ
@given(st.text(max_size=2048))
def test_arbitrary_text_raises_only_ddf_error(text: str) -> None:
    outcome(lambda: parse_ddf(text))


@st.composite
def mutated_documents(draw: st.DrawFn) -> bytes:
    """A valid document with a few slices deleted, replaced or duplicated: reaches the
    semantic checks, which random bytes almost never do."""
    data = bytearray(SEED_DOCUMENT)
    for _ in range(draw(st.integers(1, 4))):
        start = draw(st.integers(0, len(data)))
        end = draw(st.integers(start, min(len(data), start + 64)))
        action = draw(st.sampled_from(["delete", "replace", "duplicate"]))
        if action == "delete":
            del data[start:end]
        elif action == "replace":
            data[start:end] = draw(
                st.sampled_from([b"", b"<", b">", b"&", b"X", b"Multiple", b"E", b"-1", b"99999"])
            )
        else:
            data[start:start] = data[start:end]
    return bytes(data)


@FUZZ
@given(mutated_documents())
def test_mutated_documents_raise_only_ddf_error(data: bytes) -> None:
    outcome(lambda: load_ddf(data))


# what XML 1.0 can carry (no C0 controls, surrogates, U+FFFE/U+FFFF); names have no spaces
xml_chars = st.characters(blacklist_categories=["Cs", "Cc"], blacklist_characters="\ufffe\uffff")
names = st.text(
    st.characters(
        blacklist_categories=["Cs", "Cc", "Zs", "Zl", "Zp"], blacklist_characters="\ufffe\uffff"
    ),
    min_size=1,
    max_size=20,
)
texts = st.text(xml_chars, max_size=30).map(str.strip)
typed = [t for t in DataType if t is not DataType.NONE]


@st.composite
def resources(draw: st.DrawFn, rid: int) -> ResourceDefinition:
    ops = draw(st.sampled_from(["", "R", "W", "RW", "E"]))
    operations = Operations.from_ddf(ops)
    return ResourceDefinition(
        id=rid,
        name=draw(names),
        operations=operations,
        multiple=draw(st.booleans()),
        mandatory=draw(st.booleans()),
        type=DataType.NONE if operations.executable else draw(st.sampled_from(typed)),
        range_enumeration=draw(texts),
        units=draw(texts),
        description=draw(texts),
    )


@st.composite
def definitions(draw: st.DrawFn) -> ObjectDefinition:
    ids = draw(st.lists(st.integers(0, 65534), max_size=6, unique=True))
    version = f"{draw(st.integers(1, 9))}.{draw(st.integers(0, 9))}"
    return ObjectDefinition(
        id=draw(st.integers(0, 65534)),
        name=draw(names),
        multiple=draw(st.booleans()),
        mandatory=draw(st.booleans()),
        resources={rid: draw(resources(rid)) for rid in ids},
        version=version,
        lwm2m_version=draw(st.sampled_from(["1.0", "1.1", "1.2"])),
        urn=draw(st.sampled_from(["urn:oma:lwm2m:x:1", "urn:example"])),
        description=draw(texts),
    )


@settings(max_examples=150, deadline=None)
@given(st.lists(definitions(), max_size=3, unique_by=lambda d: d.id))
def test_dump_then_load_returns_the_same_definitions(defs: list[ObjectDefinition]) -> None:
    if not defs:
        return  # an <LWM2M> without objects is refused; covered in the loader tests
    assert load_ddf(dump_ddf(defs)) == defs


@pytest.mark.parametrize("bad", ["\x01", "\ud800", "\uffff"])
def test_dump_refuses_text_xml_cannot_carry(bad: str) -> None:
    broken = ObjectDefinition(1, f"Name{bad}", multiple=False, mandatory=False)
    with pytest.raises(DdfError, match="cannot be written in XML"):
        dump_ddf([broken])

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from lwm2m.model import MAX_ID, ROOT, InvalidPath, Path, PathLevel

ids = st.integers(min_value=0, max_value=MAX_ID)
paths = st.lists(ids, max_size=4).map(lambda xs: Path(tuple(xs)))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("/", ()),
        ("", ()),
        ("/3", (3,)),
        ("3/0", (3, 0)),
        ("/3/0/1", (3, 0, 1)),
        ("/3/0/7/1", (3, 0, 7, 1)),
        ("/65534/65534", (65534, 65534)),
        ("/3/0/", (3, 0)),
    ],
)
def test_parse_accepts_every_level(text: str, expected: tuple[int, ...]) -> None:
    assert Path.parse(text).ids == expected


@pytest.mark.parametrize(
    "text", ["/65535", "/3/65535", "/a", "/3//0", "/3/0/1/2/3", "/-1", "/03", "/3 /0", "/\uff11"]
)
def test_parse_rejects_malformed_paths_with_typed_error(text: str) -> None:
    with pytest.raises(InvalidPath):
        Path.parse(text)


def test_levels_and_accessors() -> None:
    p = Path.parse("/3/0/7/1")
    assert p.level is PathLevel.RESOURCE_INSTANCE
    assert (p.object_id, p.instance_id, p.resource_id, p.resource_instance_id) == (3, 0, 7, 1)
    assert Path.parse("/3").instance_id is None
    assert ROOT.is_root and Path.of(3).is_object and Path.of(3, 0).is_object_instance
    assert Path.of(3, 0, 1).is_resource


def test_ordering_is_depth_first_by_id() -> None:
    unsorted = [Path.parse(s) for s in ["/4", "/3/0/1", "/3", "/3/0", "/", "/10", "/3/1"]]
    assert [str(p) for p in sorted(unsorted)] == ["/", "/3", "/3/0", "/3/0/1", "/3/1", "/4", "/10"]


def test_prefix_relations() -> None:
    assert Path.parse("/3/0/1").startswith(Path.parse("/3"))
    assert Path.parse("/3/0/1").startswith(ROOT)
    assert not Path.parse("/3/0/1").startswith(Path.parse("/3/1"))
    assert not Path.parse("/30").startswith(Path.parse("/3"))
    assert Path.parse("/3").is_prefix_of(Path.parse("/3/0"))
    assert Path.parse("/3/0/1").relative_to(Path.parse("/3")) == (0, 1)
    with pytest.raises(InvalidPath):
        Path.parse("/4/0").relative_to(Path.parse("/3"))


def test_child_and_parent() -> None:
    assert Path.of(3).child(0).child(1) == Path.parse("/3/0/1")
    assert Path.parse("/3/0/1").parent == Path.parse("/3/0")
    with pytest.raises(InvalidPath):
        _ = ROOT.parent
    with pytest.raises(InvalidPath):
        Path.parse("/3/0/1/2").child(0)
    with pytest.raises(InvalidPath):
        Path.of(3).child(65535)


@given(paths)
def test_parse_of_str_round_trips(path: Path) -> None:
    assert Path.parse(str(path)) == path


@given(st.text(max_size=30))
def test_parse_never_raises_anything_but_invalid_path(text: str) -> None:
    with contextlib.suppress(InvalidPath):
        Path.parse(text)

"""version_key: text order of the keys is semantic-version precedence (checked against a
straightforward reference implementation of the semver 2.0 rules), and it never raises."""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from lifecycle.versions import (
    OTHER_CLASS,
    VERSION_CLASS,
    class_bounds,
    is_version,
    key_class,
    version_key,
)

numbers = st.integers(min_value=0, max_value=10**12)
alnum_ids = st.builds(
    lambda head, letter, tail: head + letter + tail,
    st.text("0123456789abZ-", max_size=3),
    st.sampled_from("abzAZ-"),
    st.text("0123456789abZ-", max_size=3),
)
pre_ids = st.one_of(numbers.map(str), alnum_ids)
versions = st.builds(
    lambda prefix, release, pre, build: (
        prefix
        + ".".join(map(str, release))
        + (f"-{'.'.join(pre)}" if pre else "")
        + (f"+{build}" if build else "")
    ),
    st.sampled_from(["", "v", "V"]),
    st.lists(numbers, min_size=1, max_size=5),
    st.lists(pre_ids, max_size=3),
    st.sampled_from(["", "build.5", "sha-1f3"]),
)


def reference(text: str) -> tuple[Any, ...]:
    """Semver precedence as a Python tuple (tolerant release length, as documented)."""
    text = text.lstrip("vV").split("+", 1)[0]
    release_text, _, pre_text = text.partition("-")
    release = [int(p) for p in release_text.split(".")]
    while len(release) > 3 and release[-1] == 0:
        release.pop()
    release += [0] * (3 - len(release))
    if not pre_text:
        return (release, 1, ())
    pre = tuple((0, int(i), "") if i.isdigit() else (1, 0, i) for i in pre_text.split("."))
    return (release, 0, pre)


def sign(a: Any, b: Any) -> int:
    return (a > b) - (a < b)


@given(versions, versions)
def test_key_order_is_semver_precedence(a: str, b: str) -> None:
    assert is_version(a) and is_version(b)
    assert sign(version_key(a), version_key(b)) == sign(reference(a), reference(b))


def test_the_cases_operators_trip_over() -> None:
    ordered = [
        "1.0.0-alpha",
        "1.0.0-alpha.1",
        "1.0.0-alpha.beta",
        "1.0.0-beta",
        "1.0.0-beta.2",
        "1.0.0-beta.11",
        "1.0.0-rc.1",
        "1.0.0",
        "2.9.1",
        "2.10.0",
        "2.10.0.1",
        "10.0.0",
    ]
    keys = [version_key(v) for v in ordered]
    assert keys == sorted(keys)
    assert len(set(keys)) == len(keys)
    assert version_key("v2.3.0") == version_key("2.3.0") == version_key("2.3")
    assert version_key("2.3.0+build.7") == version_key("2.3.0")
    assert version_key("2.10.0") > version_key("2.9.1")  # the substring trap


def test_strings_that_are_not_versions_get_their_own_class_in_natural_order() -> None:
    assert not is_version("R12a") and not is_version("unknown") and not is_version("")
    assert key_class(version_key("R12a")) == OTHER_CLASS
    assert key_class(version_key("2.3.0")) == VERSION_CLASS
    assert version_key("build-9") < version_key("build-10")
    assert version_key("unknown") < version_key("0.0.1")
    low, high = class_bounds(version_key("2.3.0"))
    assert low <= version_key("0.0.0-a") < high and not low <= version_key("R1") < high


@given(st.text(max_size=40))
def test_any_text_gets_a_key_without_raising_and_deterministically(text: str) -> None:
    key = version_key(text)
    assert key == version_key(text)
    assert key_class(key) in (VERSION_CLASS, OTHER_CLASS)
    assert "\x00" not in key

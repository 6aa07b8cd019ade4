"""Version strings as sortable keys, so ``firmware<2.3.0`` is semantic in SQL and in memory.

Comparing firmware versions as text gets ``2.10.0 < 2.9.1`` wrong, and comparing them in Python
means loading the fleet. :func:`version_key` maps a version to a string whose plain byte order
(``COLLATE "C"`` on PostgreSQL, SQLite's default BINARY) is the Semantic Versioning 2.0
precedence order, so a selector compiles to an indexed range scan over ``lc_device.firmware_key``.

Rules (semver 2.0, tolerant where devices are sloppy):

* a leading ``v``/``V`` is ignored (``v2.3.0`` == ``2.3.0``);
* the release is one or more dot-separated numbers compared numerically; missing trailing
  components count as ``0`` (``2.3`` == ``2.3.0``), extra ones rank after (``2.3.0 < 2.3.0.1``);
* a pre-release (``-rc.1``) ranks before its release; its identifiers compare numerically when
  numeric, in ASCII order otherwise, numeric before alphanumeric, a shorter list first;
* build metadata (``+build.5``) does not affect precedence (equal keys);
* anything else (``R12a``, ``build-2024``) is *not a version*: it gets a key in a separate class
  (natural order: digit runs numerically) that sorts before every version. Selectors compare
  only within a class (:func:`key_class`), so ``firmware<2.3.0`` never matches a device whose
  firmware is ``unknown``.

Key layout (ASCII): class ``"1"`` (version) or ``"0"`` (other), then per release component a
number token (two-digit length + digits, leading zeros dropped), then ``"!"`` and the encoded
pre-release identifiers, or ``"#"`` for a release (``"!" < "#" <`` digits, which gives
pre-release < release < longer release).
"""

from __future__ import annotations

import re

VERSION_CLASS = "1"
OTHER_CLASS = "0"
_PRE = "!"
_RELEASE = "#"
_MAX_DIGITS = 99
_MIN_RELEASE_PARTS = 3

_VERSION = re.compile(
    r"""
    [vV]?
    (?P<release>[0-9]+(?:\.[0-9]+)*)
    (?:-(?P<pre>[0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*))?
    (?:\+(?P<build>[0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*))?
    """,
    re.VERBOSE,
)
_RUNS = re.compile(r"[0-9]+|[^0-9]+")


def _number(digits: str) -> str:
    """A number token whose text order is numeric order: length (2 digits), then digits."""
    stripped = digits.lstrip("0") or "0"
    return f"{len(stripped):02d}{stripped}"


def _fits(digits: str) -> bool:
    return len(digits.lstrip("0") or "0") <= _MAX_DIGITS


def is_version(text: str) -> bool:
    """Whether ``text`` parses as a (tolerant) semantic version."""
    return _parse(text.strip()) is not None


def _parse(text: str) -> str | None:
    match = _VERSION.fullmatch(text)
    if match is None:
        return None
    release = match["release"].split(".")
    if not all(_fits(part) for part in release):
        return None
    while len(release) > _MIN_RELEASE_PARTS and int(release[-1]) == 0:
        release.pop()  # 2.3.0.0 == 2.3.0, like the missing components below
    release += ["0"] * (_MIN_RELEASE_PARTS - len(release))
    key = VERSION_CLASS + "".join(_number(part) for part in release)
    pre = match["pre"]
    if pre is None:
        return key + _RELEASE
    parts: list[str] = []
    for ident in pre.split("."):
        if ident.isdigit():
            if not _fits(ident):
                return None
            parts.append("1" + _number(ident))
        else:
            parts.append("2" + ident + ",")  # "," sorts before every identifier character
    return key + _PRE + "".join(parts)


def _other(text: str) -> str:
    """Natural order for strings that are not versions: digit runs numerically, text as is."""
    parts: list[str] = []
    for run in _RUNS.findall(text):
        if run.isdigit() and _fits(run):
            parts.append("1" + _number(run))
        else:
            parts.append("2" + run.replace("\x00", "") + "\x01")
    return OTHER_CLASS + "".join(parts)


def version_key(text: str) -> str:
    """The sortable key of a version string (module docstring); never raises."""
    stripped = text.strip()
    return _parse(stripped) or _other(stripped)


def key_class(key: str) -> str:
    """The class of a key: :data:`VERSION_CLASS` or :data:`OTHER_CLASS`."""
    return key[:1]


def class_bounds(key: str) -> tuple[str, str]:
    """``(low, high)`` such that ``low <= k < high`` exactly for the keys of ``key``'s class."""
    cls = key_class(key)
    return cls, chr(ord(cls) + 1)


__all__ = [
    "OTHER_CLASS",
    "VERSION_CLASS",
    "class_bounds",
    "is_version",
    "key_class",
    "version_key",
]

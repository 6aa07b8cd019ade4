"""CoRE link format (RFC 6690, content format 40) and the LwM2M attributes it carries.

LwM2M uses link format in four places: the Register and Update payloads (which objects and
instances a client has), Discover responses (resources and their attributes), Bootstrap-Discover
responses, and, as ``name=value`` pairs, the Write-Attributes query. This module parses and
formats links (:class:`Link`, :func:`parse_links`, :func:`format_links`), types the LwM2M
attributes (:class:`Attributes`, :func:`parse_write_attributes`), and turns a Register payload
into what the server needs (:class:`RegistrationObjects`, :func:`parse_registration`).

Real clients stretch RFC 6690, and the parser accepts what they send: quoted values holding
``,`` or ``;`` (``uri="coap://h:5683"``), quoted numbers (Anjay 1.0: ``ver="1.1"``), valueless
parameters, whitespace around separators, and a leading item without a target (Anjay 1.0's
Bootstrap-Discover begins ``lwm2m="1.0",</0>``), which becomes a :class:`Link` whose target is
``""``. Anything else malformed raises :class:`LinkFormatError` with the offset.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from types import MappingProxyType
from typing import Any

from lwm2m.codec.errors import DecodeError, EncodeError
from lwm2m.model import Path

CONTENT_FORMAT = 40

Param = tuple[str, str | None]

_WHITESPACE = " \t\r\n"
# RFC 8288 token (parameter names) and RFC 5988 ptoken (unquoted values).
_TOKEN_CHARS = frozenset(
    "!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
)
_PTOKEN_CHARS = _TOKEN_CHARS | frozenset("()/:<=>?@[]{}")
_LWM2M_PATH = re.compile(r"/(?:0|[1-9][0-9]{0,4})(?:/(?:0|[1-9][0-9]{0,4})){0,3}")
DEFAULT_QUOTED = frozenset({"rt", "if", "uri", "anchor", "title"})
"""Parameters :func:`format_links` always quotes (as wakaama does for ``rt`` and ``uri``)."""


class LinkFormatError(DecodeError):
    """A link-format payload, attribute or Write-Attributes query is malformed."""

    def __init__(self, message: str, offset: int | None = None, field: str | None = None) -> None:
        super().__init__(message, content_format=CONTENT_FORMAT, offset=offset, field=field)


@dataclass(frozen=True, slots=True)
class Link:
    """One link: ``<target>;name=value;name``. Target ``""`` is a bare parameter item."""

    target: str
    params: tuple[Param, ...] = ()

    @property
    def path(self) -> Path | None:
        """The LwM2M path the target names (``</3/0>`` → ``/3/0``; ``</>`` → ``/``), or None."""
        if self.target == "/":
            return Path(())
        if _LWM2M_PATH.fullmatch(self.target) is None:
            return None
        try:
            return Path.parse(self.target)
        except ValueError:  # an id above 65534
            return None

    def param(self, name: str) -> str | None:
        """The value of the first ``name`` parameter; None when absent or valueless."""
        for key, value in self.params:
            if key == name:
                return value
        return None

    def has_param(self, name: str) -> bool:
        return any(key == name for key, _ in self.params)


# -- parsing ------------------------------------------------------------------------------------
class _Scanner:
    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0

    def skip_ws(self) -> None:
        while self.pos < len(self.text) and self.text[self.pos] in _WHITESPACE:
            self.pos += 1

    def peek(self) -> str:
        return self.text[self.pos] if self.pos < len(self.text) else ""

    def run(self, allowed: frozenset[str]) -> str:
        start = self.pos
        while self.pos < len(self.text) and self.text[self.pos] in allowed:
            self.pos += 1
        return self.text[start : self.pos]

    def target(self) -> str:
        start = self.pos
        end = self.text.find(">", start + 1)
        if end < 0:
            raise LinkFormatError("unterminated link target '<...'", start)
        target = self.text[start + 1 : end]
        if target == "":
            raise LinkFormatError("empty link target '<>'", start)
        if "<" in target:
            raise LinkFormatError("'<' inside a link target", start + 1 + target.index("<"))
        self.pos = end + 1
        return target

    def quoted(self) -> str:
        start = self.pos
        self.pos += 1
        chars: list[str] = []
        while self.pos < len(self.text):
            char = self.text[self.pos]
            if char == '"':
                self.pos += 1
                return "".join(chars)
            if char == "\\" and self.pos + 1 < len(self.text):
                self.pos += 1
                char = self.text[self.pos]
            chars.append(char)
            self.pos += 1
        raise LinkFormatError("unterminated quoted string", start)

    def param(self) -> Param:
        start = self.pos
        name = self.run(_TOKEN_CHARS)
        if not name:
            raise LinkFormatError(f"expected a parameter name, got {self.peek()!r}", start)
        if self.peek() != "=":
            return name, None
        self.pos += 1
        if self.peek() == '"':
            return name, self.quoted()
        value = self.run(_PTOKEN_CHARS)
        if not value:
            raise LinkFormatError(f"parameter {name!r} has '=' but no value", self.pos)
        return name, value

    def link(self) -> Link:
        target = ""
        params: list[Param] = []
        if self.peek() == "<":
            target = self.target()
        else:
            params.append(self.param())
        while True:
            self.skip_ws()
            if self.peek() != ";":
                return Link(target, tuple(params))
            self.pos += 1
            self.skip_ws()
            params.append(self.param())


def _text_of(payload: str | bytes) -> str:
    if isinstance(payload, str):
        return payload
    try:
        return bytes(payload).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise LinkFormatError("link format is not valid UTF-8", exc.start) from None


def parse_links(payload: str | bytes) -> list[Link]:
    """Every link of a link-format payload, in order (an empty payload has none).

    Offsets in errors count characters of the decoded text (bytes, for ASCII payloads).
    """
    scanner = _Scanner(_text_of(payload))
    links: list[Link] = []
    scanner.skip_ws()
    if not scanner.peek():
        return links
    while True:
        links.append(scanner.link())
        scanner.skip_ws()
        if not scanner.peek():
            return links
        if scanner.peek() != ",":
            raise LinkFormatError(f"expected ',' or ';', got {scanner.peek()!r}", scanner.pos)
        scanner.pos += 1
        scanner.skip_ws()


# -- formatting ---------------------------------------------------------------------------------
def _format_param(name: str, value: str | None, quoted: frozenset[str]) -> str:
    if not name or not set(name) <= _TOKEN_CHARS:
        raise EncodeError(f"invalid link parameter name {name!r}", content_format=CONTENT_FORMAT)
    if value is None:
        return name
    if name in quoted or not value or not set(value) <= _PTOKEN_CHARS:
        escaped = value.replace("\\", "\\\\").replace('"', '\\"')
        return f'{name}="{escaped}"'
    return f"{name}={value}"


def format_links(links: Iterable[Link], *, quoted: Iterable[str] = DEFAULT_QUOTED) -> str:
    """``links`` as link format; values outside RFC 5988's ptoken, and ``quoted``, are quoted.

    Pass ``quoted={"ver", "lwm2m", ...}`` to mimic a client that quotes more (Anjay 1.0).
    """
    always = frozenset(quoted)
    parts = []
    for link in links:
        if link.target == "" and not link.params:
            raise EncodeError("a link needs a target or a parameter", content_format=CONTENT_FORMAT)
        if ">" in link.target or "<" in link.target:
            raise EncodeError(f"invalid link target {link.target!r}", content_format=CONTENT_FORMAT)
        items = [f"<{link.target}>"] if link.target else []
        items.extend(_format_param(name, value, always) for name, value in link.params)
        parts.append(";".join(items))
    return ",".join(parts)


# -- LwM2M attributes ---------------------------------------------------------------------------
_UINT = re.compile(r"[0-9]{1,10}")
_DECIMAL = re.compile(r"-?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
_VERSION = re.compile(r"[0-9]{1,3}(?:\.[0-9]{1,3})?")
_INT_ATTRS = {"pmin": 2**31 - 1, "pmax": 2**31 - 1, "epmin": 2**31 - 1, "epmax": 2**31 - 1}
_LIMITED_INTS = {"dim": 255, "ssid": 65535}
_FLOAT_ATTRS = ("gt", "lt", "st")
_TEXT_ATTRS = ("rt", "uri")
_VERSION_ATTRS = ("ver", "lwm2m")
WRITABLE = frozenset({"pmin", "pmax", "gt", "lt", "st", "epmin", "epmax"})
"""Attributes a Write-Attributes request may set (LwM2M 1.1); 1.2's pass through ``other``."""


def _as_uint(name: str, text: str, limit: int) -> int:
    if _UINT.fullmatch(text) is None or int(text) > limit:
        raise LinkFormatError(f"{name}={text!r} is not an integer 0..{limit}", field=name)
    return int(text)


def _as_float(name: str, text: str) -> float:
    if _DECIMAL.fullmatch(text) is None or not math.isfinite(number := float(text)):
        raise LinkFormatError(f"{name}={text!r} is not a finite decimal number", field=name)
    return number


def _as_formats(text: str) -> tuple[int, ...]:
    parts = text.split()
    if not parts:
        raise LinkFormatError("ct is empty", field="ct")
    return tuple(_as_uint("ct", part, 65535) for part in parts)


def _format_float(number: float) -> str:
    if number.is_integer() and abs(number) < 1e15:
        return str(int(number))
    return repr(number)


@dataclass(frozen=True, slots=True, repr=False)
class Attributes:
    """The LwM2M attributes of one link (or of a Write-Attributes request).

    Notification attributes (``pmin``/``pmax``/``epmin``/``epmax`` in seconds, ``gt``/``lt``/
    ``st``), object/instance attributes (``ver``, ``ssid``, ``uri``, ``lwm2m``), discover
    attributes (``dim``, ``ct``: one or several content formats, ``rt``), and every other
    parameter, untouched, in ``other``.
    """

    pmin: int | None = None
    pmax: int | None = None
    gt: float | None = None
    lt: float | None = None
    st: float | None = None
    epmin: int | None = None
    epmax: int | None = None
    ver: str | None = None
    lwm2m: str | None = None
    dim: int | None = None
    ct: tuple[int, ...] | None = None
    rt: str | None = None
    ssid: int | None = None
    uri: str | None = None
    other: tuple[Param, ...] = ()

    @classmethod
    def from_params(cls, params: Iterable[Param]) -> Attributes:
        """Type the known parameters; raise :class:`LinkFormatError` for a bad or repeated one."""
        typed: dict[str, Any] = {}
        other: list[Param] = []
        for name, text in params:
            if name not in _KNOWN:
                other.append((name, text))
                continue
            if name in typed:
                raise LinkFormatError(f"attribute {name!r} given twice", field=name)
            if text is None:
                raise LinkFormatError(f"attribute {name!r} needs a value", field=name)
            typed[name] = _typed(name, text)
        return cls(**typed, other=tuple(other))

    @classmethod
    def from_link(cls, link: Link) -> Attributes:
        return cls.from_params(link.params)

    def to_params(self) -> tuple[Param, ...]:
        """The attributes as link parameters, known ones first in a fixed order."""
        params: list[Param] = []
        for name in _KNOWN:
            value = getattr(self, name)
            if value is not None:
                params.append((name, _untyped(value)))
        return (*params, *self.other)

    @property
    def is_empty(self) -> bool:
        return not self.to_params()

    def __repr__(self) -> str:
        shown = [f"{n}={getattr(self, n)!r}" for n in _KNOWN if getattr(self, n) is not None]
        if self.other:
            shown.append(f"other={self.other!r}")
        return f"Attributes({', '.join(shown)})"


def _typed(name: str, text: str) -> object:
    if name in _INT_ATTRS:
        return _as_uint(name, text, _INT_ATTRS[name])
    if name in _LIMITED_INTS:
        return _as_uint(name, text, _LIMITED_INTS[name])
    if name in _FLOAT_ATTRS:
        return _as_float(name, text)
    if name in _VERSION_ATTRS:
        if _VERSION.fullmatch(text) is None:
            raise LinkFormatError(f"{name}={text!r} is not a version like 1.1", field=name)
        return text
    if name == "ct":
        return _as_formats(text)
    return text


def _untyped(value: object) -> str:
    if isinstance(value, float):
        return _format_float(value)
    if isinstance(value, tuple):
        return " ".join(str(v) for v in value)
    return str(value)


_KNOWN = tuple(f.name for f in fields(Attributes) if f.name != "other")


# -- Write-Attributes ---------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class AttributeUpdate:
    """A Write-Attributes request: attributes to set, and names to unset (a bare ``pmin``)."""

    set: Attributes = field(default_factory=Attributes)
    unset: frozenset[str] = frozenset()


def parse_write_attributes(query: str | Sequence[str]) -> AttributeUpdate:
    """Parse ``"pmin=10&pmax=60&gt=5.5&st"`` or the list of Uri-Query option values."""
    items = [part for part in (query.split("&") if isinstance(query, str) else query) if part]
    params: list[Param] = []
    unset: set[str] = set()
    seen: set[str] = set()
    for item in items:
        name, sep, value = item.partition("=")
        if not name or not set(name) <= _TOKEN_CHARS:
            raise LinkFormatError(f"invalid attribute name in {item!r}", field="query")
        if name in seen:
            raise LinkFormatError(f"attribute {name!r} given twice", field=name)
        seen.add(name)
        if name in _KNOWN and name not in WRITABLE:
            raise LinkFormatError(f"attribute {name!r} cannot be written", field=name)
        if not sep:
            unset.add(name)
        elif not value:
            raise LinkFormatError(f"attribute {name!r} has '=' but no value", field=name)
        else:
            params.append((name, value))
    return AttributeUpdate(Attributes.from_params(params), frozenset(unset))


def format_write_attributes(update: AttributeUpdate) -> list[str]:
    """The Uri-Query option values of a Write-Attributes request (join with ``&`` for text)."""
    clash = update.unset & {name for name, _ in update.set.to_params()}
    if clash:
        raise EncodeError(f"attributes both set and unset: {sorted(clash)}")
    options = [
        name if value is None else f"{name}={value}" for name, value in update.set.to_params()
    ]
    return options + sorted(update.unset)


# -- Register / Update / Bootstrap-Discover payloads --------------------------------------------
@dataclass(frozen=True, slots=True)
class RegistrationObjects:
    """What a Register/Update (or Bootstrap-Discover) payload says about a client.

    ``root`` is the alternate path (``rt="oma.lwm2m"`` link, default ``/``) under which object
    links live; ``objects`` every object id listed, with or without instances; ``instances`` the
    object-instance paths; ``attributes`` the non-empty attributes of object and instance links
    (``ver``, ``ssid``, ``uri``...); ``others`` links that name no object or instance.
    """

    root: str = "/"
    content_formats: tuple[int, ...] = ()
    lwm2m_version: str | None = None
    objects: tuple[int, ...] = ()
    instances: tuple[Path, ...] = ()
    object_versions: Mapping[int, str] = field(default_factory=lambda: MappingProxyType({}))
    attributes: Mapping[Path, Attributes] = field(default_factory=lambda: MappingProxyType({}))
    others: tuple[Link, ...] = ()

    def instances_of(self, object_id: int) -> tuple[int, ...]:
        return tuple(p.ids[1] for p in self.instances if p.ids[0] == object_id)

    def supports(self, object_id: int) -> bool:
        return object_id in self.objects

    def version_of(self, object_id: int) -> str:
        """The object's version (``ver``), ``"1.0"`` when the client gave none."""
        return self.object_versions.get(object_id, "1.0")


def _is_root_link(link: Link) -> bool:
    return "oma.lwm2m" in (link.param("rt") or "").split()


def _object_path(target: str, prefix: str) -> Path | None:
    if prefix and not target.startswith(prefix + "/"):
        return None
    path = Link(target[len(prefix) :]).path
    return path if path is not None and 1 <= path.level <= 2 else None


def registration_objects(links: Sequence[Link]) -> RegistrationObjects:
    """Structure the links of a Register/Update/Bootstrap-Discover payload."""
    root_link = next((link for link in links if _is_root_link(link)), None)
    root = "/" if root_link is None else ("/" + root_link.target.strip("/"))
    prefix = "" if root == "/" else root
    root_attrs = [Attributes.from_link(root_link)] if root_link is not None else []
    objects: dict[int, None] = {}
    instances: dict[Path, None] = {}
    attributes: dict[Path, Attributes] = {}
    others: list[Link] = []
    for link in links:
        if link is root_link:
            continue
        path = _object_path(link.target, prefix)
        if path is None:
            if link.target in ("", "/", root):
                root_attrs.append(Attributes.from_link(link))
            else:
                others.append(link)
            continue
        objects.setdefault(path.ids[0], None)
        if path.is_object_instance:
            instances.setdefault(path, None)
        attrs = Attributes.from_link(link)
        if not attrs.is_empty:
            attributes[path] = attrs
    versions = {p.ids[0]: a.ver for p, a in attributes.items() if p.is_object and a.ver}
    return RegistrationObjects(
        root=root,
        content_formats=next((a.ct for a in root_attrs if a.ct), ()),
        lwm2m_version=next((a.lwm2m for a in root_attrs if a.lwm2m), None),
        objects=tuple(objects),
        instances=tuple(instances),
        object_versions=MappingProxyType(versions),
        attributes=MappingProxyType(attributes),
        others=tuple(others),
    )


def parse_registration(payload: str | bytes) -> RegistrationObjects:
    """:func:`registration_objects` of a Register/Update/Bootstrap-Discover payload."""
    return registration_objects(parse_links(payload))


__all__ = [
    "CONTENT_FORMAT",
    "DEFAULT_QUOTED",
    "WRITABLE",
    "AttributeUpdate",
    "Attributes",
    "Link",
    "LinkFormatError",
    "RegistrationObjects",
    "format_links",
    "format_write_attributes",
    "parse_links",
    "parse_registration",
    "parse_write_attributes",
    "registration_objects",
]

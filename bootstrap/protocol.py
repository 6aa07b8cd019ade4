"""The bootstrap interface's wire pieces, as pure functions (TS Core 1.1 §6.1, 1.2 §6.1.7).

* :func:`parse_bootstrap_request` -- ``POST /bs?ep=<name>[&pct=<format>]`` and the 1.2
  ``GET /bspack?ep=<name>`` a device sends first (Anjay tries the pack before ``/bs``).
* :func:`parse_discover` -- what a Bootstrap-Discover answer says: the LwM2M version, the
  objects, and which Security instance is the bootstrap account (the one without ``ssid``:
  wakaama lists it as ``</0/0>``, Anjay as ``</0/1>;uri="..."``).
* :func:`choose_format` -- TLV for 1.0 devices, SenML-CBOR from 1.1, or what ``pct`` asks for
  (wakaama built without CBOR asks for SenML JSON and rejects CBOR writes).

Nothing here touches a socket, a clock or the database.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from urllib.parse import unquote

from bootstrap.errors import BadBootstrapRequest
from bootstrap.identities import check_endpoint
from bootstrap.policy import FormatPreference
from lwm2m.codec import ContentFormat, canonical
from lwm2m.codec.link import LinkFormatError, parse_registration
from lwm2m.model import Path

#: Formats a Bootstrap-Write may use, by preference name.
FORMAT_BY_PREFERENCE: dict[FormatPreference, int] = {
    FormatPreference.TLV: ContentFormat.TLV,
    FormatPreference.SENML_CBOR: ContentFormat.SENML_CBOR,
    FormatPreference.SENML_JSON: ContentFormat.SENML_JSON,
}
#: ``pct`` values honoured (anything else falls back to the version's default).
WRITE_FORMATS: frozenset[int] = frozenset(
    {
        ContentFormat.TLV,
        ContentFormat.SENML_CBOR,
        ContentFormat.SENML_JSON,
        ContentFormat.LWM2M_CBOR,
        ContentFormat.LWM2M_JSON,
    }
)


@dataclass(frozen=True, slots=True)
class BootstrapRequest:
    """``POST /bs?ep=...&pct=...``: client-initiated bootstrap."""

    endpoint: str
    preferred_format: int | None = None


@dataclass(frozen=True, slots=True)
class PackRequest:
    """``GET /bspack?ep=...`` (LwM2M 1.2 Bootstrap-Pack-Request)."""

    endpoint: str
    accept: int | None = None


def _query(items: Sequence[str]) -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for item in items:
        name, sep, value = item.partition("=")
        if name in out:
            raise BadBootstrapRequest(f"query parameter {name!r} given twice")
        out[name] = unquote(value) if sep else None
    return out


def parse_bootstrap_request(
    method: str, uri_path: Sequence[str], uri_query: Sequence[str], accept: int | None = None
) -> BootstrapRequest | PackRequest | None:
    """Classify a request to the bootstrap server; ``None`` when it is not a bootstrap
    request at all (the server answers 4.04); :class:`BadBootstrapRequest` (4.00) when it
    is one but malformed. ``method`` is ``"POST"``/``"GET"``."""
    path = tuple(uri_path)
    if path == ("bs",) and method == "POST":
        kind = "bs"
    elif path == ("bspack",) and method == "GET":
        kind = "bspack"
    else:
        return None
    query = _query(uri_query)
    endpoint = query.get("ep")
    if not endpoint:
        raise BadBootstrapRequest("the bootstrap request has no ep= parameter")
    try:
        check_endpoint(endpoint)
    except ValueError as exc:
        raise BadBootstrapRequest(str(exc)) from None
    if kind == "bspack":
        return PackRequest(endpoint, accept)
    pct_text = query.get("pct")
    pct: int | None = None
    if pct_text is not None:
        if not pct_text.isdigit() or len(pct_text) > 5:
            raise BadBootstrapRequest(f"pct={pct_text!r} is not a content-format number")
        pct = canonical(int(pct_text))
    return BootstrapRequest(endpoint, pct)


@dataclass(frozen=True, slots=True)
class SecurityInstance:
    """A Security instance as Bootstrap-Discover lists it."""

    iid: int
    ssid: int | None
    uri: str | None

    @property
    def is_bootstrap_account(self) -> bool:
        return self.ssid is None


@dataclass(frozen=True, slots=True)
class DeviceInfo:
    """What Bootstrap-Discover (and Bootstrap-Read /1) told us about the device."""

    lwm2m_version: str | None
    objects: frozenset[int]
    object_versions: dict[int, str] = field(default_factory=dict)
    security: tuple[SecurityInstance, ...] = ()
    servers: tuple[tuple[int, int | None], ...] = ()
    instances: tuple[Path, ...] = ()
    raw: str = ""

    @property
    def bootstrap_iids(self) -> tuple[int, ...]:
        return tuple(s.iid for s in self.security if s.is_bootstrap_account)

    def supports(self, object_id: int) -> bool:
        return object_id in self.objects


def parse_discover(payload: bytes | str) -> DeviceInfo:
    """Structure a Bootstrap-Discover answer; raise :class:`BadBootstrapRequest` if it is not
    link format."""
    try:
        found = parse_registration(payload)
    except LinkFormatError as exc:
        raise BadBootstrapRequest(f"Bootstrap-Discover answer is not link format: {exc}") from None
    security: list[SecurityInstance] = []
    servers: list[tuple[int, int | None]] = []
    for path in found.instances:
        attrs = found.attributes.get(path)
        ssid = None if attrs is None else attrs.ssid
        uri = None if attrs is None else attrs.uri
        if path.ids[0] == 0:
            security.append(SecurityInstance(path.ids[1], ssid, uri))
        elif path.ids[0] == 1:
            servers.append((path.ids[1], ssid))
    text = payload.decode("utf-8", "replace") if isinstance(payload, bytes) else payload
    return DeviceInfo(
        lwm2m_version=found.lwm2m_version,
        objects=frozenset(found.objects),
        object_versions=dict(found.object_versions),
        security=tuple(security),
        servers=tuple(servers),
        instances=found.instances,
        raw=text,
    )


def version_key(version: str | None) -> tuple[int, int]:
    if not version:
        return (1, 0)
    major, _, minor = version.partition(".")
    try:
        return int(major), int(minor or 0)
    except ValueError:
        return (1, 0)


def effective_version(info: DeviceInfo | None, preferred_format: int | None) -> str:
    """The LwM2M version to write for: Discover's ``lwm2m=``; else 1.1 when the request had
    a ``pct`` (a 1.1 parameter), else 1.0."""
    if info is not None and info.lwm2m_version:
        return info.lwm2m_version
    return "1.1" if preferred_format is not None else "1.0"


def choose_format(preference: FormatPreference, pct: int | None, version: str) -> int:
    """Content format of the Bootstrap-Writes (see the module docstring)."""
    if preference is not FormatPreference.AUTO:
        return int(FORMAT_BY_PREFERENCE[preference])
    if pct is not None and pct in WRITE_FORMATS:
        return pct
    return int(ContentFormat.TLV if version_key(version) < (1, 1) else ContentFormat.SENML_CBOR)


__all__ = [
    "WRITE_FORMATS",
    "BootstrapRequest",
    "DeviceInfo",
    "PackRequest",
    "SecurityInstance",
    "choose_format",
    "effective_version",
    "parse_bootstrap_request",
    "parse_discover",
    "version_key",
]

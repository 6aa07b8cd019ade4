"""Content-format behaviour of a simulated device, per client implementation it imitates.

Real clients disagree on defaults (see ``../shared/interop/README.md``): with no Accept, wakaama
answers TLV for everything, even a single resource, while Anjay 1.1/1.2 answers text/plain for a
single resource and SenML CBOR for the rest (TLV when registered as 1.0). They also differ in
which formats they accept at all and in their Register payload. A :class:`FormatProfile`
captures one such behaviour so the server's tests can run against each.
"""

from __future__ import annotations

from dataclasses import dataclass

from lwm2m.codec import ContentFormat

CF = ContentFormat

_MULTI = frozenset({CF.SENML_JSON, CF.SENML_CBOR, CF.LWM2M_CBOR})
_ALL_READ = frozenset({CF.TEXT, CF.OPAQUE, CF.CBOR, CF.TLV, CF.LWM2M_JSON}) | _MULTI


@dataclass(frozen=True, slots=True)
class FormatProfile:
    """How a device picks and accepts content formats, and how it describes itself.

    ``single_default``: format of a single resource or resource instance read without Accept
    (None: same as ``multi_default``); opaque resources use ``opaque_default`` instead.
    ``multi_default``: format of object, instance and multiple-resource reads without Accept
    (``legacy_multi_default`` when registered as LwM2M 1.0). ``readable``: Accept values
    answered (anything else is 4.06; a legacy number is echoed back as given). ``writable``:
    request Content-Formats decoded for Write, Create and Execute (anything else is 4.15).
    ``composite``: formats of Read-/Write-/Observe-Composite requests and their answers (the
    codecs name paths without values in SenML only, so a Read-Composite request in LwM2M
    JSON/CBOR still gets 4.15). ``register_formats``:
    the ``ct`` of the root link in Register (empty: no ``ct``); ``root_link``: whether the
    Register payload starts with ``</>;rt="oma.lwm2m"``; ``binding_in_query``: whether Register
    carries ``b=``; ``observe_single_default``: format of a single-value Observe without
    Accept when it differs from a Read's (wakaama observes in text, reads in TLV).
    """

    name: str
    single_default: int | None
    multi_default: int
    legacy_multi_default: int
    opaque_default: int
    readable: frozenset[int]
    writable: frozenset[int]
    composite: frozenset[int]
    send_format: int
    register_formats: tuple[int, ...]
    root_link: bool = True
    binding_in_query: bool = True
    observe_single_default: int | None = None

    def default_for(
        self, single: bool, opaque: bool, lwm2m_version: str, *, observe: bool = False
    ) -> int:
        """The format of a read (or Observe, with ``observe``) without Accept."""
        if single and observe and self.observe_single_default is not None:
            return self.observe_single_default
        if single:
            if opaque:
                return self.opaque_default
            if self.single_default is not None:
                return self.single_default
        return self.legacy_multi_default if lwm2m_version == "1.0" else self.multi_default


FLEETLOOP = FormatProfile(
    name="fleetloop",
    single_default=CF.TEXT,
    multi_default=CF.SENML_CBOR,
    legacy_multi_default=CF.TLV,
    opaque_default=CF.OPAQUE,
    readable=_ALL_READ,
    writable=_ALL_READ,
    composite=_MULTI | {CF.LWM2M_JSON},
    send_format=CF.SENML_CBOR,
    register_formats=(CF.SENML_CBOR,),
)
"""The default: every format, Anjay's defaults, and a root link announcing SenML CBOR."""

ANJAY = FormatProfile(
    name="anjay",
    single_default=CF.TEXT,
    multi_default=CF.SENML_CBOR,
    legacy_multi_default=CF.TLV,
    opaque_default=CF.OPAQUE,
    readable=_ALL_READ,
    writable=_ALL_READ,
    composite=_MULTI | {CF.LWM2M_JSON},
    send_format=CF.SENML_CBOR,
    register_formats=(),
    root_link=False,
    binding_in_query=False,
)
"""Anjay 3.x demo: as FLEETLOOP, but no root link and no ``b=`` in Register."""

WAKAAMA = FormatProfile(
    name="wakaama",
    single_default=None,
    multi_default=CF.TLV,
    legacy_multi_default=CF.TLV,
    opaque_default=CF.TLV,
    readable=frozenset(
        {CF.TEXT, CF.OPAQUE, CF.TLV, CF.LEGACY_TLV, CF.SENML_JSON, CF.LWM2M_JSON, CF.LEGACY_JSON}
    ),
    writable=frozenset(
        {CF.TEXT, CF.OPAQUE, CF.TLV, CF.LEGACY_TLV, CF.SENML_JSON, CF.LWM2M_JSON, CF.LEGACY_JSON}
    ),
    composite=frozenset({CF.SENML_JSON}),
    send_format=CF.SENML_JSON,
    register_formats=(CF.SENML_JSON,),
    observe_single_default=CF.TEXT,
)
"""wakaama ``lwm2mclient`` (SenML CBOR off): TLV everywhere, legacy 1542/1543 accepted."""

PROFILES = {p.name: p for p in (FLEETLOOP, ANJAY, WAKAAMA)}

__all__ = ["ANJAY", "FLEETLOOP", "PROFILES", "WAKAAMA", "FormatProfile"]

"""CoAP Content-Format numbers used by LwM2M."""

from __future__ import annotations

from enum import IntEnum


class ContentFormat(IntEnum):
    TEXT = 0  # text/plain
    LINK = 40  # application/link-format
    OPAQUE = 42  # application/octet-stream
    CBOR = 60  # application/cbor (single value, LwM2M 1.1)
    SENML_JSON = 110  # application/senml+json
    SENML_CBOR = 112  # application/senml+cbor
    TLV = 11542  # application/vnd.oma.lwm2m+tlv
    LWM2M_JSON = 11543  # application/vnd.oma.lwm2m+json
    LWM2M_CBOR = 11544  # application/vnd.oma.lwm2m+cbor (LwM2M 1.2)
    LEGACY_TLV = 1542  # pre-registration number; wakaama still answers with it
    LEGACY_JSON = 1543


LEGACY_ALIASES: dict[int, ContentFormat] = {
    ContentFormat.LEGACY_TLV: ContentFormat.TLV,
    ContentFormat.LEGACY_JSON: ContentFormat.LWM2M_JSON,
}


def canonical(content_format: int) -> int:
    """Map the legacy numbers 1542/1543 onto TLV/LwM2M-JSON; other numbers unchanged."""
    return int(LEGACY_ALIASES.get(content_format, content_format))


def name_of(content_format: int) -> str:
    try:
        return ContentFormat(content_format).name.lower().replace("_", "-")
    except ValueError:
        return f"content-format {content_format}"

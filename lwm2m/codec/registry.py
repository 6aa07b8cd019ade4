"""Content format → codec instance."""

from __future__ import annotations

from lwm2m.codec.api import MultiNodeCodec, NodeCodec
from lwm2m.codec.cbor_value import CborValueCodec
from lwm2m.codec.errors import UnsupportedContentFormat
from lwm2m.codec.formats import canonical
from lwm2m.codec.lwm2m_cbor import LwM2MCborCodec
from lwm2m.codec.lwm2m_json import LwM2MJsonCodec
from lwm2m.codec.opaque import OpaqueCodec
from lwm2m.codec.senml_cbor import SenmlCborCodec
from lwm2m.codec.senml_json import SenmlJsonCodec
from lwm2m.codec.text import TextCodec
from lwm2m.codec.tlv import TlvCodec

_MULTI: dict[int, MultiNodeCodec] = {
    c.content_format: c
    for c in (SenmlJsonCodec(), SenmlCborCodec(), LwM2MJsonCodec(), LwM2MCborCodec())
}
_SINGLE: dict[int, NodeCodec] = {
    c.content_format: c for c in (TextCodec(), OpaqueCodec(), CborValueCodec(), TlvCodec())
}
_ALL: dict[int, NodeCodec] = {**_SINGLE, **_MULTI}

NODE_FORMATS: frozenset[int] = frozenset(_ALL)
MULTI_NODE_FORMATS: frozenset[int] = frozenset(_MULTI)


def codec_for(content_format: int) -> NodeCodec:
    try:
        return _ALL[canonical(content_format)]
    except KeyError:
        raise UnsupportedContentFormat(content_format, "no LwM2M node codec") from None


def multi_codec_for(content_format: int) -> MultiNodeCodec:
    try:
        return _MULTI[canonical(content_format)]
    except KeyError:
        raise UnsupportedContentFormat(
            content_format, "format cannot carry several paths (use SenML or LwM2M JSON/CBOR)"
        ) from None

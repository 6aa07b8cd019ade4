"""Build and read datagrams for unit tests (bytes in, events out) with aiocoap's codec."""

from __future__ import annotations

import random

from aiocoap import Message
from aiocoap.numbers.codes import Code
from aiocoap.numbers.types import Type

from lwm2m.coap import CoapEndpoint, EndpointConfig, TransmissionParameters

PEER = ("192.0.2.1", 5683)

#: RFC timing without jitter, so schedules are exact.
EXACT = TransmissionParameters(ack_random_factor=1.0)


def endpoint(**config: object) -> CoapEndpoint:
    cfg = EndpointConfig(**config)  # type: ignore[arg-type]
    return CoapEndpoint(rng=random.Random(7), config=cfg)


def datagram(
    mtype: Type,
    code: Code | int,
    mid: int,
    token: bytes = b"",
    payload: bytes = b"",
    **options: object,
) -> bytes:
    message = Message(code=code, payload=payload)
    message.mtype = mtype
    message.mid = mid
    message.token = token
    for name, value in options.items():
        setattr(message.opt, name, value)
    return bytes(message.encode())


def con_get(mid: int, token: bytes = b"t1", *path: str, **options: object) -> bytes:
    return datagram(Type.CON, Code.GET, mid, token, uri_path=path or ("3", "0", "0"), **options)


def decode(data: bytes) -> Message:
    return Message.decode(data)


def sent(ep: CoapEndpoint, now: float = 0.0) -> list[Message]:
    """Decoded datagrams the endpoint wants to send, all of them addressed to PEER."""
    out = ep.datagrams_to_send(now)
    assert all(peer == PEER for _, peer in out), out
    return [Message.decode(data) for data, _ in out]


def response(code: Code = Code.CONTENT, payload: bytes = b"", **options: object) -> Message:
    message = Message(code=code, payload=payload)
    for name, value in options.items():
        setattr(message.opt, name, value)
    return message

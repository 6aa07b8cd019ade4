"""LwM2M errors a simulated device answers with, one class per CoAP response code.

Every failure of a DM operation on the device side is one of these, raised where the fault is
found (the object store, the operation dispatcher, an execute handler) and rendered as the
response code in exactly one place (:mod:`simulators.device.operations`). Keeping the code on
the class means a handler cannot invent a code the device would not send.
"""

from __future__ import annotations

from aiocoap.numbers.codes import Code


class DeviceError(Exception):
    """Base: a DM request the device refuses; ``code`` is the CoAP response code."""

    code: Code = Code.INTERNAL_SERVER_ERROR


class BadRequest(DeviceError):
    """4.00: malformed payload, bad arguments, attribute rules broken, missing mandatory data."""

    code = Code.BAD_REQUEST


class Unauthorized(DeviceError):
    """4.01: a DM server touching the Security (0) or OSCORE (21) object."""

    code = Code.UNAUTHORIZED


class NotFound(DeviceError):
    """4.04: the object, instance, resource or resource instance does not exist here."""

    code = Code.NOT_FOUND


class MethodNotAllowed(DeviceError):
    """4.05: the operation is not allowed on the target (write to R, execute a non-E, ...)."""

    code = Code.METHOD_NOT_ALLOWED


class NotAcceptable(DeviceError):
    """4.06: the Accept format is not supported, or cannot carry the target."""

    code = Code.NOT_ACCEPTABLE


class UnsupportedContentFormat(DeviceError):
    """4.15: the request payload's Content-Format is one the device does not decode."""

    code = Code.UNSUPPORTED_CONTENT_FORMAT


class ServiceUnavailable(DeviceError):
    """5.03: the device is busy (e.g. applying a configuration bundle)."""

    code = Code.SERVICE_UNAVAILABLE


class InternalError(DeviceError):
    """5.00: a behaviour failed unexpectedly."""

    code = Code.INTERNAL_SERVER_ERROR


__all__ = [
    "BadRequest",
    "DeviceError",
    "InternalError",
    "MethodNotAllowed",
    "NotAcceptable",
    "NotFound",
    "ServiceUnavailable",
    "Unauthorized",
    "UnsupportedContentFormat",
]

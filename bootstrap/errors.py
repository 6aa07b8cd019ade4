"""The bootstrap layer's errors: one hierarchy, each saying what failed and what to do.

Errors that can reach a device render as a CoAP code (``coap_code``); the others reach an
operator (CLI, API) and name the identity, policy or file concerned.
"""

from __future__ import annotations


class BootstrapError(Exception):
    """Base of every error raised by :mod:`bootstrap`."""

    coap_code = "5.00"


class InvalidIdentity(BootstrapError, ValueError):
    """A factory identity field is malformed (endpoint name, IMEI, EID, key, ...)."""

    coap_code = "4.00"

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


class UnknownIdentity(BootstrapError, LookupError):
    """No factory identity with this endpoint name (a device gets 4.03)."""

    coap_code = "4.03"


class IdentityConflict(BootstrapError):
    """An identity with this endpoint, serial, IMEI, EID or PSK identity already exists."""

    coap_code = "4.03"


class ImportFailed(BootstrapError):
    """An import was refused as a whole; ``report`` says which rows and why."""

    def __init__(self, message: str, report: object) -> None:
        super().__init__(message)
        self.report = report


class InvalidPolicy(BootstrapError, ValueError):
    """A bootstrap policy document is malformed or contradicts itself."""


class UnknownPolicy(BootstrapError, LookupError):
    """No policy (or policy version) of this name."""


class PolicyConflict(BootstrapError):
    """Another policy has exactly the same match criteria: selection would be ambiguous."""


class NotProvisionable(BootstrapError):
    """The selected policy cannot be applied to this identity (e.g. it would send a secret
    key to a device over an unencrypted channel, or needs a CA that is not configured)."""

    coap_code = "4.03"


class CaError(BootstrapError):
    """The certificate authority cannot be created, loaded or used."""


class BadBootstrapRequest(BootstrapError):
    """A Bootstrap-Request / Bootstrap-Pack-Request the device sent is malformed (4.00)."""

    coap_code = "4.00"


class RebootstrapFailed(BootstrapError):
    """A server-initiated re-bootstrap could not be triggered (device not registered, no DM
    server handle, the Execute failed)."""


__all__ = [
    "BadBootstrapRequest",
    "BootstrapError",
    "CaError",
    "IdentityConflict",
    "ImportFailed",
    "InvalidIdentity",
    "InvalidPolicy",
    "NotProvisionable",
    "PolicyConflict",
    "RebootstrapFailed",
    "UnknownIdentity",
    "UnknownPolicy",
]

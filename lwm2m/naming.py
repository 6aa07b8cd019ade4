"""The one endpoint-name rule of fleetloop (issue 14 item 8).

Why one: the DM server registered names bootstrap refused (``a/b``, ``..``, ``a b``, a
Cyrillic ``\\u0430`` that looks like a Latin ``a``), so a device could hold a registration no
identity, no API path and no audit query could name unambiguously. Every entry -- DM
Register, bootstrap request, identities import, API paths -- now asks :func:`endpoint_name_problem`
(or :func:`check_endpoint_name`) and reports :data:`ENDPOINT_NAME_RULE` when it refuses.

The rule: 1-128 ASCII letters, digits and ``. _ : @ + -``, starting with a letter or digit.
That is what a CoAP Uri-Query and a URL path carry unescaped, covers ``urn:imei:...``,
``urn:uuid:...`` and serial-number styles, and leaves no look-alikes (ASCII only).
"""

from __future__ import annotations

import re

__all__ = [
    "ENDPOINT_NAME_RULE",
    "MAX_ENDPOINT_NAME_LENGTH",
    "InvalidEndpointName",
    "check_endpoint_name",
    "endpoint_name_problem",
]

MAX_ENDPOINT_NAME_LENGTH = 128

ENDPOINT_NAME_RULE = (
    "an endpoint name is 1-128 of the ASCII characters A-Z a-z 0-9 . _ : @ + -, "
    "starting with a letter or digit"
)

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:@+\-]{0,127}", re.ASCII)


class InvalidEndpointName(ValueError):
    """A name that breaks :data:`ENDPOINT_NAME_RULE`; ``str()`` says which name and the rule."""

    def __init__(self, name: str) -> None:
        self.name = name
        super().__init__(describe_refusal(name))


def describe_refusal(name: str) -> str:
    """``'a/b' is not a valid endpoint name: <the rule>`` (the name cut to 40 characters)."""
    shown = name if len(name) <= 40 else name[:40] + "..."
    return f"{shown!r} is not a valid endpoint name: {ENDPOINT_NAME_RULE}"


def endpoint_name_problem(name: str) -> str | None:
    """None if ``name`` follows the rule, else the message to show (naming the rule)."""
    return None if _NAME.fullmatch(name) else describe_refusal(name)


def check_endpoint_name(name: str) -> str:
    """``name`` if it follows the rule; :class:`InvalidEndpointName` otherwise."""
    if not _NAME.fullmatch(name):
        raise InvalidEndpointName(name)
    return name

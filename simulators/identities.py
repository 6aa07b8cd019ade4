"""Device identities for a simulated fleet, as the factory would export them.

``fleetloop sim identities --devices N --out ids.csv`` writes the CSV that the bootstrap
server's identity import (:mod:`bootstrap.importer`) accepts -- the same columns, valid IMEIs
and EIDs (the ones the simulated devices report, see :mod:`simulators.device.esim`) and one
PSK per device -- and ``fleetloop sim run --identities ids.csv`` runs exactly those devices.
Keys are derived from a seed, so two runs with the same seed agree without sharing a file.
"""

from __future__ import annotations

import csv
import hashlib
import io
from collections.abc import Iterable
from dataclasses import dataclass

from simulators.device.esim import eid_for, imei_for

COLUMNS = ("endpoint", "serial", "imei", "eid", "sku", "security_mode", "psk_identity", "psk_key")
SKU = "FL-SIM-1"


@dataclass(frozen=True, slots=True)
class Identity:
    """One device's factory identity: its endpoint name and, for DTLS-PSK, its credentials."""

    endpoint: str
    psk_identity: bytes | None = None
    psk_key: bytes | None = None

    @property
    def psk(self) -> tuple[bytes, bytes] | None:
        if self.psk_identity is None or self.psk_key is None:
            return None
        return self.psk_identity, self.psk_key


def psk_key_for(endpoint: str, seed: int | str = 0) -> bytes:
    """A 16-byte PSK derived from the seed and the endpoint name."""
    return hashlib.blake2b(f"fleetloop-sim/{seed}/{endpoint}".encode(), digest_size=16).digest()


def endpoint_name(prefix: str, number: int) -> str:
    return f"{prefix}{number:06d}"


def generate(
    count: int, *, prefix: str = "sim-", first: int = 1, seed: int | str = 0, psk: bool = True
) -> list[Identity]:
    """``count`` identities ``<prefix>000001``...; with ``psk`` each has a PSK (identity =
    endpoint name, key from :func:`psk_key_for`)."""
    out = []
    for number in range(first, first + count):
        endpoint = endpoint_name(prefix, number)
        if psk:
            out.append(Identity(endpoint, endpoint.encode(), psk_key_for(endpoint, seed)))
        else:
            out.append(Identity(endpoint))
    return out


def to_csv(identities: Iterable[Identity]) -> str:
    """The identities as the bootstrap importer's CSV (header row, one device per row)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(COLUMNS)
    for identity in identities:
        secure = identity.psk is not None
        writer.writerow(
            (
                identity.endpoint,
                identity.endpoint,
                imei_for(identity.endpoint),
                eid_for(identity.endpoint),
                SKU,
                "psk" if secure else "nosec",
                identity.psk_identity.decode() if identity.psk_identity is not None else "",
                identity.psk_key.hex() if identity.psk_key is not None else "",
            )
        )
    return buffer.getvalue()


class IdentityFileError(ValueError):
    """The identity file cannot be used; the message names the row and the problem."""


def from_csv(text: str) -> list[Identity]:
    """Identities from a CSV with at least an ``endpoint`` column (``psk_identity`` and
    ``psk_key`` hex optional; ``psk_identity`` defaults to the endpoint when a key is given)."""
    reader = csv.DictReader(io.StringIO(text))
    if reader.fieldnames is None or "endpoint" not in reader.fieldnames:
        raise IdentityFileError("the CSV needs a header row with an 'endpoint' column")
    out = []
    for row_number, row in enumerate(reader, start=1):
        endpoint = (row.get("endpoint") or "").strip()
        if not endpoint:
            raise IdentityFileError(f"row {row_number}: empty endpoint")
        key_text = (row.get("psk_key") or "").strip()
        mode = (row.get("security_mode") or "").strip().lower()
        if not key_text or mode == "nosec":
            out.append(Identity(endpoint))
            continue
        try:
            key = bytes.fromhex(key_text.removeprefix("0x").replace(":", ""))
        except ValueError:
            raise IdentityFileError(f"row {row_number} ({endpoint}): psk_key is not hex") from None
        identity = (row.get("psk_identity") or "").strip() or endpoint
        out.append(Identity(endpoint, identity.encode(), key))
    return out


__all__ = [
    "COLUMNS",
    "Identity",
    "IdentityFileError",
    "endpoint_name",
    "from_csv",
    "generate",
    "psk_key_for",
    "to_csv",
]

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


SPREAD_COLUMNS = ("tenant", "region", "country", "carrier", "plmn", "policy_group", "labels")

#: Where a spread fleet's devices live: (tenant, region, country, carrier, PLMN, policy group),
#: in the proportions a multi-country fleet has (one device in N goes to each row's share).
_PLACES: tuple[tuple[str, str, str, str, str, str], ...] = (
    ("acme", "eu-west", "DE", "tmo-de", "26201", "meters"),
    ("acme", "eu-west", "FR", "orange-fr", "20801", "meters"),
    ("acme", "us-east", "US", "tmo", "310260", "meters"),
    ("acme", "us-east", "US", "vzw", "311480", "trackers"),
    ("globex", "apac", "JP", "docomo", "44010", "trackers"),
)


def spread_attributes(number: int) -> dict[str, str]:
    """Inventory attributes of device ``number`` (1-based) in a spread fleet: tenant, region,
    country, carrier, PLMN and policy group cycle through a fixed table; every tenth device
    carries the ``pilot`` label and all carry a ``batch`` label, so selectors and groups have
    something to select. Deterministic: tests compute the expected members the same way."""
    tenant, region, country, carrier, plmn, group = _PLACES[(number - 1) % len(_PLACES)]
    labels = f"batch={(number - 1) // 100 + 1}" + (";pilot" if number % 10 == 0 else "")
    return {
        "tenant": tenant,
        "region": region,
        "country": country,
        "carrier": carrier,
        "plmn": plmn,
        "policy_group": group,
        "labels": labels,
    }


def _number_of(endpoint: str) -> int:
    digits = endpoint[len(endpoint.rstrip("0123456789")) :]
    return int(digits) if digits else 1


def to_csv(identities: Iterable[Identity], *, spread: bool = False) -> str:
    """The identities as the bootstrap importer's CSV (header row, one device per row); with
    ``spread`` also the inventory columns of :func:`spread_attributes` (by the number at the
    end of each endpoint name)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(COLUMNS + (SPREAD_COLUMNS if spread else ()))
    for identity in identities:
        secure = identity.psk is not None
        extra: tuple[str, ...] = ()
        if spread:
            attributes = spread_attributes(_number_of(identity.endpoint))
            extra = tuple(attributes[name] for name in SPREAD_COLUMNS)
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
                *extra,
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
    "SPREAD_COLUMNS",
    "Identity",
    "IdentityFileError",
    "endpoint_name",
    "from_csv",
    "generate",
    "psk_key_for",
    "spread_attributes",
    "to_csv",
]

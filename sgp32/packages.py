"""The operations an eIM puts into an eUICC package: PSMOs and eCOs (SGP.32 v1.2 2.11.1.1).

Each operation is a frozen dataclass that knows its ASN.1 value (`to_asn1()`, asn1tools'
representation of a `Psmo` or `Eco` CHOICE). A package carries either PSMOs or eCOs, never a
mix - `euicc_package_signed` refuses a mixed list rather than silently splitting it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sgp32.asn1 import decode
from sgp32.errors import EncodingError, InvalidIdentifier
from sgp32.identifiers import eid_to_bytes, iccid_to_bytes

MAX_EIM_ID = 128
MAX_TRANSACTION_ID = 16


def _iccid(iccid: str) -> dict[str, bytes]:
    return {"iccid": iccid_to_bytes(iccid)}


# ---- PSMOs: Profile State Management Operations -------------------------------------------


@dataclass(frozen=True)
class Enable:
    """Enable a profile; with `rollback` the eUICC may fall back if the eIM is unreachable."""

    iccid: str
    rollback: bool = False

    def to_asn1(self) -> tuple[str, Any]:
        body: dict[str, Any] = _iccid(self.iccid)
        if self.rollback:
            body["rollbackFlag"] = None
        return ("enable", body)


@dataclass(frozen=True)
class Disable:
    iccid: str

    def to_asn1(self) -> tuple[str, Any]:
        return ("disable", _iccid(self.iccid))


@dataclass(frozen=True)
class Delete:
    iccid: str

    def to_asn1(self) -> tuple[str, Any]:
        return ("delete", _iccid(self.iccid))


@dataclass(frozen=True)
class ListProfileInfo:
    """List profiles, optionally one ICCID only and/or only the tags in `tag_list`."""

    iccid: str | None = None
    tag_list: bytes | None = None

    def to_asn1(self) -> tuple[str, Any]:
        body: dict[str, Any] = {}
        if self.iccid is not None:
            body["searchCriteria"] = ("iccid", iccid_to_bytes(self.iccid))
        if self.tag_list is not None:
            body["tagList"] = self.tag_list
        return ("listProfileInfo", body)


@dataclass(frozen=True)
class GetRat:
    def to_asn1(self) -> tuple[str, Any]:
        return ("getRAT", {})


@dataclass(frozen=True)
class ConfigureImmediateEnable:
    """v1.2 name of v1.0's configureAutoEnable."""

    immediate_enable: bool
    default_smdp_oid: str | None = None
    default_smdp_address: str | None = None

    def to_asn1(self) -> tuple[str, Any]:
        body: dict[str, Any] = {}
        if self.immediate_enable:
            body["immediateEnableFlag"] = None
        if self.default_smdp_oid is not None:
            body["defaultSmdpOid"] = self.default_smdp_oid
        if self.default_smdp_address is not None:
            body["defaultSmdpAddress"] = self.default_smdp_address
        return ("configureImmediateEnable", body)


@dataclass(frozen=True)
class SetFallbackAttribute:
    iccid: str

    def to_asn1(self) -> tuple[str, Any]:
        return ("setFallbackAttribute", _iccid(self.iccid))


@dataclass(frozen=True)
class UnsetFallbackAttribute:
    def to_asn1(self) -> tuple[str, Any]:
        return ("unsetFallbackAttribute", {})


@dataclass(frozen=True)
class SetDefaultDpAddress:
    address: str

    def to_asn1(self) -> tuple[str, Any]:
        return ("setDefaultDpAddress", {"defaultDpAddress": self.address})


Psmo = (
    Enable
    | Disable
    | Delete
    | ListProfileInfo
    | GetRat
    | ConfigureImmediateEnable
    | SetFallbackAttribute
    | UnsetFallbackAttribute
    | SetDefaultDpAddress
)

# ---- eCOs: eIM Configuration Operations ---------------------------------------------------


@dataclass(frozen=True)
class EimConfiguration:
    """EimConfigurationData for addEim/updateEim: who the (other) eIM is and how to trust it.

    `public_key_der` is a DER SubjectPublicKeyInfo; `certificate_der` a DER X.509 certificate
    (at most one of them: they are alternatives of eimPublicKeyData).
    """

    eim_id: str
    fqdn: str | None = None
    id_type: int | None = None  # 1 OID, 2 FQDN, 3 proprietary
    counter_value: int | None = None
    association_token: int | None = None
    public_key_der: bytes | None = None
    certificate_der: bytes | None = None
    supported_protocols: tuple[int, ...] = ()  # bit numbers of EimSupportedProtocol
    indirect_profile_download: bool = False

    def to_asn1(self) -> dict[str, Any]:
        _check_eim_id(self.eim_id)
        body: dict[str, Any] = {"eimId": self.eim_id}
        optional = {
            "eimFqdn": self.fqdn,
            "eimIdType": self.id_type,
            "counterValue": self.counter_value,
            "associationToken": self.association_token,
        }
        body.update({k: v for k, v in optional.items() if v is not None})
        if self.public_key_der is not None and self.certificate_der is not None:
            raise EncodingError(f"eIM {self.eim_id}: give a public key or a certificate, not both")
        if self.public_key_der is not None:
            key = decode("SubjectPublicKeyInfo", self.public_key_der)
            body["eimPublicKeyData"] = ("eimPublicKey", key)
        if self.certificate_der is not None:
            cert = decode("Certificate", self.certificate_der)
            body["eimPublicKeyData"] = ("eimCertificate", cert)
        if self.supported_protocols:
            body["eimSupportedProtocol"] = bit_string(self.supported_protocols)
        if self.indirect_profile_download:
            body["indirectProfileDownload"] = None
        return body


@dataclass(frozen=True)
class AddEim:
    config: EimConfiguration

    def to_asn1(self) -> tuple[str, Any]:
        return ("addEim", self.config.to_asn1())


@dataclass(frozen=True)
class UpdateEim:
    config: EimConfiguration

    def to_asn1(self) -> tuple[str, Any]:
        return ("updateEim", self.config.to_asn1())


@dataclass(frozen=True)
class DeleteEim:
    eim_id: str

    def to_asn1(self) -> tuple[str, Any]:
        return ("deleteEim", {"eimId": self.eim_id})


@dataclass(frozen=True)
class ListEim:
    def to_asn1(self) -> tuple[str, Any]:
        return ("listEim", {})


Eco = AddEim | UpdateEim | DeleteEim | ListEim


def bit_string(bits: Sequence[int]) -> tuple[bytes, int]:
    """A named-bit BIT STRING in DER form (trailing zero bits dropped), as asn1tools wants it."""
    if not bits:
        return (b"", 0)
    length = max(bits) + 1
    value = 0
    for bit in bits:
        value |= 1 << (8 * ((length + 7) // 8) - 1 - bit)
    return (value.to_bytes((length + 7) // 8, "big"), length)


def _check_eim_id(eim_id: str) -> None:
    if not 1 <= len(eim_id) <= MAX_EIM_ID:
        raise InvalidIdentifier(f"eimId {eim_id!r}: expected 1 to {MAX_EIM_ID} characters")


def euicc_package_signed(
    *,
    eim_id: str,
    eid: str,
    counter_value: int,
    transaction_id: bytes | None,
    operations: Sequence[Psmo | Eco],
) -> dict[str, Any]:
    """The EuiccPackageSigned value for one package (what the eIM signature covers)."""
    _check_eim_id(eim_id)
    if counter_value < 1:
        raise EncodingError(f"EID {eid}: counterValue must be positive, got {counter_value}")
    if transaction_id is not None and not 1 <= len(transaction_id) <= MAX_TRANSACTION_ID:
        raise EncodingError(f"EID {eid}: eimTransactionId must be 1 to 16 bytes")
    if not operations:
        raise EncodingError(f"EID {eid}: a package needs at least one operation")
    if all(isinstance(op, Psmo) for op in operations):
        package = ("psmoList", [op.to_asn1() for op in operations])
    elif all(isinstance(op, Eco) for op in operations):
        package = ("ecoList", [op.to_asn1() for op in operations])
    else:
        raise EncodingError(f"EID {eid}: one package carries PSMOs or eCOs, not both")
    signed: dict[str, Any] = {
        "eimId": eim_id,
        "eidValue": eid_to_bytes(eid),
        "counterValue": counter_value,
    }
    if transaction_id is not None:
        signed["eimTransactionId"] = transaction_id
    signed["euiccPackage"] = package
    return signed

"""The typed bodies and answers of the eSIM routes (:mod:`lifecycle.api.esim_routes`)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

Operation = Literal[
    "enable",
    "disable",
    "delete",
    "list-profiles",
    "set-fallback",
    "unset-fallback",
    "list-eim",
    "delete-eim",
    "add-eim",
    "update-eim",
    "download",
    "ipa-data",
]


class EuiccImportItem(BaseModel):
    model_config = ConfigDict(extra="forbid")
    euicc_certificate: str = Field(
        description="the eUICC certificate (CERT.EUICC.ECDSA): PEM, or DER in base64",
        max_length=16384,
    )
    eum_certificate: str = Field(
        description="the EUM certificate that issued it (CERT.EUM.ECDSA): PEM or base64 DER",
        max_length=16384,
    )
    eid: str | None = Field(
        default=None,
        description="the EID the certificate must carry (32 digits); refused if it differs",
        pattern=r"^[0-9]{32}$",
    )
    endpoint: str | None = Field(
        default=None,
        description="the LwM2M endpoint of the device carrying this eUICC (the esim dimension "
        "of that device is applied through it)",
        min_length=1,
        max_length=255,
    )


class EuiccImportBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    euiccs: list[EuiccImportItem] = Field(min_length=1, max_length=1000)
    eim_id: str | None = Field(
        default=None,
        description="the eIM identity of this deployment the eUICCs are associated with "
        "(default: the first, --eim-id); its key signs their packages",
        min_length=1,
        max_length=128,
    )
    tenant: str | None = Field(
        default=None, description="the tenant the eUICCs belong to (a scoped token: one of its)"
    )


class EuiccOut(BaseModel):
    eid: str
    endpoint: str | None = Field(description="the LwM2M device carrying it, when linked")
    eim_id: str = Field(description="the eIM identity it is bound to (signs its packages)")
    counter_value: int = Field(description="the last counterValue that eIM used for it")
    tenant: str | None
    registered_at: str | None
    registered_at_epoch: float | None
    enabled_iccid: str | None = Field(description="the enabled profile as the eIM knows it")
    queued: int = Field(description="packages waiting for the IPA (queued or delivered)")


class EuiccList(BaseModel):
    items: list[EuiccOut]
    next_cursor: str | None = Field(description="the cursor of the next page; null: the last")


class ProfileOut(BaseModel):
    iccid: str
    state: Literal["enabled", "disabled", "enabled_pending"] = Field(
        description="enabled_pending: enabled with rollbackFlag, the signed result not yet in"
    )
    fallback: bool
    carrier: str | None
    note: str = Field(description="how the eIM learnt it: confirmed, rolled back, notification…")
    updated_at_epoch: float


class PackageResultOut(BaseModel):
    kind: str = Field(
        description="euiccPackageResultSigned, euiccPackageErrorSigned, "
        "euiccPackageErrorUnsigned, or the answer to an unsigned request"
    )
    results: list[Any] = Field(description="per operation: [name, value], in package order")
    error_code: int | None
    rolled_back: bool = Field(description="the eUICC rolled the enable back (rollbackResult)")
    reason: str | None = Field(
        None,
        description="why a package failed without a signed answer: eim_deleted_on_euicc or "
        "eim_not_accepted_by_euicc (the eUICC's euiccPackageErrorUnsigned)",
    )
    message: str | None = Field(None, description="that failure for an operator: EID and fix")


class PackageOut(BaseModel):
    eid: str
    eim_id: str = Field(description="the eIM that signed it (its counter numbers it)")
    counter_value: int
    transaction_id: str = Field(description="eimTransactionId, hex")
    state: Literal["queued", "delivered", "done", "failed"]
    operations: list[dict[str, Any]]
    actor: str
    created_at_epoch: float
    delivered_at_epoch: float | None
    result_at_epoch: float | None
    result: PackageResultOut | None


class PackageList(BaseModel):
    items: list[PackageOut]


class ResultOut(BaseModel):
    received_at_epoch: float
    outcome: str = Field(description="accepted, duplicate, or why it was refused")
    transaction_id: str | None
    counter_value: int | None
    detail: dict[str, Any]


class ResultList(BaseModel):
    items: list[ResultOut]


class DownloadOut(BaseModel):
    transaction_id: str = Field(description="the SM-DP+'s transactionId, hex")
    smdp_address: str
    step: Literal[
        "authenticateClient", "getBoundProfilePackage", "installing", "cancelled", "failed"
    ] = Field(description="the ES9+ call the session waits for next, or how it ended")
    created_at: float
    updated_at: float
    eim_transaction_id: str | None = Field(description="of the ProfileDownloadTrigger, hex")
    eid: str | None
    activation_code: str | None
    ctx_params1_by_eim: bool = Field(description="the eIM generated ctxParams1 for the IPA")


class AssociationOut(BaseModel):
    eim_id: str
    bound: bool = Field(description="the eIM that signs this eUICC's packages now")
    counter_value: int = Field(description="the last counterValue this eIM used for it")
    association_token: int
    source: str = Field(description="import, migrated, or addEim <eimTransactionId>")
    confirmed_at_epoch: float
    deleted_at_epoch: float | None = Field(description="set once the eUICC confirmed deleteEim")


class EuiccDetail(EuiccOut):
    eum: str = Field(description="the EUM certificate's subject")
    associations: list[AssociationOut] = Field(
        description="the eIMs the eUICC confirmed it is associated with, each its own counter"
    )
    profiles: list[ProfileOut]
    queue: list[PackageOut] = Field(description="packages waiting for the IPA, oldest first")
    packages: list[PackageOut] = Field(description="the last answered packages, newest first")
    results: list[ResultOut] = Field(description="the last results received, newest first")
    downloads: list[DownloadOut] = Field(
        description="indirect-download sessions the eIM relayed to SM-DP+s, newest first"
    )


class EuiccImportResult(BaseModel):
    items: list[EuiccOut]


class EimConfigBody(BaseModel):
    """EimConfigurationData of an addEim/updateEim eCO. For an eIM identity of this
    deployment the key (its certificate when configured) is filled in when neither is given."""

    model_config = ConfigDict(extra="forbid")
    eim_id: str = Field(min_length=1, max_length=128, description="the eimId to add or update")
    fqdn: str | None = Field(default=None, max_length=255, description="eimFqdn")
    id_type: int | None = Field(default=None, ge=1, le=3, description="1 OID, 2 FQDN, 3 other")
    counter_value: int | None = Field(
        default=None, ge=0, le=2**31 - 1, description="the counterValue the eUICC starts from"
    )
    association_token: int | None = Field(
        default=None,
        ge=-1,
        le=2**31 - 1,
        description="-1: the eUICC makes one and returns it in the result",
    )
    public_key: str | None = Field(
        default=None, max_length=8192, description="the eIM's public key (PEM SubjectPublicKeyInfo)"
    )
    certificate: str | None = Field(
        default=None, max_length=16384, description="the eIM's certificate (PEM)"
    )
    supported_protocols: list[int] = Field(
        default_factory=list, description="EimSupportedProtocol bit numbers (0 eimRetrieveHttps, …)"
    )
    indirect_profile_download: bool = False


class PackageBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    operation: Operation = Field(
        description="the PSMO or eCO to queue, download (a ProfileDownloadTrigger) or "
        "ipa-data (an IpaEuiccDataRequest: EUICCInfo2, DeviceInfo, IpaCapabilities)"
    )
    iccid: str | None = Field(
        default=None,
        description="the profile (enable, disable, delete, set-fallback; list-profiles: only it)",
        pattern=r"^89[0-9]{16,20}F?$",
    )
    rollback: bool = Field(
        default=True,
        description="enable: rollbackFlag -- the eUICC falls back unless the result reaches "
        "the eIM over the new profile",
    )
    eim_id: str | None = Field(
        default=None, description="delete-eim: the eimId to remove", max_length=128
    )
    eim: EimConfigBody | None = Field(
        default=None, description="add-eim, update-eim: the eIM's configuration data"
    )
    activation_code: str | None = Field(
        default=None,
        description="download: the activation code 1$SM-DP+ address$matching ID (a "
        "ProfileDownloadTrigger; the IPA downloads through the eIM's ES9+ relay)",
        max_length=255,
    )


class EuiccSelection(BaseModel):
    """Which eUICCs: ``eids``, the eUICCs linked to ``endpoints`` or to the devices ``select``
    names, narrowed (or, alone, given) by ``bound_to``."""

    model_config = ConfigDict(extra="forbid")
    eids: list[str] | None = Field(default=None, max_length=10000)
    endpoints: list[str] | None = Field(
        default=None, max_length=10000, description="devices whose linked eUICCs to address"
    )
    select: str | None = Field(
        default=None, max_length=2000, description="inventory selector (docs/GROUPS.md)"
    )
    bound_to: str | None = Field(
        default=None, max_length=128, description="only the eUICCs bound to this eIM identity"
    )


class SelectionPackageBody(PackageBody, EuiccSelection):
    """The same package for every eUICC of a selection (one transaction: all or none)."""


class SelectionPackageResult(BaseModel):
    items: list[PackageOut]
    missing: list[str] = Field(description="endpoints of the selection without a linked eUICC")


class EimMoveBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    eim_id: str = Field(
        min_length=1,
        max_length=128,
        description="the eIM identity of this deployment to bind the eUICC to; the eUICC must "
        "have confirmed an addEim of it",
    )
    delete_old: bool = Field(
        default=False,
        description="also queue deleteEim of the old eIM, signed by the new one",
    )


class EimMoveResult(BaseModel):
    euicc: EuiccOut
    moved_from: str = Field(description="the eIM it was bound to")
    delete_package: PackageOut | None = Field(description="the deleteEim queued (delete_old)")


class EimMoveSelectionBody(EimMoveBody, EuiccSelection):
    """Move every eUICC of a selection (one transaction; those that cannot move are listed
    in ``refused`` with the reason, the others move)."""


class MoveRefusedOut(BaseModel):
    eid: str
    message: str = Field(description="why it did not move, and the fix")


class EimMoveSelectionResult(BaseModel):
    items: list[EuiccOut] = Field(description="the eUICCs moved")
    delete_packages: list[PackageOut] = Field(description="the deleteEims queued (delete_old)")
    refused: list[MoveRefusedOut] = Field(description="the eUICCs left where they were")
    missing: list[str] = Field(description="endpoints of the selection without a linked eUICC")


class EimIdentityOut(BaseModel):
    eim_id: str
    default: bool = Field(description="the identity imports use unless told otherwise")
    curve: str
    public_key: str = Field(description="PEM SubjectPublicKeyInfo")
    certificate: str | None = Field(description="PEM, when configured")
    euiccs: int = Field(description="eUICCs bound to it (of the caller's tenants)")


class EimIdentityList(BaseModel):
    items: list[EimIdentityOut]

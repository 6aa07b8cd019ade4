"""Response models of the API: what every route answers, typed, so ``/openapi.json`` is whole.

The routes build their answers with the functions of :mod:`lifecycle.api.views` (plain
dicts, shared with the event stream); these models are the contract those dicts are checked
against (``response_model=``) and the schema clients generate code from. They allow extra
fields (``extra="allow"``): a newer server may add fields, never remove or retype them.

Timestamps come in pairs: ``<name>`` (ISO 8601 UTC, for people) and ``<name>_epoch``
(seconds, for programs).
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class Out(BaseModel):
    model_config = ConfigDict(extra="allow")


# -- nodes -----------------------------------------------------------------------------------------


class ResourceInstanceOut(Out):
    id: int
    value: Any = Field(default=None, description="JSON value by data type (docs/API.md)")


class NodeOut(Out):
    """An object, instance, resource or resource instance in the JSON shape of docs/API.md."""

    path: str = Field(examples=["/3/0/9"])
    kind: str = Field(description="object, instance, resource or resource_instance")
    id: int | None = None
    name: str | None = Field(default=None, description="from the object model; null if unknown")
    type: str | None = Field(default=None, description="LwM2M data type (resources)")
    value: Any = None
    label: str | None = Field(
        default=None, description="an enumerated value's name (Battery Status 0: normal)"
    )
    multiple: bool | None = None
    instances: list[NodeOut] | list[ResourceInstanceOut] | list[int] | None = None
    resources: list[NodeOut] | None = None


# -- devices ---------------------------------------------------------------------------------------


class IdentityOut(Out):
    kind: str = Field(description="how the device authenticated: psk, x509, nosec")
    value: str | None


class DeviceOut(Out):
    """A device's current registration, with when it was last heard from."""

    endpoint: str
    registration_id: str
    address: str = Field(examples=["127.0.0.1:56830"])
    secure: bool
    identity: IdentityOut
    lwm2m_version: str
    binding: str
    queue_mode: bool
    lifetime: int
    sms_number: str | None
    root_path: str
    supported_formats: list[str | None]
    registered_at: str | None
    registered_at_epoch: float | None
    updated_at: str | None
    updated_at_epoch: float | None
    expires_at: str | None
    expires_at_epoch: float | None
    last_seen: str | None = Field(description="last Register or Update (ISO 8601)")
    reachability: str = Field(
        description="online (a request goes out now) or sleeping (queue mode, asleep: "
        "requests wait for its next Update)"
    )


class DevicePage(Out):
    """One page of devices; pass ``next_cursor`` back as ``cursor`` for the next page."""

    items: list[DeviceOut]
    count: int = Field(description="devices matching the filters, on all pages")
    next_cursor: str | None


class ObjectOut(Out):
    id: int
    path: str
    name: str | None
    version: str | None
    instances: list[int]


class ReportedValueOut(Out):
    path: str
    name: str | None
    type: str
    value: Any = None
    at: str | None = None
    at_epoch: float | None = None
    source: str


class ObservationOut(Out):
    observation_id: str
    endpoint: str
    paths: list[str]
    names: list[str | None]
    composite: bool
    content_format: str | None
    notifications: int
    created_at: str | None
    created_at_epoch: float | None


class SecurityOut(Out):
    """An endpoint's credentials; the key itself is never shown (length and keyed fingerprint)."""

    endpoint: str
    modes: list[str]
    psk_identity: str | None
    psk_key_length: int | None
    psk_key_fingerprint: str | None
    x509_subject: str | None
    x509_fingerprint_sha256: str | None
    allow_nosec: bool
    updated_at: str | None
    updated_at_epoch: float | None


class SecurityPage(Out):
    items: list[SecurityOut]
    next_cursor: str | None = Field(description="pass as cursor= for the next page")
    next_after: str | None = Field(description="the same, by its older name")


class DeviceDetail(DeviceOut):
    objects: list[ObjectOut]
    last_values: list[ReportedValueOut]
    observations: list[ObservationOut]
    security: SecurityOut | None


class QueuedOut(Out):
    id: int
    endpoint: str
    operation: str
    paths: list[str]
    state: str
    content_format: str | None
    correlation: str | None
    response_code: str | None


# -- operations ------------------------------------------------------------------------------------


class OperationOut(Out):
    """A device operation that succeeded (failures answer with the error envelope)."""

    status: str = Field(examples=["success"])
    endpoint: str
    operation: str = Field(examples=["read"])
    path: str | None
    coap_code: str | None = Field(examples=["2.05"])
    queued: bool = Field(description="it waited for a sleeping device")
    queued_request_id: int | None
    content_format: str | None = None
    content: NodeOut | list[NodeOut] | None = None
    location: str | None = Field(default=None, description="Create: the new instance's path")
    observation_id: str | None = None


class LinkOut(Out):
    path: str | None
    name: str | None
    attributes: dict[str, str | None]


class DiscoverOut(OperationOut):
    links: list[LinkOut]


class RemovedOut(Out):
    """A registration an operator removed."""

    status: str = Field(examples=["removed"])
    endpoint: str
    registration_id: str
    last_seen: str | None = Field(description="when the device last talked (ISO 8601)")


class CancelledOut(Out):
    status: str
    request_id: int | None = None
    observation_id: str | None = None


# -- security, tokens, identities, policies, audit -------------------------------------------------


class SecurityChange(SecurityOut):
    replaced: bool | None = None
    removed: bool | None = None


class TokenOut(Out):
    id: str | None = Field(default=None, description="the token's id (not the secret)")
    name: str
    role: str = Field(description="viewer, operator or admin")
    tenants: list[str] | None = Field(description="null: every tenant")
    created_at: str | None
    created_by: str | None = None
    revoked_at: str | None = None
    last_used_at: str | None = None


class CreatedToken(TokenOut):
    token: str = Field(description="the token text: shown here once, never again")


class TokenList(Out):
    items: list[TokenOut]


class RevokedToken(TokenOut):
    revoked: bool


class IdentityRecord(Out):
    endpoint: str
    tenant: str | None = None
    region: str | None = None
    security_mode: str | None = None
    status: str | None = None


class IdentityPage(Out):
    items: list[IdentityRecord]
    next_cursor: str | None = Field(description="pass as cursor= for the next page")
    next_after: str | None = Field(description="the same, by its older name")


class RejectedRow(Out):
    row: int | None
    endpoint: str | None
    reason: str
    field: str | None
    message: str


class ImportReport(Out):
    batch: str | None = None
    source: str | None = None
    rows: int
    dry_run: bool
    accepted: list[str]
    imported: int | bool | None = None
    rejected: list[RejectedRow]
    issued_certificates: dict[str, list[str]] = Field(default_factory=dict)
    summary: str


class PolicyOut(Out):
    name: str
    version: int | None
    builtin: bool
    author: str | None
    comment: str | None
    document: dict[str, Any]
    versions: list[dict[str, Any]] | None = None
    changed: bool | None = None
    retired: bool | None = None


class PolicyList(Out):
    items: list[PolicyOut]
    default: PolicyOut | None = None


class PolicyDiff(Out):
    name: str
    diff: str


class BootstrapAnswer(Out):
    """Bootstrap explanations, status and Rebootstrap results (shape per route, docs/API.md)."""

    endpoint: str | None = None


class AuditPage(Out):
    """Audit records (one log, or the bootstrap trail); ``next_after`` continues the list."""

    items: list[dict[str, Any]]
    next_cursor: str | None = Field(description="pass as cursor= for the next page")
    next_after: int | str | None = Field(description="the same, by its older name")


class AuditVerdict(Out):
    ok: bool = Field(description="every record and checkpoint checks out")
    reason: str | None = None


class CheckpointOut(Out):
    tree_size: int
    root_hash: str
    signature: str | None = None
    key_id: str | None = None
    at: str | None = None


class CheckpointList(Out):
    items: list[CheckpointOut]
    public_key: str | None
    key_id: str | None


class CheckpointMade(Out):
    created: bool
    checkpoint: CheckpointOut | None


class ProofOut(Out):
    """A self-contained inclusion proof (``fleetloop audit check-proof`` verifies it)."""


class StatusOut(Out):
    """What ``fleetloop status`` shows: is the server healthy, how busy, where it listens."""

    version: str
    started_at: str
    uptime_s: float
    ports: dict[str, str | None] = Field(description="coap, coaps, bs_coap, bs_coaps, api")
    devices_registered: int
    devices_sleeping: int
    observations: int
    store: str = Field(description="the database URL, without credentials")
    load: dict[str, float] = Field(description="1/5/15-minute load averages, process CPU s")

"""Response models of the API: what every route answers, typed, so ``/openapi.json`` is whole.

The routes build their answers with the functions of :mod:`lifecycle.api.views` (plain
dicts, shared with the event stream); these models are the contract those dicts are checked
against (``response_model=``) and the schema clients generate code from. They allow extra
no field they do not declare (``extra="forbid"``): a route that answered a field its model
lacks would fail its own response check in the tests, so ``/openapi.json`` names every field
a client can get. A newer server may add fields (declared here), never remove or retype them.

Timestamps come in pairs: ``<name>`` (ISO 8601 UTC, for people) and ``<name>_epoch``
(seconds, for programs).
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class Out(BaseModel):
    model_config = ConfigDict(extra="forbid")


# -- nodes -----------------------------------------------------------------------------------------


class ResourceInstanceOut(Out):
    id: int
    value: Any = Field(default=None, description="JSON value by data type (docs/API.md)")
    label: str | None = None
    iso: str | None = Field(default=None, description="a Time value in ISO 8601")
    encoding: str | None = Field(default=None, description="an Opaque value: base64")


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
    iso: str | None = Field(default=None, description="a Time value in ISO 8601")
    encoding: str | None = Field(default=None, description="an Opaque value: base64")
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
    iso: str | None = Field(default=None, description="a Time value in ISO 8601")
    encoding: str | None = Field(default=None, description="an Opaque value: base64")
    label: str | None = Field(default=None, description="an enumerated value's name")


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
    created_at: str | None = None
    created_at_epoch: float | None = None
    deadline: str | None = None
    deadline_epoch: float | None = None
    sent_at: str | None = None
    sent_at_epoch: float | None = None
    finished_at: str | None = None
    finished_at_epoch: float | None = None


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
    paths: list[str] | None = Field(default=None, description="composite operations: the paths")
    attributes: dict[str, float | int | str | bool | list[str] | None] | None = Field(
        default=None, description="Write-Attributes: what was set, and `unset`"
    )


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
    created_at_epoch: float | None = None
    created_by: str | None = None
    revoked_at: str | None = None
    revoked_at_epoch: float | None = None
    last_used_at: str | None = None
    last_used_at_epoch: float | None = None


class CreatedToken(TokenOut):
    token: str = Field(description="the token text: shown here once, never again")
    usage: str | None = Field(default=None, description="how to use it")


class TokenList(Out):
    items: list[TokenOut]


class RevokedToken(TokenOut):
    revoked: bool


class BootstrapPolicyRef(Out):
    name: str
    version: int | None = None
    builtin: bool | None = None
    document: dict[str, Any] | None = Field(
        default=None, description="the policy document (docs/BOOTSTRAP.md), secrets redacted"
    )


class BootstrapStateOut(Out):
    """Where a device is in bootstrapping (``GET /v1/bootstrap/status/{ep}``)."""

    endpoint: str
    phase: str
    step: str | None = None
    detail: str | None = None
    attempts: int
    completed: int
    policy: BootstrapPolicyRef | None = None
    lwm2m_version: str | None = None
    content_format: int | None = Field(default=None, description="the CoAP format number")
    transport: str | None = None
    peer: str | None = None
    dm_uris: list[str]
    server_iids: list[int]
    device_report: str | None = None
    started_at: str | float | None = None
    started_at_epoch: float | None = None
    updated_at: str | float | None = None
    updated_at_epoch: float | None = None
    finished_at: str | float | None = None
    finished_at_epoch: float | None = None
    rebootstrap_requested_at: str | float | None = None
    rebootstrap_requested_at_epoch: float | None = None


class IdentityRecord(Out):
    """A factory identity; never its PSK key (only whether there is one)."""

    endpoint: str
    serial: str | None = None
    hardware_id: str | None = None
    imei: str | None = None
    eid: str | None = None
    sku: str | None = None
    tenant: str | None = None
    region: str | None = None
    policy_group: str | None = None
    security_mode: str | None = None
    psk_identity: str | None = None
    has_psk_key: bool | None = None
    certificate_fingerprint: str | None = None
    certificate_serial: str | None = None
    status: str | None = None
    created_at: str | float | None = None
    created_at_epoch: float | None = None
    updated_at: str | float | None = None
    updated_at_epoch: float | None = None
    revoked_at: str | float | None = None
    revoked_at_epoch: float | None = None
    revoked_reason: str | None = None
    import_batch: str | None = None
    bootstrap: BootstrapStateOut | None = Field(
        default=None, description="GET /v1/identities/{ep}: its bootstrap state"
    )


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
    sha256: str | None = None
    rows: int
    dry_run: bool
    accepted: list[str]
    imported: int | bool | None = None
    rejected: list[RejectedRow]
    issued_certificates: dict[str, list[str]] = Field(default_factory=dict)
    summary: str


class PolicyVersionOut(Out):
    version: int
    retired: bool
    author: str | None
    comment: str | None
    sha256: str
    created_at: str | None
    created_at_epoch: float | None


class PolicyOut(Out):
    name: str
    version: int | None
    builtin: bool
    author: str | None
    comment: str | None
    created_at: str | None = None
    created_at_epoch: float | None = None
    document: dict[str, Any] = Field(
        description="the policy document (docs/BOOTSTRAP.md): the operator's own JSON"
    )
    versions: list[PolicyVersionOut] | None = None
    changed: bool | None = None
    retired: bool | None = None


class PolicyList(Out):
    items: list[PolicyOut]
    default: PolicyOut | None = None


class PolicyDiff(Out):
    name: str
    from_version: int | None = Field(default=None, alias="from", description="older version")
    to_version: int | None = Field(default=None, alias="to", description="newer version")
    diff: str


class CandidateOut(Out):
    name: str
    version: int | None
    criteria: dict[str, str]
    matched: bool
    rank: list[int]
    reasons: list[str]


class ExplanationOut(Out):
    """Which policy applies to a device, why, and what it would provision."""

    endpoint: str
    policy: BootstrapPolicyRef | None
    why: str
    candidates: list[CandidateOut]
    identity: IdentityRecord
    provisions: list[dict[str, Any]] = Field(
        description="the LwM2M instances it would write (object, instance, resources)"
    )
    problems: list[str]


class RebootstrapOut(Out):
    endpoint: str
    server_iid: int
    code: str | None
    queued: bool
    state: BootstrapStateOut


class AuditRecordOut(Out):
    """One audit record (``GET /v1/audit``, the bootstrap trail, the event stream)."""

    seq: int
    at: str | None
    at_epoch: float | None
    actor: str
    token_id: str | None
    tenant: str | None
    action: str
    subject: str
    endpoints: list[str]
    detail: dict[str, Any] = Field(description="the action's JSON detail (never a secret)")
    outcome: str
    leaf_hash: str


class AuditPage(Out):
    """Audit records (one log, or the bootstrap trail); ``next_after`` continues the list."""

    items: list[AuditRecordOut]
    next_cursor: str | None = Field(description="pass as cursor= for the next page")
    next_after: int | str | None = Field(description="the same, by its older name")


class AuditVerdict(Out):
    ok: bool = Field(description="every record and checkpoint checks out")
    reason: str | None = None
    records: int | None = None
    checkpoints: int | None = None
    root_hash: str | None = None
    problem: str | None = Field(default=None, description="edited, deleted, reordered, ...")
    seq: int | None = None
    checkpoint: int | None = None
    failed_range: list[int] | None = None
    key_id: str | None = None
    head: str | None = Field(default=None, description="the bootstrap trail: its head hash")
    broken_at: int | None = Field(default=None, description="the bootstrap trail: first bad")


class CheckpointOut(Out):
    tree_size: int
    root_hash: str
    signature: str | None = None
    key_id: str | None = None
    at: str | None = None
    at_epoch: float | None = None


class CheckpointList(Out):
    items: list[CheckpointOut]
    public_key: str | None
    key_id: str | None


class CheckpointMade(Out):
    created: bool
    checkpoint: CheckpointOut | None


class ProofCheckpoint(Out):
    tree_size: int
    root_hash: str
    signature: str | None = None
    key_id: str | None = None
    at: float | None = None


class ProofRecord(Out):
    seq: int
    at: float
    actor: str
    token_id: str | None
    tenant: str | None
    action: str
    subject: str
    endpoints: list[str]
    detail: dict[str, Any]
    outcome: str
    leaf_hash: str


class ProofOut(Out):
    """A self-contained inclusion proof (``fleetloop audit check-proof`` verifies it)."""

    format: str
    record: ProofRecord
    leaf_data: str = Field(description="the canonical JSON the leaf hashes")
    leaf_hash: str
    leaf_index: int
    tree_size: int
    audit_path: list[str] = Field(description="hex hashes from the leaf up")
    checkpoint: ProofCheckpoint
    public_key: str = Field(description="Ed25519 public key, base64")
    key_id: str


class StatusOut(Out):
    """What ``fleetloop status`` shows: is the server healthy, how busy, where it listens."""

    version: str
    started_at: str
    uptime_s: float
    ports: dict[str, str | None] = Field(
        description="coap, coaps, bs_coap, bs_coaps, api, esipa_https (null: off)"
    )
    devices_registered: int
    devices_sleeping: int
    observations: int
    store: str = Field(description="the database URL, without credentials")
    load: dict[str, float] = Field(description="1/5/15-minute load averages, process CPU s")

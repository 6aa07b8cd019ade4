"""What one device gets from one bootstrap: the provisioning plan, as pure data.

:func:`build_plan` turns (identity, policy, what Bootstrap-Discover said, fresh credentials)
into a :class:`ProvisioningPlan`: the Bootstrap-Delete targets, the object instances to write
(Security, OSCORE, APN, Server, Fleetloop Config -- in that order, so that every object link a
Server instance carries points at an instance that already exists), the DM-store record that
makes the credentials valid (:meth:`ProvisioningPlan.endpoint_security`) and, for LwM2M 1.2, the
Bootstrap-Pack that carries the same content in one SenML-CBOR payload.

Credentials are *inputs*: the caller generates them (randomness and the CA are not pure) and
hands them in as :class:`DmCredentials`; accounts of the same kind share one credential, so the
DM store's single per-endpoint record can hold them.

Version awareness: a 1.0 device gets only resources that exist in the 1.0 objects (Security
0-12, Server 0-8, binding ``UQ`` for queue mode); 1.1+ devices also get Certificate Usage,
APN Link, Bootstrap on Registration Failure and the retry resources.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from bootstrap.errors import NotProvisionable
from bootstrap.identities import FactoryIdentity
from bootstrap.policy import (
    CONFIG_OBJECT,
    ApnProfile,
    ConfigValue,
    CredentialKind,
    Policy,
    ServerAccount,
)
from bootstrap.protocol import DeviceInfo, version_key
from lwm2m.codec import ContentFormat, encode, encode_nodes
from lwm2m.model import (
    DataType,
    MultipleResource,
    Node,
    ObjectInstance,
    ObjectModel,
    ObjLink,
    Path,
    SingleResource,
    Value,
)
from lwm2m.store import EndpointSecurity, PskCredential, X509Credential
from objects import BUILTIN_MODEL
from objects.enums import SecurityMode as LwM2MSecurityMode

SECURITY, SERVER, APN, OSCORE = 0, 1, 11, 21
#: RFC 6698 usage 2 (DANE-TA): the certificate in /0/x/4 is the trust anchor the server's
#: certificate must chain to -- our CA, so DM servers can renew their certificates freely.
CERTIFICATE_USAGE_TRUST_ANCHOR = 2


@dataclass(frozen=True, slots=True)
class PskSecret:
    """A fresh DM PSK. ``key`` is never printed."""

    identity: str
    key: bytes = field(repr=False)


@dataclass(frozen=True, slots=True)
class CertificateSecret:
    """A fresh DM certificate (DER) with its private key (PKCS#8 DER, never printed), the CA
    certificate (DER) the device must trust, the subject and SHA-256 fingerprint the DM
    store pins, and the serial the CA recorded."""

    certificate: bytes
    private_key: bytes = field(repr=False)
    trust_anchor: bytes
    subject: str
    fingerprint: str
    serial: str


@dataclass(frozen=True, slots=True)
class OscoreSecret:
    """A fresh OSCORE context for a coap:// account (master secret never printed)."""

    master_secret: bytes = field(repr=False)
    sender_id: bytes
    recipient_id: bytes


@dataclass(frozen=True, slots=True)
class DmCredentials:
    """The credentials generated for one bootstrap (one per kind, shared by accounts)."""

    psk: PskSecret | None = None
    certificate: CertificateSecret | None = None
    oscore: tuple[OscoreSecret, ...] = ()


@dataclass(frozen=True, slots=True)
class AccountPlan:
    """One DM server account and where it goes on the device."""

    account: ServerAccount
    kind: CredentialKind
    uri: str
    security_iid: int
    server_iid: int
    apn_iid: int | None = None
    oscore_iid: int | None = None


@dataclass(frozen=True, slots=True)
class Write:
    """One Bootstrap-Write: an object instance at ``path`` (``/O/I``)."""

    path: Path
    instance: ObjectInstance = field(repr=False)
    optional: bool = False
    """An APN or config write a device without that object may refuse (4.04) harmlessly."""

    def payload(self, content_format: int, model: ObjectModel = BUILTIN_MODEL) -> bytes:
        return encode(content_format, self.instance, self.path, model)


@dataclass(frozen=True, slots=True)
class ProvisioningPlan:
    """Everything one bootstrap writes and records (see the module docstring)."""

    endpoint: str
    policy_name: str
    policy_version: int
    lwm2m_version: str
    accounts: tuple[AccountPlan, ...]
    deletes: tuple[Path, ...]
    writes: tuple[Write, ...]
    credentials: DmCredentials = field(repr=False)
    notes: tuple[str, ...] = ()

    @property
    def dm_uris(self) -> tuple[str, ...]:
        return tuple(a.uri for a in self.accounts)

    @property
    def server_iids(self) -> tuple[int, ...]:
        return tuple(a.server_iid for a in self.accounts)

    def endpoint_security(self, now: float) -> EndpointSecurity:
        """The DM store record that makes exactly these credentials valid."""
        creds = self.credentials
        kinds = {a.kind for a in self.accounts}
        psk = None
        if CredentialKind.PSK in kinds and creds.psk is not None:
            psk = PskCredential(creds.psk.identity, creds.psk.key)
        x509 = None
        if CredentialKind.X509 in kinds and creds.certificate is not None:
            x509 = X509Credential(creds.certificate.subject, creds.certificate.fingerprint)
        return EndpointSecurity(
            endpoint=self.endpoint,
            psk=psk,
            x509=x509,
            allow_nosec=CredentialKind.NOSEC in kinds,
            updated_at=now,
        )

    def pack(self, model: ObjectModel = BUILTIN_MODEL) -> bytes:
        """The LwM2M 1.2 Bootstrap-Pack: every write of the plan in one SenML-CBOR payload."""
        nodes: dict[Path, Node] = {w.path: w.instance for w in self.writes}
        return encode_nodes(ContentFormat.SENML_CBOR, nodes, model)

    def audit_detail(self, fingerprint: Callable[[bytes], str]) -> dict[str, Any]:
        """What the audit trail records: URIs, kinds, identities and fingerprints -- no keys.

        ``fingerprint`` names a key: the store's keyed one
        (``lwm2m.store.secrets.key_fingerprint``); a plain SHA-256 prefix of a short key is
        reversed by trying keys."""
        creds = self.credentials
        detail: dict[str, Any] = {
            "policy": self.policy_name,
            "policy_version": self.policy_version,
            "servers": [
                {"uri": a.uri, "ssid": a.account.short_server_id, "credentials": str(a.kind)}
                for a in self.accounts
            ],
        }
        if creds.psk is not None:
            detail["psk_identity"] = creds.psk.identity
            detail["psk_key_fingerprint"] = fingerprint(creds.psk.key)
        if creds.certificate is not None:
            detail["certificate_serial"] = creds.certificate.serial
            detail["certificate_fingerprint"] = creds.certificate.fingerprint
        return detail


# -- building instances -------------------------------------------------------------------------


def _single(rid: int, data_type: DataType, value: Any) -> SingleResource:
    return SingleResource(rid, Value(data_type, value))


def _security_instance(
    plan: AccountPlan, creds: DmCredentials, version: tuple[int, int]
) -> ObjectInstance:
    resources = [
        _single(0, DataType.STRING, plan.uri),
        _single(1, DataType.BOOLEAN, False),
    ]
    identity, server_key, secret = b"", b"", b""
    if plan.kind is CredentialKind.PSK:
        assert creds.psk is not None
        mode = LwM2MSecurityMode.PSK
        identity, secret = creds.psk.identity.encode("utf-8"), creds.psk.key
    elif plan.kind is CredentialKind.X509:
        assert creds.certificate is not None
        mode = LwM2MSecurityMode.CERTIFICATE
        identity = creds.certificate.certificate
        server_key = creds.certificate.trust_anchor
        secret = creds.certificate.private_key
    else:
        mode = LwM2MSecurityMode.NO_SEC
    resources += [
        _single(2, DataType.INTEGER, int(mode)),
        _single(3, DataType.OPAQUE, identity),
        _single(4, DataType.OPAQUE, server_key),
        _single(5, DataType.OPAQUE, secret),
        _single(10, DataType.INTEGER, plan.account.short_server_id),
    ]
    if version >= (1, 1):
        if plan.kind is CredentialKind.X509:
            resources.append(_single(15, DataType.UNSIGNED_INTEGER, CERTIFICATE_USAGE_TRUST_ANCHOR))
        if plan.oscore_iid is not None:
            resources.append(_single(17, DataType.OBJLNK, ObjLink(OSCORE, plan.oscore_iid)))
    return ObjectInstance.of(plan.security_iid, resources)


def _server_instance(plan: AccountPlan, version: tuple[int, int], binding: str) -> ObjectInstance:
    account = plan.account
    resources = [
        _single(0, DataType.INTEGER, account.short_server_id),
        _single(1, DataType.INTEGER, account.lifetime),
        _single(6, DataType.BOOLEAN, account.notification_storing),
        _single(7, DataType.STRING, binding),
    ]
    if account.default_pmin is not None:
        resources.append(_single(2, DataType.INTEGER, account.default_pmin))
    if account.default_pmax is not None:
        resources.append(_single(3, DataType.INTEGER, account.default_pmax))
    if version >= (1, 1):
        if plan.apn_iid is not None:
            resources.append(_single(10, DataType.OBJLNK, ObjLink(APN, plan.apn_iid)))
        resources.append(_single(16, DataType.BOOLEAN, True))
        if account.retry is not None:
            for rid, value in zip((17, 18, 19, 20), account.retry, strict=True):
                resources.append(_single(rid, DataType.UNSIGNED_INTEGER, value))
    return ObjectInstance.of(plan.server_iid, resources)


def _apn_instance(iid: int, profile: ApnProfile) -> ObjectInstance:
    resources: list[SingleResource | MultipleResource] = [
        _single(0, DataType.STRING, profile.name),
        _single(1, DataType.STRING, profile.apn),
        _single(3, DataType.BOOLEAN, True),
        _single(4, DataType.INTEGER, int(profile.auth_type)),
    ]
    if profile.user is not None:
        resources.append(_single(5, DataType.STRING, profile.user))
    if profile.secret is not None:
        resources.append(_single(6, DataType.STRING, profile.secret))
    if profile.validity:
        values = {
            i: Value(DataType.STRING, v.replace("-", ",")) for i, v in enumerate(profile.validity)
        }
        resources.append(MultipleResource(8, DataType.STRING, values))
    if profile.pdn_type is not None:
        resources.append(_single(24, DataType.INTEGER, int(profile.pdn_type)))
    return ObjectInstance.of(iid, resources)


def _oscore_instance(iid: int, secret: OscoreSecret) -> ObjectInstance:
    return ObjectInstance.of(
        iid,
        [
            _single(0, DataType.OPAQUE, secret.master_secret),
            _single(1, DataType.OPAQUE, secret.sender_id),
            _single(2, DataType.OPAQUE, secret.recipient_id),
        ],
    )


def _config_instance(values: Sequence[tuple[int, ConfigValue]]) -> ObjectInstance:
    definition = BUILTIN_MODEL.get(CONFIG_OBJECT)
    assert definition is not None
    resources: list[SingleResource | MultipleResource] = []
    for rid, value in values:
        resource = definition.resource(rid)
        assert resource is not None
        if isinstance(value, tuple):
            items = {i: Value(resource.type, v) for i, v in enumerate(value)}
            resources.append(MultipleResource(rid, resource.type, items))
        else:
            resources.append(_single(rid, resource.type, value))
    return ObjectInstance.of(0, resources)


def _free_iids(count: int, taken: set[int], start: int = 0) -> list[int]:
    out: list[int] = []
    candidate = start
    while len(out) < count:
        if candidate not in taken:
            out.append(candidate)
        candidate += 1
    return out


def required_kinds(identity: FactoryIdentity, policy: Policy) -> set[CredentialKind]:
    """The credential kinds the policy provisions for this identity."""
    return {s.credentials_for(identity.security_mode) for s in policy.servers}


def check_provisionable(identity: FactoryIdentity, policy: Policy, *, secure_channel: bool) -> None:
    """Refuse plans that cannot work or would leak secrets (:class:`NotProvisionable`)."""
    for server in policy.servers:
        kind = server.credentials_for(identity.security_mode)
        uri = server.uri_for(kind)
        if uri is None:
            raise NotProvisionable(
                f"policy {policy.label} has no coap:// URI for {server.uri} "
                f"(nosec_uri) and {identity.endpoint} is a NoSec identity"
            )
        if kind in (CredentialKind.PSK, CredentialKind.X509) and not secure_channel:
            raise NotProvisionable(
                f"policy {policy.label} provisions {kind} credentials, but {identity.endpoint} "
                "bootstraps without DTLS: the secret key would travel in clear (import the "
                "device as psk/x509, or give it nosec credentials)"
            )


def build_plan(
    identity: FactoryIdentity,
    policy: Policy,
    info: DeviceInfo | None,
    credentials: DmCredentials,
    *,
    lwm2m_version: str,
    secure_channel: bool,
) -> ProvisioningPlan:
    """The provisioning plan for one bootstrap of ``identity`` (see the module docstring).

    Security instance ids avoid the device's bootstrap account: those Discover reported, or,
    without Discover, ids 0 and 1 (where wakaama and Anjay keep it).
    """
    check_provisionable(identity, policy, secure_channel=secure_channel)
    version = version_key(lwm2m_version)
    notes: list[str] = []
    bootstrap_iids = set(info.bootstrap_iids) if info is not None else {0, 1}
    security_iids = _free_iids(len(policy.servers), bootstrap_iids, start=1 if info else 2)
    supports_apn = info is None or info.supports(APN)
    supports_config = info is None or info.supports(CONFIG_OBJECT)
    supports_oscore = info is None or info.supports(OSCORE)

    apn_iids: dict[str, int] = {}
    apn_writes: list[Write] = []
    if policy.apn_profiles:
        if supports_apn:
            for iid, profile in enumerate(policy.apn_profiles):
                apn_iids[profile.name] = iid
                apn_writes.append(Write(Path.of(APN, iid), _apn_instance(iid, profile), True))
        else:
            notes.append("the device has no APN object (11): APN profiles not written")

    accounts: list[AccountPlan] = []
    oscore_writes: list[Write] = []
    oscore_secrets = list(credentials.oscore)
    for index, server in enumerate(policy.servers):
        kind = server.credentials_for(identity.security_mode)
        uri = server.uri_for(kind)
        assert uri is not None
        oscore_iid = None
        if server.oscore:
            if not supports_oscore or version < (1, 1):
                raise NotProvisionable(
                    f"policy {policy.label} uses OSCORE; {identity.endpoint} has no OSCORE object"
                )
            if not oscore_secrets:
                raise NotProvisionable("no OSCORE context was generated for an OSCORE account")
            oscore_iid = len(oscore_writes)
            oscore_writes.append(
                Write(
                    Path.of(OSCORE, oscore_iid), _oscore_instance(oscore_iid, oscore_secrets.pop(0))
                )
            )
        if kind is CredentialKind.PSK and credentials.psk is None:
            raise NotProvisionable("no PSK was generated for a PSK account")
        if kind is CredentialKind.X509 and credentials.certificate is None:
            raise NotProvisionable(
                f"policy {policy.label} provisions a certificate, but no CA is configured"
            )
        accounts.append(
            AccountPlan(
                account=server,
                kind=kind,
                uri=uri,
                security_iid=security_iids[index],
                server_iid=index,
                apn_iid=apn_iids.get(server.apn) if server.apn else None,
                oscore_iid=oscore_iid,
            )
        )

    writes: list[Write] = []
    for plan in accounts:
        writes.append(
            Write(
                Path.of(SECURITY, plan.security_iid), _security_instance(plan, credentials, version)
            )
        )
    writes += oscore_writes
    writes += apn_writes
    for plan in accounts:
        binding = plan.account.binding
        if plan.account.queue_mode and version < (1, 1):
            binding = binding[0] + "Q" + binding[1:]
        writes.append(
            Write(Path.of(SERVER, plan.server_iid), _server_instance(plan, version, binding))
        )
    if policy.config:
        if supports_config:
            writes.append(Write(Path.of(CONFIG_OBJECT, 0), _config_instance(policy.config), True))
        else:
            notes.append("the device has no Fleetloop Config object (32001): config not written")

    if policy.delete:
        deletes = tuple(Path.parse(d) if d != "/" else Path(()) for d in policy.delete)
    else:
        targets = [Path.of(SECURITY), Path.of(SERVER)]
        if apn_writes:
            targets.append(Path.of(APN))
        if oscore_writes:
            targets.append(Path.of(OSCORE))
        deletes = tuple(targets)
    return ProvisioningPlan(
        endpoint=identity.endpoint,
        policy_name=policy.name,
        policy_version=policy.version,
        lwm2m_version=lwm2m_version,
        accounts=tuple(accounts),
        deletes=deletes,
        writes=tuple(writes),
        credentials=credentials,
        notes=tuple(notes),
    )


__all__ = [
    "AccountPlan",
    "CertificateSecret",
    "DmCredentials",
    "OscoreSecret",
    "ProvisioningPlan",
    "PskSecret",
    "Write",
    "build_plan",
    "check_provisionable",
    "required_kinds",
]

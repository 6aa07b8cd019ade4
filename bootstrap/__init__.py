"""Bootstrap server: factory identities, regional policies, credential issuance.

A device is born with a factory identity (imported from the factory's CSV/JSON), bootstraps
over LwM2M to learn which DM server and credentials it gets -- chosen by a versioned,
explainable policy -- and registers. Everything an operator changes is audited in a
hash-chained trail. Design and operation: ``docs/BOOTSTRAP.md``.

::

    from bootstrap import BootstrapConfig, BootstrapServer, CertificateAuthority, Policy

    ca = CertificateAuthority.open(data_dir / "ca")
    bs = await BootstrapServer.start(BootstrapConfig(dm_coaps_uri="coaps://dm:5684"), store,
                                     ca=ca, dm_server=dm)          # ports 5783 / 5784
    report = await bs.import_identities(csv_bytes, source="batch-17.csv", dry_run=True)
    await bs.add_policy(Policy.from_json(text), actor="alice", comment="EU carrier APN")
    (await bs.explain("dev-1")).why                                 # which policy, and why
    (await bs.status("dev-1")).phase                                # never / in-progress / ...
    await bs.rebootstrap("dev-1", move={"region": "us"})            # Execute /1/x/9 via the DM
    await bs.stop()

``bs.manager`` (:class:`BootstrapManager`) has the rest: identities (list, revoke, update),
policy versions and diffs, the audit trail and its verification, certificate revocation and the
CRL. The manager works on a store without a running server, too.
"""

from bootstrap.audit import AuditRecord, ChainVerdict
from bootstrap.ca import CertificateAuthority, IssuedCertificate
from bootstrap.errors import (
    BadBootstrapRequest,
    BootstrapError,
    CaError,
    IdentityConflict,
    ImportFailed,
    InvalidIdentity,
    InvalidPolicy,
    NotProvisionable,
    PolicyConflict,
    RebootstrapFailed,
    UnknownIdentity,
    UnknownPolicy,
)
from bootstrap.identities import (
    BootstrapCredential,
    FactoryIdentity,
    IdentityStatus,
    SecurityMode,
)
from bootstrap.importer import ImportReport, Reason, Rejection
from bootstrap.manager import BootstrapManager, Explanation, identity_dict
from bootstrap.policy import (
    ApnProfile,
    CredentialKind,
    FormatPreference,
    Policy,
    PolicyMatch,
    Selection,
    ServerAccount,
)
from bootstrap.repository import create_schema
from bootstrap.server import BootstrapConfig, BootstrapServer, RebootstrapResult
from bootstrap.state import BootstrapState, Phase

__all__ = [
    "ApnProfile",
    "AuditRecord",
    "BadBootstrapRequest",
    "BootstrapConfig",
    "BootstrapCredential",
    "BootstrapError",
    "BootstrapManager",
    "BootstrapServer",
    "BootstrapState",
    "CaError",
    "CertificateAuthority",
    "ChainVerdict",
    "CredentialKind",
    "Explanation",
    "FactoryIdentity",
    "FormatPreference",
    "IdentityConflict",
    "IdentityStatus",
    "ImportFailed",
    "ImportReport",
    "InvalidIdentity",
    "InvalidPolicy",
    "IssuedCertificate",
    "NotProvisionable",
    "Phase",
    "Policy",
    "PolicyConflict",
    "PolicyMatch",
    "Reason",
    "RebootstrapFailed",
    "RebootstrapResult",
    "Rejection",
    "SecurityMode",
    "Selection",
    "ServerAccount",
    "UnknownIdentity",
    "UnknownPolicy",
    "create_schema",
    "identity_dict",
]

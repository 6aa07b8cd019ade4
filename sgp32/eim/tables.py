"""The eIM's tables, in the store's database on their own metadata (prefix ``eim_``).

Like bootstrap's and lifecycle's tables they share the store's engine and transactions - so a
package, the counter increment that numbered it and its audit record commit together - but
:func:`sgp32.eim.schema.create_schema` creates them; the store does not know this layer.
Conventions follow the store's: ``double precision`` epoch seconds, JSON as text, DER as bytes.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Double,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    Table,
    Text,
    UniqueConstraint,
)

SCHEMA_COMPONENT = "sgp32"
METADATA = MetaData()
_ID = BigInteger().with_variant(Integer, "sqlite")  # SQLite autoincrements INTEGER keys only

EUICC = Table(
    "eim_euicc",
    METADATA,
    Column("eid", Text, primary_key=True),
    Column("eim_id", Text, nullable=False),  # the eIM it is bound to: the one that signs
    Column("euicc_certificate", LargeBinary, nullable=False),
    Column("eum_certificate", LargeBinary, nullable=False),
    # Schema v1 kept the one counter and token of an eUICC here. Since v2 they live per eIM in
    # eim_association (the v1 values were moved there); these columns stay (SQLite cannot drop
    # a column in place everywhere) with the values of the import, and nothing reads them.
    Column("association_token", BigInteger, nullable=False),
    Column("counter_value", BigInteger, nullable=False),
    Column("registered_at", Double, nullable=False),
    Column("tenant", Text),
    Index("ix_eim_euicc_tenant", "tenant"),
)

ASSOCIATION = Table(
    "eim_association",
    METADATA,
    # What an eUICC keeps per associated eIM (SGP.32 EimConfigurationData) and the eIM needs
    # to sign for it, per (EID, eimId): the last counterValue used (only grows; the eUICC
    # refuses one it has seen from that eIM) and the associationToken. A row is written at
    # import (the eIM the eUICC is bound to) and when the eUICC's signed result confirms an
    # addEim; a confirmed deleteEim sets deleted_at. `source` says which: "import",
    # "migrated" (schema v1 -> v2), "addEim <eimTransactionId>".
    Column("eid", Text, primary_key=True),
    Column("eim_id", Text, primary_key=True),
    Column("counter_value", BigInteger, nullable=False),
    Column("association_token", BigInteger, nullable=False),
    Column("source", Text, nullable=False),
    Column("confirmed_at", Double, nullable=False),
    Column("deleted_at", Double),
)

PACKAGE = Table(
    "eim_package",
    METADATA,
    Column("eid", Text, primary_key=True),
    Column("counter_value", BigInteger, primary_key=True),
    Column("transaction_id", LargeBinary, nullable=False),
    Column("eim_id", Text, nullable=False),
    Column("operations", Text, nullable=False),  # JSON list
    Column("request_der", LargeBinary, nullable=False),
    Column("state", Text, nullable=False),
    Column("created_at", Double, nullable=False),
    Column("actor", Text, nullable=False),
    Column("delivered_at", Double),
    Column("result_at", Double),
    Column("result", Text),  # JSON
    UniqueConstraint("eid", "transaction_id", name="uq_eim_package_transaction"),
    Index("ix_eim_package_open", "eid", "state", "counter_value"),
)

RESULT = Table(
    "eim_result",
    METADATA,
    Column("id", _ID, primary_key=True, autoincrement=True),
    Column("eid", Text, nullable=False),
    Column("received_at", Double, nullable=False),
    Column("outcome", Text, nullable=False),
    Column("transaction_id", LargeBinary),
    Column("counter_value", BigInteger),
    Column("der", LargeBinary, nullable=False),
    Column("detail", Text, nullable=False),  # JSON
    Index("ix_eim_result_eid", "eid", "id"),
)

PROFILE = Table(
    "eim_profile",
    METADATA,
    Column("eid", Text, primary_key=True),
    Column("iccid", Text, primary_key=True),
    Column("state", Text, nullable=False),
    Column("fallback", Boolean, nullable=False),
    Column("updated_at", Double, nullable=False),
    Column("carrier", Text),
    Column("note", Text, nullable=False),
)

ENDPOINT = Table(
    "eim_endpoint",
    METADATA,
    # Which LwM2M device carries the eUICC: the state layer's esim dimension is set per
    # endpoint and reached through the eIM by EID. A table of its own (not a column of
    # eim_euicc) so that adding it needed no migration of schema v1.
    Column("eid", Text, primary_key=True),
    Column("endpoint", Text, nullable=False),
    UniqueConstraint("endpoint", name="uq_eim_endpoint_endpoint"),
)

DOWNLOAD_SESSION = Table(
    "eim_download_session",
    METADATA,
    # The indirect-download relay's sessions (SGP.32 3.2.3): the SM-DP+ transactionId the eIM
    # relays for, the SM-DP+ it goes to, the eimTransactionId and activation code of the
    # ProfileDownloadTrigger that started it, and the next ES9+ step. Committed before the IPA
    # gets the answer that lets it take that step, so a restarted eIM relays the rest of the
    # download to the same SM-DP+. A table of its own: schema v1 gains it by create_all.
    Column("transaction_id", LargeBinary, primary_key=True),
    Column("smdp_address", Text, nullable=False),
    Column("eim_transaction_id", LargeBinary),
    Column("eid", Text),
    Column("activation_code", Text),
    Column("step", Text, nullable=False),
    Column("created_at", Double, nullable=False),
    Column("updated_at", Double, nullable=False),
    # what a compact AuthenticateServerResponse leaves out and the eIM puts back: the
    # serverAddress and serverChallenge of serverSigned1, and the ctxParams1 (DER) the eIM
    # generated and sent to the IPA in InitiateAuthenticationOkEsipa
    Column("server_address", Text),
    Column("server_challenge", LargeBinary),
    Column("ctx_params1", LargeBinary),
    Index("ix_eim_download_session_eid", "eid", "created_at"),
)

DOWNLOAD_SESSION_PEER = Table(
    "eim_download_session_peer",
    METADATA,
    # What the SM-DP+ told the eIM in a relayed session that a compact eUICC answer
    # (SGP.32 minimizeEsipaBytes) leaves out and the eIM puts back before the ES9+ call: the
    # smdpOid of the SM-DP+'s CERT.DPauth (InitiateAuthentication's serverCertificate; the
    # eUICC signs it in euiccCancelSessionSigned) and smdpSigned2's bppEuiccOtpk (the otPK a
    # compactEuiccSigned2 omits when the SM-DP+ asked to reuse it). A table of its own, one row
    # per eim_download_session row: schema v1 gains it by create_all.
    Column("transaction_id", LargeBinary, primary_key=True),
    Column("smdp_oid", Text),
    Column("bpp_euicc_otpk", LargeBinary),
)

IPA_DATA = Table(
    "eim_ipa_data",
    METADATA,
    # The last IpaEuiccData the IPA sent for an EID (answer to an IpaEuiccDataRequest): its
    # EUICCInfo2, DeviceInfo and IpaCapabilities are what the eIM needs to generate ctxParams1
    # and to expand a compact AuthenticateServerResponse for the SM-DP+ (indirect download).
    Column("eid", Text, primary_key=True),
    Column("der", LargeBinary, nullable=False),  # DER of IpaEuiccData
    Column("received_at", Double, nullable=False),
)

"""The eIM core (SGP.32 v1.2), sans-IO: eUICC registry, per-EID package queues, counters,
result matching and verification, profile state per EID (docs/SGP32.md, "eIM core").

Everything runs inside one `Ledger` (the records of one transaction): the in-memory ledger for
unit tests and simulations, `sgp32.eim.sql.SqlLedger` for the store. Time comes in as `now`.
"""

from sgp32.eim.config import EimDeployment
from sgp32.eim.core import Eim, Exchange
from sgp32.eim.ledger import Ledger, MemoryLedger
from sgp32.eim.model import (
    EuiccRecord,
    NotificationHandled,
    Outcome,
    PackageDelivered,
    PackageRecord,
    PackageState,
    ProfileRecord,
    ProfileState,
    Refusal,
    ResultAccepted,
    ResultDuplicate,
    ResultRecord,
    ResultRefused,
    UnsignedReason,
)

__all__ = [
    "Eim",
    "EimDeployment",
    "EuiccRecord",
    "Exchange",
    "Ledger",
    "MemoryLedger",
    "NotificationHandled",
    "Outcome",
    "PackageDelivered",
    "PackageRecord",
    "PackageState",
    "ProfileRecord",
    "ProfileState",
    "Refusal",
    "ResultAccepted",
    "ResultDuplicate",
    "ResultRecord",
    "ResultRefused",
    "UnsignedReason",
]

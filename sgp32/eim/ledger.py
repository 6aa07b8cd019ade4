"""Where the eIM core keeps its records: one `Ledger` per transaction.

The core only ever talks to this protocol, so the same logic runs on `MemoryLedger` (unit tests,
simulations) and on the store (`sgp32.eim.sql.SqlLedger`, everything inside one database
transaction: the counter increment, the package and its audit record commit together).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from sgp32.eim.model import EuiccRecord, PackageRecord, PackageState, ProfileRecord, ResultRecord

OPEN_STATES = (PackageState.QUEUED, PackageState.DELIVERED)


class Ledger(Protocol):
    def euicc(self, eid: str) -> EuiccRecord | None: ...

    def add_euicc(self, record: EuiccRecord) -> None: ...

    def next_counter(self, eid: str) -> int:
        """Increment the EID's stored counterValue and return the new value (atomically)."""
        ...

    def add_package(self, package: PackageRecord) -> None: ...

    def next_package(self, eid: str) -> PackageRecord | None:
        """The oldest queued or delivered (unanswered) package of the EID, by counter."""
        ...

    def package(self, eid: str, transaction_id: bytes) -> PackageRecord | None: ...

    def packages(self, eid: str) -> list[PackageRecord]: ...

    def update_package(self, package: PackageRecord) -> None: ...

    def add_result(self, result: ResultRecord) -> None: ...

    def results(self, eid: str) -> list[ResultRecord]: ...

    def profiles(self, eid: str) -> list[ProfileRecord]: ...

    def replace_profiles(self, eid: str, profiles: Sequence[ProfileRecord]) -> None: ...

    def ipa_data(self, eid: str) -> bytes | None:
        """DER of the last IpaEuiccData the EID's IPA sent (None: none yet)."""
        ...

    def set_ipa_data(self, eid: str, der: bytes, now: float) -> None: ...

    def audit(
        self,
        *,
        actor: str,
        action: str,
        eid: str,
        now: float,
        detail: Mapping[str, Any],
        outcome: str = "ok",
        tenant: str | None = None,
    ) -> None: ...


class MemoryLedger:
    """The ledger in dictionaries (not durable); `audit_log` keeps what would be audited."""

    def __init__(self) -> None:
        self._euiccs: dict[str, EuiccRecord] = {}
        self._packages: dict[str, list[PackageRecord]] = {}
        self._results: dict[str, list[ResultRecord]] = {}
        self._profiles: dict[str, list[ProfileRecord]] = {}
        self._ipa_data: dict[str, bytes] = {}
        self.audit_log: list[dict[str, Any]] = []

    def euicc(self, eid: str) -> EuiccRecord | None:
        return self._euiccs.get(eid)

    def add_euicc(self, record: EuiccRecord) -> None:
        self._euiccs[record.eid] = record

    def next_counter(self, eid: str) -> int:
        record = self._euiccs[eid]
        self._euiccs[eid] = dataclasses.replace(record, counter_value=record.counter_value + 1)
        return record.counter_value + 1

    def add_package(self, package: PackageRecord) -> None:
        self._packages.setdefault(package.eid, []).append(package)

    def next_package(self, eid: str) -> PackageRecord | None:
        open_ = [p for p in self._packages.get(eid, []) if p.state in OPEN_STATES]
        return min(open_, key=lambda p: p.counter_value, default=None)

    def package(self, eid: str, transaction_id: bytes) -> PackageRecord | None:
        for p in self._packages.get(eid, []):
            if p.transaction_id == transaction_id:
                return p
        return None

    def packages(self, eid: str) -> list[PackageRecord]:
        return sorted(self._packages.get(eid, []), key=lambda p: p.counter_value)

    def update_package(self, package: PackageRecord) -> None:
        rows = self._packages[package.eid]
        for i, p in enumerate(rows):
            if p.transaction_id == package.transaction_id:
                rows[i] = package

    def add_result(self, result: ResultRecord) -> None:
        self._results.setdefault(result.eid, []).append(result)

    def results(self, eid: str) -> list[ResultRecord]:
        return list(self._results.get(eid, []))

    def profiles(self, eid: str) -> list[ProfileRecord]:
        return sorted(self._profiles.get(eid, []), key=lambda p: p.iccid)

    def replace_profiles(self, eid: str, profiles: Sequence[ProfileRecord]) -> None:
        self._profiles[eid] = list(profiles)

    def ipa_data(self, eid: str) -> bytes | None:
        return self._ipa_data.get(eid)

    def set_ipa_data(self, eid: str, der: bytes, now: float) -> None:
        self._ipa_data[eid] = der

    def audit(
        self,
        *,
        actor: str,
        action: str,
        eid: str,
        now: float,
        detail: Mapping[str, Any],
        outcome: str = "ok",
        tenant: str | None = None,
    ) -> None:
        self.audit_log.append(
            {
                "actor": actor,
                "action": action,
                "eid": eid,
                "at": now,
                "outcome": outcome,
                "tenant": tenant,
                "detail": dict(detail),
            }
        )

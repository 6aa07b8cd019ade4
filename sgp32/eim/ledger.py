"""Where the eIM core keeps its records: one `Ledger` per transaction.

The core only ever talks to this protocol, so the same logic runs on `MemoryLedger` (unit tests,
simulations) and on the store (`sgp32.eim.sql.SqlLedger`, everything inside one database
transaction: the counter increment, the package and its audit record commit together).

Counters and association tokens are kept per (EID, eimId) (`AssociationRecord`), as the eUICC
keeps them; `euicc(eid)` gives those of the eIM the eUICC is bound to.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from sgp32.eim.model import (
    AssociationRecord,
    EuiccRecord,
    PackageRecord,
    PackageState,
    ProfileRecord,
    ResultRecord,
)

OPEN_STATES = (PackageState.QUEUED, PackageState.DELIVERED)


class Ledger(Protocol):
    def euicc(self, eid: str) -> EuiccRecord | None: ...

    def lock_euicc(self, eid: str) -> EuiccRecord | None:
        """`euicc`, its row locked until the transaction ends: a queue and a move of one EID
        (from two processes on one database) serialise on it."""
        ...

    def add_euicc(self, record: EuiccRecord) -> None:
        """Register the eUICC and its association with `record.eim_id` (counter, token)."""
        ...

    def next_counter(self, eid: str, eim_id: str) -> int:
        """Increment the counterValue stored for (EID, eimId) and return it (atomically)."""
        ...

    def association(self, eid: str, eim_id: str) -> AssociationRecord | None: ...

    def associations(self, eid: str) -> list[AssociationRecord]:
        """Every eIM the eUICC is (or was) associated with, by eimId."""
        ...

    def put_association(self, record: AssociationRecord) -> None:
        """Insert or replace the (EID, eimId) association -- except its counter, which only
        grows: a stored counter above `record.counter_value` is kept (atomically)."""
        ...

    def bind(self, eid: str, eim_id: str) -> None:
        """Make `eim_id` the eIM that signs the EID's packages (its association must exist)."""
        ...

    def open_packages(self, eid: str) -> list[PackageRecord]:
        """The queued or delivered (unanswered) packages of `eid`, oldest first."""
        ...

    def euicc_polled(self, eid: str) -> tuple[EuiccRecord | None, bool]:
        """The eUICC (None: unregistered) and whether any package of it is open -- what a
        poll needs, in one lookup (most polls find nothing and end here)."""
        ...

    def top_counter(self, eid: str) -> int:
        """The highest counterValue of any package of the EID, whichever eIM signed it (0)."""
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
        self._associations: dict[tuple[str, str], AssociationRecord] = {}
        self._packages: dict[str, list[PackageRecord]] = {}
        self._results: dict[str, list[ResultRecord]] = {}
        self._profiles: dict[str, list[ProfileRecord]] = {}
        self._ipa_data: dict[str, bytes] = {}
        self.audit_log: list[dict[str, Any]] = []

    def euicc(self, eid: str) -> EuiccRecord | None:
        record = self._euiccs.get(eid)
        if record is None:
            return None
        bound = self._associations[(eid, record.eim_id)]
        return dataclasses.replace(
            record,
            counter_value=bound.counter_value,
            association_token=bound.association_token,
        )

    def lock_euicc(self, eid: str) -> EuiccRecord | None:
        return self.euicc(eid)

    def add_euicc(self, record: EuiccRecord) -> None:
        self._euiccs[record.eid] = record
        self._associations[(record.eid, record.eim_id)] = AssociationRecord(
            record.eid,
            record.eim_id,
            record.counter_value,
            record.association_token,
            "import",
            record.registered_at,
        )

    def next_counter(self, eid: str, eim_id: str) -> int:
        record = self._associations[(eid, eim_id)]
        counter = record.counter_value + 1
        self._associations[(eid, eim_id)] = dataclasses.replace(record, counter_value=counter)
        return counter

    def association(self, eid: str, eim_id: str) -> AssociationRecord | None:
        return self._associations.get((eid, eim_id))

    def associations(self, eid: str) -> list[AssociationRecord]:
        return sorted(
            (a for (e, _), a in self._associations.items() if e == eid), key=lambda a: a.eim_id
        )

    def put_association(self, record: AssociationRecord) -> None:
        known = self._associations.get((record.eid, record.eim_id))
        if known is not None and known.counter_value > record.counter_value:
            record = dataclasses.replace(record, counter_value=known.counter_value)
        self._associations[(record.eid, record.eim_id)] = record

    def bind(self, eid: str, eim_id: str) -> None:
        assert (eid, eim_id) in self._associations
        self._euiccs[eid] = dataclasses.replace(self._euiccs[eid], eim_id=eim_id)

    def open_packages(self, eid: str) -> list[PackageRecord]:
        return [p for p in self.packages(eid) if p.state in OPEN_STATES]

    def euicc_polled(self, eid: str) -> tuple[EuiccRecord | None, bool]:
        return self.euicc(eid), self.next_package(eid) is not None

    def top_counter(self, eid: str) -> int:
        return max((p.counter_value for p in self._packages.get(eid, [])), default=0)

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

"""Which eIMs an eUICC is associated with, and moving its binding to another (SGP.32 v1.2).

An eUICC keeps one EimConfigurationData per associated eIM -- its counterValue and
associationToken among them -- and checks each package's counter against the one of the eIM
that signed it. The eIM keeps the same per (EID, eimId) (`AssociationRecord`) and learns of a
new association only from the eUICC itself: the eUICC's *signed* result of an addEim
(`addEimResult` ok, or the associationToken it made) is what confirms it, a signed
`deleteEimResult ok` ends it, an `updateEimResult ok` carrying a counterValue raises the counter.

The eUICC's binding -- the eIM of this deployment that signs its packages -- moves only to an
eIM that is configured here and that the eUICC confirmed, and only while nothing the old eIM
signed is still open: a package of the old eIM answered after the move would otherwise be
checked against the new eIM's counter. The new eIM's counter jumps to the highest counter of
any package of the EID, so `eim_package` stays numbered per EID (its key) and in queue order;
the eUICC only needs each eIM's counters to grow, gaps are fine.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

from sgp32.eim.ledger import Ledger
from sgp32.eim.model import AssociationRecord, EuiccRecord, PackageRecord
from sgp32.errors import EimError, UnknownEim
from sgp32.packages import DeleteEim, Eco, Psmo, UpdateEim
from sgp32.signing import NO_ASSOCIATION_TOKEN

OK = 0
MAX_COUNTER = 0x7FFFFF
"""The counterValue every eUICC supports (SGP.32: at least up to 8388607)."""


class EimMoveRefused(EimError):
    """The eUICC cannot be moved to that eIM now; the message names the EID and the fix."""


class EimDeleteRefused(EimError):
    """A deleteEim that would cut the eUICC off from the eIM that signs its packages (or from
    its last eIM); the message names the EID and the fix (move it first)."""


def _config(op: dict[str, Any]) -> dict[str, Any]:
    config = op.get("config")
    return config if isinstance(config, dict) else {}


def apply_eco_results(
    ledger: Ledger,
    euicc: EuiccRecord,
    package: PackageRecord,
    results: Sequence[tuple[str, Any]],
    now: float,
) -> list[dict[str, Any]]:
    """Record what a verified, signed package result says about the eUICC's eIMs (results pair
    with the package's operations in order). Returns the changes, for the audit record."""
    changes: list[dict[str, Any]] = []
    source = f"addEim {package.transaction_id.hex()}"
    for op, (name, value) in zip(package.operations, results, strict=False):
        kind = op.get("op")
        if kind == "addEim" and name == "addEimResult":
            config = _config(op)
            outcome, detail = value
            if outcome == "addEimResultCode" and detail != OK:
                continue  # refused (already exists, counter out of range, ...): nothing new
            token = config.get("association_token")
            if outcome == "associationToken":
                token = detail
            elif token is None or token < 0:
                token = NO_ASSOCIATION_TOKEN
            eim_id = str(config["eim_id"])
            counter = int(config.get("counter_value") or 0)
            known = ledger.association(euicc.eid, eim_id)
            if known is not None:
                counter = max(counter, known.counter_value)  # never goes back
            ledger.put_association(
                AssociationRecord(euicc.eid, eim_id, counter, int(token), source, now)
            )
            changes.append({"eim_id": eim_id, "added": True, "counter": counter})
        elif kind == "updateEim" and name == "updateEimResult" and value == OK:
            config = _config(op)
            known = ledger.association(euicc.eid, str(config["eim_id"]))
            wanted = config.get("counter_value")
            if known is not None and wanted is not None and wanted > known.counter_value:
                ledger.put_association(dataclasses.replace(known, counter_value=int(wanted)))
                changes.append({"eim_id": known.eim_id, "counter": int(wanted)})
        elif kind == "deleteEim" and name == "deleteEimResult" and value == OK:
            known = ledger.association(euicc.eid, str(op.get("eim_id")))
            if known is not None and known.active:
                ledger.put_association(dataclasses.replace(known, deleted_at=now))
                changes.append({"eim_id": known.eim_id, "deleted": True})
    return changes


def raise_own_counter(
    ledger: Ledger, euicc: EuiccRecord, operations: Sequence[Psmo | Eco], counter: int
) -> None:
    """An updateEim of the eIM that signs it, setting its counterValue above `counter`: the
    eUICC will expect counters above that value once it ran the package, so the packages
    queued after it -- signed now, before its result is in -- must already be numbered above
    it. Skipping counters costs nothing if the updateEim fails (gaps are fine); a value above
    what every eUICC supports is left to the result (the eUICC may refuse it)."""
    wanted = [
        op.config.counter_value
        for op in operations
        if isinstance(op, UpdateEim)
        and op.config.eim_id == euicc.eim_id
        and op.config.counter_value is not None
    ]
    top = max(wanted, default=0)
    if counter < top <= MAX_COUNTER:
        own = ledger.association(euicc.eid, euicc.eim_id)
        assert own is not None
        ledger.put_association(dataclasses.replace(own, counter_value=top))


def check_delete(ledger: Ledger, euicc: EuiccRecord, operations: Sequence[Psmo | Eco]) -> None:
    """Refuse (`EimDeleteRefused`) a package deleting the eIM the eUICC is bound to, or the
    last eIM it would still be associated with (counting deleteEims already queued). After
    either, every package this deployment signs for it gets the eUICC's *unsigned* error: no
    eIM could reach the eUICC again. Moving the binding first (`delete_old`) is the way."""
    doomed = {op.eim_id for op in operations if isinstance(op, DeleteEim)}
    if not doomed:
        return
    eid = euicc.eid
    fix = (
        f"move it to another eIM it confirmed first: `fleetloop esim eim move OTHER {eid} "
        f"--delete-old` (POST /v1/esim/euiccs/{eid}/eim with delete_old) queues this deleteEim "
        "signed by the new eIM"
    )
    if euicc.eim_id in doomed:
        raise EimDeleteRefused(
            f"EID {eid} is bound to eIM {euicc.eim_id!r}: deleting it from the eUICC would "
            f"leave no eIM able to sign its packages; {fix}"
        )
    pending = {
        str(op.get("eim_id"))
        for p in ledger.open_packages(eid)
        for op in p.operations
        if op.get("op") == "deleteEim"
    }
    remaining = [
        a.eim_id
        for a in ledger.associations(eid)
        if a.active and a.eim_id not in doomed and a.eim_id not in pending
    ]
    if not remaining:
        raise EimDeleteRefused(
            f"EID {eid}: deleting eIM {', '.join(sorted(doomed))} would leave the eUICC "
            f"associated with no eIM at all (it no longer trusts its bound eIM "
            f"{euicc.eim_id!r}); {fix}"
        )


def check_move(
    ledger: Ledger, euicc: EuiccRecord, eim_id: str, configured: Sequence[str]
) -> AssociationRecord:
    """The association to move `euicc` to; `UnknownEim` for an eIM not configured here,
    `EimMoveRefused` for one the eUICC has not confirmed or while packages are open."""
    eid = euicc.eid
    if eim_id not in configured:
        raise UnknownEim(
            f"EID {eid}: {eim_id!r} is no eIM identity of this deployment (configured: "
            f"{', '.join(sorted(configured))}); add it with --eim-identities or pick one of "
            "GET /v1/esim/eims"
        )
    if eim_id == euicc.eim_id:
        raise EimMoveRefused(f"EID {eid} is already bound to eIM {eim_id!r}; nothing to move")
    target = ledger.association(eid, eim_id)
    if target is None or not target.active:
        pending = any(
            op.get("op") == "addEim" and _config(op).get("eim_id") == eim_id
            for p in ledger.open_packages(eid)
            for op in p.operations
        )
        why = "was deleted from it (deleteEim)" if target is not None else "was never confirmed"
        fix = (
            "its addEim is still waiting for the eUICC's result: move once it is in"
            if pending
            else f"queue `fleetloop esim eim add {eim_id} {eid}` and move once the eUICC's "
            "signed addEim result is in"
        )
        raise EimMoveRefused(f"EID {eid}: the eUICC's association with eIM {eim_id!r} {why}; {fix}")
    open_ = ledger.open_packages(eid)
    if open_:
        numbers = ", ".join(f"#{p.counter_value}" for p in open_[:10])
        raise EimMoveRefused(
            f"EID {eid}: {len(open_)} package(s) of eIM {euicc.eim_id!r} still wait for the "
            f"eUICC's result ({numbers}); move once they are answered "
            f"(`fleetloop esim show {eid}`)"
        )
    return target


def move(
    ledger: Ledger,
    euicc: EuiccRecord,
    target: AssociationRecord,
    *,
    now: float,
    actor: str,
) -> EuiccRecord:
    """Bind the eUICC to `target`'s eIM (checked by `check_move`) and audit it."""
    counter = max(target.counter_value, ledger.top_counter(euicc.eid))
    ledger.put_association(dataclasses.replace(target, counter_value=counter))
    ledger.bind(euicc.eid, target.eim_id)
    ledger.audit(
        actor=actor,
        action="esim.euicc.move",
        eid=euicc.eid,
        now=now,
        tenant=euicc.tenant,
        detail={
            "from": euicc.eim_id,
            "to": target.eim_id,
            "counter": counter,
            "confirmed_by": target.source,
        },
    )
    moved = ledger.euicc(euicc.eid)
    assert moved is not None
    return moved

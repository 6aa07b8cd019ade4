"""The eIM an eUICC is bound to is never deleted from under it, and a package the eUICC refuses
unsigned ends failed instead of being delivered forever (SQLite and PostgreSQL, against the
simulated eUICC):

* queueing deleteEim of the bound eIM -- or of the last eIM the eUICC would still know -- is
  refused (`EimDeleteRefused`) naming the EID and the fix (`fleetloop esim eim move`), and
  nothing is queued or numbered; with the move's `delete_old` the same deleteEim goes through;
* euiccPackageErrorUnsigned (no error code in SGP.32: the eUICC does not know the eIM or its
  signature does not verify) for a delivered package fails it with a typed reason
  (`UnsignedReason`) and a message naming the EID and what to do, recorded, audited, answered
  so the IPA drops it; the next poll finds nothing;
* one naming no delivered package (another eIM, an answered one) only is recorded as
  `unauthenticated` and changes nothing.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from lwm2m.store import Store
from sgp32.asn1 import decode, decode_from_eim, encode_to_eim
from sgp32.eim import PackageState, ResultAccepted, ResultRefused, UnsignedReason
from sgp32.eim.associations import EimDeleteRefused
from sgp32.eim.schema import create_schema
from sgp32.eim.sql import SqlLedger
from sgp32.identifiers import eid_to_bytes
from sgp32.packages import AddEim, DeleteEim, EimConfiguration, Enable, GetRat
from tests.sgp32.pki import MadePki
from tests.sgp32.test_eim_move import EIM_B, spki, two_eims
from tests.sgp32.test_eim_store import settle, sql_step
from tests.sgp32.world import EIM_ID, NEW_ICCID, T0


@pytest.fixture
def eim_store(store: Store) -> Store:
    create_schema(store, now=0)
    return store


def unsigned(eid: str, eim_id: str, tid: bytes | None) -> bytes:
    body: dict[str, Any] = {"eimId": eim_id}
    if tid is not None:
        body["eimTransactionId"] = tid
    result = ("euiccPackageErrorUnsigned", body)
    message = {"eidValue": eid_to_bytes(eid), "eimPackageResult": ("euiccPackageResult", result)}
    return encode_to_eim("provideEimPackageResult", message)


def test_the_bound_eim_cannot_be_deleted_until_the_euicc_moved(
    pki: MadePki, eim_store: Store
) -> None:
    store = eim_store
    world, second = two_eims(pki)
    euicc, ipa = world.device(1)
    eid = euicc.eid

    def do(fn: Any) -> Any:
        with store.transaction() as tx:
            return fn(SqlLedger(tx, store.audit))

    def queue(ops: list[Any]) -> Any:
        return do(lambda led: world.eim.queue(led, eid, ops, now=T0, actor="alice"))

    do(lambda led: world.register(led, euicc))
    with pytest.raises(
        EimDeleteRefused, match=rf"EID {eid} is bound to eIM '{EIM_ID}'.*esim eim move"
    ):
        queue([DeleteEim(EIM_ID)])
    with pytest.raises(EimDeleteRefused, match=rf"EID {eid}"):
        queue([GetRat(), DeleteEim(EIM_ID)])  # anywhere in the package
    assert do(lambda led: led.packages(eid)) == []  # nothing queued, no counter taken
    assert do(lambda led: led.association(eid, EIM_ID)).counter_value == 0

    queue([AddEim(EimConfiguration(EIM_B, public_key_der=spki(second), association_token=-1))])
    settle(world, store, ipa, T0 + 1)
    queue([DeleteEim(EIM_B)])  # another eIM: fine, the bound one stays
    with pytest.raises(EimDeleteRefused, match="bound to"):
        queue([DeleteEim(EIM_ID)])
    settle(world, store, ipa, T0 + 2)
    assert set(euicc.eims) == {EIM_ID}

    # a store from before this guard: the bound eIM's deleteEim went through. Deleting the
    # one eIM the eUICC still knows is refused too (it would know none)
    queue([AddEim(EimConfiguration(EIM_B, public_key_der=spki(second), association_token=-1))])
    settle(world, store, ipa, T0 + 3)
    own = do(lambda led: led.association(eid, EIM_ID))
    do(lambda led: led.put_association(dataclasses.replace(own, deleted_at=T0 + 3)))
    with pytest.raises(EimDeleteRefused, match=rf"EID {eid}: deleting eIM {EIM_B}.*no eIM at all"):
        queue([DeleteEim(EIM_B)])
    do(lambda led: led.put_association(dataclasses.replace(own, deleted_at=None)))

    moved, package = do(
        lambda led: world.eim.move_euicc(
            led, eid, EIM_B, now=T0 + 4, actor="alice", delete_old=True
        )
    )
    assert moved.eim_id == EIM_B and package.operations[0] == {"op": "deleteEim", "eim_id": EIM_ID}
    settle(world, store, ipa, T0 + 5)
    assert set(euicc.eims) == {EIM_B}


def test_an_unsigned_refusal_fails_the_package_once(pki: MadePki, eim_store: Store) -> None:
    store = eim_store
    world, _ = two_eims(pki)
    euicc, ipa = world.device(1)
    eid = euicc.eid
    with store.transaction() as tx:
        world.register(SqlLedger(tx, store.audit), euicc)
    del euicc.eims[EIM_ID]  # the eUICC lost the eIM behind our back (another eIM, a reset)
    with store.transaction() as tx:
        package = world.eim.queue(
            SqlLedger(tx, store.audit), eid, [Enable(NEW_ICCID, rollback=True)], now=T0, actor="a"
        )
    exchanges = settle(world, store, ipa, T0 + 1)
    assert ipa.refused and ipa.refused[0][0] == "euiccPackageErrorUnsigned"
    outcomes = [o for e in exchanges for o in e.outcomes]
    assert (
        ResultAccepted(
            eid,
            1,
            package.transaction_id,
            "euiccPackageErrorUnsigned",
            (),
            None,
            PackageState.FAILED,
        )
        in outcomes
    )
    answered = next(e for e in exchanges if any(isinstance(o, ResultAccepted) for o in e.outcomes))
    assert answered.reply is not None
    assert decode_from_eim(answered.reply).body == ("emptyResponse", {})  # the IPA drops it
    assert not ipa.pending and ipa.last_get_answer == "eimPackageError:1"
    assert sql_step(world, store, ipa, T0 + 2) is not None  # polls again: nothing to deliver
    assert ipa.last_get_answer == "eimPackageError:1"

    with store.transaction() as tx:
        ledger = SqlLedger(tx, store.audit)
        (failed,) = ledger.packages(eid)
        assert failed.state is PackageState.FAILED and failed.result is not None
        assert failed.result["reason"] == UnsignedReason.EIM_NOT_ACCEPTED.value
        message = failed.result["message"]
        assert f"EID {eid}" in message and "fleetloop esim eim move" in message
        assert [r.outcome for r in ledger.results(eid)] == ["unsigned_error"]
        entries = store.audit.list(tx, subject=f"eid:{eid}", limit=100)
    result_entry = next(e for e in entries if e.action == "esim.result")
    assert result_entry.outcome == "error"
    assert result_entry.detail["reason"] == "eim_not_accepted_by_euicc"
    assert result_entry.detail["transaction_id"] == package.transaction_id.hex()


def test_unsigned_errors_end_only_the_delivered_package_they_name(
    pki: MadePki, eim_store: Store
) -> None:
    store = eim_store
    world, _ = two_eims(pki)
    euicc, _ipa = world.device(1)
    eid = euicc.eid

    def do(fn: Any) -> Any:
        with store.transaction() as tx:
            return fn(SqlLedger(tx, store.audit))

    do(lambda led: world.register(led, euicc))
    queued = do(lambda led: world.eim.queue(led, eid, [GetRat()], now=T0, actor="a"))
    # not delivered yet: nothing to end
    exchange = do(
        lambda led: world.eim.handle(led, unsigned(eid, EIM_ID, queued.transaction_id), T0)
    )
    assert isinstance(exchange.outcomes[0], ResultRefused)
    poll = encode_to_eim("getEimPackageRequest", {"eidValue": eid_to_bytes(eid)})
    do(lambda led: world.eim.handle(led, poll, T0 + 1))
    # another eIM's name on it: not this package's refusal
    exchange = do(
        lambda led: world.eim.handle(led, unsigned(eid, EIM_B, queued.transaction_id), T0)
    )
    assert isinstance(exchange.outcomes[0], ResultRefused)
    assert do(lambda led: led.packages(eid))[0].state is PackageState.DELIVERED

    # the bound eIM was deleted on the eUICC (a store from before the guard): the reason says
    # so, and without an eimTransactionId the one delivered package of that eIM is meant
    own = do(lambda led: led.association(eid, EIM_ID))
    do(lambda led: led.put_association(dataclasses.replace(own, deleted_at=T0)))
    exchange = do(lambda led: world.eim.handle(led, unsigned(eid, EIM_ID, None), T0 + 2))
    assert isinstance(exchange.outcomes[0], ResultAccepted)
    (failed,) = do(lambda led: led.packages(eid))
    assert failed.state is PackageState.FAILED and failed.result is not None
    assert failed.result["reason"] == UnsignedReason.EIM_DELETED.value
    assert "no longer knows" in failed.result["message"]
    # the same error again: the package has ended, nothing changes
    exchange = do(
        lambda led: world.eim.handle(led, unsigned(eid, EIM_ID, queued.transaction_id), T0 + 3)
    )
    assert isinstance(exchange.outcomes[0], ResultRefused)
    assert [r.outcome for r in do(lambda led: led.results(eid))] == [
        "unauthenticated",
        "unauthenticated",
        "unsigned_error",
        "unauthenticated",
    ]
    signed = decode("EuiccPackageRequest", failed.request_der)["euiccPackageSigned"]
    assert signed["eimId"] == EIM_ID

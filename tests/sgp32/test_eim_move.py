"""Moving an eUICC to another eIM of the deployment after addEim (SGP.32 v1.2), on the store
(SQLite and PostgreSQL), against the simulated eUICC that keeps one counter and token per eIM:

* the eUICC's signed addEim result (with the associationToken it made) records the
  association; only then may the operator move the binding, never while a package of the
  old eIM is open, never to an eIM not configured or not confirmed (typed refusals naming
  the EID and the fix);
* after the move packages carry the new eimId, its own counter and its token, the eUICC
  accepts them, results verify with the new token;
* a replay of an old-eIM package after the move is refused by the eUICC, and its signed
  refusal (or unsigned one, once deleteEim went through) is matched, recorded and audited;
* a v1 store (one counter per EID) is migrated in place: the counter moves to the eUICC's eIM.
"""

from __future__ import annotations

import contextlib
import dataclasses
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import delete, select, update

from lwm2m.store import SchemaMismatch, Store
from lwm2m.store.tables import SCHEMA_VERSION_TABLE
from sgp32.asn1 import decode, encode_to_eim
from sgp32.eim import (
    Eim,
    EimDeployment,
    MemoryLedger,
    PackageState,
    ResultDuplicate,
    ResultRefused,
)
from sgp32.eim.associations import EimMoveRefused
from sgp32.eim.schema import SCHEMA_VERSION, create_schema
from sgp32.eim.sql import SqlLedger
from sgp32.eim.tables import ASSOCIATION, EUICC
from sgp32.errors import UnknownEim
from sgp32.identifiers import eid_to_bytes
from sgp32.packages import (
    AddEim,
    EimConfiguration,
    Enable,
    GetRat,
    ListEim,
    SetFallbackAttribute,
    UpdateEim,
)
from sgp32.signing import EimIdentity
from simulators.esim.euicc import EimAssociation, SimEuicc
from tests.sgp32.pki import MadePki
from tests.sgp32.test_eim_store import settle
from tests.sgp32.world import EIM_ID, NEW_ICCID, T0, World, make_world, run_until_idle

EIM_B = "eim-b.fleetloop.test"


def two_eims(pki: MadePki) -> tuple[World, EimIdentity]:
    """A world whose eIM runs two identities: EIM_ID (the default) and EIM_B."""
    world = make_world(pki)
    second = EimIdentity(EIM_B, ec.generate_private_key(ec.SECP256R1()))
    numbers = iter(range(1, 10**9))
    world.eim = Eim(
        EimDeployment.of([world.identity, second], [pki.ci]),
        random_bytes=lambda n: next(numbers).to_bytes(n, "big"),
    )
    return world, second


def spki(identity: EimIdentity) -> bytes:
    return identity.public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def result_message(eid: str, result: Any) -> bytes:
    body = {"eidValue": eid_to_bytes(eid), "eimPackageResult": ("euiccPackageResult", result)}
    return encode_to_eim("provideEimPackageResult", body)


@pytest.fixture
def eim_store(store: Store) -> Store:
    create_schema(store, now=0)
    return store


def test_move_after_a_confirmed_add_eim(pki: MadePki, eim_store: Store) -> None:
    store = eim_store
    world, second = two_eims(pki)
    euicc, ipa = world.device(1)
    eid = euicc.eid

    def ledger_do(fn: Any) -> Any:
        with store.transaction() as tx:
            return fn(SqlLedger(tx, store.audit))

    def queue(ops: list[Any]) -> Any:
        return ledger_do(lambda led: world.eim.queue(led, eid, ops, now=T0, actor="alice"))

    def move(eim_id: str, delete_old: bool = False) -> Any:
        return ledger_do(
            lambda led: world.eim.move_euicc(
                led, eid, eim_id, now=T0 + 5, actor="alice", delete_old=delete_old
            )
        )

    ledger_do(lambda led: world.register(led, euicc))
    queue([GetRat()])
    queue([SetFallbackAttribute(NEW_ICCID)])
    add = AddEim(EimConfiguration(EIM_B, public_key_der=spki(second), association_token=-1))
    queue([add])
    with pytest.raises(EimMoveRefused, match=rf"EID {eid}.*{EIM_B}.*still waiting"):
        move(EIM_B)  # the addEim is queued, not confirmed
    settle(world, store, ipa, T0 + 1)
    assert euicc.eims[EIM_B].association_token == 1  # the eUICC made the token

    last_of_a = queue([ListEim()])  # #4 under the first eIM, delivered and not answered yet
    with pytest.raises(EimMoveRefused, match=rf"EID {eid}: 1 package.*{EIM_ID}.*#4"):
        move(EIM_B)
    settle(world, store, ipa, T0 + 2)
    with pytest.raises(UnknownEim, match=rf"EID {eid}.*'eim\.unknown'.*--eim-identities"):
        move("eim.unknown")
    with pytest.raises(EimMoveRefused, match="already bound"):
        move(EIM_ID)

    moved, delete_package = move(EIM_B, delete_old=True)
    assert (moved.eim_id, moved.association_token) == (EIM_B, 1)
    assert delete_package.eim_id == EIM_B and delete_package.counter_value == 5
    signed = decode("EuiccPackageRequest", delete_package.request_der)["euiccPackageSigned"]
    assert (signed["eimId"], signed["counterValue"]) == (EIM_B, 5)
    assert signed["euiccPackage"] == ("ecoList", [("deleteEim", {"eimId": EIM_ID})])

    # a replay of the old eIM's package #4, while the eUICC still trusts that eIM: it refuses
    # it, signed with the old eIM's token; the eIM matches it to #4, records and audits it
    replayed = euicc.load_package(decode("EuiccPackageRequest", last_of_a.request_der))
    assert replayed[0] == "euiccPackageErrorSigned"
    assert replayed[1]["euiccPackageErrorDataSigned"]["euiccPackageErrorCode"] == 4
    exchange = ledger_do(lambda led: world.eim.handle(led, result_message(eid, replayed), T0 + 6))
    assert exchange.outcomes == (ResultDuplicate(eid, last_of_a.transaction_id),)

    settle(world, store, ipa, T0 + 7)  # the deleteEim, signed by the new eIM, runs
    assert set(euicc.eims) == {EIM_B} and euicc.eims[EIM_B].counter_value == 5
    queue([Enable(NEW_ICCID, rollback=True)])
    settle(world, store, ipa, T0 + 8)
    assert euicc.eims[EIM_B].counter_value == 6 and euicc.enabled is not None
    assert euicc.enabled.iccid == NEW_ICCID
    with pytest.raises(EimMoveRefused, match=rf"EID {eid}.*{EIM_ID}.*deleted"):
        move(EIM_ID)

    # once the old eIM is gone the eUICC cannot even say who sent the replay: unsigned
    again = euicc.load_package(decode("EuiccPackageRequest", last_of_a.request_der))
    assert again[0] == "euiccPackageErrorUnsigned"
    refused = ledger_do(lambda led: world.eim.handle(led, result_message(eid, again), T0 + 9))
    assert isinstance(refused.outcomes[0], ResultRefused)

    with store.transaction() as tx:
        ledger = SqlLedger(tx, store.audit)
        packages = ledger.packages(eid)
        assert [(p.counter_value, p.eim_id, p.state) for p in packages] == [
            (1, EIM_ID, PackageState.DONE),
            (2, EIM_ID, PackageState.DONE),
            (3, EIM_ID, PackageState.DONE),
            (4, EIM_ID, PackageState.DONE),
            (5, EIM_B, PackageState.DONE),
            (6, EIM_B, PackageState.DONE),
        ]
        assocs = {a.eim_id: a for a in ledger.associations(eid)}
        assert (assocs[EIM_ID].counter_value, assocs[EIM_ID].active) == (4, False)
        assert (assocs[EIM_B].counter_value, assocs[EIM_B].association_token) == (6, 1)
        assert assocs[EIM_B].source == f"addEim {packages[2].transaction_id.hex()}"
        record = ledger.euicc(eid)
        assert record is not None and (record.eim_id, record.counter_value) == (EIM_B, 6)
        outcomes = [r.outcome for r in ledger.results(eid)]
        assert outcomes[-1] == "unauthenticated" and "duplicate" in outcomes
        entries = store.audit.list(tx, subject=f"eid:{eid}", limit=1000)
    actions = [(e.action, e.outcome) for e in entries]
    assert ("esim.euicc.move", "ok") in actions
    assert ("esim.result", "duplicate") in actions
    assert ("esim.result", "unauthenticated") in actions
    move_entry = next(e for e in entries if e.action == "esim.euicc.move")
    assert move_entry.detail["from"] == EIM_ID and move_entry.detail["to"] == EIM_B
    assert move_entry.actor == "alice"


def test_an_eim_the_euicc_did_not_confirm_is_no_move_target(pki: MadePki, eim_store: Store) -> None:
    """The eUICC may well trust the other eIM already (provisioned at the factory): what
    counts is its signed addEim result. One that refuses (associatedEimAlreadyExists)
    confirms nothing -- the eIM does not know its counter or token."""
    store = eim_store
    world, second = two_eims(pki)
    euicc, ipa = world.device(1)
    euicc.eims[EIM_B] = EimAssociation(EIM_B, second.public_key, counter_value=9)
    with store.transaction() as tx:
        world.register(SqlLedger(tx, store.audit), euicc)
    with store.transaction() as tx, pytest.raises(EimMoveRefused, match="never confirmed"):
        world.eim.move_euicc(SqlLedger(tx, store.audit), euicc.eid, EIM_B, now=T0, actor="a")
    with store.transaction() as tx:
        add = AddEim(EimConfiguration(EIM_B, public_key_der=spki(second)))
        world.eim.queue(SqlLedger(tx, store.audit), euicc.eid, [add], now=T0, actor="a")
    settle(world, store, ipa, T0 + 1)
    with store.transaction() as tx:
        ledger = SqlLedger(tx, store.audit)
        result = ledger.packages(euicc.eid)[0].result
        assert result is not None
        assert result["results"] == [["addEimResult", ["addEimResultCode", 2]]]
        assert [a.eim_id for a in ledger.associations(euicc.eid)] == [EIM_ID]
        with pytest.raises(EimMoveRefused, match=rf"EID {euicc.eid}.*fleetloop esim eim add"):
            world.eim.move_euicc(ledger, euicc.eid, EIM_B, now=T0, actor="a")


def test_an_association_counter_never_goes_back(pki: MadePki, eim_store: Store) -> None:
    """put_association raises the counter in the statement itself and never lowers it: a
    value read before another process's increment cannot overwrite that increment."""
    world = make_world(pki)
    euicc, _ = world.device(1)
    for ledger_of in ("memory", "store"):
        memory = MemoryLedger()
        with eim_store.transaction() as tx:
            ledger: Any = memory if ledger_of == "memory" else SqlLedger(tx, eim_store.audit)
            if ledger_of == "memory" or ledger.euicc(euicc.eid) is None:
                world.register(ledger, euicc)
            stale = ledger.association(euicc.eid, EIM_ID)
            for _ in range(3):
                ledger.next_counter(euicc.eid, EIM_ID)
            ledger.put_association(dataclasses.replace(stale, association_token=9))
            kept = ledger.association(euicc.eid, EIM_ID)
            assert (kept.counter_value, kept.association_token) == (3, 9), ledger_of
            ledger.put_association(dataclasses.replace(stale, counter_value=7))
            assert ledger.association(euicc.eid, EIM_ID).counter_value == 7, ledger_of


def test_a_v1_store_is_migrated_in_place(pki: MadePki, store: Store) -> None:
    """Schema v1 kept one counter per EID in eim_euicc: v2 moves it to the eUICC's eIM, so
    the next package continues from it (never reuses one)."""
    world = make_world(pki)
    euicc: SimEuicc
    euicc, _ = world.device(1)
    create_schema(store, now=0)
    with store.transaction() as tx:
        world.register(SqlLedger(tx, store.audit), euicc)
        # what a v1 database looks like: the counter in eim_euicc, no eim_association
        tx.execute(update(EUICC).values(counter_value=7, association_token=3))
        tx.execute(delete(ASSOCIATION))
        tx.execute(
            update(SCHEMA_VERSION_TABLE)
            .where(SCHEMA_VERSION_TABLE.c.component == "sgp32")
            .values(version=1)
        )
    create_schema(store, now=1)
    create_schema(store, now=2)  # idempotent
    with store.transaction() as tx:
        version = tx.execute(
            select(SCHEMA_VERSION_TABLE.c.version).where(
                SCHEMA_VERSION_TABLE.c.component == "sgp32"
            )
        ).scalar_one()
        assert version == SCHEMA_VERSION == 2
        ledger = SqlLedger(tx, store.audit)
        (migrated,) = ledger.associations(euicc.eid)
        assert (migrated.eim_id, migrated.counter_value, migrated.association_token) == (
            EIM_ID,
            7,
            3,
        )
        assert migrated.source == "migrated"
        package = world.eim.queue(ledger, euicc.eid, [GetRat()], now=T0, actor="a")
        assert package.counter_value == 8
        tx.execute(
            update(SCHEMA_VERSION_TABLE)
            .where(SCHEMA_VERSION_TABLE.c.component == "sgp32")
            .values(version=3)
        )
    with pytest.raises(SchemaMismatch, match="eIM schema v3"):
        create_schema(store, now=3)


EIM_C = "eim-c.fleetloop.test"
ACTIONS = st.lists(
    st.one_of(
        st.tuples(st.just("queue")),
        st.tuples(st.just("settle")),
        st.tuples(st.just("add"), st.sampled_from([EIM_ID, EIM_B, EIM_C]), st.booleans()),
        st.tuples(
            st.just("update"),
            st.sampled_from([EIM_ID, EIM_B, EIM_C]),
            st.integers(min_value=0, max_value=40),
        ),
        st.tuples(st.just("move"), st.sampled_from([EIM_ID, EIM_B, EIM_C]), st.booleans()),
    ),
    min_size=1,
    max_size=14,
)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(actions=ACTIONS)
def test_any_mix_of_eim_configuration_and_moves_keeps_the_euicc_accepting(
    pki: MadePki, actions: list[tuple[Any, ...]]
) -> None:
    """Whatever operators do -- queue, addEim/updateEim of any of three eIMs (with counters
    up and down), moves with and without deleteEim, answered or not -- the eUICC never
    refuses a package the eIM signed (no replayed or stale counter, no unknown key or token),
    each eIM's counters only grow, packages stay numbered per EID in queue order, and the
    eIM's counters agree with what the eUICC keeps."""
    world = make_world(pki)
    keys = {EIM_ID: world.identity}
    for eim_id in (EIM_B, EIM_C):
        keys[eim_id] = EimIdentity(eim_id, ec.generate_private_key(ec.SECP256R1()))
    numbers = iter(range(1, 10**9))
    world.eim = Eim(
        EimDeployment.of(list(keys.values()), [pki.ci]),
        random_bytes=lambda n: next(numbers).to_bytes(n, "big"),
    )
    ledger = MemoryLedger()
    euicc, ipa = world.device(1)
    world.register(ledger, euicc)
    for n, action in enumerate(actions):
        now = T0 + n
        kind = action[0]
        if kind == "queue":
            world.eim.queue(ledger, euicc.eid, [GetRat()], now=now, actor="a")
        elif kind == "settle":
            run_until_idle(world, ledger, ipa, now, limit=200)
        elif kind == "add":
            token = -1 if action[2] else None
            config = EimConfiguration(
                action[1], public_key_der=spki(keys[action[1]]), association_token=token
            )
            world.eim.queue(ledger, euicc.eid, [AddEim(config)], now=now, actor="a")
        elif kind == "update":
            config = EimConfiguration(action[1], counter_value=action[2])
            world.eim.queue(ledger, euicc.eid, [UpdateEim(config)], now=now, actor="a")
        else:
            with contextlib.suppress(EimMoveRefused, UnknownEim):  # refusals are tested above
                world.eim.move_euicc(
                    ledger, euicc.eid, action[1], now=now, actor="a", delete_old=action[2]
                )
    run_until_idle(world, ledger, ipa, T0 + len(actions), limit=200)
    assert ipa.refused == []
    packages = ledger.packages(euicc.eid)
    assert all(p.state == PackageState.DONE for p in packages)
    # numbered per EID too (the store's key), in the order they were queued
    assert len({p.counter_value for p in packages}) == len(packages)
    assert [p.created_at for p in packages] == sorted(p.created_at for p in packages)
    by_eim: dict[str, list[int]] = {}
    for p in packages:
        by_eim.setdefault(p.eim_id, []).append(p.counter_value)
    for eim_id, counters in by_eim.items():
        assert counters == sorted(set(counters))
        association = ledger.association(euicc.eid, eim_id)
        assert association is not None and association.counter_value >= counters[-1]
    record = ledger.euicc(euicc.eid)
    assert record is not None
    on_card = euicc.eims.get(record.eim_id)
    if on_card is not None:  # unless the operator deleted the bound eIM itself
        assert record.counter_value >= on_card.counter_value
        assert record.association_token == on_card.association_token

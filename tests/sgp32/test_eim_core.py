"""The eIM core in memory against the simulated eUICC and IPA: queue, deliver, verify, match,
profile state, and every refusal as a typed outcome."""

from __future__ import annotations

import dataclasses

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from sgp32.asn1 import decode_from_eim, encode_to_eim
from sgp32.eim import (
    MemoryLedger,
    NotificationHandled,
    PackageDelivered,
    PackageState,
    ProfileRecord,
    ProfileState,
    Refusal,
    ResultAccepted,
    ResultDuplicate,
    ResultRefused,
)
from sgp32.eim.profiles import apply_results
from sgp32.errors import CertificateChainError, EuiccConflict, UnknownEuicc
from sgp32.identifiers import eid_to_bytes
from sgp32.packages import (
    AddEim,
    Disable,
    EimConfiguration,
    Enable,
    ListEim,
    SetFallbackAttribute,
    UnsetFallbackAttribute,
    UpdateEim,
)
from sgp32.signing import EimIdentity, sign_euicc_package, sign_euicc_package_result
from tests.sgp32.pki import MadePki, make_pki
from tests.sgp32.world import (
    EIM_ID,
    NEW_CARRIER,
    NEW_ICCID,
    OLD_CARRIER,
    OLD_ICCID,
    T0,
    World,
    make_world,
    run_until_idle,
    step,
)


@pytest.fixture
def world(pki: MadePki) -> World:
    return make_world(pki)


def states(ledger: MemoryLedger, eid: str) -> dict[str, tuple[str, bool, str]]:
    return {p.iccid: (p.state.value, p.fallback, p.note) for p in ledger.profiles(eid)}


def test_registration_verifies_the_chain_to_the_configured_ci(world: World) -> None:
    ledger = MemoryLedger()
    euicc, _ = world.device(1)
    world.register(ledger, euicc)
    record = ledger.euicc(euicc.eid)
    assert record is not None and record.counter_value == 0 and record.eim_id == EIM_ID
    world.register(ledger, euicc)  # same certificate again: a no-op
    other, _ = make_world(world.pki).device(1)  # same EID, another key and certificate
    with pytest.raises(EuiccConflict, match=euicc.eid):
        world.register(ledger, other)
    stranger = make_world(make_pki())  # its own CI, not the one configured
    foreign, _ = stranger.device(2)
    with pytest.raises(CertificateChainError, match="not issued by"):
        world.register(ledger, foreign)
    assert [a["action"] for a in ledger.audit_log] == ["esim.euicc.register"]


def test_every_package_gets_the_next_counter_and_its_own_transaction_id(world: World) -> None:
    ledger = MemoryLedger()
    euicc, _ = world.device(1)
    world.register(ledger, euicc)
    packages = [
        world.eim.queue(ledger, euicc.eid, [Disable(OLD_ICCID)], now=T0 + i, actor="alice")
        for i in range(3)
    ]
    assert [p.counter_value for p in packages] == [1, 2, 3]
    assert len({p.transaction_id for p in packages}) == 3
    assert ledger.euicc(euicc.eid).counter_value == 3  # type: ignore[union-attr]
    with pytest.raises(UnknownEuicc, match="89049032"):
        world.eim.queue(
            ledger, "89049032000000000000000000009999"[:30] + "00", [], now=T0, actor="a"
        )


def test_enable_with_rollback_is_applied_verified_matched_and_confirmed(world: World) -> None:
    ledger = MemoryLedger()
    euicc, ipa = world.device(1)
    world.register(ledger, euicc)
    package = world.eim.queue(
        ledger, euicc.eid, [Enable(NEW_ICCID, rollback=True)], now=T0, actor="alice"
    )
    exchanges = run_until_idle(world, ledger, ipa, T0 + 1)
    outcomes = [o for e in exchanges for o in e.outcomes]
    assert PackageDelivered(euicc.eid, 1, package.transaction_id) in outcomes
    accepted = [o for o in outcomes if isinstance(o, ResultAccepted)]
    assert len(accepted) == 1
    assert accepted[0].transaction_id == package.transaction_id
    assert accepted[0].results == (("enableResult", 0),)
    assert euicc.enabled is not None and euicc.enabled.iccid == NEW_ICCID
    assert not euicc.can_roll_back  # the acknowledged result confirmed it
    assert states(ledger, euicc.eid)[NEW_ICCID] == ("enabled", False, "confirmed")
    assert states(ledger, euicc.eid)[OLD_ICCID][0] == "disabled"
    assert ledger.packages(euicc.eid)[0].state == PackageState.DONE
    handled = [o for o in outcomes if isinstance(o, NotificationHandled)]
    assert {o.iccid for o in handled} == {OLD_ICCID, NEW_ICCID} and all(o.accepted for o in handled)
    actions = [a["action"] for a in ledger.audit_log]
    assert actions[:4] == [
        "esim.euicc.register",
        "esim.package.queue",
        "esim.package.deliver",
        "esim.result",
    ]


def test_an_enable_notified_before_its_result_is_pending_until_the_result(world: World) -> None:
    ledger = MemoryLedger()
    euicc, ipa = world.device(1)
    world.register(ledger, euicc)
    world.eim.queue(ledger, euicc.eid, [Enable(NEW_ICCID, rollback=True)], now=T0, actor="a")
    step(world, ledger, ipa, T0 + 1)  # the package reaches the eUICC
    held = ipa.pending.pop()  # the result is late; the notifications go first
    while euicc.notifications:
        step(world, ledger, ipa, T0 + 2)
    assert states(ledger, euicc.eid)[NEW_ICCID][0] == ProfileState.PENDING.value
    ipa.pending.append(held)
    step(world, ledger, ipa, T0 + 3)
    assert states(ledger, euicc.eid)[NEW_ICCID] == ("enabled", False, "confirmed")


def test_a_profile_whose_carrier_is_not_served_rolls_back_by_itself(world: World) -> None:
    ledger = MemoryLedger()
    euicc, ipa = world.device(1, served={OLD_CARRIER}, rollback_after=30)
    world.register(ledger, euicc)
    world.eim.queue(ledger, euicc.eid, [Enable(NEW_ICCID, rollback=True)], now=T0, actor="a")
    step(world, ledger, ipa, T0 + 1)
    assert euicc.enabled is not None and euicc.enabled.carrier == NEW_CARRIER
    assert step(world, ledger, ipa, T0 + 10) is None  # no connectivity, deadline not reached
    assert ipa.timer() == T0 + 31
    exchanges = run_until_idle(world, ledger, ipa, T0 + 31)
    accepted = [o for e in exchanges for o in e.outcomes if isinstance(o, ResultAccepted)]
    assert accepted[0].results == (("enableResult", 0), ("rollbackResult", 0))
    assert euicc.enabled.iccid == OLD_ICCID
    profiles = states(ledger, euicc.eid)
    assert profiles[NEW_ICCID] == ("disabled", False, "rolled back")
    assert profiles[OLD_ICCID][0] == "enabled"


def test_the_simulated_euicc_refuses_replayed_forged_and_misaddressed_packages(
    world: World,
) -> None:
    ledger = MemoryLedger()
    euicc, ipa = world.device(1)
    world.register(ledger, euicc)
    package = world.eim.queue(ledger, euicc.eid, [Disable(OLD_ICCID)], now=T0, actor="a")
    run_until_idle(world, ledger, ipa, T0 + 1)
    request = decode_from_eim(
        b"\xbf\x4f" + bytes([len(package.request_der)]) + package.request_der
        if len(package.request_der) < 128
        else b"\xbf\x4f\x81" + bytes([len(package.request_der)]) + package.request_der
    ).body[1]
    replay = euicc.load_package(request)
    assert replay[0] == "euiccPackageErrorSigned"
    assert replay[1]["euiccPackageErrorDataSigned"]["euiccPackageErrorCode"] == 4  # replayError
    forger = EimIdentity(EIM_ID, ec.generate_private_key(ec.SECP256R1()))
    forged = sign_euicc_package(
        forger,
        eid=euicc.eid,
        counter_value=99,
        transaction_id=b"\x01",
        operations=[Disable("8988247000000000011")],
    )
    assert euicc.load_package(forged.value)[0] == "euiccPackageErrorUnsigned"
    other_eid = world.device(2)[0].eid
    misaddressed = sign_euicc_package(
        world.identity,
        eid=other_eid,
        counter_value=50,
        transaction_id=b"\x02",
        operations=[Disable(OLD_ICCID)],
    )
    wrong = euicc.load_package(misaddressed.value)
    assert wrong[1]["euiccPackageErrorDataSigned"]["euiccPackageErrorCode"] == 3  # invalidEid
    assert euicc.eims[EIM_ID].counter_value == 1  # none of them moved the counter


def test_the_eim_records_a_signed_euicc_error_as_a_failed_package(world: World) -> None:
    ledger = MemoryLedger()
    euicc, ipa = world.device(1)
    world.register(ledger, euicc)
    euicc.eims[EIM_ID].counter_value = 5  # the eUICC saw counters the eIM has not used (reset)
    world.eim.queue(ledger, euicc.eid, [Disable(OLD_ICCID)], now=T0, actor="a")
    exchanges = run_until_idle(world, ledger, ipa, T0 + 1)
    accepted = [o for e in exchanges for o in e.outcomes if isinstance(o, ResultAccepted)]
    assert accepted[0].error_code == 4 and accepted[0].package_state == PackageState.FAILED
    assert ledger.packages(euicc.eid)[0].state == PackageState.FAILED
    assert ledger.audit_log[-1]["outcome"] == "error"


def _result_message(euicc_eid: str, result: tuple[str, dict[str, object]]) -> bytes:
    body = {"eidValue": eid_to_bytes(euicc_eid), "eimPackageResult": ("euiccPackageResult", result)}
    return encode_to_eim("provideEimPackageResult", body)


def test_results_that_cannot_be_trusted_are_typed_refusals(world: World) -> None:
    ledger = MemoryLedger()
    euicc, ipa = world.device(1)
    world.register(ledger, euicc)
    package = world.eim.queue(ledger, euicc.eid, [Disable(OLD_ICCID)], now=T0, actor="a")
    step(world, ledger, ipa, T0 + 1)  # delivered; the result waits in the IPA
    genuine = ipa.pending[0].result
    data = dict(genuine[1]["euiccPackageResultDataSigned"])

    def send(result: tuple[str, dict[str, object]]) -> object:
        exchange = world.eim.handle(ledger, _result_message(euicc.eid, result), T0 + 2)
        return exchange.outcomes[0]

    impostor = ec.generate_private_key(ec.SECP256R1())
    forged = sign_euicc_package_result(impostor, "euiccPackageResultSigned", data)
    assert send(forged).reason == Refusal.SIGNATURE_INVALID  # type: ignore[attr-defined]
    unknown = sign_euicc_package_result(
        euicc.key, "euiccPackageResultSigned", {**data, "eimTransactionId": b"\x09" * 8}
    )
    assert send(unknown).reason == Refusal.UNKNOWN_PACKAGE  # type: ignore[attr-defined]
    counter = sign_euicc_package_result(
        euicc.key, "euiccPackageResultSigned", {**data, "counterValue": 7}
    )
    assert send(counter).reason == Refusal.COUNTER_MISMATCH  # type: ignore[attr-defined]
    unsigned = (
        "euiccPackageErrorUnsigned",
        {"eimId": EIM_ID, "eimTransactionId": package.transaction_id},
    )
    # unsigned: it ends the delivered package (failed, never delivered again) but proves
    # nothing -- the genuine signed result arriving after it still counts
    ended = send(unsigned)  # type: ignore[arg-type]
    assert isinstance(ended, ResultAccepted) and ended.package_state == PackageState.FAILED
    assert ledger.next_package(euicc.eid) is None
    confirmed = send(genuine)
    assert isinstance(confirmed, ResultAccepted) and confirmed.package_state == PackageState.DONE
    assert send(genuine) == ResultDuplicate(euicc.eid, package.transaction_id)
    assert send(unsigned) == ResultRefused(  # type: ignore[arg-type]
        euicc.eid,
        Refusal.UNAUTHENTICATED,
        f"unsigned error from the eUICC for eIM {EIM_ID!r} (eimTransactionId "
        f"{package.transaction_id.hex()}) naming no delivered package: recorded, not trusted",
    )
    other = sign_euicc_package_result(
        euicc.key, "euiccPackageResultSigned", {**data, "euiccResult": [("disableResult", 2)]}
    )
    assert send(other).reason == Refusal.REPLAY  # type: ignore[attr-defined]
    assert ledger.packages(euicc.eid)[0].state == PackageState.DONE
    kinds = [r.outcome for r in ledger.results(euicc.eid)]
    assert kinds == [
        "signature_invalid",
        "unknown_package",
        "counter_mismatch",
        "unsigned_error",
        "accepted",
        "duplicate",
        "unauthenticated",
        "replay",
    ]
    refused = [a for a in ledger.audit_log if a["action"] == "esim.result" and a["outcome"] != "ok"]
    assert len(refused) == 6
    assert [a for a in ledger.audit_log if a["action"] == "esim.result"][4]["detail"][
        "after_unsigned_error"
    ]


def test_unknown_invalid_and_missing_eids_get_the_esipa_error_codes(world: World) -> None:
    ledger = MemoryLedger()
    euicc, _ = world.device(1)
    request = encode_to_eim("getEimPackageRequest", {"eidValue": eid_to_bytes(euicc.eid)})
    exchange = world.eim.handle(ledger, request, T0)
    assert decode_from_eim(exchange.reply).body == ("eimPackageError", 2)  # type: ignore[arg-type]
    assert exchange.outcomes[0].reason == Refusal.UNKNOWN_EID  # type: ignore[attr-defined]
    bad = encode_to_eim("getEimPackageRequest", {"eidValue": b"\x89" + b"\x00" * 15})
    assert decode_from_eim(world.eim.handle(ledger, bad, T0).reply).body == ("eimPackageError", 3)  # type: ignore[arg-type]
    missing = encode_to_eim(
        "provideEimPackageResult",
        {
            "eimPackageResult": (
                "euiccPackageResult",
                ("euiccPackageErrorUnsigned", {"eimId": EIM_ID}),
            )
        },
    )
    reply = world.eim.handle(ledger, missing, T0).reply
    assert decode_from_eim(reply).body == ("provideEimPackageResultError", 4)  # type: ignore[arg-type]


def test_a_state_change_makes_the_eim_ask_for_the_profile_list(world: World) -> None:
    ledger = MemoryLedger()
    euicc, ipa = world.device(1)
    world.register(ledger, euicc)
    euicc.profiles[OLD_ICCID].enabled = False  # the device fell back / was changed locally
    euicc.profiles[NEW_ICCID].enabled = True
    request = encode_to_eim(
        "getEimPackageRequest",
        {"eidValue": eid_to_bytes(euicc.eid), "notifyStateChange": None, "stateChangeCause": 1},
    )
    exchange = world.eim.handle(ledger, request, T0)
    ipa.incoming(request, exchange.reply, T0)  # the listProfileInfo package came back at once
    run_until_idle(world, ledger, ipa, T0 + 1)
    assert states(ledger, euicc.eid) == {
        OLD_ICCID: ("disabled", True, "listProfileInfo"),
        NEW_ICCID: ("enabled", False, "listProfileInfo"),
    }
    assert ledger.packages(euicc.eid)[0].actor == "eim"


def test_fallback_attribute_follows_the_results(world: World) -> None:
    ledger = MemoryLedger()
    euicc, ipa = world.device(1)
    world.register(ledger, euicc)
    world.eim.queue(ledger, euicc.eid, [SetFallbackAttribute(NEW_ICCID)], now=T0, actor="a")
    run_until_idle(world, ledger, ipa, T0 + 1)
    assert states(ledger, euicc.eid)[NEW_ICCID][1] is True
    assert euicc.profiles[NEW_ICCID].fallback and not euicc.profiles[OLD_ICCID].fallback
    world.eim.queue(ledger, euicc.eid, [UnsetFallbackAttribute()], now=T0, actor="a")
    run_until_idle(world, ledger, ipa, T0 + 2)
    assert not any(p.fallback for p in ledger.profiles(euicc.eid))
    assert dataclasses.asdict(ledger.packages(euicc.eid)[1])["operations"] == (
        {"op": "unsetFallbackAttribute"},
    )


def test_a_rollback_result_without_the_enables_own_result_still_rolls_the_target_back() -> None:
    """SGP.32 5.9.16 was not at hand: whether the re-signed result repeats the enable's own
    result is open (the reference vector carries both). Either shape leaves the target off."""
    before = [
        ProfileRecord("e", OLD_ICCID, ProfileState.DISABLED, True, 0.0),
        ProfileRecord("e", NEW_ICCID, ProfileState.PENDING, False, 0.0),
    ]
    ops = [{"op": "enable", "iccid": NEW_ICCID, "rollback": True}]
    for results in ([("rollbackResult", 0)], [("enableResult", 0), ("rollbackResult", 0)]):
        after = {p.iccid: p for p in apply_results("e", before, ops, results, 1.0)}
        assert after[NEW_ICCID].state == ProfileState.DISABLED
        assert after[NEW_ICCID].note == "rolled back"


def test_enabling_an_enabled_profile_confirms_it() -> None:
    """profileNotInDisabledState is the eUICC saying, signed, that the profile IS enabled."""
    before = [
        ProfileRecord("e", OLD_ICCID, ProfileState.PENDING, True, 0.0),
        ProfileRecord("e", NEW_ICCID, ProfileState.DISABLED, False, 0.0),
    ]
    ops = [{"op": "enable", "iccid": OLD_ICCID, "rollback": True}]
    after = {p.iccid: p for p in apply_results("e", before, ops, [("enableResult", 2)], 1.0)}
    assert after[OLD_ICCID].state == ProfileState.ENABLED
    assert after[OLD_ICCID].note == "already enabled"


def test_add_and_update_eim_ecos_change_whom_the_euicc_trusts(world: World) -> None:
    """eCO addEim associates a second eIM (its key, counter, an associationToken the eUICC
    makes on request); updateEim replaces its key: the old key's packages are refused after."""
    ledger = MemoryLedger()
    euicc, ipa = world.device(1)
    world.register(ledger, euicc)
    second = EimIdentity("eim2.fleetloop.test", ec.generate_private_key(ec.SECP256R1()))

    def spki(identity: EimIdentity) -> bytes:
        return identity.public_key.public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    add = AddEim(EimConfiguration(second.eim_id, public_key_der=spki(second), association_token=-1))
    world.eim.queue(ledger, euicc.eid, [add, ListEim()], now=T0, actor="alice")
    run_until_idle(world, ledger, ipa, T0 + 1)
    package = ledger.packages(euicc.eid)[-1]
    assert package.result is not None
    assert package.result["results"][0] == ["addEimResult", ["associationToken", 1]]
    listed = package.result["results"][1][1]
    assert {e["eimId"] for e in listed[1]} == {EIM_ID, second.eim_id}

    def from_second(identity: EimIdentity, counter: int) -> str:
        signed = sign_euicc_package(
            identity,
            eid=euicc.eid,
            counter_value=counter,
            transaction_id=bytes([counter]),
            operations=[ListEim()],
            association_token=1,
        )
        return str(euicc.load_package(signed.value)[0])

    assert from_second(second, 1) == "euiccPackageResultSigned"
    again = world.eim.queue(
        ledger, euicc.eid, [AddEim(EimConfiguration(second.eim_id, public_key_der=spki(second)))],
        now=T0, actor="alice",
    )  # fmt: skip
    run_until_idle(world, ledger, ipa, T0 + 2)
    done = ledger.package(euicc.eid, again.transaction_id)
    assert done is not None and done.result is not None
    assert done.result["results"] == [["addEimResult", ["addEimResultCode", 2]]]  # exists

    rotated = EimIdentity(second.eim_id, ec.generate_private_key(ec.SECP256R1()))
    update = UpdateEim(EimConfiguration(second.eim_id, public_key_der=spki(rotated)))
    world.eim.queue(ledger, euicc.eid, [update], now=T0, actor="alice")
    run_until_idle(world, ledger, ipa, T0 + 3)
    assert ledger.packages(euicc.eid)[-1].result["results"] == [["updateEimResult", 0]]  # type: ignore[index]
    assert from_second(second, 2) == "euiccPackageErrorUnsigned"  # the old key: refused
    assert from_second(rotated, 2) == "euiccPackageResultSigned"


def test_a_package_the_ipa_cannot_process_is_failed_not_delivered_again(world: World) -> None:
    """EimPackageResult eimPackageResultResponseError (SGP.32 ProvideEimPackageResult): the
    IPA names the package by eimTransactionId; it is failed with the IPA's code, recorded and
    audited, and the next poll finds nothing (it was delivered again forever before)."""
    ledger = MemoryLedger()
    euicc, _ipa = world.device(1)
    world.register(ledger, euicc)
    package = world.eim.queue(ledger, euicc.eid, [Disable(OLD_ICCID)], now=T0, actor="a")
    poll = encode_to_eim("getEimPackageRequest", {"eidValue": eid_to_bytes(euicc.eid)})
    world.eim.handle(ledger, poll, T0 + 1)  # delivered
    error = {"eimTransactionId": package.transaction_id, "eimPackageResultErrorCode": 1}
    body = {
        "eidValue": eid_to_bytes(euicc.eid),
        "eimPackageResult": ("eimPackageResultResponseError", error),
    }
    message = encode_to_eim("provideEimPackageResult", body)
    exchange = world.eim.handle(ledger, message, T0 + 2)
    assert exchange.reply is not None
    assert decode_from_eim(exchange.reply).body == ("emptyResponse", {})
    outcome = exchange.outcomes[0]
    assert isinstance(outcome, ResultAccepted)
    assert outcome.package_state == PackageState.FAILED
    stored = ledger.packages(euicc.eid)[0]
    assert stored.state == PackageState.FAILED
    assert stored.result is not None and stored.result["ipa_error"] == "invalidPackageFormat"
    assert ledger.results(euicc.eid)[-1].outcome == "ipa_error"
    assert ledger.audit_log[-1]["outcome"] == "error"
    again = world.eim.handle(ledger, poll, T0 + 3)
    assert again.reply is not None
    assert decode_from_eim(again.reply).body == ("eimPackageError", 1)  # noEimPackageAvailable
    assert isinstance(world.eim.handle(ledger, message, T0 + 4).outcomes[0], ResultDuplicate)
    unknown = {"eimTransactionId": b"\x07" * 8, "eimPackageResultErrorCode": 2}
    body["eimPackageResult"] = ("eimPackageResultResponseError", unknown)
    refused = world.eim.handle(ledger, encode_to_eim("provideEimPackageResult", body), T0 + 5)
    assert refused.outcomes[0].reason == Refusal.UNKNOWN_PACKAGE  # type: ignore[attr-defined]


def test_the_euiccs_replay_error_for_an_answered_package_is_acknowledged(world: World) -> None:
    """A package delivered twice (pushed, then polled) makes the eUICC answer the second copy
    with a signed replayError: the first result stands, the copy is acknowledged (the IPA
    does not retry it forever) and recorded as a duplicate."""
    ledger = MemoryLedger()
    euicc, ipa = world.device(1)
    world.register(ledger, euicc)
    package = world.eim.queue(ledger, euicc.eid, [ListEim()], now=T0, actor="a")
    run_until_idle(world, ledger, ipa, T0 + 1)
    request = decode_from_eim(
        b"\xbf\x4f" + bytes([len(package.request_der)]) + package.request_der
        if len(package.request_der) < 128
        else b"\xbf\x4f\x81" + bytes([len(package.request_der)]) + package.request_der
    ).body[1]
    replay = euicc.load_package(request)
    exchange = world.eim.handle(ledger, _result_message(euicc.eid, replay), T0 + 2)
    assert exchange.outcomes == (ResultDuplicate(euicc.eid, package.transaction_id),)
    assert exchange.reply is not None
    assert decode_from_eim(exchange.reply).body[0] != "provideEimPackageResultError"
    assert ledger.packages(euicc.eid)[0].state == PackageState.DONE
    assert ledger.results(euicc.eid)[-1].outcome == "duplicate"

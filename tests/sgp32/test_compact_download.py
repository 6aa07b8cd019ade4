"""The compact PrepareDownloadResponse and CancelSession of SGP.32 minimizeEsipaBytes, relayed
for real: an IPA that sends only what the eIM cannot know (compactEuiccSigned2 without the
transactionId -- and without the otPK when the eUICC reuses the one the SM-DP+ named;
compactCancelSessionResponseOk with only the reason) downloads through the eIM, which rebuilds
the SGP.22 EUICCSigned2 / euiccCancelSessionSigned the eUICC signed. The test SM-DP+ (HTTPS on
loopback) verifies euiccSignature2 and euiccCancelSessionSignature over what the eIM sent, so
a rebuild that is off by one byte fails here. SQLite and PostgreSQL (the session's smdpOid and
bppEuiccOtpk are stored with it)."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from lifecycle.esim import EsimComponent
from lwm2m.store import Store
from sgp32.eim import PackageState
from sgp32.eim.schema import create_schema
from sgp32.eim.sessions import DownloadSession, SqlSessions
from sgp32.eim.sql import EimStore
from sgp32.es9plus import (
    Es9Error,
    expand_cancel_session_response,
    expand_prepare_download_response,
    smdp_oid_of,
)
from sgp32.esipa.https import EsipaHttpsServer, server_ssl_context
from sgp32.esipa.relay import Es9Relay
from sgp32.signing import sign_raw, verify_raw
from simulators.esim.download import (
    Es10bDownload,
    encode_cancel_session_signed,
    encode_euicc_signed2,
)
from simulators.esim.https import HttpsIpa, client_for
from simulators.esim.smdp import LoopbackSmdp, PreparedProfile, SmdpServer
from tests.sgp32.pki import NOW, MadePki
from tests.sgp32.tls import client_context, make_tls
from tests.sgp32.world import OLD_CARRIER, T0, World, make_world

pytestmark = pytest.mark.integration

NEW_ICCID = "8988247000000000045"
SMDP_OID = "2.999.10.7"
DP_AUTH = x509.ObjectIdentifier("2.23.146.1.2.1.4")


def smdp_certificate(
    pki: MadePki, key: ec.EllipticCurvePrivateKey, now: datetime = NOW
) -> x509.Certificate:
    """CERT.DPauth-like: issued by the test CI, the SM-DP+ OID as subjectAltName
    registeredID (SGP.22 4.5.2.1), the id-rspRole-dp-auth policy."""
    return (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test SM-DP+")]))
        .issuer_name(pki.ci.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=365))
        .add_extension(
            x509.CertificatePolicies([x509.PolicyInformation(DP_AUTH, None)]), critical=True
        )
        .add_extension(
            x509.SubjectAlternativeName([x509.RegisteredID(x509.ObjectIdentifier(SMDP_OID))]),
            critical=False,
        )
        .sign(pki.ci_key, hashes.SHA256())
    )


@pytest.fixture
def world(pki: MadePki) -> World:
    return make_world(pki)


def test_a_compact_ipa_cancels_then_retries_and_the_eim_rebuilds_both(
    world: World, store: Store, tmp_path: Path
) -> None:
    """First download: the IPA cancels after the bound package (compact CancelSession,
    loadBppExecutionError) -- the SM-DP+ verifies the rebuilt, signed cancellation. Second
    download of the same order: the SM-DP+ names the otPK it bound to (bppEuiccOtpk), the
    eUICC reuses it and the compact PrepareDownloadResponse carries no otPK at all -- the eIM
    puts it back from the session; the profile installs."""
    euicc, ipa = world.device(5, served={OLD_CARRIER, "Carrier C"})
    downloader = Es10bDownload(euicc, world.pki.ci.public_key())  # type: ignore[arg-type]
    ipa.downloader = downloader
    ipa.ipa_features = (1, 3, 5)
    ipa.cancel = ("bpp", 5)

    async def main() -> tuple[LoopbackSmdp, list[DownloadSession]]:
        create_schema(store, now=0)
        eims = EimStore(store, world.eim)
        cert, key, ca = make_tls(tmp_path)
        smdp_key = ec.generate_private_key(ec.SECP256R1())
        smdp = LoopbackSmdp(
            "", smdp_key, smdp_certificate(world.pki, smdp_key), world.pki.ci, at=lambda: NOW
        )
        smdp_server = SmdpServer(smdp, cert, key)
        smdp.address = f"127.0.0.1:{await smdp_server.start()}"
        sessions = SqlSessions(store)
        component = EsimComponent(eims, None, relay=Es9Relay(client_context(ca), sessions=sessions))
        esipa = EsipaHttpsServer(
            component.handle, tls=server_ssl_context(cert, key), clock=lambda: T0
        )
        host, port = await esipa.start("127.0.0.1", 0)
        client = client_for(client_context(ca))
        try:
            code = smdp.prepare(PreparedProfile("MATCH-5", NEW_ICCID, "Carrier C"))
            await eims.register(
                euicc_certificate=euicc.certificate_der,
                eum_certificate=euicc.eum_certificate_der,
                now=T0,
                actor="alice",
            )
            await eims.store.write(
                lambda tx: eims.eim.queue_ipa_data(eims.ledger(tx), euicc.eid, now=T0, actor="a")
            )
            http = HttpsIpa(ipa, client, f"https://{host}:{port}")
            await http.settle(T0)
            await eims.queue_download(euicc.eid, code, now=T0, actor="alice")
            await http.settle(T0)
            assert NEW_ICCID not in euicc.profiles, "cancelled: nothing installed"
            await eims.queue_download(euicc.eid, code, now=T0, actor="alice")
            await http.settle(T0)
            listed = await sessions.of_eid(euicc.eid)
            found = [await sessions.find(s.transaction_id, s.updated_at) for s in listed]
            return smdp, [s for s in found if s is not None]
        finally:
            await client.aclose()
            await esipa.stop()
            await component.stop()
            await smdp_server.stop()

    smdp, sessions = asyncio.run(main())
    assert ipa.sent_forms == [
        "compactAuthenticateResponseOk",
        "compactDownloadResponseOk",
        "compactCancelSessionResponseOk",
        "compactAuthenticateResponseOk",
        "compactDownloadResponseOk",
    ]
    # lean answers too: the transactionId the IPA knows from serverSigned1 is left out
    assert ipa.answers_with_transaction_id == [False] * 6
    assert [reason for _, reason in smdp.cancelled] == [5]
    assert smdp.calls.count("getBoundProfilePackage") == 2
    assert euicc.profiles[NEW_ICCID].carrier == "Carrier C"
    assert len(sessions) == 2 and all(s.smdp_oid == SMDP_OID for s in sessions)
    first = next(s for s in sessions if s.transaction_id == smdp.cancelled[0][0])
    retry = next(s for s in sessions if s is not first)
    assert first.step.value == "cancelled" and first.bpp_euicc_otpk is None
    assert retry.step.value == "installing"
    assert retry.bpp_euicc_otpk is not None  # what the eIM put back into EUICCSigned2
    assert retry.bpp_euicc_otpk in downloader.used_otpks
    with store.transaction() as tx:
        packages = EimStore(store, world.eim).ledger(tx).packages(euicc.eid)
    assert [p.state for p in packages] == [
        PackageState.DONE,  # the second trigger: installed
        PackageState.FAILED,  # the cancelled one
        PackageState.DONE,  # IpaEuiccDataRequest
    ]


# ---- the rebuilds alone (sans-IO): byte-exact, or refused with Es9Error ----------------------


def _point(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.public_key().public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )


def test_the_rebuilt_euicc_signed2_verifies_with_and_without_the_otpk() -> None:
    euicc = ec.generate_private_key(ec.SECP256R1())
    otpk = _point(ec.generate_private_key(ec.SECP256R1()))
    tid, hash_cc, smdp_sig2 = b"\x11" * 16, b"\xcc" * 32, b"\x5f\x37\x40" + b"\x01" * 64
    signed: dict[str, Any] = {"transactionId": tid, "euiccOtpk": otpk, "hashCc": hash_cc}
    signature = sign_raw(euicc, encode_euicc_signed2(signed) + smdp_sig2)
    for small, known in (
        ({"euiccOtpk": otpk, "hashCc": hash_cc}, None),
        ({"hashCc": hash_cc}, otpk),
    ):
        kind, full = expand_prepare_download_response(
            {"compactEuiccSigned2": small, "euiccSignature2": signature},
            transaction_id=tid,
            bpp_euicc_otpk=known,
        )
        assert kind == "downloadResponseOk"
        verify_raw(
            euicc.public_key(),
            encode_euicc_signed2(full["euiccSigned2"]) + smdp_sig2,
            full["euiccSignature2"],
            "euiccSignature2",
        )
    with pytest.raises(Es9Error, match="bppEuiccOtpk"):
        expand_prepare_download_response(
            {"compactEuiccSigned2": {}, "euiccSignature2": signature},
            transaction_id=tid,
            bpp_euicc_otpk=None,
        )


def test_the_rebuilt_cancel_session_verifies_and_what_is_missing_is_refused() -> None:
    euicc = ec.generate_private_key(ec.SECP256R1())
    tid = b"\x22" * 16
    signed = {"transactionId": tid, "smdpOid": SMDP_OID, "reason": 1}
    signature = sign_raw(euicc, encode_cancel_session_signed(signed))
    compact = {
        "compactEuiccCancelSessionSigned": {"reason": 1},
        "euiccCancelSessionSignature": signature,
    }
    kind, full = expand_cancel_session_response(compact, transaction_id=tid, smdp_oid=SMDP_OID)
    assert kind == "cancelSessionResponseOk" and full["euiccCancelSessionSigned"] == signed
    verify_raw(
        euicc.public_key(),
        encode_cancel_session_signed(full["euiccCancelSessionSigned"]),
        signature,
        "euiccCancelSessionSignature",
    )
    with pytest.raises(Es9Error, match="smdpOid"):
        expand_cancel_session_response(compact, transaction_id=tid, smdp_oid=None)
    no_reason = {**compact, "compactEuiccCancelSessionSigned": {}}
    with pytest.raises(Es9Error, match="reason"):
        expand_cancel_session_response(no_reason, transaction_id=tid, smdp_oid=SMDP_OID)


def test_the_smdp_oid_comes_from_the_certificates_registered_id(pki: MadePki) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    with_oid = smdp_certificate(pki, key).public_bytes(serialization.Encoding.DER)
    assert smdp_oid_of(with_oid) == SMDP_OID
    assert smdp_oid_of(pki.ci.public_bytes(serialization.Encoding.DER)) is None
    assert smdp_oid_of(b"\x30\x03garbage") is None

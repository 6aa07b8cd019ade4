"""Importing factory identities: validation report, dry run, all-or-nothing, certificates.

The pure parser is tested (and fuzzed) on its own; the import itself runs against SQLite and
PostgreSQL.
"""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bootstrap.ca import CertificateAuthority, fingerprint_of, load_certificate
from bootstrap.errors import ImportFailed
from bootstrap.identities import IdentityStatus, SecurityMode, eid_with_check_digits
from bootstrap.importer import COLUMNS, Reason, parse_identities
from bootstrap.manager import BootstrapManager
from lwm2m.store import Store
from tests.bootstrap.conftest import run

KEY = "000102030405060708090a0b0c0d0e0f"
EID = eid_with_check_digits("890490320000000000000000000001")
HEADER = ",".join(COLUMNS)


def csv(*rows: str, header: str = "endpoint,serial,imei,security_mode,psk_key,region") -> str:
    return "\n".join((header, *rows)) + "\n"


GOOD = csv(
    f"dev-1,SN-1,490154203237518,psk,{KEY},eu",
    "dev-2,SN-2,,nosec,,eu",
    f"dev-3,SN-3,,psk,{'11' * 16},us",
)


# -- the parser (pure) ----------------------------------------------------------------------------


def test_a_clean_file_is_accepted_with_defaults_applied() -> None:
    result = parse_identities(GOOD, format="csv", now=5.0, batch="b1")
    assert result.rows == 3 and not result.rejected
    first = result.accepted[0].identity
    assert first.credential.mode is SecurityMode.PSK
    assert first.credential.psk_identity == "dev-1"  # defaults to the endpoint name
    assert first.credential.psk_key == bytes.fromhex(KEY)
    assert first.created_at == 5.0 and first.import_batch == "b1"
    assert result.accepted[1].identity.credential.mode is SecurityMode.NOSEC


def test_security_mode_defaults_to_psk() -> None:
    result = parse_identities("endpoint,psk_key\ndev-1," + KEY + "\n", format="csv")
    assert result.accepted[0].identity.security_mode is SecurityMode.PSK


@pytest.mark.parametrize(
    ("row", "reason", "field"),
    [
        (f",SN-9,,psk,{KEY},eu", Reason.MISSING_ENDPOINT, "endpoint"),
        ("dev-9,SN-9,,psk,zz,eu", Reason.MALFORMED_KEY, "psk_key"),
        ("dev-9,SN-9,,psk,0011,eu", Reason.MALFORMED_KEY, "psk_key"),
        ("dev-9,SN-9,,psk,,eu", Reason.MISSING_KEY, "psk_key"),
        (f"dev-9,SN-9,,nosec,{KEY},eu", Reason.MALFORMED_KEY, "psk_key"),
        (f"dev-9,SN-9,,tls,{KEY},eu", Reason.BAD_SECURITY_MODE, "security_mode"),
        (f"dev-9,SN-9,490154203237519,psk,{KEY},eu", Reason.MALFORMED, "imei"),
        (f"dev 9,SN-9,,psk,{KEY},eu", Reason.MALFORMED, "endpoint"),
        (f"dev-9,SN-9,,psk,{KEY},eu west", Reason.MALFORMED, "region"),
    ],
)
def test_each_bad_row_is_rejected_with_a_reason_and_the_field(
    row: str, reason: Reason, field: str
) -> None:
    result = parse_identities(csv(f"dev-1,SN-1,,psk,{KEY},eu", row), format="csv")
    assert [p.identity.endpoint for p in result.accepted] == ["dev-1"]
    (rejection,) = result.rejected
    assert (rejection.row, rejection.reason, rejection.field) == (2, reason, field)
    assert rejection.message


def test_duplicates_within_the_file_are_rejected_naming_the_first_row() -> None:
    text = csv(
        f"dev-1,SN-1,490154203237518,psk,{KEY},eu",
        f"dev-1,SN-X,,psk,{KEY},eu",
        f"dev-2,SN-1,,psk,{KEY},eu",
        f"dev-3,SN-3,490154203237518,psk,{KEY},eu",
    )
    result = parse_identities(text, format="csv")
    assert [p.identity.endpoint for p in result.accepted] == ["dev-1"]
    assert [(r.row, r.reason, r.field) for r in result.rejected] == [
        (2, Reason.DUPLICATE_IN_FILE, "endpoint"),
        (3, Reason.DUPLICATE_IN_FILE, "serial"),
        (4, Reason.DUPLICATE_IN_FILE, "imei"),
    ]
    assert "row 1" in result.rejected[0].message


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("", "header row"),
        ("serial,psk_key\nSN-1," + KEY + "\n", "no 'endpoint' column"),
        ("endpoint,colour\ndev-1,red\n", "unknown column"),
        ("endpoint,endpoint\ndev-1,dev-1\n", "twice"),
    ],
)
def test_file_level_problems_reject_the_whole_file(text: str, fragment: str) -> None:
    result = parse_identities(text, format="csv")
    assert not result.accepted
    (rejection,) = result.rejected
    assert rejection.row == 0 and rejection.reason is Reason.FILE and fragment in rejection.message


def test_extra_fields_in_a_row_and_blank_lines() -> None:
    text = csv(f"dev-1,SN-1,,psk,{KEY},eu,surplus", "", ",,,,,", "dev-2,SN-2,,nosec,,eu")
    result = parse_identities(text, format="csv")
    assert [p.identity.endpoint for p in result.accepted] == ["dev-2"]
    assert result.rows == 2 and result.rejected[0].reason is Reason.MALFORMED


def test_json_imports_the_same_columns_and_refuses_unknown_keys() -> None:
    doc = {
        "identities": [
            {"endpoint": "dev-1", "psk_key": KEY, "eid": EID, "tenant": "acme"},
            {"endpoint": "dev-2", "security_mode": "nosec", "color": "red"},
            "not an object",
        ]
    }
    result = parse_identities(json.dumps(doc), format="json")
    assert [p.identity.eid for p in result.accepted] == [EID]
    assert [(r.row, r.reason) for r in result.rejected] == [
        (2, Reason.MALFORMED),
        (3, Reason.MALFORMED),
    ]
    assert parse_identities("[1,", format="json").rejected[0].reason is Reason.FILE


FIELD_TEXT = st.text(alphabet=st.characters(codec="utf-8"), max_size=40)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.lists(FIELD_TEXT, min_size=0, max_size=len(COLUMNS) + 2), max_size=12))
def test_fuzzed_csv_rows_are_each_accepted_or_rejected_exactly_once(
    rows: list[list[str]],
) -> None:
    import csv as csvlib
    import io

    out = io.StringIO()
    writer = csvlib.writer(out)
    writer.writerow(COLUMNS)
    for row in rows:
        writer.writerow(row)
    result = parse_identities(out.getvalue(), format="csv")
    accepted_rows = [p.row for p in result.accepted]
    rejected_rows = [r.row for r in result.rejected]
    assert not set(accepted_rows) & set(rejected_rows)
    assert len(accepted_rows) + len(rejected_rows) == result.rows
    endpoints = [p.identity.endpoint for p in result.accepted]
    assert len(endpoints) == len(set(endpoints))
    for parsed in result.accepted:
        if parsed.identity.security_mode is SecurityMode.PSK:
            assert parsed.identity.credential.psk_key is not None


@settings(max_examples=300)
@given(st.text(max_size=300))
def test_arbitrary_text_never_crashes_the_parser(text: str) -> None:
    for fmt in ("csv", "json"):
        result = parse_identities(text, format=fmt)
        assert len(result.accepted) + len(result.rejected) >= 0


# -- importing into the database ------------------------------------------------------------------


def manager(store: Store, ca: CertificateAuthority | None = None) -> BootstrapManager:
    clock = iter(range(1000, 10_000))
    return BootstrapManager(store, ca=ca, clock=lambda: float(next(clock)))


def test_a_dry_run_reports_and_writes_nothing(store: Store) -> None:
    async def scenario() -> None:
        m = manager(store)
        report = await m.import_identities(GOOD, source="batch.csv", dry_run=True)
        assert report.dry_run and report.ok and report.accepted == ("dev-1", "dev-2", "dev-3")
        assert report.imported == 0 and "would import 3" in report.summary()
        assert (await m.list_identities()).items == ()
        assert await m.audit() == []

    run(scenario())


def test_an_import_is_all_or_nothing(store: Store) -> None:
    bad = GOOD + "dev-4,SN-4,,psk,nothex,eu\n"

    async def scenario() -> None:
        m = manager(store)
        with pytest.raises(ImportFailed) as info:
            await m.import_identities(bad, source="batch.csv")
        report = info.value.report
        assert report is not None and [r.row for r in report.rejected] == [4]  # type: ignore[attr-defined]
        assert "nothing was imported" in str(info.value)
        assert (await m.list_identities()).items == ()
        # with allow_partial the three good rows go in, in one transaction
        report = await m.import_identities(bad, source="batch.csv", allow_partial=True)
        assert report.imported == 3 and len(report.rejected) == 1
        page = await m.list_identities()
        assert [i.endpoint for i in page.items] == ["dev-1", "dev-2", "dev-3"]
        assert {i.import_batch for i in page.items} == {report.batch}

    run(scenario())


def test_rows_clashing_with_stored_identities_are_duplicates(store: Store) -> None:
    async def scenario() -> None:
        m = manager(store)
        await m.import_identities(GOOD, source="first.csv")
        second = csv(
            f"dev-1,SN-10,,psk,{KEY},eu",  # endpoint taken
            f"dev-11,SN-2,,psk,{KEY},eu",  # serial taken
            f"dev-12,SN-12,490154203237518,psk,{KEY},eu",  # IMEI taken
            f"dev-13,SN-13,,psk,{KEY},eu",
        )
        dry = await m.import_identities(second, source="second.csv", dry_run=True)
        assert [(r.row, r.reason, r.field) for r in dry.rejected] == [
            (1, Reason.DUPLICATE_EXISTING, "endpoint"),
            (2, Reason.DUPLICATE_EXISTING, "serial"),
            (3, Reason.DUPLICATE_EXISTING, "imei"),
        ]
        assert dry.accepted == ("dev-13",)
        with pytest.raises(ImportFailed):
            await m.import_identities(second, source="second.csv")
        assert (await m.list_identities()).items[-1].endpoint == "dev-3"

    run(scenario())


def test_an_import_is_audited_without_its_keys(store: Store) -> None:
    async def scenario() -> None:
        m = manager(store)
        report = await m.import_identities(GOOD, source="batch.csv", actor="alice")
        (record,) = await m.audit()
        assert (record.actor, record.action, record.subject) == (
            "alice",
            "identities.import",
            report.batch,
        )
        assert record.detail["imported"] == 3 and record.detail["sha256"] == report.digest
        assert KEY not in json.dumps(record.as_dict())

    run(scenario())


def test_x509_rows_get_a_certificate_from_the_ca_with_a_0600_key(
    store: Store, ca: CertificateAuthority, key_dir: Path
) -> None:
    text = "endpoint,security_mode\ncert-1,x509\ncert-2,x509\n"

    async def scenario() -> None:
        without_ca = manager(store)
        with pytest.raises(ImportFailed) as info:
            await without_ca.import_identities(text, source="c.csv")
        assert {r.reason for r in info.value.report.rejected} == {Reason.NO_CA}  # type: ignore[attr-defined]
        m = manager(store, ca)
        report = await m.import_identities(text, source="c.csv", key_dir=key_dir)
        assert report.imported == 2 and set(report.issued) == {"cert-1", "cert-2"}
        cert_file, key_file = report.issued["cert-1"]
        assert stat.S_IMODE(Path(key_file).stat().st_mode) == 0o600
        cert = load_certificate(Path(cert_file).read_bytes())
        ca.verify(cert)
        identity = await m.identity("cert-1")
        assert identity.credential.certificate_fingerprint == fingerprint_of(cert)
        assert identity.credential.certificate_serial == format(cert.serial_number, "x")

    run(scenario())


def test_a_given_certificate_must_be_ours(
    store: Store, ca: CertificateAuthority, tmp_path: Path
) -> None:
    foreign = CertificateAuthority.create(tmp_path / "other")
    ours = ca.issue_device("cert-ok").pem.decode()
    theirs = foreign.issue_device("cert-bad").pem.decode()
    doc = [
        {"endpoint": "cert-ok", "security_mode": "x509", "certificate": ours},
        {"endpoint": "cert-bad", "security_mode": "x509", "certificate": theirs},
    ]

    async def scenario() -> None:
        m = manager(store, ca)
        report = await m.import_identities(json.dumps(doc), source="c.json", allow_partial=True)
        assert report.accepted == ("cert-ok",)
        assert report.rejected[0].reason is Reason.BAD_CERTIFICATE

    run(scenario())


def test_revoking_an_identity_is_audited_and_kept(store: Store) -> None:
    async def scenario() -> None:
        m = manager(store)
        await m.import_identities(GOOD, source="batch.csv")
        revoked = await m.revoke_identity("SN-2", reason="stolen", actor="bob")
        assert revoked.status is IdentityStatus.REVOKED and revoked.endpoint == "dev-2"
        assert (await m.identity("dev-2")).revoked_reason == "stolen"
        records = await m.audit(subject="dev-2")
        assert [r.action for r in records] == ["identity.revoke"]
        # a revoked identity still blocks its serial from being imported again
        with pytest.raises(ImportFailed):
            await m.import_identities(csv("dev-9,SN-2,,nosec,,eu"), source="again.csv")

    run(scenario())

"""Credential rotation's pieces on SQLite and PostgreSQL: the rotation record (kept across
restarts), the devices whose DM certificate expires within a window (newest unrevoked one
counts; issued by a real CA), the state layer's step for the credentials dimension, and the
renew/rotate commands against a real service (dry run and a real desired change)."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from bootstrap import CertificateAuthority
from bootstrap import create_schema as create_bootstrap_schema
from bootstrap.repository import CertificateRepository
from lifecycle.artifacts.credentials import (
    Rotation,
    RotationRepository,
    expiring_certificates,
    fingerprint,
)
from lifecycle.state.dimensions import (
    APPLICABLE,
    ORDER,
    Desired,
    Dimension,
    RotateCredentials,
    plan,
)
from lwm2m.store import Store
from tests.cli.harness import Background, background_service, invoke

DAY = 86_400.0
NOW = dt.datetime(2027, 1, 1, tzinfo=dt.UTC)


def test_the_rotation_record_is_kept_and_replaced(store: Store) -> None:
    repo = RotationRepository()
    first = Rotation("d1", 1, "requested", fingerprint(b"k" * 16), 10.0, None, "re-bootstrap")
    with store.transaction() as tx:
        repo.put(tx, first)
    assert store.read_sync(lambda tx: repo.get(tx, "d1")) == first
    proven = Rotation("d1", 1, "verified", first.old_fingerprint, 10.0, 12.0, "registered")
    with store.transaction() as tx:
        repo.put(tx, proven)
    assert store.read_sync(lambda tx: repo.get(tx, "d1")) == proven
    assert store.read_sync(lambda tx: repo.get(tx, "d2")) is None


def test_a_fingerprint_tells_keys_apart_and_hides_them() -> None:
    a, b = fingerprint(b"\x01" * 16), fingerprint(b"\x02" * 16)
    assert a != b and a is not None and len(a) == 32 and "01" * 8 not in a
    assert fingerprint(None) is None and fingerprint(b"") is None


def test_certificates_expiring_within_a_window(store: Store, tmp_path: Path) -> None:
    create_bootstrap_schema(store)
    ca = CertificateAuthority.create(tmp_path / "ca", now=NOW)
    certs = CertificateRepository()
    soon = ca.issue_device("soon", kind="device-dm", days=10, now=NOW)
    later = ca.issue_device("later", kind="device-dm", days=400, now=NOW)
    renewed_old = ca.issue_device("renewed", kind="device-dm", days=5, now=NOW)
    renewed_new = ca.issue_device("renewed", kind="device-dm", days=400, now=NOW)
    revoked = ca.issue_device("revoked", kind="device-dm", days=3, now=NOW)
    bootstrap_cert = ca.issue_device("bs-only", kind="device-bootstrap", days=3, now=NOW)
    with store.transaction() as tx:
        for cert in (soon, later, renewed_old, renewed_new, revoked, bootstrap_cert):
            certs.record(tx, cert, NOW.timestamp())
        certs.revoke(tx, revoked.serial, "superseded by bootstrap", NOW.timestamp())
    now = NOW.timestamp()
    found = store.read_sync(lambda tx: expiring_certificates(tx, within_s=30 * DAY, now=now))
    assert [(e.endpoint, e.serial) for e in found] == [("soon", soon.serial)]
    assert found[0].not_after == pytest.approx(now + 10 * DAY, abs=DAY)
    everything = store.read_sync(lambda tx: expiring_certificates(tx, within_s=500 * DAY, now=now))
    assert [e.endpoint for e in everything] == ["later", "renewed", "soon"]
    expired = store.read_sync(
        lambda tx: expiring_certificates(tx, within_s=1.0, now=now + 20 * DAY)
    )
    assert [e.endpoint for e in expired] == ["soon"]  # already expired counts


def test_the_credentials_dimension_is_applied_last_by_rotation() -> None:
    assert Dimension.CREDENTIALS in APPLICABLE and ORDER[-1] is Dimension.CREDENTIALS
    step = plan(Desired(Dimension.CREDENTIALS, {"generation": 4}, 2), {})
    assert step == RotateCredentials(4)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Background]:
    with background_service(tmp_path_factory.mktemp("data")) as background:
        yield background


def _run(served: Background, *args: str, code: int = 0) -> tuple[str, str]:
    result = invoke(served.service.data_dir, *args)
    assert result.exit_code == code, (args, result.output)
    assert "Traceback" not in result.output
    return result.stdout, result.stderr


def test_renew_and_rotate_set_the_next_generation_on_exactly_the_devices(
    served: Background, tmp_path: Path
) -> None:
    store, state = served.service.store, served.service.state
    assert store is not None and state is not None
    ca = CertificateAuthority.create(tmp_path / "ca")
    certs = CertificateRepository()
    with store.transaction() as tx:
        for endpoint, days in (("cert-soon", 7), ("cert-late", 300)):
            certs.record(tx, ca.issue_device(endpoint, kind="device-dm", days=days), 1.0)
    out, _ = _run(served, "credentials", "renew", "--within-days", "30", "--dry-run")
    assert "cert-soon: certificate" in out and "cert-late" not in out
    assert "1 devices would renew to credentials generation 1 (dry run" in out
    answer = json.loads(_run(served, "credentials", "renew", "--within-days", "30", "--json")[0])
    assert (answer["generation"], answer["changed"], answer["endpoints"]) == (1, 1, ["cert-soon"])
    desired = store.read_sync(lambda tx: state.repository.desired(tx, "cert-soon"))
    assert desired[Dimension.CREDENTIALS].value == {"generation": 1}
    # the next rotation takes the next number
    again = json.loads(
        _run(served, "credentials", "renew", "--within-days", "400", "--dry-run", "--json")[0]
    )
    assert again["generation"] == 2 and again["endpoints"] == ["cert-late", "cert-soon"]
    _, err = _run(served, "credentials", "rotate", "--select", "region=", code=2)
    assert "select" in err

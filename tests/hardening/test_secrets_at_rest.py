"""Issue 14 item 11: PSKs and the CA key are sealed at rest with a key kept outside the
database, on SQLite and PostgreSQL; a database copy without the key recovers nothing.

Before the fix ``endpoint_security.psk_key`` and ``bs_identity.psk_key`` held the keys as
given and ``ca/ca.key.pem`` was a plaintext PKCS#8 file."""

from __future__ import annotations

import base64
import os
from pathlib import Path

import pytest
from sqlalchemy import text

from bootstrap.ca import CA_KEY_FILE, CertificateAuthority
from bootstrap.identities import BootstrapCredential, FactoryIdentity
from bootstrap.repository import IdentityRepository
from bootstrap.repository import create_schema as create_bootstrap_schema
from lwm2m.store import EndpointSecurity, PskCredential, Store
from lwm2m.store.secrets import (
    KEY_ENV,
    KEY_FILE,
    SecretBox,
    SecretsError,
    SecretsUnavailable,
    bind,
    load_box,
    seal_plaintext,
)
from tests.store.conftest import StoreTarget

KEY = bytes.fromhex("00112233445566778899aabbccddeeff")
BS_KEY = bytes.fromhex("f0e1d2c3b4a5968778695a4b3c2d1e0f")


def raw_keys(store: Store, table: str) -> list[bytes]:
    with store.transaction() as tx:
        rows = tx.execute(text(f"SELECT psk_key FROM {table} WHERE psk_key IS NOT NULL"))
        return [bytes(r[0]) for r in rows]


def psk_record(endpoint: str, identity: str, key: bytes) -> EndpointSecurity:
    return EndpointSecurity(endpoint, psk=PskCredential(identity, key))


def test_a_stored_psk_is_sealed_and_a_copy_without_the_key_recovers_nothing(
    target: StoreTarget,
) -> None:
    box = SecretBox(os.urandom(32))
    with target.open() as store:
        store.create_schema()
        bind(store, box)
        with store.transaction() as tx:
            store.security.set(tx, psk_record("dev-1", "id-1", KEY), 1.0)
        assert all(KEY not in value for value in raw_keys(store, "endpoint_security"))
        with store.transaction() as tx:  # the server itself still reads the key
            found = store.security.find_by_psk_identity(tx, "id-1")
        assert found is not None and found.psk is not None and found.psk.key == KEY
    with target.open() as copy:  # "a dump": the rows without the key
        with pytest.raises(SecretsUnavailable, match="dev-1"), copy.transaction() as tx:
            copy.security.get(tx, "dev-1")
        bind(copy, SecretBox(os.urandom(32)))  # a guessed key
        with pytest.raises(SecretsError, match="another secrets key"), copy.transaction() as tx:
            copy.security.get(tx, "dev-1")


def test_a_sealed_key_moved_to_another_row_does_not_open(target: StoreTarget) -> None:
    with target.open() as store:
        store.create_schema()
        bind(store, SecretBox(os.urandom(32)))
        with store.transaction() as tx:
            store.security.set(tx, psk_record("dev-a", "id-a", KEY), 1.0)
            store.security.set(tx, psk_record("dev-b", "id-b", BS_KEY), 1.0)
            tx.execute(
                text(
                    "UPDATE endpoint_security SET psk_key = "
                    "(SELECT psk_key FROM endpoint_security WHERE endpoint = 'dev-a') "
                    "WHERE endpoint = 'dev-b'"
                )
            )
        with pytest.raises(SecretsError, match="dev-b"), store.transaction() as tx:
            store.security.get(tx, "dev-b")


def test_a_plaintext_store_is_sealed_in_place_once(target: StoreTarget) -> None:
    with target.open() as store:
        store.create_schema()
        create_bootstrap_schema(store)
        with store.transaction() as tx:  # written by a fleetloop without encryption
            store.security.set(tx, psk_record("old-1", "old-id-1", KEY), 1.0)
            IdentityRepository().add_many(
                tx, [FactoryIdentity("bs-1", BootstrapCredential.psk("bs-id-1", BS_KEY))]
            )
        assert raw_keys(store, "endpoint_security") == [KEY]
        assert raw_keys(store, "bs_identity") == [BS_KEY]
        bind(store, SecretBox(os.urandom(32)))
        with store.transaction() as tx:
            assert seal_plaintext(tx) == {"endpoint_security": 1, "bs_identity": 1}
        with store.transaction() as tx:
            assert seal_plaintext(tx) == {"endpoint_security": 0, "bs_identity": 0}
        assert KEY not in raw_keys(store, "endpoint_security")[0]
        assert BS_KEY not in raw_keys(store, "bs_identity")[0]
        with store.transaction() as tx:
            found = store.security.get(tx, "old-1")
            bs_keys = IdentityRepository().all_psk(tx)
        assert found is not None and found.psk is not None and found.psk.key == KEY
        assert bs_keys == [("bs-id-1", BS_KEY)]


def test_the_key_comes_from_the_file_the_environment_or_a_provider(tmp_path: Path) -> None:
    box = load_box(tmp_path, env={})
    assert (tmp_path / KEY_FILE).stat().st_mode & 0o777 == 0o600
    assert load_box(tmp_path, env={}).key_id == box.key_id  # kept across starts
    master = os.urandom(32)
    from_env = load_box(tmp_path, env={KEY_ENV: base64.b64encode(master).decode()})
    from_hook = load_box(None, env={}, provider=lambda: master)
    assert from_env.key_id == from_hook.key_id != box.key_id
    with pytest.raises(SecretsError, match="32"):
        load_box(None, env={}, provider=lambda: b"short")


def test_the_ca_key_file_is_encrypted_and_an_old_plaintext_one_is_upgraded(
    tmp_path: Path,
) -> None:
    CertificateAuthority.create(tmp_path / "ca")  # as an older fleetloop wrote it
    key_file = tmp_path / "ca" / CA_KEY_FILE
    assert b"ENCRYPTED" not in key_file.read_bytes()
    passphrase = base64.b64encode(SecretBox(os.urandom(32)).derive("ca key file"))
    first = CertificateAuthority.load(tmp_path / "ca", passphrase=passphrase)
    assert b"ENCRYPTED" in key_file.read_bytes()
    again = CertificateAuthority.load(tmp_path / "ca", passphrase=passphrase)
    assert again.fingerprint == first.fingerprint
    with pytest.raises(Exception, match="passphrase"):
        CertificateAuthority.load(tmp_path / "ca")


def _register_over_dtls(coaps_port: int, endpoint: str, identity: bytes, key: bytes) -> None:
    import asyncio

    from simulators.runner import SimulatedDevice

    async def run() -> None:
        uri = f"coaps://127.0.0.1:{coaps_port}"
        async with SimulatedDevice(endpoint, uri, psk=(identity, key)) as device:
            await asyncio.wait_for(device.wait_registered(), 20)

    asyncio.run(run())


def test_serve_seals_a_legacy_store_and_still_authenticates_its_devices(tmp_path: Path) -> None:
    from tests.hardening.serve_proc import ServeProcess

    data_dir = tmp_path / "data"
    data_dir.mkdir(mode=0o700)
    with Store.open(None, data_dir) as legacy:  # an older fleetloop: plaintext PSK rows
        legacy.create_schema()
        with legacy.transaction() as tx:
            legacy.security.set(tx, psk_record("legacy-dev", "legacy-id", KEY), 1.0)
    server = ServeProcess(data_dir)
    server.start()
    try:
        with server.api() as api:
            answer = api.put(
                "/security/new-dev", json={"psk_identity": "new-id", "psk_key": BS_KEY.hex()}
            )
            assert answer.status_code < 300, answer.text
        _register_over_dtls(server.coaps_port, "legacy-dev", b"legacy-id", KEY)
        _register_over_dtls(server.coaps_port, "new-dev", b"new-id", BS_KEY)
    finally:
        assert server.stop() == 0
    database = b"".join(
        p.read_bytes() for p in data_dir.iterdir() if p.name.startswith("fleetloop.db")
    )
    assert KEY not in database and BS_KEY not in database
    assert (data_dir / KEY_FILE).exists()
    assert "Traceback" not in server.log()


HOOK_KEY = bytes(range(32))


def hook_key() -> bytes:
    """A KMS-style hook, as FLEETLOOP_SECRETS_KEY_HOOK names it (module:function)."""
    return HOOK_KEY


def test_the_hook_named_in_the_environment_provides_the_key(tmp_path: Path) -> None:
    spec = f"{__name__}:hook_key"
    box = load_box(tmp_path, env={"FLEETLOOP_SECRETS_KEY_HOOK": spec})
    assert box.key_id == SecretBox(HOOK_KEY).key_id
    assert not (tmp_path / KEY_FILE).exists()  # no key file when a hook gives the key
    with pytest.raises(SecretsError, match="cannot be imported"):
        load_box(tmp_path, env={"FLEETLOOP_SECRETS_KEY_HOOK": "no.such.module:key"})


def test_serve_refuses_to_start_with_another_key_than_the_store_was_sealed_with(
    tmp_path: Path,
) -> None:
    from tests.hardening.serve_proc import ServeProcess, run_serve_once

    data_dir = tmp_path / "data"
    server = ServeProcess(data_dir)
    server.start()
    try:
        with server.api() as api:
            body = {"psk_identity": "k-1", "psk_key": KEY.hex()}
            assert api.put("/security/k-1", json=body).status_code < 300
    finally:
        assert server.stop() == 0
    (data_dir / KEY_FILE).write_text(base64.b64encode(os.urandom(32)).decode() + "\n")
    code, stderr = run_serve_once(data_dir)
    assert code == 1, stderr
    last = stderr.strip().splitlines()[-1]  # the CA key file is the first thing it opens
    assert last.startswith("error: the CA key in") and "does not open with the secrets key" in last
    assert "Traceback" not in stderr

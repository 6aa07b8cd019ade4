"""The firmware repository on SQLite and PostgreSQL: signatures checked against trusted vendor
keys (refused before anything is written), immutability, content addressing, quarantine and
resolution for campaigns."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from lifecycle.artifacts.firmware import (
    AmbiguousImage,
    FirmwareRepository,
    ImageConflict,
    ImageQuarantined,
    InvalidImage,
    InvalidVendorKey,
    SignatureRefused,
    UnknownImage,
    firmware_component,
    new_vendor_key,
    parse_signature,
    sign_image,
)
from lifecycle.artifacts.firmware_tables import FW_BLOB
from lifecycle.schema import create_schema
from lifecycle.state.dimensions import Desired, Dimension, Policy, PushFirmware, parse_desired, plan
from lwm2m.store import Store
from simulators.device.firmware import build_image, parse_image
from tests.lifecycle.api.conftest import database_url  # noqa: F401  (fixture: both databases)

VENDOR = new_vendor_key()
OTHER = new_vendor_key()


@pytest.fixture
def store(database_url: str | None, tmp_path: Path) -> Iterator[Store]:  # noqa: F811
    opened = Store.open(database_url, tmp_path)
    opened.create_schema()
    create_schema(opened)
    try:
        yield opened
    finally:
        opened.close()


def _repo(store: Store) -> FirmwareRepository:
    repo = FirmwareRepository(store.audit)
    with store.transaction() as tx:
        repo.add_vendor_key(tx, "acme", VENDOR[1].decode(), actor="op", now=1.0)
    return repo


def test_a_signed_image_is_published_once_and_its_bytes_are_stored_once(store: Store) -> None:
    repo = _repo(store)
    image = build_image("2.1.0", 5000)
    signature = sign_image(image, VENDOR[0])
    with store.transaction() as tx:
        first = repo.publish(
            tx, image, version="2.1.0", signature=signature, skus=["t1", "t2"], actor="op", now=2.0
        )
    with store.transaction() as tx:  # a retried upload: same answer, nothing new
        again = repo.publish(
            tx, image, version="2.1.0", signature=signature, skus=["t2", "t1"], actor="op", now=3.0
        )
    assert again == first
    assert first.id == first.sha256[:16] and first.size == len(image) and first.signer == "acme"
    assert (
        first.skus == ("t1", "t2") and first.uri("coap://h:5683/") == f"coap://h:5683/fw/{first.id}"
    )
    with store.transaction() as tx:
        assert repo.content(tx, first.sha256) == image
        blobs = tx.execute(FW_BLOB.select()).all()
        assert len(blobs) == 1
        assert [i.id for i in repo.images(tx)] == [first.id]
        assert repo.image(tx, first.sha256) == first
    assert parse_image(image).version == "2.1.0"


def test_immutable_the_same_bytes_under_other_metadata_are_refused(store: Store) -> None:
    repo = _repo(store)
    image = build_image("2.1.0", 100)
    signature = sign_image(image, VENDOR[0])
    with store.transaction() as tx:
        repo.publish(tx, image, version="2.1.0", signature=signature, actor="op", now=2.0)
    with pytest.raises(ImageConflict) as err, store.transaction() as tx:
        repo.publish(tx, image, version="2.2.0", signature=signature, actor="op", now=3.0)
    assert "already published as version 2.1.0" in str(err.value)
    assert "immutable" in str(err.value)


def test_a_signature_from_an_untrusted_key_or_of_other_bytes_is_refused(store: Store) -> None:
    repo = FirmwareRepository(store.audit)
    image = build_image("3.0.0", 100)
    with (
        pytest.raises(SignatureRefused, match="no vendor key is trusted"),
        store.transaction() as tx,
    ):
        repo.publish(
            tx, image, version="3.0.0", signature=sign_image(image, VENDOR[0]), actor="op", now=1.0
        )
    repo = _repo(store)
    for signature in (sign_image(image, OTHER[0]), sign_image(image + b"x", VENDOR[0])):
        with pytest.raises(SignatureRefused) as err, store.transaction() as tx:
            repo.publish(tx, image, version="3.0.0", signature=signature, actor="op", now=2.0)
        assert "3.0.0" in str(err.value) and "acme" in str(err.value)
        assert "trusted vendor key" in err.value.fix
    with store.transaction() as tx:
        assert repo.images(tx) == []
        assert tx.execute(FW_BLOB.select()).all() == []


def test_bad_uploads_get_typed_errors_naming_the_fix(store: Store) -> None:
    repo = _repo(store)
    image = build_image("1.0.0", 10)
    signature = sign_image(image, VENDOR[0])
    cases: list[tuple[dict[str, Any], str]] = [
        ({"version": "latest"}, "semantic version"),
        ({"content": b""}, "empty"),
        ({"signature": b""}, "no signature"),
        ({"skus": ["bad sku!"]}, "SKU"),
    ]
    for change, words in cases:
        args: dict[str, Any] = {
            "content": image,
            "version": "1.0.0",
            "signature": signature,
            "skus": [],
        }
        args.update(change)
        with pytest.raises(InvalidImage, match=words), store.transaction() as tx:
            repo.publish(
                tx,
                args["content"],
                version=args["version"],
                signature=args["signature"],
                skus=args["skus"],
                actor="op",
                now=1.0,
            )
    with pytest.raises(InvalidVendorKey, match="taken"), store.transaction() as tx:
        repo.add_vendor_key(tx, "acme", OTHER[1].decode(), actor="op", now=1.0)
    with pytest.raises(InvalidVendorKey, match="PEM"), store.transaction() as tx:
        repo.add_vendor_key(tx, "junk", "not a key", actor="op", now=1.0)


def test_quarantine_blocks_resolution_and_records_who_why_when(store: Store) -> None:
    repo = _repo(store)
    image = build_image("4.0.0", 100)
    with store.transaction() as tx:
        published = repo.publish(
            tx, image, version="4.0.0", signature=sign_image(image, VENDOR[0]), actor="op", now=1.0
        )
        assert repo.resolve(tx, "4.0.0") == published
        assert repo.resolve(tx, published.id) == published
        marked = repo.quarantine(tx, published.id, reason="boot loops", actor="alice", now=5.0)
    assert marked.quarantine is not None
    assert (marked.quarantine.by, marked.quarantine.reason, marked.quarantine.at) == (
        "alice",
        "boot loops",
        5.0,
    )
    with store.transaction() as tx:
        for ref in ("4.0.0", published.id, published.sha256):
            with pytest.raises(ImageQuarantined, match="alice: boot loops"):
                repo.resolve(tx, ref)
        with pytest.raises(ImageQuarantined):
            firmware_component(repo._known(tx, published.id), base_uri="coap://h", method="pull")
        restored = repo.unquarantine(tx, published.id, actor="alice", now=6.0)
    assert not restored.quarantined
    with store.transaction() as tx:
        assert repo.resolve(tx, "4.0.0").id == published.id
        with pytest.raises(UnknownImage):
            repo.resolve(tx, "9.9.9")
        records = (
            [r.action for r in store.audit.records(tx)] if hasattr(store.audit, "records") else []
        )
    assert records == [] or "firmware.quarantine" in records


def test_a_version_shared_by_two_images_needs_an_id_or_a_sku(store: Store) -> None:
    repo = _repo(store)
    a, b = build_image("5.0.0", 100, seed=1), build_image("5.0.0", 100, seed=2)
    with store.transaction() as tx:
        ia = repo.publish(
            tx,
            a,
            version="5.0.0",
            signature=sign_image(a, VENDOR[0]),
            skus=["A"],
            actor="op",
            now=1.0,
        )
        ib = repo.publish(
            tx,
            b,
            version="5.0.0",
            signature=sign_image(b, VENDOR[0]),
            skus=["B"],
            actor="op",
            now=1.0,
        )
        with pytest.raises(AmbiguousImage, match="name one by its id"):
            repo.resolve(tx, "5.0.0")
        assert repo.resolve(tx, "5.0.0", sku="A") == ia
        assert repo.resolve(tx, "5.0.0", sku="B") == ib
        with pytest.raises(InvalidImage, match="not compatible"):
            repo.resolve(tx, ia.id, sku="B")


def test_firmware_component_pull_and_push_values_are_valid_desired_values(store: Store) -> None:
    repo = _repo(store)
    image = build_image("6.0.0", 300)
    with store.transaction() as tx:
        published = repo.publish(
            tx, image, version="6.0.0", signature=sign_image(image, VENDOR[0]), actor="op", now=1.0
        )
    pull = firmware_component(published, base_uri="coaps://10.0.0.1:5684", method="pull")
    assert pull.dimension is Dimension.FIRMWARE
    assert pull.value == {"version": "6.0.0", "uri": f"coaps://10.0.0.1:5684/fw/{published.id}"}
    assert (pull.artifact, pull.size) == (published.id, 300 + len(image) - 300)
    push = firmware_component(published, base_uri="coap://x", method="push")
    assert push.value == {"version": "6.0.0", "image": published.sha256, "method": "push"}
    desired = Desired(Dimension.FIRMWARE, dict(push.value), 1, Policy.ENFORCE)
    assert plan(desired, {}) == PushFirmware(published.sha256)


@given(st.text(max_size=200))
def test_parse_signature_never_fails_untyped(text: str) -> None:
    with contextlib.suppress(InvalidImage):
        parse_signature(text)


@given(
    st.dictionaries(
        st.sampled_from(["version", "uri", "image", "method", "x"]),
        st.text(max_size=70) | st.none(),
        max_size=4,
    )
)
def test_parse_desired_firmware_push_forms_fail_typed(raw: dict[str, object]) -> None:
    from lifecycle.state.dimensions import StateError

    try:
        value = parse_desired(Dimension.FIRMWARE, raw)
    except StateError:
        return
    assert "version" in value


def test_a_reported_firmware_version_is_a_rollback_target_when_the_repository_holds_it(
    store: Store,
) -> None:
    """A device that never had a desired firmware is reverted to the image it reported
    running (pushed by fleetloop), when exactly one image of that version is held; else it has
    no firmware rollback target (the campaign report lists it)."""
    from lifecycle.campaigns.component import _firmware_image, _target
    from lifecycle.state.dimensions import Reported

    repo = _repo(store)
    image = build_image("1.4.0", 3000)
    with store.transaction() as tx:
        published = repo.publish(
            tx, image, version="1.4.0", signature=sign_image(image, VENDOR[0]), actor="op", now=2.0
        )
    ran = Reported(Dimension.FIRMWARE, {"version": "1.4.0", "update_state": "idle"})
    unknown = Reported(Dimension.FIRMWARE, {"version": "0.9.0"})
    with store.transaction() as tx:

        def lookup(version: str) -> dict[str, Any] | None:
            return _firmware_image(tx, version)

        target = _target(Dimension.FIRMWARE, None, ran, lookup)
        assert target == {"version": "1.4.0", "image": published.sha256, "method": "push"}
        assert _target(Dimension.FIRMWARE, None, unknown, lookup) is None
        repo.quarantine(tx, published.id, reason="bad", actor="op", now=3.0)
        assert _firmware_image(tx, "1.4.0") is None  # never back onto a quarantined image

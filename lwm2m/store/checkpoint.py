"""Signed checkpoints of the audit log and self-contained inclusion proofs.

A checkpoint says "the audit log had ``tree_size`` records and their RFC 6962 Merkle root was
``root_hash``", signed with Ed25519. Kept somewhere the database's writers cannot reach (a
ticket, another machine, a WORM bucket), it pins the log: any later edit, deletion, reordering
or truncation of the first ``tree_size`` records changes the root (``fleetloop audit verify``).

A proof document (:func:`proof_document`) carries one record, its audit path, the signed
checkpoint and the public key, so an auditor checks it with :func:`check_proof_document` and
nothing else -- no database, no server. The module does no I/O; keys come in as bytes.

Signed message (one line each, like a transparency-log checkpoint note)::

    fleetloop-audit-checkpoint/v1
    <tree size, decimal>
    <root hash, hex>
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from lwm2m.store import merkle

CHECKPOINT_ORIGIN = "fleetloop-audit-checkpoint/v1"
PROOF_FORMAT = "fleetloop-audit-proof/v1"


class ProofError(ValueError):
    """A proof document is malformed or does not verify; the message says which check failed."""


def key_id_of(public_key_raw: bytes) -> str:
    """The public key's id: the first 16 hex of the SHA-256 of its 32 raw bytes."""
    return hashlib.sha256(public_key_raw).hexdigest()[:16]


def checkpoint_message(tree_size: int, root_hash: bytes) -> bytes:
    """The exact bytes a checkpoint's signature covers."""
    return f"{CHECKPOINT_ORIGIN}\n{tree_size}\n{root_hash.hex()}\n".encode()


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """A signed tree head: ``root_hash`` (hex) of the first ``tree_size`` records."""

    tree_size: int
    root_hash: str
    signature: str  # base64 Ed25519 signature of checkpoint_message()
    key_id: str
    at: float

    def message(self) -> bytes:
        return checkpoint_message(self.tree_size, bytes.fromhex(self.root_hash))

    def as_dict(self) -> dict[str, Any]:
        return {
            "tree_size": self.tree_size,
            "root_hash": self.root_hash,
            "signature": self.signature,
            "key_id": self.key_id,
            "at": self.at,
        }

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any]) -> Checkpoint:
        """Parse an exported checkpoint; :class:`ProofError` names the bad field."""
        try:
            checkpoint = cls(
                tree_size=int(doc["tree_size"]),
                root_hash=str(doc["root_hash"]).lower(),
                signature=str(doc["signature"]),
                key_id=str(doc["key_id"]),
                at=float(doc.get("at", 0.0)),
            )
            if len(bytes.fromhex(checkpoint.root_hash)) != merkle.HASH_SIZE:
                raise ValueError("root_hash is not 32 bytes")
        except (KeyError, TypeError, ValueError) as err:
            raise ProofError(f"not a fleetloop audit checkpoint: {err}") from None
        if checkpoint.tree_size < 0:
            raise ProofError("not a fleetloop audit checkpoint: negative tree_size")
        return checkpoint


class CheckpointSigner(Protocol):
    """What :meth:`lwm2m.store.audit.AuditLog.checkpoint` signs with (the key stays outside)."""

    @property
    def key_id(self) -> str: ...

    def sign(self, message: bytes) -> bytes: ...


class Ed25519Signer:
    """An Ed25519 private key as a :class:`CheckpointSigner`."""

    def __init__(self, private_key: Ed25519PrivateKey) -> None:
        self._key = private_key
        self.public_key_raw = private_key.public_key().public_bytes_raw()
        self._key_id = key_id_of(self.public_key_raw)

    @property
    def key_id(self) -> str:
        return self._key_id

    def sign(self, message: bytes) -> bytes:
        return self._key.sign(message)

    def verifier(self) -> CheckpointVerifier:
        return CheckpointVerifier(self.public_key_raw)


class CheckpointVerifier:
    """Checks checkpoint signatures against one Ed25519 public key (raw 32 bytes)."""

    def __init__(self, public_key_raw: bytes) -> None:
        try:
            self._key = Ed25519PublicKey.from_public_bytes(public_key_raw)
        except ValueError as err:
            raise ProofError(f"not an Ed25519 public key: {err}") from None
        self.key_id = key_id_of(public_key_raw)

    def verify(self, checkpoint: Checkpoint) -> bool:
        if checkpoint.key_id != self.key_id:
            return False
        try:
            signature = base64.b64decode(checkpoint.signature, validate=True)
            self._key.verify(signature, checkpoint.message())
        except (InvalidSignature, ValueError):
            return False
        return True


def sign_checkpoint(signer: CheckpointSigner, tree_size: int, root: bytes, at: float) -> Checkpoint:
    signature = signer.sign(checkpoint_message(tree_size, root))
    return Checkpoint(
        tree_size, root.hex(), base64.b64encode(signature).decode(), signer.key_id, at
    )


# -- self-contained proofs -------------------------------------------------------------------------


def proof_document(
    record: Mapping[str, Any],
    leaf_data: bytes,
    index: int,
    path: Sequence[bytes],
    checkpoint: Checkpoint,
    public_key_raw: bytes,
) -> dict[str, Any]:
    """The JSON an auditor keeps: everything :func:`check_proof_document` needs."""
    return {
        "format": PROOF_FORMAT,
        "record": dict(record),
        "leaf_data": leaf_data.decode(),
        "leaf_hash": merkle.leaf_hash(leaf_data).hex(),
        "leaf_index": index,
        "tree_size": checkpoint.tree_size,
        "audit_path": [p.hex() for p in path],
        "checkpoint": checkpoint.as_dict(),
        "public_key": base64.b64encode(public_key_raw).decode(),
        "key_id": key_id_of(public_key_raw),
    }


def check_proof_document(
    doc: Mapping[str, Any], *, trusted_key_id: str | None = None
) -> dict[str, Any]:
    """Verify a proof offline; return a summary or raise :class:`ProofError` naming the failure.

    Checks, in order: the leaf data is the record's canonical content (so the record shown is
    the record hashed), the leaf hash, the audit path leads to the checkpoint's root, and the
    checkpoint's signature under the included public key -- whose id the auditor should compare
    with the one they trust (``trusted_key_id``), since a forger would bring their own key.
    """
    try:
        if doc.get("format") != PROOF_FORMAT:
            raise ProofError(f"not a {PROOF_FORMAT} document")
        leaf_data = str(doc["leaf_data"]).encode()
        index = int(doc["leaf_index"])
        tree_size = int(doc["tree_size"])
        path = [bytes.fromhex(str(p)) for p in doc["audit_path"]]
        checkpoint = Checkpoint.from_dict(doc["checkpoint"])
        public_key = base64.b64decode(str(doc["public_key"]), validate=True)
        record = doc["record"]
    except (KeyError, TypeError, ValueError) as err:
        if isinstance(err, ProofError):
            raise
        raise ProofError(f"malformed proof document: {err}") from None
    if json.loads(leaf_data) != _hashed_fields(record):
        raise ProofError("the record does not match the hashed leaf data (record was altered)")
    leaf = merkle.leaf_hash(leaf_data)
    if leaf.hex() != str(doc.get("leaf_hash", "")).lower():
        raise ProofError("leaf_hash is not the hash of leaf_data")
    if checkpoint.tree_size != tree_size:
        raise ProofError("tree_size differs from the checkpoint's")
    if not merkle.verify_inclusion(
        index, tree_size, leaf, path, bytes.fromhex(checkpoint.root_hash)
    ):
        raise ProofError(
            f"the audit path does not lead from record {index + 1} to the checkpoint root "
            f"(tree size {tree_size})"
        )
    verifier = CheckpointVerifier(public_key)
    if trusted_key_id is not None and verifier.key_id != trusted_key_id:
        raise ProofError(f"signed by key {verifier.key_id}, not the trusted key {trusted_key_id}")
    if not verifier.verify(checkpoint):
        raise ProofError("the checkpoint's signature does not verify with the included key")
    return {
        "ok": True,
        "seq": index + 1,
        "tree_size": tree_size,
        "root_hash": checkpoint.root_hash,
        "key_id": verifier.key_id,
    }


HASHED_FIELDS = (
    "seq",
    "at",
    "actor",
    "token_id",
    "tenant",
    "action",
    "subject",
    "endpoints",
    "detail",
    "outcome",
)


def _hashed_fields(record: Any) -> dict[str, Any]:
    if not isinstance(record, Mapping):
        raise ProofError("record is not an object")
    try:
        fields = {name: record[name] for name in HASHED_FIELDS}
    except KeyError as err:
        raise ProofError(f"record lacks {err}") from None
    fields["at"] = repr(float(fields["at"]))
    return fields


__all__ = [
    "CHECKPOINT_ORIGIN",
    "HASHED_FIELDS",
    "PROOF_FORMAT",
    "Checkpoint",
    "CheckpointSigner",
    "CheckpointVerifier",
    "Ed25519Signer",
    "ProofError",
    "check_proof_document",
    "checkpoint_message",
    "key_id_of",
    "proof_document",
    "sign_checkpoint",
]

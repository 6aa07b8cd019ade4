"""The audit log's signing key in the data directory (``audit-key.pem``).

An Ed25519 private key (PKCS#8 PEM, mode 0600), created on the first ``serve`` start and kept
across restarts: every checkpoint the server signs names the key by its id (the first 16 hex
of the SHA-256 of the raw public key), and an auditor who kept a checkpoint needs the same key
to recognise later ones. Losing the file does not lose the log -- a new key signs from then on
-- but checkpoints signed by the old key can then only be checked with its public key, which
every exported checkpoint and proof carries.
"""

from __future__ import annotations

from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from cli.datadir import DataDirError, _write_private
from lwm2m.store import Ed25519Signer

KEY_FILE = "audit-key.pem"


def load_or_create_signer(data_dir: Path) -> tuple[Ed25519Signer, bool]:
    """The data directory's audit signer, and whether it was created just now."""
    path = data_dir / KEY_FILE
    if path.exists():
        try:
            key = serialization.load_pem_private_key(path.read_bytes(), password=None)
        except (OSError, ValueError, TypeError) as err:
            raise DataDirError(
                f"cannot read the audit signing key {path}: {err}; restore it from a backup, "
                "or move it away to start signing with a new key"
            ) from None
        if not isinstance(key, Ed25519PrivateKey):
            raise DataDirError(f"{path} is not an Ed25519 private key; move it away")
        return Ed25519Signer(key), False
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    _write_private(path, pem.decode())
    return Ed25519Signer(key), True


__all__ = ["KEY_FILE", "load_or_create_signer"]

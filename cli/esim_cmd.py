"""The eIM in ``fleetloop serve``: the optional ESipa HTTPS listener (``--esipa-https``).

The eIM signing key lives in the data directory (``eim-key.pem``, P-256, 0600, made on first
start); ``--eim-ci`` names the PEM bundle of CI certificates eUICC chains must lead to (the GSMA
CI in production). TLS uses the deployment's certificate (``--x509-cert``/``--x509-key``);
without it the listener only starts on a loopback address. docs/SGP32.md, docs/CONFIG.md.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from cli.settings import ServeSettings
from lwm2m.store import Store
from sgp32.eim import Eim, EimDeployment
from sgp32.eim.schema import create_schema
from sgp32.eim.sql import EimStore
from sgp32.esipa.https import EsipaHttpsServer, server_ssl_context
from sgp32.signing import EimIdentity

log = logging.getLogger("fleetloop.esim")
KEY_FILE = "eim-key.pem"


class EsimSetupError(RuntimeError):
    """The eIM cannot start as configured; the message names the setting to fix."""


@dataclass
class RunningEsipa:
    server: EsipaHttpsServer
    eims: EimStore
    host: str
    port: int

    def json(self) -> dict[str, object]:
        return {"host": self.host, "port": self.port}


def load_or_create_key(data_dir: Path) -> ec.EllipticCurvePrivateKey:
    path = data_dir / KEY_FILE
    if not path.exists():
        key = ec.generate_private_key(ec.SECP256R1())
        pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as out:
            out.write(pem)
        log.info("generated the eIM signing key", extra={"file": str(path)})
    loaded = serialization.load_pem_private_key(path.read_bytes(), None)
    if not isinstance(loaded, ec.EllipticCurvePrivateKey):
        raise EsimSetupError(f"{path}: not an EC private key; delete it to have one generated")
    return loaded


def load_cis(path: Path | None) -> list[x509.Certificate]:
    if path is None:
        log.warning("no --eim-ci: eUICCs cannot be imported until a CI is configured")
        return []
    try:
        return x509.load_pem_x509_certificates(path.read_bytes())
    except (OSError, ValueError) as exc:
        raise EsimSetupError(f"--eim-ci {path}: cannot read PEM certificates ({exc})") from exc


async def start_in_serve(
    settings: ServeSettings, store: Store, data_dir: Path
) -> RunningEsipa | None:
    """Start the ESipa HTTPS listener when ``--esipa-https`` is set (default: off)."""
    listen = settings.esipa_https
    if listen is None:
        return None
    create_schema(store)
    identity = EimIdentity(settings.eim_id, load_or_create_key(data_dir))
    eims = EimStore(store, Eim(EimDeployment.of([identity], load_cis(settings.eim_ci))))
    tls = None
    if settings.x509_cert is not None and settings.x509_key is not None:
        tls = server_ssl_context(settings.x509_cert, settings.x509_key)
    server = EsipaHttpsServer(eims.handle, tls=tls)
    host, port = await server.start(listen.host or "127.0.0.1", listen.port)
    log.info(
        "ESipa HTTPS listening",
        extra={"address": f"{host}:{port}", "tls": tls is not None, "eim_id": identity.eim_id},
    )
    return RunningEsipa(server, eims, host, port)

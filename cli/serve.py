"""``fleetloop serve``: the DM server (CoAP + CoAPs) and the management API in one event loop.

Start-up order, each step failing with one line that says what to change:

1. settings (flag > env > TOML > default, :mod:`cli.settings`) and logging;
2. the data directory: created 0700, locked (one server per directory), API token created on
   first start (0600);
3. the object model (built-ins + ``--objects`` folders), the store (SQLite under the data
   directory, or ``--database-url``) and its schema;
4. the LwM2M server (:class:`lwm2m.server.LwM2MServer`) on the CoAP/CoAPs ports, then the
   bootstrap server on the bootstrap ports (:func:`cli.bootstrap_cmd.start_in_serve`; the CA
   in ``<data-dir>/ca`` also certifies the DM server when no ``--x509-*`` is given);
5. the API: the socket is bound here (so port 0 works and a busy port fails early), then
   ``uvicorn.Server.serve()`` runs as a task of this same loop -- the routes await the
   server's coroutines directly;
6. ``api.json`` (URL, token, the ports actually bound) for the CLI, then the ``ready`` line.

SIGINT/SIGTERM start a graceful shutdown in the reverse order: event streams end, uvicorn
finishes in-flight requests (5 s at most), the LwM2M server stops, the store commits what is
queued and closes, ``api.json`` is removed and the lock released. A second signal exits at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import re
import signal
import socket
import time
from collections.abc import Generator, Mapping
from dataclasses import dataclass
from pathlib import Path

import uvicorn

import objects
from cli import bootstrap_cmd, esim_cmd
from cli.audit_key import load_or_create_signer
from cli.datadir import (
    ApiInfo,
    ServeLock,
    ensure_token,
    lock_down,
    prepare,
    remove_api_info,
    write_api_info,
)
from cli.schema_guard import SchemaGuard, guard_for
from cli.settings import Listen, ServeSettings
from lifecycle.api import ApiContext, create_app
from lifecycle.api.bootstrap_routes import BootstrapApi
from lifecycle.api.render import iso8601
from lifecycle.artifacts.firmware_serving import FirmwareServing, base_uris
from lifecycle.audit_events import AuditComponent
from lifecycle.campaigns.component import CampaignComponent
from lifecycle.inventory_events import InventoryService
from lifecycle.operators import OperatorRegistry
from lifecycle.schema import create_schema as create_lifecycle_schema
from lifecycle.service import LifecycleService
from lifecycle.state.component import StateComponent
from lifecycle.state.component import config_from_env as state_config_from_env
from lwm2m.server import LwM2MServer, Registered, ServerConfig, Updated
from lwm2m.store import Store
from lwm2m.store.secrets import bind as secrets_bind
from lwm2m.store.secrets import load_box, seal_plaintext
from lwm2m.store.telemetry import RetentionPolicy, TelemetryRetention
from lwm2m.transport import ConfigurationError, X509Credentials
from sgp32.errors import Sgp32Error

log = logging.getLogger("fleetloop.serve")

GRACEFUL_SECONDS = 5.0


class ServeError(RuntimeError):
    """Start-up failed; the message is the one line to show the operator."""


class _EmbeddedUvicorn(uvicorn.Server):
    """uvicorn without its own signal handling: ``serve`` owns SIGINT/SIGTERM for the whole
    process, and uvicorn re-raising a captured signal after shutdown would kill the process
    before the LwM2M server and the store have closed."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


@dataclass(frozen=True, slots=True)
class Bound:
    host: str
    port: int

    def json(self) -> dict[str, object]:
        return {"host": self.host, "port": self.port}

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


def _address_text(bound: Mapping[str, object]) -> str:
    """``host:port`` (``[v6]:port``) of a bound socket as api.json records it."""
    return str(Bound(str(bound["host"]), int(str(bound["port"]))))


def _bound(address: tuple[object, ...] | None) -> Bound | None:
    if address is None:
        return None
    return Bound(str(address[0]), int(str(address[1])))


def bind_api_socket(listen: Listen) -> socket.socket:
    """A listening-ready TCP socket for the API (``port`` 0: ephemeral)."""
    host = listen.host or "127.0.0.1"
    try:
        infos = socket.getaddrinfo(
            host, listen.port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
    except socket.gaierror as err:
        raise ServeError(f"--api host {host!r} does not resolve: {err.strerror}") from None
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind(address)
        sock.listen(128)
        sock.setblocking(False)
    except OSError as err:
        sock.close()
        raise ServeError(
            f"cannot listen for the API on {listen}: {err.strerror}; choose another with "
            "--api HOST:PORT (port 0 picks a free one)"
        ) from None
    return sock


def api_url(host: str, port: int) -> str:
    """The URL a local CLI uses: a wildcard bind is reached through loopback."""
    if host in ("0.0.0.0", ""):
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


_PEM_CERT = re.compile(rb"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----", re.S)


def _read(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as err:
        raise ServeError(f"cannot read the {what} {path}: {err.strerror}") from None


def load_x509(settings: ServeSettings) -> X509Credentials | None:
    """The DTLS certificate material from ``--x509-cert/--x509-key/--x509-ca`` (PEM files)."""
    if settings.x509_cert is None or settings.x509_key is None or settings.x509_ca is None:
        return None
    chain_pem = _read(settings.x509_cert, "server certificate")
    chain = tuple(_PEM_CERT.findall(chain_pem)) or (chain_pem,)
    anchors_pem = _read(settings.x509_ca, "CA certificate file")
    anchors = tuple(_PEM_CERT.findall(anchors_pem)) or (anchors_pem,)
    return X509Credentials(chain, _read(settings.x509_key, "server private key"), anchors)


def server_config(settings: ServeSettings) -> ServerConfig:
    """The LwM2M server's configuration from the serve settings."""
    try:
        return ServerConfig(
            coap_host=settings.coap.host,
            coap_port=settings.coap.port,
            coaps_host=settings.coaps.host if settings.coaps else None,
            coaps_port=settings.coaps.port if settings.coaps else None,
            secure_only=settings.secure_only,
            x509=load_x509(settings),
        )
    except ValueError as err:
        raise ServeError(f"invalid server settings: {err}") from None


def retention_policy(settings: ServeSettings) -> RetentionPolicy:
    """The telemetry retention of ``--telemetry-max-age/-max-rows/-retention-interval``."""
    return RetentionPolicy(
        max_age=settings.telemetry_max_age,
        max_rows_per_device=settings.telemetry_max_rows,
        interval=settings.telemetry_retention_interval,
    )


def _log_security_posture(settings: ServeSettings) -> None:
    if settings.secure_only:
        if settings.coaps is None:
            log.warning(
                "secure-only with CoAPs off: only endpoints with an explicit NoSec grant "
                "(`fleetloop security set EP --allow-nosec`) can register"
            )
        else:
            log.info("secure-only: plain-CoAP registration needs a per-endpoint NoSec grant")
    else:
        log.warning(
            "NoSec registration is open: any endpoint without a security record may register "
            "over plain CoAP; set credentials with `fleetloop security set` and restart with "
            "--secure-only (or secure_only = true) to close it"
        )


def _log_api_exposure(listen_host: str) -> None:
    if listen_host not in ("127.0.0.1", "::1", "localhost"):
        log.warning(
            "the management API listens beyond loopback over plain HTTP: the bearer token "
            "travels in clear; put a TLS reverse proxy in front of it",
            extra={"api_host": listen_host},
        )


class Service:
    """The running pieces, so that shutdown can undo exactly what start-up did."""

    def __init__(self, settings: ServeSettings) -> None:
        self.settings = settings
        self.data_dir = settings.data_dir
        self.lock: ServeLock | None = None
        self.store: Store | None = None
        self.server: LwM2MServer | None = None
        self.context: ApiContext | None = None
        self.uvicorn: _EmbeddedUvicorn | None = None
        self.api_task: asyncio.Task[None] | None = None
        self.info: ApiInfo | None = None
        self.bootstrap: BootstrapApi | None = None
        self.lifecycle: LifecycleService | None = None
        self.state: StateComponent | None = None
        self.campaigns: CampaignComponent | None = None
        self.audit: AuditComponent | None = None
        self.schema_guard: SchemaGuard | None = None
        self.retention: TelemetryRetention | None = None
        self.esipa: esim_cmd.RunningEsipa | None = None
        self.firmware: FirmwareServing | None = None

    async def start(self) -> ApiInfo:
        settings = self.settings
        self.data_dir = prepare(settings.data_dir)
        for path in lock_down(self.data_dir, sqlite_database=settings.database_url is None):
            log.warning("tightened to owner-only access", extra={"file": str(path)})
        self.lock = ServeLock(self.data_dir)
        self.lock.acquire()
        token, created = ensure_token(self.data_dir)
        if created:
            log.info(
                "generated the API token",
                extra={"token_file": str(self.data_dir / "api-token")},
            )
        try:
            loaded = objects.load_model(settings.objects)
        except objects.ObjectsError as err:
            raise ServeError(f"cannot load the object definitions: {err}") from None
        for override in loaded.overrides:
            log.info(
                "object definition replaced",
                extra={"object": override.object_id, "origin": override.origin},
            )
        for path, reason in loaded.skipped:
            log.warning("DDF file skipped", extra={"file": str(path), "reason": reason})
        config = server_config(settings)
        if config.x509 is None and config.coaps_port is not None:
            ca = await asyncio.to_thread(bootstrap_cmd.open_ca, self.data_dir)
            config = dataclasses.replace(config, x509=bootstrap_cmd.dm_certificate(ca, settings))
        self.store = await asyncio.to_thread(Store.open, settings.database_url, self.data_dir)
        await asyncio.to_thread(self.store.create_schema)
        box = await asyncio.to_thread(load_box, self.data_dir)
        secrets_bind(self.store, box)  # PSKs sealed at rest (docs/SECURITY.md)
        log.info("store open", extra={"database": self.store.url, "secrets_key": box.source})
        try:
            self.server = await LwM2MServer.start(config, self.store, loaded)
        except ConfigurationError as err:
            raise ServeError(
                f"cannot set up CoAPs: {err}; check --x509-cert, --x509-key and --x509-ca "
                "(PEM; the key must be EC P-256)"
            ) from None
        except OSError as err:
            raise ServeError(
                f"cannot open the CoAP sockets ({settings.coap}, coaps {settings.coaps}): "
                f"{err.strerror or err}; choose other ports with --coap/--coaps (0: any free)"
            ) from None
        _log_security_posture(settings)
        try:
            self.bootstrap = await bootstrap_cmd.start_in_serve(
                settings, self.store, self.server, self.data_dir
            )
        except OSError as err:
            raise ServeError(
                f"cannot open the bootstrap sockets ({settings.bs_coap}, coaps "
                f"{settings.bs_coaps}): {err.strerror or err}; choose other ports with "
                "--bs-coap/--bs-coaps (off: disabled)"
            ) from None
        sealed = await self.store.write(seal_plaintext)  # stores written before encryption
        if any(sealed.values()):
            log.info("sealed plaintext secrets in place", extra={"sealed": sealed})
        await asyncio.to_thread(create_lifecycle_schema, self.store)
        self.lifecycle = LifecycleService(self.server)
        # -- lifecycle components register their event handlers here --
        signer, new_key = await asyncio.to_thread(load_or_create_signer, self.data_dir)
        if new_key:
            log.info("generated the audit signing key", extra={"key_id": signer.key_id})
        self.audit = AuditComponent(self.store, signer, public_key_raw=signer.public_key_raw)
        self.audit.install(self.lifecycle)
        await self.audit.start()  # a first checkpoint over what earlier runs wrote
        inventory = InventoryService(self.store)  # first: later handlers see the record
        inventory.attach(self.lifecycle)
        try:
            self.state = StateComponent(self.server, self.store, state_config_from_env())
        except ValueError as err:
            raise ServeError(f"invalid reconciler setting: {err}") from None
        self.state.install(self.lifecycle)
        # Firmware images served on the DM server's own sockets (/fw/<id>), pushed from cache.
        self.firmware = FirmwareServing(self.store)
        self.firmware.install(self.server)
        self.state.reconciler.firmware_content = self.firmware.content
        if self.bootstrap is not None and self.bootstrap.server is not None:
            # DM PSK rotation by server-initiated re-bootstrap (credentials dimension)
            from lifecycle.artifacts.credentials import CredentialRotator

            self.state.reconciler.credentials = CredentialRotator(
                self.store, self.server, self.bootstrap.manager
            )
        self.state.start()
        # campaigns deliver through desired state: their handlers run after the state's
        campaigns = CampaignComponent(self.server, self.store, self.state, inventory)
        campaigns.install(self.lifecycle)
        campaigns.start()
        self.campaigns = campaigns
        operators = OperatorRegistry(self.store)
        self.lifecycle.start()
        try:  # the eIM's ESipa HTTPS listener (--esipa-https, default off)
            self.esipa = await esim_cmd.start_in_serve(
                settings, self.store, self.data_dir, self.state, self.server, self.lifecycle
            )
        except (esim_cmd.EsimSetupError, Sgp32Error, OSError) as err:
            message = f"cannot start the eIM (--esipa-https {settings.esipa_https}): {err}"
            raise ServeError(message) from None
        if self.esipa is not None:  # eIM push over CoAP to IPAs that declared ipaInjectCoaps
            from sgp32.esipa.push import CoapPush, ServerTransmit

            # pushes ride each device's own DM session (CoAP or DTLS; through its NAT binding)
            push = CoapPush(
                self.esipa.eims,
                self.esipa.component.handle,
                self.server,
                ServerTransmit(self.server),
            )
            self.esipa.component.on_queued.append(push.queued)
            self.esipa.component.on_stop.append(push.stop)
            self.lifecycle.on(Registered, push.on_registered)
            self.lifecycle.on(Updated, push.on_updated)
        sock = bind_api_socket(settings.api)
        host, port = sock.getsockname()[:2]
        _log_api_exposure(host)
        self.context = ApiContext(
            self.server, self.store, loaded, token, lifecycle=self.lifecycle, operators=operators
        )
        self.context.state = self.state
        self.context.inventory = inventory
        self.context.audit = self.audit
        self.context.campaigns = self.campaigns
        app = create_app(self.context)
        app.state.bootstrap = self.bootstrap
        app.state.firmware = self.firmware
        app.state.esim = self.esipa.component if self.esipa else None  # /v1/esim
        esipa = self.esipa.json() if self.esipa else None
        app.state.esipa_address = (esipa["host"], esipa["port"]) if esipa else None  # /v1/status
        self.schema_guard = guard_for(self.store)  # recreates a dropped schema; GET /ready
        app.state.readiness = self.schema_guard
        self.schema_guard.start()
        self.retention = TelemetryRetention(
            self.store.telemetry, self.store.write, self.store.read, retention_policy(settings)
        )
        self.retention.start()  # telemetry history bounded by age and rows per device
        config_uv = uvicorn.Config(
            app,
            log_config=None,
            access_log=True,
            lifespan="off",
            timeout_graceful_shutdown=int(GRACEFUL_SECONDS),
            server_header=False,
        )
        self.uvicorn = _EmbeddedUvicorn(config_uv)
        self.api_task = asyncio.create_task(self.uvicorn.serve(sockets=[sock]), name="api")
        while not self.uvicorn.started:
            if self.api_task.done():
                self.api_task.result()
                raise ServeError("the management API stopped during start-up (see the log)")
            await asyncio.sleep(0.01)
        coap = _bound(self.server.coap_address)
        coaps = _bound(self.server.coaps_address)
        self.firmware.base_uris = base_uris(
            coap.json() if coap else None, coaps.json() if coaps else None
        )
        url = api_url(host, port)
        self.info = ApiInfo(
            url=url,
            token=token,
            pid=os.getpid(),
            api={"host": host, "port": port},
            coap=coap.json() if coap else None,
            coaps=coaps.json() if coaps else None,
            database=self.store.url,
            version=self.context.version,
            started_at=iso8601(time.time()),
            extra={
                **bootstrap_cmd.api_info_extra(self.bootstrap),
                "esipa_https": self.esipa.json() if self.esipa else None,
            },
        )
        write_api_info(self.data_dir, self.info)
        log.info(
            "ready",
            extra={
                "api": url,
                "console": f"{url}/console/",
                "coap": str(coap) if coap else "off",
                "coaps": str(coaps) if coaps else "off",
                **{
                    name: _address_text(bound) if bound else "off"
                    for name, bound in bootstrap_cmd.api_info_extra(self.bootstrap).items()
                },
                "esipa_https": _address_text(self.esipa.json()) if self.esipa else "off",
                "data_dir": str(self.data_dir),
                "secure_only": settings.secure_only,
            },
        )
        return self.info

    async def stop(self) -> None:
        """Undo :meth:`start` in reverse; safe after a partial start."""
        log.info("stopping")
        if self.schema_guard is not None:
            await self.schema_guard.stop()
        if self.retention is not None:
            await self.retention.stop()
        if self.context is not None:
            self.context.close_streams()
        if self.uvicorn is not None and self.api_task is not None:
            self.uvicorn.should_exit = True
            try:
                await asyncio.wait_for(asyncio.shield(self.api_task), GRACEFUL_SECONDS + 2)
            except (TimeoutError, Exception):
                self.uvicorn.force_exit = True
                self.api_task.cancel()
                with contextlib.suppress(BaseException):
                    await self.api_task
        if self.esipa is not None:
            await self.esipa.stop()
        if self.lifecycle is not None:
            await self.lifecycle.stop()
        if self.campaigns is not None:
            await self.campaigns.stop()
        if self.state is not None:
            await self.state.stop()
        if self.bootstrap is not None and self.bootstrap.server is not None:
            try:
                await self.bootstrap.server.stop()
            except Exception:
                log.exception("the bootstrap server did not stop cleanly")
        if self.server is not None:
            try:
                await self.server.stop()
            except Exception:
                log.exception("the LwM2M server did not stop cleanly")
        if self.audit is not None:
            await self.audit.stop()  # open refusal counters and a last checkpoint
        if self.store is not None:
            await self.store.aclose()
        if self.info is not None:
            remove_api_info(self.data_dir, os.getpid())
        if self.lock is not None:
            self.lock.release()
        log.info("stopped")


async def serve(settings: ServeSettings) -> None:
    """Run until SIGINT/SIGTERM (or until the API task dies), then shut down gracefully."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    signals_seen = 0

    def on_signal(signum: int) -> None:
        nonlocal signals_seen
        signals_seen += 1
        if signals_seen > 1:
            log.warning("second signal: exiting now")
            os._exit(130)
        log.info("signal received", extra={"signal": signal.Signals(signum).name})
        stop.set()

    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, on_signal, signum)
    service = Service(settings)
    try:
        await service.start()
        assert service.api_task is not None
        stopper = asyncio.create_task(stop.wait())
        await asyncio.wait({stopper, service.api_task}, return_when=asyncio.FIRST_COMPLETED)
        stopper.cancel()
        if service.api_task.done() and not stop.is_set():
            log.error("the management API stopped unexpectedly; shutting down")
    finally:
        await service.stop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)

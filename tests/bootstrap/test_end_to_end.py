"""Bootstrap over real sockets, then registration at a real DM server (ETS int-0..int-9).

Every test runs against SQLite and PostgreSQL: a bootstrap server and DM server(s) on
127.0.0.1 ephemeral ports share the store, and simulated devices leave the "factory" with only
their bootstrap credentials. A test passes only when the device registered with the DM
server using the credentials the bootstrap provisioned -- and, where it says so, when the
wrong or old credentials are refused.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from aiocoap import CON, Message
from aiocoap.numbers.codes import Code

from bootstrap.ca import CertificateAuthority
from bootstrap.errors import RebootstrapFailed, UnknownIdentity
from bootstrap.policy import Policy
from bootstrap.state import Phase
from lwm2m.model import SingleResource
from lwm2m.server import LwM2MServer
from lwm2m.store import EndpointSecurity, Store
from lwm2m.transport import DtlsClient, DtlsClientConfig, HandshakeFailed, Peer, X509Credentials
from simulators.device import WAKAAMA, ClientConfig
from simulators.device.bootstrap import dm_account
from simulators.device.events import (
    BootstrapFailed,
    BootstrapFinished,
    Registered,
    RegistrationFailed,
)
from simulators.runner import BootstrapError, SimulatedDevice
from tests.bootstrap.conftest import run
from tests.bootstrap.stack import KEYS, Stack, running

pytestmark = pytest.mark.integration


class Sink:
    def datagram_received(self, data: bytes, peer: Peer) -> None:
        pass


async def handshake(host_port: tuple[str, int], **config: Any) -> None:
    """Open and close a DTLS session (raises HandshakeFailed when refused)."""
    client = await DtlsClient.connect(
        Sink(), host_port[0], host_port[1], DtlsClientConfig(**config), timeout=5.0
    )
    client.close()


async def security(store: Store, endpoint: str) -> EndpointSecurity:
    found = await store.read(lambda tx: store.security.get(tx, endpoint))
    assert found is not None
    return found


async def value(dm: LwM2MServer, endpoint: str, path: str) -> object:
    result = await dm.read(endpoint, path, timeout=5.0)
    assert result.ok, (path, result.code, result.reason)
    assert isinstance(result.content, SingleResource)
    return result.content.value.value


async def eventually(predicate: Any, timeout: float = 5.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        assert loop.time() < deadline, "condition not reached in time"
        await asyncio.sleep(0.01)


def dm_address(stack: Stack, region: str = "eu") -> tuple[str, int]:
    address = stack.dm[region].coaps_address
    assert address is not None
    return address[0], address[1]


# -- client-initiated bootstrap -------------------------------------------------------------------


def test_int_0_client_initiated_bootstrap(store: Store) -> None:
    """A NoSec factory identity bootstraps over plain CoAP and registers without DTLS."""

    async def scenario() -> None:
        async with running(store, secure_only=True) as s:
            device = s.device("dev-plain", mode="nosec")
            await device.start()
            registered = await device.wait_registered()
            assert registered.lwm2m_version == "1.1"
            assert s.dm["eu"].registration("dev-plain") is not None
            assert await value(s.dm["eu"], "dev-plain", "/3/0/2") == "dev-plain"
            record = await security(store, "dev-plain")
            assert record.allow_nosec and record.psk is None  # the explicit NoSec grant
            status = await s.bs.status("dev-plain")
            assert status.phase is Phase.FINISHED and status.transport == "coap"
            assert status.dm_uris == (s.dm_uri("eu", secure=False),)

    run(scenario())


def test_int_1_client_initiated_bootstrap_full_psk(store: Store) -> None:
    """PSK bootstrap; the DM server accepts the fresh DM PSK and nothing else."""

    async def scenario() -> None:
        async with running(store, token_bytes=lambda n: b"\x5a" * n) as s:
            device = s.device("dev-psk")
            await device.start()
            await device.wait_registered()
            record = await security(store, "dev-psk")
            assert record.psk is not None and record.psk.key == b"\x5a" * 16
            account = dm_account(device.store)
            assert account is not None and account.secret == record.psk.key
            assert account.uri == s.dm_uri("eu")
            registration = s.dm["eu"].registration("dev-psk")
            assert registration is not None and registration.secure
            # the bootstrap key is not a DM credential; a made-up key neither
            with pytest.raises(HandshakeFailed):
                await handshake(dm_address(s), psk=(b"dev-psk", KEYS["dev-psk"]))
            with pytest.raises(HandshakeFailed):
                await handshake(dm_address(s), psk=(b"dev-psk", b"\x00" * 16))
            actions = [r.action for r in await s.bs.manager.audit(subject="dev-psk")]
            assert actions == ["bootstrap.provisioned", "bootstrap.finished"]

    run(scenario())


def test_int_2_client_initiated_bootstrap_full_cert(
    store: Store, ca: CertificateAuthority, key_dir: Path
) -> None:
    """Certificate bootstrap with a device certificate our CA issued at import; the DM
    credentials are a fresh certificate, pinned in the DM store."""

    async def scenario() -> None:
        async with running(store, ca=ca) as s:
            report = await s.bs.import_identities(
                "endpoint,security_mode\ndev-cert,x509\n", source="certs.csv", key_dir=key_dir
            )
            cert_file, key_file = report.issued["dev-cert"]
            factory = X509Credentials(
                chain=(Path(cert_file).read_bytes(),),
                private_key=Path(key_file).read_bytes(),
                trust_anchors=(ca.pem,),
            )
            device = s.device("dev-cert", mode="x509", x509=factory)
            await device.start()
            await device.wait_registered()
            record = await security(store, "dev-cert")
            assert record.x509 is not None and record.x509.subject == "CN=dev-cert"
            identity = await s.bs.identity("dev-cert")
            assert record.x509.fingerprint_sha256 != identity.credential.certificate_fingerprint
            registration = s.dm["eu"].registration("dev-cert")
            assert registration is not None and registration.identity.kind.value == "x509"
            # the factory certificate is for bootstrapping only: it chains to the same CA, so
            # the handshake succeeds, but the DM server refuses the registration (pinned)
            impostor = SimulatedDevice("dev-cert", s.dm_uri("eu"), x509=factory)
            s.devices.append(impostor)
            await impostor.start()
            refused = await impostor.wait_event(RegistrationFailed)
            assert refused.code == "4.03"
            status = await s.bs.status("dev-cert")
            assert status.transport == "coaps-x509:dev-cert"

    run(scenario(), timeout=60)


def test_bootstrap_pack_for_lwm2m_1_2(store: Store) -> None:
    """A 1.2 device asks for the Bootstrap-Pack first and registers with what it carried."""

    async def scenario() -> None:
        async with running(store) as s:
            device = s.device("dev-psk", config=ClientConfig(lwm2m_version="1.2"))
            await device.start()
            await device.wait_registered()
            finished = await device.wait_event(BootstrapFinished)
            assert finished.pack and finished.servers == (s.dm_uri("eu"),)
            status = await s.bs.status("dev-psk")
            assert status.detail == "Bootstrap-Pack served" and s.bs.stats["packs"] == 1

    run(scenario())


@pytest.mark.parametrize(
    ("config", "content_format"),
    [
        (ClientConfig(lwm2m_version="1.1", formats=WAKAAMA), 110),  # pct=110, no CBOR
        (ClientConfig(lwm2m_version="1.0"), 11542),  # no pct: TLV
    ],
    ids=["wakaama-senml-json", "lwm2m-1.0-tlv"],
)
def test_the_write_format_follows_the_device(
    store: Store, config: ClientConfig, content_format: int
) -> None:
    async def scenario() -> None:
        async with running(store) as s:
            device = s.device("dev-psk", config=config)
            await device.start()
            await device.wait_registered()
            status = await s.bs.status("dev-psk")
            assert status.content_format == content_format
            assert status.lwm2m_version == config.lwm2m_version

    run(scenario())


# -- the sequence ---------------------------------------------------------------------------------


def test_int_6_bootstrap_sequence(store: Store) -> None:
    """Discover, Read, Delete, Security then Server writes, commit, Finish -- in that order."""

    async def scenario() -> None:
        async with running(store) as s:
            await s.bs.add_policy(
                s.region_policy(
                    "eu",
                    apn_profiles=[{"name": "iot", "apn": "iot.carrier-eu"}],
                    config={"9": "eu-prod"},
                )
            )
            device = s.device("dev-psk")
            await device.start()
            await device.wait_registered()
            status = await s.bs.status("dev-psk")
            steps = [line.split(":")[0] for line in status.detail.splitlines()]
            assert steps == [
                "discover /",
                "read /1",
                "delete /0",
                "delete /1",
                "delete /11",
                "write /0/1",
                "write /11/0",
                "write /1/0",
                "write /32001/0",
                "commit",
                "finish /bs",
            ]
            kinds = [type(e).__name__ for e in device.events]
            assert kinds[:3] == ["BootstrapStarted", "BootstrapFinished", "Registered"]

    run(scenario())


def test_int_8_bootstrap_read(store: Store) -> None:
    """On a device that has an account, Bootstrap-Read /1 reports it before it is replaced."""

    async def scenario() -> None:
        async with running(store) as s:
            device = s.device("dev-psk")
            await device.start()
            await device.wait_registered()
            mark = len(device.events)
            await s.bs.rebootstrap("dev-psk")
            await device.wait_for(lambda e: isinstance(e, Registered), 15, since=mark)
            status = await s.bs.status("dev-psk")
            read = next(
                line for line in status.device_report.splitlines() if line.startswith("read /1")
            )
            assert "ObjectInstance(id=0" in read and "86400" in read  # the account it had
            assert "read /1: 2.05 (server accounts recorded)" in status.detail

    run(scenario())


def test_int_9_bootstrap_and_configuration_consistency(store: Store) -> None:
    """What the DM server reads after registration is what the policy provisioned."""

    async def scenario() -> None:
        async with running(store) as s:
            await s.bs.add_policy(
                Policy.from_document(
                    {
                        "name": "eu",
                        "match": {"region": "eu"},
                        "servers": [
                            {
                                "uri": s.dm_uri("eu"),
                                "short_server_id": 42,
                                "lifetime": 120,
                                "default_pmax": 600,
                                "apn": "iot",
                            }
                        ],
                        "apn_profiles": [{"name": "iot", "apn": "iot.carrier-eu"}],
                        "config": {"8": 300, "9": "eu-prod"},
                    }
                )
            )
            device = s.device("dev-psk")
            await device.start()
            registered = await device.wait_registered()
            assert registered.lifetime == 120
            dm = s.dm["eu"]
            assert await value(dm, "dev-psk", "/1/0/0") == 42
            assert await value(dm, "dev-psk", "/1/0/1") == 120
            assert await value(dm, "dev-psk", "/1/0/3") == 600
            assert await value(dm, "dev-psk", "/11/0/1") == "iot.carrier-eu"
            assert await value(dm, "dev-psk", "/32001/0/8") == 300
            assert await value(dm, "dev-psk", "/32001/0/9") == "eu-prod"
            explained = await s.bs.explain("dev-psk")
            assert explained.selection.policy is not None
            assert explained.selection.policy.name == "eu"

    run(scenario())


# -- server-initiated bootstrap, delete, fallback -------------------------------------------------


def test_int_5_server_initiated_bootstrap(store: Store) -> None:
    """Re-bootstrap moves a device to another region's DM server and rotates its PSK; the
    old PSK is refused from then on."""
    keys = iter([b"\x11" * 16, b"\x22" * 16, b"\x33" * 16])

    async def scenario() -> None:
        async with running(store, regions=("eu", "us"), token_bytes=lambda n: next(keys)) as s:
            await s.bs.add_policy(s.region_policy("eu"))
            await s.bs.add_policy(s.region_policy("us"))
            device = s.device("dev-psk")
            await device.start()
            await device.wait_registered()
            assert s.dm["eu"].registration("dev-psk") is not None
            old = (await security(store, "dev-psk")).psk
            assert old is not None and old.key == b"\x11" * 16

            mark = len(device.events)
            result = await s.bs.rebootstrap(
                "dev-psk", move={"region": "us"}, dm_server=s.dm["eu"], actor="ops"
            )
            assert result.code == "2.04" and result.state.phase is Phase.REBOOTSTRAP_REQUESTED
            await device.wait_for(lambda e: isinstance(e, Registered), 15, since=mark)
            assert s.dm["us"].registration("dev-psk") is not None
            await eventually(lambda: s.dm["eu"].registration("dev-psk") is None)

            new = (await security(store, "dev-psk")).psk
            assert new is not None and new.key == b"\x22" * 16 and new.identity == old.identity
            account = dm_account(device.store)
            assert account is not None and account.uri == s.dm_uri("us")
            for region in ("eu", "us"):
                with pytest.raises(HandshakeFailed):
                    await handshake(dm_address(s, region), psk=(b"dev-psk", old.key))
            await handshake(dm_address(s, "us"), psk=(b"dev-psk", new.key))

            status = await s.bs.status("dev-psk")
            assert status.phase is Phase.FINISHED and status.completed == 2
            assert status.policy_name == "region-us"
            actions = [r.action for r in await s.bs.manager.audit(subject="dev-psk")]
            assert actions == [
                "bootstrap.provisioned",
                "bootstrap.finished",
                "identity.update",
                "bootstrap.rebootstrap",
                "bootstrap.provisioned",
                "bootstrap.finished",
            ]
            assert (await s.bs.manager.verify_audit()).ok

    run(scenario(), timeout=60)


def test_int_4_bootstrap_delete(store: Store) -> None:
    """A second bootstrap under a changed policy leaves only the new accounts and APNs."""

    async def scenario() -> None:
        async with running(store) as s:
            await s.bs.add_policy(
                s.region_policy("eu", apn_profiles=[{"name": "old", "apn": "old.apn"},
                                                    {"name": "older", "apn": "older.apn"}])
            )  # fmt: skip
            device = s.device("dev-psk")
            await device.start()
            await device.wait_registered()
            assert device.store.instance_ids(11) == (0, 1)
            changed = Policy.from_document(
                {
                    "name": "region-eu",
                    "match": {"region": "eu"},
                    "servers": [{"uri": s.dm_uri("eu"), "short_server_id": 9}],
                    "apn_profiles": [{"name": "new", "apn": "new.apn"}],
                }
            )
            await s.bs.add_policy(changed, comment="new APN")
            mark = len(device.events)
            await s.bs.rebootstrap("dev-psk")
            await device.wait_for(lambda e: isinstance(e, Registered), 15, since=mark)
            store_ = device.store
            assert store_.instance_ids(11) == (0,) and device.read("/11/0/1") == "new.apn"
            assert store_.instance_ids(1) == (0,) and device.read("/1/0/0") == 9
            assert store_.instance_ids(0) == (0, 1)  # the bootstrap account and the new one
            assert device.read("/0/0/1") is True and device.read("/0/1/10") == 9

    run(scenario())


def test_int_7_fallback_to_bootstrap_after_a_refused_handshake(store: Store) -> None:
    """A device whose DM credentials are wrong falls back to bootstrap and registers."""

    async def scenario() -> None:
        async with running(store) as s:
            device = SimulatedDevice(
                "dev-psk",
                s.dm_uri("eu"),
                psk=(b"dev-psk", b"\x99" * 16),
                bootstrap_uri=s.bs_uri(secure=True),
                bootstrap_psk=(b"dev-psk", KEYS["dev-psk"]),
                config=ClientConfig(lwm2m_version="1.1"),
            )
            s.devices.append(device)
            await device.start()
            await device.wait_registered()
            assert device.bootstraps == 1 and s.dm["eu"].registration("dev-psk") is not None

    run(scenario())


def test_int_7_fallback_to_bootstrap_after_the_registration_sequence_fails(store: Store) -> None:
    """A refused registration (4.03), once the retry policy is spent, falls back to bootstrap
    (/1/x/16 defaults to true)."""

    async def scenario() -> None:
        async with running(store, secure_only=True) as s:
            device = SimulatedDevice(
                "dev-plain",
                s.dm_uri("eu", secure=False),
                bootstrap_uri=s.bs_uri(secure=False),
                config=ClientConfig(lwm2m_version="1.1"),
                registration_retry=(1, 1, 1, 1),
            )
            s.devices.append(device)
            await device.start()
            registered = await device.wait_for(lambda e: isinstance(e, Registered), 15)
            assert registered is not None and device.bootstraps == 1
            kinds = [type(e).__name__ for e in device.events]
            assert kinds.index("RegistrationFailed") < kinds.index("BootstrapRequested")
            assert kinds.index("BootstrapFinished") < kinds.index("Registered")

    run(scenario())


# -- refusals -------------------------------------------------------------------------------------


def test_an_unknown_endpoint_gets_4_03_and_is_audited(store: Store) -> None:
    async def scenario() -> None:
        async with running(store) as s:
            ghost = SimulatedDevice(
                "ghost-1",
                bootstrap_uri=s.bs_uri(secure=False),
                config=ClientConfig(lwm2m_version="1.1", bootstrap_attempts=1),
            )
            s.devices.append(ghost)
            with pytest.raises(BootstrapError, match=r"4\.03"):
                await ghost.start()
            failed = await ghost.wait_event(BootstrapFailed)
            assert failed.code == "4.03" and failed.retry_at is None
            await store.flush()
            (record,) = await s.bs.manager.audit(subject="ghost-1")
            assert record.action == "bootstrap.refused"
            assert record.detail["reason"] == "unknown endpoint"
            with pytest.raises(UnknownIdentity):
                await s.bs.status("ghost-1")

    run(scenario())


@pytest.mark.parametrize(
    ("endpoint", "how", "reason"),
    [
        ("dev-psk", "nosec", "NoSec bootstrap refused"),
        ("dev-psk", "other-psk", "belongs to another endpoint"),
        ("dev-plain-2", "revoked", "identity revoked"),
    ],
)
def test_the_wrong_channel_is_refused(store: Store, endpoint: str, how: str, reason: str) -> None:
    async def scenario() -> None:
        async with running(store) as s:
            if how == "revoked":
                await s.bs.revoke_identity(endpoint, reason="returned to vendor")
            config = ClientConfig(lwm2m_version="1.1", bootstrap_attempts=1)
            device = SimulatedDevice(
                endpoint,
                bootstrap_uri=s.bs_uri(secure=how == "other-psk"),
                bootstrap_psk=(b"dev-psk-2", KEYS["dev-psk-2"]) if how == "other-psk" else None,
                config=config,
            )
            s.devices.append(device)
            with pytest.raises(BootstrapError, match=r"4\.03"):
                await device.start()
            await store.flush()
            status = await s.bs.status(endpoint)
            assert status.phase is Phase.REFUSED and reason in status.detail
            assert await store.read(lambda tx: store.security.get(tx, endpoint)) is None

    run(scenario())


def test_a_wrong_bootstrap_key_fails_the_handshake(store: Store) -> None:
    async def scenario() -> None:
        async with running(store) as s:
            device = s.device("dev-psk")
            device._bootstrap_psk = (b"dev-psk", b"\x00" * 16)  # a factory flashing error
            with pytest.raises(HandshakeFailed):
                await device.start()

    run(scenario())


def test_rebootstrap_of_an_unregistered_device_says_why(store: Store) -> None:
    async def scenario() -> None:
        async with running(store) as s:
            with pytest.raises(RebootstrapFailed, match="not registered"):
                await s.bs.rebootstrap("dev-plain")

    run(scenario())


def test_a_small_fleet_bootstraps_concurrently(store: Store) -> None:
    endpoints = [f"fleet-{i:02d}" for i in range(16)]
    csv = "endpoint,security_mode,region\n" + "".join(f"{e},nosec,eu\n" for e in endpoints)

    async def scenario() -> None:
        async with running(store) as s:
            await s.bs.import_identities(csv, source="fleet.csv")
            devices = [s.device(e, mode="nosec") for e in endpoints]
            await asyncio.gather(*(d.start() for d in devices))
            await asyncio.gather(*(d.wait_registered() for d in devices))
            assert all(s.dm["eu"].registration(e) is not None for e in endpoints)
            assert s.bs.stats["finished"] == len(endpoints)

    run(scenario(), timeout=60)


class SilentDevice(asyncio.DatagramProtocol):
    """Sends a Bootstrap-Request, takes the 2.04, then never answers again (battery died)."""

    def __init__(self) -> None:
        self.received: list[Message] = []

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.received.append(Message.decode(data))


def test_a_device_that_stops_answering_leaves_a_failed_state(store: Store) -> None:
    async def scenario() -> None:
        async with running(store, request_timeout=0.2, retries=1) as s:
            loop = asyncio.get_running_loop()
            address = s.bs.coap_address
            assert address is not None
            transport, device = await loop.create_datagram_endpoint(
                SilentDevice, local_addr=("127.0.0.1", 0), remote_addr=address[:2]
            )
            try:
                request = Message(code=Code.POST, uri_path=("bs",), uri_query=("ep=dev-plain",))
                request.mtype, request.mid, request.token = CON, 1, b"\x01\x02"
                transport.sendto(request.encode())
                await eventually(lambda: any(m.code == Code.CHANGED for m in device.received))

                async def failed() -> bool:
                    return (await s.bs.status("dev-plain")).phase is Phase.FAILED

                deadline = loop.time() + 5
                while not await failed():
                    assert loop.time() < deadline
                    await asyncio.sleep(0.05)
                status = await s.bs.status("dev-plain")
                assert status.step == "discover /" and "after 2 attempts" in status.detail
                assert await store.read(lambda tx: store.security.get(tx, "dev-plain")) is None
                (record,) = await s.bs.manager.audit(action_prefix="bootstrap.failed")
                assert record.detail["committed"] is False
            finally:
                transport.close()

    run(scenario())

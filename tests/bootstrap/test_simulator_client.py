"""The simulated device's bootstrap client, sans-IO on a fake clock (no sockets): the test
plays the bootstrap server through a real CoAP endpoint (``tests/simulators/pair.py``) and
writes what the bootstrap server's own planner produces."""

from __future__ import annotations

from aiocoap import Message
from aiocoap.numbers.codes import Code

from bootstrap.identities import BootstrapCredential, FactoryIdentity
from bootstrap.plan import DmCredentials, ProvisioningPlan, PskSecret, build_plan
from bootstrap.policy import Policy
from lwm2m.codec import ContentFormat
from simulators.device import ClientConfig
from simulators.device.bootstrap import bootstrap_template, dm_account, put_instance
from simulators.device.defaults import default_template
from simulators.device.events import (
    BootstrapFailed,
    BootstrapFinished,
    BootstrapRequested,
    BootstrapStarted,
    Registered,
    RegistrationFailed,
)
from tests.simulators.pair import SERVER, Pair, code, request

DM_URI = "coaps://dm.example:5684"
POLICY = Policy.from_document({"name": "p", "servers": [{"uri": DM_URI, "lifetime": 600}]})
IDENTITY = FactoryIdentity("sim-0001", BootstrapCredential.psk("sim-0001", bytes(16)))
CREDS = DmCredentials(psk=PskSecret("sim-0001", b"\x42" * 16))


def plan(version: str) -> ProvisioningPlan:
    return build_plan(IDENTITY, POLICY, None, CREDS, lwm2m_version=version, secure_channel=True)


def pair(version: str = "1.1", **config: object) -> Pair:
    return Pair(
        config=ClientConfig(lwm2m_version=version, **config),  # type: ignore[arg-type]
        template=bootstrap_template(),
    )


def answer_bootstrap_requests(p: Pair, bspack: Message | None = None) -> None:
    def registrar(message: Message) -> Message | None:
        path = tuple(message.opt.uri_path)
        if path == ("bs",):
            return Message(code=Code.CHANGED)
        if path == ("bspack",):
            return bspack or Message(code=Code.NOT_FOUND)
        return None

    p.registrar = registrar


def provision(p: Pair, version: str) -> None:
    """What the bootstrap server does after the 2.04: delete, write, finish."""
    for target in ("/0", "/1"):
        assert code(p.ask(request(Code.DELETE, target))) == "2.02"
    for write in plan(version).writes:
        cf = ContentFormat.TLV if version == "1.0" else ContentFormat.SENML_CBOR
        reply = p.ask(
            request(Code.PUT, str(write.path), content_format=cf, payload=write.payload(cf))
        )
        assert code(reply) == "2.04", str(write.path)


def test_a_1_2_device_asks_for_the_pack_then_falls_back_to_a_bootstrap_request() -> None:
    p = pair("1.2")
    answer_bootstrap_requests(p)
    p.device.start_bootstrap(SERVER, p.now)
    p.flush()
    assert [r.path for r in p.received] == [("bspack",), ("bs",)]
    assert p.received[0].message.opt.accept == ContentFormat.SENML_CBOR
    assert p.received[1].query == ("ep=sim-0001", "pct=112")
    discover = p.ask(request(Code.GET, "/", accept=ContentFormat.LINK))
    assert discover.payload.decode().startswith('</>;lwm2m=1.2,</0>;ver=1.2,</0/0>;uri="coap://')
    provision(p, "1.2")
    assert code(p.ask(request(Code.POST, "/bs"))) == "2.04"
    (finished,) = p.of_type(BootstrapFinished)
    assert finished == BootstrapFinished((DM_URI,), False)
    account = dm_account(p.store)
    assert account is not None and account.secret == b"\x42" * 16
    p.start()  # registration reads what the bootstrap wrote
    (registered,) = p.of_type(Registered)
    assert registered.lifetime == 600


def test_a_pack_is_applied_in_one_go() -> None:
    p = pair("1.2")
    pack = Message(
        code=Code.CONTENT, content_format=ContentFormat.SENML_CBOR, payload=plan("1.2").pack()
    )
    answer_bootstrap_requests(p, bspack=pack)
    p.device.start_bootstrap(SERVER, p.now)
    p.flush()
    assert [r.path for r in p.received] == [("bspack",)]
    assert p.of_type(BootstrapFinished) == [BootstrapFinished((DM_URI,), True)]


def test_a_1_0_device_sends_no_pct_and_takes_tlv() -> None:
    p = pair("1.0")
    answer_bootstrap_requests(p)
    p.device.start_bootstrap(SERVER, p.now)
    p.flush()
    assert p.received[0].query == ("ep=sim-0001",)
    provision(p, "1.0")
    assert code(p.ask(request(Code.POST, "/bs"))) == "2.04"


def test_finish_on_an_unusable_configuration_is_refused_and_the_device_asks_again() -> None:
    p = pair()
    answer_bootstrap_requests(p)
    p.device.start_bootstrap(SERVER, p.now)
    p.flush()
    assert code(p.ask(request(Code.POST, "/bs"))) == "4.06"  # nothing was written
    (failed,) = p.of_type(BootstrapFailed)
    assert failed.code == "4.06" and failed.retry_at == 60.0
    p.advance(60)
    assert [r.path for r in p.received] == [("bs",), ("bs",)]
    assert len(p.of_type(BootstrapStarted)) == 2


def test_no_finish_in_time_fails_and_a_capped_device_gives_up() -> None:
    p = pair(bootstrap_attempts=1, bootstrap_timeout=30.0)
    answer_bootstrap_requests(p)
    p.device.start_bootstrap(SERVER, p.now)
    p.advance(31)
    (failed,) = p.of_type(BootstrapFailed)
    assert failed.retry_at is None and "no Bootstrap-Finish" in failed.reason


def test_the_bootstrap_account_survives_delete_and_cannot_be_deleted_alone() -> None:
    p = pair()
    answer_bootstrap_requests(p)
    p.device.start_bootstrap(SERVER, p.now)
    p.flush()
    assert code(p.ask(request(Code.DELETE, "/"))) == "2.02"
    assert p.store.instance_ids(0) == (0,) and p.store.instance_ids(3) == (0,)
    assert code(p.ask(request(Code.DELETE, "/0/0"))) == "4.00"
    assert code(p.ask(request(Code.DELETE, "/3"))) == "4.00"
    assert code(p.ask(request(Code.GET, "/0", accept=ContentFormat.TLV))) == "4.05"


def test_a_registration_sequence_that_fails_for_good_asks_for_a_bootstrap() -> None:
    p = pair()
    put_instance(p.store, 0, 1, {0: "coap://dm", 1: False, 2: 3, 10: 1}, 0.0)
    put_instance(p.store, 1, 0, {0: 1, 1: 300, 7: "U", 17: 1, 18: 1, 19: 1, 20: 1}, 0.0)
    p.registrar = lambda m: (
        Message(code=Code.FORBIDDEN) if tuple(m.opt.uri_path) == ("rd",) else None
    )
    p.device.start(p.now)
    p.flush()
    (failed,) = p.of_type(RegistrationFailed)
    assert failed.retry_at is None
    assert p.of_type(BootstrapRequested) == [BootstrapRequested("registration failed")]


def test_a_device_without_a_bootstrap_account_just_stops() -> None:
    p = Pair(template=default_template(), config=ClientConfig())
    p.registrar = lambda m: (
        Message(code=Code.FORBIDDEN) if tuple(m.opt.uri_path) == ("rd",) else None
    )
    p.device.start(p.now)
    p.run_until(lambda: any(e.retry_at is None for e in p.of_type(RegistrationFailed)))
    assert p.of_type(BootstrapRequested) == []


def test_execute_bootstrap_request_trigger() -> None:
    p = pair()
    put_instance(p.store, 0, 1, {0: "coap://dm", 1: False, 2: 3, 10: 1}, 0.0)
    put_instance(p.store, 1, 0, {0: 1, 1: 300, 7: "U"}, 0.0)
    p.start()
    assert code(p.ask(request(Code.POST, "/1/0/9"))) == "2.04"
    assert p.of_type(BootstrapRequested) == [BootstrapRequested("server-initiated")]
    plain = Pair()
    plain.start()
    assert code(plain.ask(request(Code.POST, "/1/0/9"))) == "4.04"  # no trigger resource

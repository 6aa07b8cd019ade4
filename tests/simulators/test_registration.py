"""Register, Update, De-register, retries, version fallback, reboot and queue mode, with exact
times on the fake clock (RFC transmission timing without jitter)."""

from __future__ import annotations

import pytest
from aiocoap import Message
from aiocoap.numbers.codes import Code

from lwm2m.codec.link import parse_registration
from simulators.device.client import State
from simulators.device.config import ClientConfig
from simulators.device.defaults import default_template
from simulators.device.events import (
    Deregistered,
    ObservationEnded,
    Rebooted,
    Registered,
    RegistrationFailed,
    Sleeping,
    Updated,
    UpdateFailed,
    VersionFallback,
    Woke,
)
from simulators.device.formats import ANJAY, CF
from tests.simulators.pair import Pair, Registrar, code, request


def refuse(code_: Code, *, when: str = "") -> Registrar:
    """A registrar that answers requests whose query contains ``when`` with ``code_``."""

    def registrar(message: Message) -> Message | None:
        if tuple(message.opt.uri_path) == ("rd",) and when in "&".join(message.opt.uri_query):
            return Message(code=code_)
        return None

    return registrar


def test_register_carries_endpoint_lifetime_version_binding_and_object_links() -> None:
    pair = Pair()
    pair.start()
    [register] = pair.registers()
    assert register.query == ("ep=sim-0001", "lt=300", "lwm2m=1.2", "b=U")
    assert int(register.message.opt.content_format) == CF.LINK
    assert register.message.payload == (
        b'</>;rt="oma.lwm2m";ct=112,</1>;ver=1.2,</1/0>,</3>;ver=1.2,</3/0>,</4>;ver=1.3,'
        b"</4/0>,</5>;ver=1.2,</5/0>,</3443/0>,</32001/0>"
    )
    objects = parse_registration(register.message.payload)
    assert 0 not in objects.objects  # the Security object is never listed
    assert objects.content_formats == (CF.SENML_CBOR,)
    assert pair.of_type(Registered) == [Registered(("rd", "r1"), "1.2", 300)]
    assert pair.client.location == ("rd", "r1")


def test_anjay_profile_registers_without_root_link_or_binding() -> None:
    pair = Pair(config=ClientConfig(formats=ANJAY))
    pair.start()
    [register] = pair.registers()
    assert register.query == ("ep=sim-0001", "lt=300", "lwm2m=1.2")
    assert register.message.payload.startswith(b"</1>;ver=1.2,</1/0>,")


@pytest.mark.parametrize(
    ("lifetime", "first", "second"),
    [(300, 207, 414), (60, 30, 60), (1000, 900, 1800), (86_400, 77_760, 155_520)],
)
def test_updates_go_out_before_the_lifetime_expires(
    lifetime: int, first: float, second: float
) -> None:
    pair = Pair(template=default_template(lifetime=lifetime))
    pair.start()
    pair.advance(second + 1)
    assert [u.at for u in pair.updates()] == [first, second]
    assert all(u.query == () and u.message.payload == b"" for u in pair.updates())
    assert pair.of_type(Updated) == [Updated(None, None, False)] * 2


def test_a_lifetime_written_by_the_server_is_sent_at_once_with_lt() -> None:
    pair = Pair()
    pair.start()
    pair.advance(10)
    reply = pair.ask(request(Code.PUT, "/1/0/1", content_format=CF.TEXT, payload=b"120"))
    assert code(reply) == "2.04"
    pair.advance(0)
    [update] = pair.updates()
    assert (update.at, update.query, update.path) == (10, ("lt=120",), ("rd", "r1"))
    assert pair.of_type(Updated) == [Updated(120, None, False)]
    pair.advance(100)  # next one: 120 - 60 after the last
    assert [(u.at, u.query) for u in pair.updates()] == [(10, ("lt=120",)), (70, ())]


def test_a_binding_change_is_sent_with_b() -> None:
    pair = Pair()
    pair.start()
    pair.ask(request(Code.PUT, "/1/0/7", content_format=CF.TEXT, payload=b"UT"))
    pair.advance(0)
    assert pair.updates()[-1].query == ("b=UT",)


def test_the_registration_update_trigger_sends_an_update_now() -> None:
    pair = Pair()
    pair.start()
    pair.advance(5)
    assert code(pair.ask(request(Code.POST, "/1/0/8"))) == "2.04"
    pair.advance(0)
    assert [u.at for u in pair.updates()] == [5]


def test_an_update_answered_4_04_makes_the_device_register_again() -> None:
    pair = Pair()
    pair.start()

    def lost(message: Message) -> Message | None:
        return Message(code=Code.NOT_FOUND) if len(message.opt.uri_path) == 2 else None

    pair.registrar = lost
    pair.advance(208)
    assert pair.of_type(UpdateFailed) == [UpdateFailed("4.04", "refused")]
    assert [r.at for r in pair.registers()] == [0, 207]
    assert pair.client.location == ("rd", "r2")
    assert pair.client.state is State.REGISTERED


def test_register_answered_4_12_falls_back_to_the_next_version_at_once() -> None:
    pair = Pair()
    pair.registrar = refuse(Code.PRECONDITION_FAILED, when="lwm2m=1.2")
    pair.start()
    versions = [r.query[2] for r in pair.registers()]
    assert versions == ["lwm2m=1.2", "lwm2m=1.1"]
    assert pair.registers()[1].message.payload == pair.registers()[0].message.payload
    assert pair.of_type(VersionFallback) == [VersionFallback("1.2", "1.1")]
    assert pair.of_type(Registered)[0].lwm2m_version == "1.1"
    assert pair.now == 0


def test_falling_back_to_1_0_uses_its_queue_mode_binding() -> None:
    pair = Pair(config=ClientConfig(queue_mode=True))

    def only_1_0(message: Message) -> Message | None:
        query = "&".join(message.opt.uri_query)
        if tuple(message.opt.uri_path) == ("rd",) and "lwm2m=1.0" not in query:
            return Message(code=Code.PRECONDITION_FAILED)
        return None

    pair.registrar = only_1_0
    pair.start()
    assert [r.query for r in pair.registers()] == [
        ("ep=sim-0001", "lt=300", "lwm2m=1.2", "b=U", "Q"),
        ("ep=sim-0001", "lt=300", "lwm2m=1.1", "b=U", "Q"),
        ("ep=sim-0001", "lt=300", "lwm2m=1.0", "b=UQ"),
    ]


def test_failed_registrations_retry_with_doubling_delays_then_give_up() -> None:
    pair = Pair()
    pair.store.set("/1/0/17", 4, 0.0)  # attempts per sequence
    pair.store.set("/1/0/18", 10, 0.0)  # first retry delay
    pair.store.set("/1/0/19", 1000, 0.0)  # between sequences
    pair.store.set("/1/0/20", 2, 0.0)  # sequences
    pair.registrar = refuse(Code.FORBIDDEN)
    pair.device.start(pair.now)
    pair.advance(5000)
    assert [r.at for r in pair.registers()] == [0, 10, 30, 70, 1070, 1080, 1100, 1140]
    failures = pair.of_type(RegistrationFailed)
    assert failures[0] == RegistrationFailed("4.03", "refused", 10)
    assert failures[-1].retry_at is None
    assert pair.client.state is State.STOPPED


def test_an_unanswered_register_times_out_after_max_transmit_wait() -> None:
    pair = Pair()
    pair.drop_to_server = True
    pair.device.start(pair.now)
    pair.run_until(lambda: bool(pair.of_type(RegistrationFailed)))
    [failure] = pair.of_type(RegistrationFailed)
    assert pair.now == 62  # 2 * (2**5 - 1) s without jitter: the last retransmission's wait
    assert failure.code is None and failure.retry_at == 62 + 60
    pair.drop_to_server = False
    pair.run_until(lambda: pair.client.registered)
    assert pair.now == 122


def test_a_created_without_location_is_a_failed_registration() -> None:
    pair = Pair()
    pair.registrar = refuse(Code.CREATED)
    pair.device.start(pair.now)
    pair.flush()
    assert pair.of_type(RegistrationFailed)[0].reason == "no Location-Path"


def test_stop_deregisters() -> None:
    pair = Pair()
    pair.start()
    pair.device.stop(pair.now)
    pair.run_until(lambda: bool(pair.of_type(Deregistered)))
    delete = pair.received[-1]
    assert (delete.message.code, delete.path) == (Code.DELETE, ("rd", "r1"))
    assert pair.of_type(Deregistered) == [Deregistered(True)]
    assert pair.client.state is State.STOPPED
    pair.advance(1000)
    assert pair.updates() == []


def test_stop_without_an_answer_still_ends() -> None:
    pair = Pair()
    pair.start()
    pair.drop_to_server = True
    pair.device.stop(pair.now)
    pair.run_until(lambda: bool(pair.of_type(Deregistered)))
    assert pair.of_type(Deregistered) == [Deregistered(False)]


def test_reboot_answers_then_registers_again_and_forgets_observations() -> None:
    pair = Pair(config=ClientConfig(reboot_delay=2.0))
    pair.start()
    pair.ask(request(Code.PUT, "/3/0/9", query=("pmax=5",)))
    handle = pair.send(request(Code.GET, "/3/0/9", observe=0))
    assert code(pair.ask(request(Code.POST, "/3/0/4"))) == "2.04"
    assert pair.of_type(Rebooted) == []
    pair.advance(3)
    assert pair.of_type(Rebooted) == [Rebooted(False)]
    assert [r.at for r in pair.registers()] == [0, 2]
    assert pair.client.location == ("rd", "r2")
    assert pair.of_type(ObservationEnded)[-1].reason == "rebooted"
    pair.advance(20)
    assert pair.notifications.get(handle, []) == []
    discover = pair.ask(request(Code.GET, "/3/0/9", accept=CF.LINK))
    assert discover.payload == b"</3/0/9>"  # attributes are gone with the reboot


def test_factory_reset_restores_the_template() -> None:
    pair = Pair()
    pair.start()
    pair.ask(request(Code.PUT, "/3/0/15", content_format=CF.TEXT, payload=b"Europe/Paris"))
    assert pair.store.get("/3/0/15") == "Europe/Paris"
    pair.ask(request(Code.POST, "/3/0/5"))
    pair.advance(1)
    assert pair.of_type(Rebooted) == [Rebooted(True)]
    assert pair.store.get("/3/0/15") == "Etc/UTC"


# -- queue mode ------------------------------------------------------------------------------


def test_queue_mode_registers_with_q_and_sleeps_after_the_awake_time() -> None:
    pair = Pair(config=ClientConfig(queue_mode=True, awake_time=10))
    pair.start()
    assert pair.registers()[0].query[-1] == "Q"
    pair.advance(9)
    assert code(pair.ask(request(Code.GET, "/3/0/0"))) == "2.05"  # awake: answers, stays up
    pair.advance(9.5)
    assert pair.of_type(Sleeping) == []
    pair.advance(1)
    assert len(pair.of_type(Sleeping)) == 1 and pair.client.asleep
    # asleep: the server's request is not answered
    handle = pair.send(request(Code.GET, "/3/0/0"))
    pair.advance(100)
    assert handle in pair.failures and pair.device.dropped_while_asleep >= 1


def test_queue_mode_wakes_for_the_update_and_serves_the_servers_queue() -> None:
    pair = Pair(config=ClientConfig(queue_mode=True, awake_time=10))
    pair.start()
    pair.advance(200)
    assert pair.client.asleep

    served: list[float] = []

    def on_update(message: Message) -> Message | None:
        if len(message.opt.uri_path) == 2:  # the queue flushes once the device is back
            served.append(pair.now)
        return None

    pair.registrar = on_update
    pair.advance(7.5)
    assert pair.of_type(Woke) == [Woke("update")]
    assert [u.at for u in pair.updates()] == [207] and served == [207]
    assert code(pair.ask(request(Code.GET, "/3/0/9"))) == "2.05"
    pair.advance(10.5)
    assert len(pair.of_type(Sleeping)) == 2


def test_queue_mode_wakes_for_a_notification_and_updates_first() -> None:
    pair = Pair(config=ClientConfig(queue_mode=True, awake_time=10))
    pair.start()
    pair.ask(request(Code.PUT, "/3/0/9", query=("pmax=50",)))
    handle = pair.send(request(Code.GET, "/3/0/9", observe=0))
    pair.advance(20)
    assert pair.client.asleep
    pair.advance(31)
    assert pair.of_type(Woke) == [Woke("notification")]
    assert [u.at for u in pair.updates()] == [50]
    assert [t for t, _ in pair.notifications[handle]] == [50]


def test_devices_of_one_template_share_its_payload_and_account_until_one_diverges() -> None:
    """The Register payload and the server account are built once per template (issue 13),
    but a device that wrote its lifetime or created an instance gets its own."""
    from simulators.device.objects import ObjectStore
    from simulators.device.registration import object_links, server_account

    template = default_template()
    first, second = ObjectStore(template, "ep-1"), ObjectStore(template, "ep-2")
    links, account = object_links(first, ANJAY), server_account(first)
    assert object_links(second, ANJAY) is links
    assert server_account(second) is account

    second.set("/1/0/1", account.lifetime + 60)
    assert server_account(second).lifetime == account.lifetime + 60
    assert server_account(first).lifetime == account.lifetime
    created = second.create_instance(1)
    assert f"</1/{created}>" in object_links(second, ANJAY)
    assert f"</1/{created}>" not in links
    assert object_links(first, ANJAY) == links
    second.reset()
    assert object_links(second, ANJAY) == links
    assert server_account(second) == account

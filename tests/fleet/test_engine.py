"""The fleet engine on a fake network and clock: registration and updates at scale, link
emulation, NAT, queue mode, misbehaviour, determinism."""

from __future__ import annotations

from aiocoap import Message
from aiocoap.numbers.codes import Code

from simulators.device.config import ClientConfig
from simulators.device.events import Rebooted, Registered
from simulators.fleet.engine import FAILED, REGISTERED, STOPPED, Outcome
from simulators.netem import PRESETS, LinkProfile
from simulators.profiles import DeviceProfile
from tests.fleet.harness import SimNet, code, request


def test_devices_register_then_update_on_the_lifetime_schedule() -> None:
    net = SimNet()
    devices = net.spawn(50)
    engine = net.engine
    assert engine.by_status[REGISTERED] == 50
    assert engine.counters.registrations == 50
    start = net.now
    net.advance(500)
    # lifetime 300 s: margin max(30, min(93, 150)) = 93, so Updates at +207 and +414
    assert engine.counters.updates == 100
    for index in devices[:3]:
        registration = net.registrations[net.endpoint(index)]
        assert [round(t - start) for t, _ in registration.updates] == [207, 414]


def test_one_live_timer_per_device_however_long_the_run() -> None:
    net = SimNet()
    net.spawn(100)
    net.advance(10_000)
    engine = net.engine
    assert engine.counters.updates >= 100 * 45
    live = sum(1 for at in engine.timer_at if at != float("inf"))
    assert live == 100
    assert len(engine._timers) <= 2 * 100 + 1024


def test_devices_answer_reads_through_the_shared_endpoint() -> None:
    net = SimNet()
    devices = net.spawn(30)
    for index in devices:
        reply = net.ask(index, request(Code.GET, "/3/0/2"))
        assert code(reply) == "2.05"
        assert reply.payload.decode() == net.endpoint(index)


def test_nbiot_link_delays_and_loses_but_every_device_registers() -> None:
    net = SimNet(seed=3)
    profile = DeviceProfile("lossy", link=PRESETS["nbiot"].replace(loss=0.2))
    started = net.now
    net.spawn(40, net.group(profile))
    net.run_until(lambda: net.engine.by_status[REGISTERED] == 40, within=600)
    counters = net.engine.counters
    assert counters.dropped_loss > 0
    first = min(r.registered_at for r in net.registrations.values())
    assert first - started >= 0.4  # at least the uplink half of the 800 ms RTT
    reply = net.ask(0, request(Code.GET, "/3/0/0"), within=300)
    assert reply.payload == b"fleetloop-sim"


def test_a_datagram_above_the_mtu_never_arrives() -> None:
    net = SimNet()
    net.spawn(1, net.group(DeviceProfile(link=LinkProfile(mtu=400))))
    handle = net.request(0, request(Code.GET, "/3/0", accept=110))  # SenML JSON: > 400 bytes
    net.advance(200)
    assert handle in net.failures
    assert net.engine.counters.dropped_mtu >= 1


def test_nat_binding_expires_when_idle_and_the_next_update_comes_from_a_new_port() -> None:
    net = SimNet()
    net.spawn(1, net.group(DeviceProfile(link=LinkProfile(nat_timeout=60))))
    registration = net.registrations[net.endpoint(0)]
    old_peer = registration.peer
    net.advance(100)
    handle = net.request(0, request(Code.GET, "/3/0/0"))
    net.advance(150)
    assert handle in net.failures  # the server cannot reach the device behind the dead binding
    assert net.engine.counters.dropped_nat >= 1
    net.run_until(lambda: bool(registration.updates))
    assert registration.updates[0][1] != old_peer
    assert net.engine.counters.nat_rebinds == 1
    reply = net.ask(0, request(Code.GET, "/3/0/0"))
    assert code(reply) == "2.05"


def test_a_sleeping_queue_mode_device_drops_what_it_receives() -> None:
    net = SimNet()
    profile = DeviceProfile(config=ClientConfig(queue_mode=True, awake_time=30))
    net.spawn(1, net.group(profile))
    net.advance(40)
    assert net.engine.clients[0].asleep
    net.request(0, request(Code.GET, "/3/0/0"))
    net.advance(5)
    assert net.engine.counters.dropped_asleep >= 1


def test_reboot_prone_devices_restart_and_register_again_from_a_new_port() -> None:
    net = SimNet(seed=5)
    profile = DeviceProfile().with_behaviour(reboot_prone=1.0, reboot_mean=300.0)
    devices = net.spawn(10, net.group(profile))
    peers = {i: net.registrations[net.endpoint(i)].peer for i in devices}
    net.advance(3000)
    counters = net.engine.counters
    assert counters.reboots >= 20
    assert counters.registrations == 10 + counters.reboots
    rebooted = [i for i in devices if any(isinstance(e, Rebooted) for e in net.events(i))]
    assert rebooted
    for index in rebooted:
        assert net.registrations[net.endpoint(index)].peer != peers[index]


def test_only_the_drawn_fraction_of_devices_is_slow_and_their_answers_wait() -> None:
    net = SimNet()
    profile = DeviceProfile().with_behaviour(slow=0.5, slow_delay=3.0)
    devices = net.spawn(40, net.group(profile))
    net.run_until(lambda: net.engine.by_status[REGISTERED] == 40)
    slow = [i for i in devices if net.engine.flags[i] & 16]
    assert 8 <= len(slow) <= 32
    fast = next(i for i in devices if i not in slow)
    asked = net.now
    net.ask(fast, request(Code.GET, "/3/0/0"))
    assert net.now - asked < 0.1
    asked = net.now
    net.ask(slow[0], request(Code.GET, "/3/0/0"))
    assert net.now - asked >= 3.0


def test_registration_that_is_always_refused_ends_failed() -> None:
    net = SimNet()
    net.refuse = lambda m: Message(code=Code.FORBIDDEN) if m.opt.uri_path == ("rd",) else None
    net.spawn(5)
    net.advance(2000)
    assert net.engine.by_status[FAILED] == 5
    assert net.engine.counters.registration_failures == 25  # /1/0/17: 5 attempts


def test_stop_deregisters() -> None:
    net = SimNet()
    devices = net.spawn(5)
    for index in devices:
        net.engine.stop(index, net.now)
    net.flush()
    assert net.engine.by_status[STOPPED] == 5
    assert not net.registrations


def test_same_seed_same_run() -> None:
    def run() -> dict[str, object]:
        net = SimNet(seed=11)
        profile = DeviceProfile(link=PRESETS["nbiot"].replace(loss=0.1)).with_behaviour(
            reboot_prone=0.5, reboot_mean=500.0, slow=0.2
        )
        net.spawn(30, net.group(profile))
        net.advance(2000)
        return net.engine.counters.snapshot()

    first = run()
    assert first == run()
    assert first["dropped_loss"]


def test_events_and_outcomes_are_recorded_per_device() -> None:
    net = SimNet()
    net.spawn(2)
    assert any(isinstance(e, Registered) for e in net.events(0))
    net.engine.report(net.engine.clients[1], "custom", net.now)
    assert Outcome("custom") in net.events(1)
    assert net.engine.counters.outcomes == {"custom": 1}

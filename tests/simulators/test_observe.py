"""Observe, Observe-Composite, Write-Attributes and Discover under a fake clock: notification
times follow pmin/pmax exactly and the gt/lt/st conditions decide which changes count."""

from __future__ import annotations

import pytest
from aiocoap import Message
from aiocoap.numbers.codes import Code

from lwm2m.coap import RequestHandle
from lwm2m.codec import decode, decode_nodes, encode_paths
from lwm2m.model import SingleResource
from objects import BUILTIN_MODEL, builtin_definition
from simulators.device.defaults import default_template
from simulators.device.events import AttributesWritten, ObservationEnded, ObservationStarted
from simulators.device.formats import CF
from simulators.device.template import InstanceTemplate, ObjectTemplate
from tests.simulators.pair import Pair, code, p, request


@pytest.fixture
def pair() -> Pair:
    pair = Pair()
    pair.start()
    return pair


def attributes(pair: Pair, path: str, *query: str) -> str:
    return code(pair.ask(request(Code.PUT, path, query=query)))


def observe(pair: Pair, path: str, **options: object) -> RequestHandle:
    handle = pair.send(request(Code.GET, path, observe=0, **options))  # type: ignore[arg-type]
    pair.run_until(lambda: handle in pair.responses)
    assert pair.responses[handle].opt.observe == 0
    return handle


def times(pair: Pair, handle: RequestHandle) -> list[float]:
    return [t for t, _ in pair.notifications.get(handle, [])]


def values(pair: Pair, handle: RequestHandle, path: str = "/3/0/9") -> list[object]:
    out = []
    for _, message in pair.notifications.get(handle, []):
        node = decode(int(message.opt.content_format), message.payload, p(path), BUILTIN_MODEL)
        assert isinstance(node, SingleResource)
        out.append(node.value.value)
    return out


def set_at(pair: Pair, when: float, path: str, value: object) -> None:
    pair.run_until_time(when)
    pair.client.set(path, value, pair.now)


def test_pmax_alone_notifies_periodically(pair: Pair) -> None:
    assert attributes(pair, "/3/0/9", "pmin=5", "pmax=10") == "2.04"
    handle = observe(pair, "/3/0/9")
    assert pair.of_type(ObservationStarted)[-1].paths == (p("/3/0/9"),)
    pair.advance(35)
    assert times(pair, handle) == [10, 20, 30]
    assert values(pair, handle) == [95, 95, 95]


def test_a_change_within_pmin_waits_for_pmin_one_after_it_goes_at_once(pair: Pair) -> None:
    attributes(pair, "/3/0/9", "pmin=5", "pmax=60")
    handle = observe(pair, "/3/0/9")
    set_at(pair, 2, "/3/0/9", 80)  # within pmin: held until t=5
    set_at(pair, 12, "/3/0/9", 70)  # after pmin since the last one: now
    pair.advance(10)
    assert times(pair, handle) == [5, 12]
    assert values(pair, handle) == [80, 70]


def test_setting_the_same_value_is_not_a_change(pair: Pair) -> None:
    handle = observe(pair, "/3/0/9")
    set_at(pair, 3, "/3/0/9", 95)
    pair.advance(100)
    assert times(pair, handle) == []


@pytest.mark.parametrize(
    ("query", "start", "steps", "expected"),
    [
        # gt=50: only changes that cross 50 (either way) count
        (("gt=50",), 30, [(1, 60), (2, 70), (3, 40), (4, 45)], [(1, 60), (3, 40)]),
        # lt=20: crossing below / back above
        (("lt=20",), 95, [(1, 30), (2, 10), (3, 15), (4, 25)], [(2, 10), (4, 25)]),
        # st=10: at least 10 away from the last *notified* value
        (("st=10",), 95, [(1, 90), (2, 86), (3, 85), (4, 80)], [(3, 85)]),
        # gt, lt and st together: any of them
        (("gt=80", "lt=20", "st=25"), 95, [(1, 90), (2, 85), (3, 50), (4, 55)], [(3, 50)]),
    ],
)
def test_change_conditions_select_which_changes_notify(
    pair: Pair,
    query: tuple[str, ...],
    start: int,
    steps: list[tuple[float, int]],
    expected: list[tuple[float, int]],
) -> None:
    pair.store.set("/3/0/9", start, pair.now)
    assert attributes(pair, "/3/0/9", *query) == "2.04"
    handle = observe(pair, "/3/0/9")
    for when, value in steps:
        set_at(pair, when, "/3/0/9", value)
    pair.advance(10)
    assert list(zip(times(pair, handle), values(pair, handle))) == expected


def test_attributes_are_inherited_from_instance_and_server_defaults(pair: Pair) -> None:
    pair.store.set("/1/0/3", 30, pair.now)  # Default Maximum Period
    handle = observe(pair, "/3/0/10")
    pair.advance(31)
    assert times(pair, handle) == [30]
    attributes(pair, "/3/0", "pmax=7")  # the instance's pmax now wins
    pair.advance(16)
    assert times(pair, handle) == [30, 37, 44]


def test_a_pmax_below_pmin_is_ignored(pair: Pair) -> None:
    attributes(pair, "/3/0/9", "pmin=20", "pmax=10")
    handle = observe(pair, "/3/0/9")
    pair.advance(100)
    assert times(pair, handle) == []


def test_an_observe_query_carries_its_own_attributes(pair: Pair) -> None:
    handle = observe(pair, "/3/0/9", query=("pmax=3",))
    pair.advance(10)
    assert times(pair, handle) == [3, 6, 9]


def test_observing_an_instance_notifies_any_change_in_the_requested_format(pair: Pair) -> None:
    handle = observe(pair, "/3/0", accept=CF.SENML_JSON)
    set_at(pair, 4, "/3/0/14", "+03:00")
    pair.advance(1)
    [(when, message)] = pair.notifications[handle]
    assert when == 4 and int(message.opt.content_format) == CF.SENML_JSON
    node = decode(CF.SENML_JSON, message.payload, p("/3/0"), BUILTIN_MODEL)
    assert node == pair.store.read(p("/3/0"), 4.0)


def test_a_server_write_notifies_observers_after_the_write_response(pair: Pair) -> None:
    handle = observe(pair, "/1/0/1")
    reply = pair.ask(request(Code.PUT, "/1/0/1", content_format=CF.TEXT, payload=b"600"))
    assert code(reply) == "2.04"
    pair.advance(0)
    assert values(pair, handle, "/1/0/1") == [600]


def test_cancel_with_observe_1_ends_the_observation(pair: Pair) -> None:
    attributes(pair, "/3/0/9", "pmax=5")
    handle = observe(pair, "/3/0/9")
    pair.advance(6)
    cancel = pair.server.cancel_observation(handle, pair.now)
    assert cancel is not None
    pair.run_until(lambda: cancel in pair.responses)
    reply = pair.responses[cancel]
    assert code(reply) == "2.05" and reply.opt.observe is None and reply.payload == b"95"
    assert pair.of_type(ObservationEnded)[-1].reason == "deregistered"
    pair.advance(30)
    assert times(pair, handle) == [5]
    assert pair.client.observations == ()


def test_cancel_with_reset_ends_the_observation(pair: Pair) -> None:
    attributes(pair, "/3/0/9", "pmax=5")
    handle = observe(pair, "/3/0/9")
    pair.server.cancel_observation(handle, pair.now, deregister=False)  # next one gets RST
    pair.advance(6)
    assert pair.of_type(ObservationEnded)[-1].reason == "reset"
    assert pair.client.observations == ()


def test_deleting_an_observed_instance_ends_its_observation_with_4_04() -> None:
    apn = ObjectTemplate(
        builtin_definition(11),
        {0: InstanceTemplate({0: "default", 4: 0})},
        new_instance=InstanceTemplate({}),
        deletable=True,
    )
    pair = Pair(template=default_template().replace(apn))
    pair.start()
    handle = observe(pair, "/11/0")
    assert code(pair.ask(request(Code.DELETE, "/11/0"))) == "2.02"
    pair.advance(1)
    [(_, final)] = pair.notifications[handle]
    assert code(final) == "4.04"
    assert pair.client.observations == ()


def test_observe_composite_reports_all_paths_on_any_change(pair: Pair) -> None:
    paths = encode_paths(CF.SENML_CBOR, [p("/3/0/9"), p("/3/0/10")])
    handle = pair.send(
        request(Code.FETCH, "/", content_format=CF.SENML_CBOR, payload=paths, observe=0)
    )
    pair.run_until(lambda: handle in pair.responses)
    assert code(pair.responses[handle]) == "2.05"
    assert pair.of_type(ObservationStarted)[-1].composite
    set_at(pair, 2, "/3/0/10", 14_000)
    pair.advance(1)
    [(when, message)] = pair.notifications[handle]
    nodes = decode_nodes(CF.SENML_CBOR, message.payload, BUILTIN_MODEL)
    assert when == 2
    assert {str(k): n.value.value for k, n in nodes.items()} == {"/3/0/9": 95, "/3/0/10": 14_000}  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("path", "query", "expected"),
    [
        ("/3/0", ("gt=5",), "4.00"),  # change conditions are per resource
        ("/3/0/0", ("gt=5",), "4.00"),  # not numeric
        ("/3/0/9", ("gt=5", "lt=5"), "4.00"),  # lt must be below gt
        ("/3/0/9", ("gt=50", "lt=10", "st=20"), "4.00"),  # lt + 2*st must be below gt
        ("/3/0/9", ("st=-1",), "4.00"),
        ("/3/0/9", ("pmin=abc",), "4.00"),
        ("/3/0/9", ("ver=1.1",), "4.00"),  # not writable
        ("/3/0/9", ("pmin=1", "pmin=2"), "4.00"),
        ("/3/0/99", ("pmin=1",), "4.04"),
        ("/3/4", ("pmin=1",), "4.04"),
        ("/0/0", ("pmin=1",), "4.01"),
        ("/", ("pmin=1",), "4.05"),
    ],
)
def test_write_attributes_refusals(
    pair: Pair, path: str, query: tuple[str, ...], expected: str
) -> None:
    assert attributes(pair, path, *query) == expected


def test_write_attributes_sets_unsets_and_discover_shows_them(pair: Pair) -> None:
    assert attributes(pair, "/3/0/9", "pmin=5", "pmax=10", "gt=50.5") == "2.04"
    assert pair.of_type(AttributesWritten)[-1].query == ("pmin=5", "pmax=10", "gt=50.5")
    discover = pair.ask(request(Code.GET, "/3/0/9", accept=CF.LINK))
    assert discover.payload == b"</3/0/9>;pmin=5;pmax=10;gt=50.5"
    assert attributes(pair, "/3/0/9", "gt", "pmin") == "2.04"  # valueless: unset
    discover = pair.ask(request(Code.GET, "/3/0/9", accept=CF.LINK))
    assert discover.payload == b"</3/0/9>;pmax=10"


def test_discover_lists_resources_with_dim_like_anjay(pair: Pair) -> None:
    reply = pair.ask(request(Code.GET, "/3/0/7", accept=CF.LINK))
    assert (code(reply), int(reply.opt.content_format)) == ("2.05", CF.LINK)
    assert reply.payload == b"</3/0/7>;dim=2,</3/0/7/0>,</3/0/7/1>"
    reply = pair.ask(request(Code.GET, "/3", accept=CF.LINK))
    assert reply.payload.startswith(b"</3>;ver=1.2,</3/0>,</3/0/0>,</3/0/1>,")
    assert b"</3/0/11>;dim=1" in reply.payload
    reply = pair.ask(request(Code.GET, "/1/0", accept=CF.LINK))
    assert reply.payload == (
        b"</1/0>,</1/0/0>,</1/0/1>,</1/0/2>,</1/0/3>,</1/0/4>,</1/0/5>,</1/0/6>,</1/0/7>,"
        b"</1/0/8>,</1/0/17>,</1/0/18>,</1/0/19>,</1/0/20>,</1/0/23>"
    )


@pytest.mark.parametrize(("path", "expected"), [("/0", "4.01"), ("/9", "4.04"), ("/", "4.05")])
def test_discover_refusals(pair: Pair, path: str, expected: str) -> None:
    assert code(pair.ask(request(Code.GET, path, accept=CF.LINK))) == expected


def test_unknown_methods_are_not_allowed(pair: Pair) -> None:
    assert code(pair.ask(Message(code=Code.PATCH, uri_path=("3", "0")))) == "4.05"


@pytest.mark.parametrize(
    "accept", [CF.TLV, CF.SENML_JSON, CF.SENML_CBOR, CF.LWM2M_JSON, CF.LWM2M_CBOR]
)
def test_notifications_come_in_the_format_the_observe_asked_for(pair: Pair, accept: int) -> None:
    handle = observe(pair, "/3/0/7", accept=accept)
    set_at(pair, 1, "/3/0/7", {0: 3700, 1: 5000})
    pair.advance(1)
    [(_, message)] = pair.notifications[handle]
    assert int(message.opt.content_format) == accept
    node = decode(accept, message.payload, p("/3/0/7"), BUILTIN_MODEL)
    assert node == pair.store.read(p("/3/0/7"), pair.now)


@pytest.mark.parametrize("accept", [CF.TEXT, CF.CBOR, CF.TLV, CF.SENML_CBOR])
def test_single_value_notifications_in_single_value_formats(pair: Pair, accept: int) -> None:
    handle = observe(pair, "/3/0/9", accept=accept)
    set_at(pair, 1, "/3/0/9", 12)
    pair.advance(1)
    assert values(pair, handle) == [12]
    assert int(pair.notifications[handle][0][1].opt.content_format) == accept

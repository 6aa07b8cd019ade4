"""Read: every content format, the per-client defaults, and every refusal code."""

from __future__ import annotations

import pytest
from aiocoap.numbers.codes import Code

from lwm2m.codec import canonical, decode
from lwm2m.model import MultipleResource, ObjectInstance, iter_leaves
from objects import BUILTIN_MODEL
from simulators.device.config import ClientConfig
from simulators.device.formats import ANJAY, CF, WAKAAMA
from tests.simulators.pair import Pair, code, p, request

NODE_FORMATS = [CF.TLV, CF.SENML_JSON, CF.SENML_CBOR, CF.LWM2M_JSON, CF.LWM2M_CBOR]
SINGLE_FORMATS = [CF.TEXT, CF.CBOR, *NODE_FORMATS]


@pytest.fixture
def pair() -> Pair:
    pair = Pair()
    pair.start()
    return pair


def read(pair: Pair, path: str, accept: int | None = None) -> tuple[str, int | None, bytes]:
    response = pair.ask(request(Code.GET, path, accept=accept))
    cf = response.opt.content_format
    return code(response), None if cf is None else int(cf), response.payload


@pytest.mark.parametrize("accept", NODE_FORMATS)
@pytest.mark.parametrize("path", ["/3", "/3/0", "/3/0/7", "/4/0", "/32001/0"])
def test_read_answers_in_every_node_format(pair: Pair, path: str, accept: int) -> None:
    status, cf, payload = read(pair, path, accept)
    assert (status, cf) == ("2.05", accept)
    decoded = decode(accept, payload, p(path), BUILTIN_MODEL)
    expected = pair.store.read(p(path), pair.now)
    # flat formats cannot carry an empty multiple resource (/32001/0/7): compare the values
    assert list(iter_leaves(decoded, p(path))) == list(iter_leaves(expected, p(path)))


@pytest.mark.parametrize("accept", SINGLE_FORMATS)
@pytest.mark.parametrize("path", ["/3/0/0", "/3/0/9", "/3/0/13", "/3/0/7/1", "/1/0/6"])
def test_read_of_one_value_works_in_every_single_value_format(
    pair: Pair, path: str, accept: int
) -> None:
    status, cf, payload = read(pair, path, accept)
    assert (status, cf) == ("2.05", accept)
    assert decode(accept, payload, p(path), BUILTIN_MODEL) == pair.store.read(p(path), pair.now)


def test_an_opaque_resource_reads_as_octet_stream_by_default(pair: Pair) -> None:
    pair.store.set("/3443/0/3", b"\x30\x03\x02\x01\x05", pair.now)
    assert read(pair, "/3443/0/3") == ("2.05", CF.OPAQUE, b"\x30\x03\x02\x01\x05")
    status, _, payload = read(pair, "/3443/0/3", CF.TEXT)
    assert (status, payload) == ("2.05", b"MAMCAQU=")  # base64 in text/plain


def test_text_values_read_as_anjay_writes_them(pair: Pair) -> None:
    assert read(pair, "/3/0/0") == ("2.05", CF.TEXT, b"fleetloop-sim")
    assert read(pair, "/3/0/2") == ("2.05", CF.TEXT, b"sim-0001")  # serial = endpoint
    assert read(pair, "/3/0/9") == ("2.05", CF.TEXT, b"95")
    assert read(pair, "/1/0/6") == ("2.05", CF.TEXT, b"1")
    assert read(pair, "/3/0/13")[2] == b"1700000000"  # the device clock at now = 0


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/3/0", CF.SENML_CBOR),
        ("/3", CF.SENML_CBOR),
        ("/3/0/7", CF.SENML_CBOR),
        ("/3/0/0", CF.TEXT),
    ],
)
def test_without_accept_the_default_profile_answers_like_anjay(
    pair: Pair, path: str, expected: int
) -> None:
    assert read(pair, path)[:2] == ("2.05", expected)


def test_registered_as_1_0_the_device_answers_tlv_for_instances() -> None:
    pair = Pair(config=ClientConfig(lwm2m_version="1.0"))
    pair.start()
    assert read(pair, "/3/0")[:2] == ("2.05", CF.TLV)
    assert read(pair, "/3/0/0")[:2] == ("2.05", CF.TEXT)


def test_wakaama_profile_answers_tlv_even_for_a_single_resource() -> None:
    pair = Pair(config=ClientConfig(lwm2m_version="1.1", formats=WAKAAMA))
    pair.start()
    status, cf, payload = read(pair, "/3/0/0")
    assert (status, cf) == ("2.05", CF.TLV)
    assert payload == b"\xc8\x00\x0dfleetloop-sim"
    assert read(pair, "/3/0/0", CF.SENML_CBOR)[0] == "4.06"
    status, cf, payload = read(pair, "/3/0", CF.LEGACY_TLV)
    assert (status, cf) == ("2.05", CF.LEGACY_TLV)  # echoed as asked
    node = decode(canonical(CF.LEGACY_TLV), payload, p("/3/0"), BUILTIN_MODEL)
    assert isinstance(node, ObjectInstance) and node.resources[0].value.value == "fleetloop-sim"


def test_anjay_profile_refuses_the_legacy_tlv_number() -> None:
    pair = Pair(config=ClientConfig(formats=ANJAY))
    pair.start()
    assert read(pair, "/3/0", CF.LEGACY_TLV)[0] == "4.06"


@pytest.mark.parametrize(
    ("path", "accept", "expected"),
    [
        ("/9999", None, "4.04"),
        ("/3/7", None, "4.04"),
        ("/3/0/22", None, "4.04"),  # defined, not implemented by this device
        ("/3/0/7/9", None, "4.04"),
        ("/3/0/0/0", None, "4.04"),  # a single resource has no instances
        ("/rd", None, "4.04"),
        ("/0", CF.TLV, "4.01"),
        ("/0/0/0", None, "4.01"),
        ("/3/0/4", None, "4.05"),  # Reboot is E only
        ("/5/0/0", None, "4.05"),  # Package is W only
        ("/32001/0/1", None, "4.05"),  # Bundle is W only
        ("/", None, "4.05"),
        ("/3/0", CF.TEXT, "4.06"),
        ("/3/0", CF.OPAQUE, "4.06"),
        ("/3/0/7", CF.TEXT, "4.06"),
        ("/3/0/0", CF.OPAQUE, "4.06"),
        ("/3/0/0", 9999, "4.06"),
    ],
)
def test_read_refusals(pair: Pair, path: str, accept: int | None, expected: str) -> None:
    assert read(pair, path, accept) == (expected, None, b"")


def test_an_instance_read_leaves_out_write_only_and_executable_resources(pair: Pair) -> None:
    payload = read(pair, "/5/0", CF.TLV)[2]
    node = decode(CF.TLV, payload, p("/5/0"), BUILTIN_MODEL)
    assert isinstance(node, ObjectInstance)
    assert sorted(node.resources) == [1, 3, 5, 6, 7, 8, 9]


def test_a_multiple_resource_reads_with_all_its_instances(pair: Pair) -> None:
    node = decode(CF.SENML_JSON, read(pair, "/3/0/7", CF.SENML_JSON)[2], p("/3/0/7"), BUILTIN_MODEL)
    assert isinstance(node, MultipleResource)
    assert {i: v.value for i, v in node.instances.items()} == {0: 3800, 1: 5000}

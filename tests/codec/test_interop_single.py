"""Real wakaama and Anjay payloads (text, TLV, link format) decode, and agree with the capture.

The vectors come from ``tests/fixtures/interop/single_formats.json`` (extracted from
``../shared/interop`` by ``tests/fixtures/extract_interop.py``). Each check compares what our
codecs decode with what the capture itself records (its text decode, its TLV walk, the raw
value bytes), and re-encodes to see that we write the same bytes the clients wrote. Object 3 is
typed by the test model; objects it lacks decode as Opaque and are compared byte for byte.
"""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path as FsPath
from typing import Any

import pytest

from lwm2m.codec import canonical, decode, encode
from lwm2m.codec.link import (
    Attributes,
    format_links,
    parse_links,
    parse_registration,
    parse_write_attributes,
)
from lwm2m.codec.text import TextCodec
from lwm2m.codec.tlv import TlvCodec
from lwm2m.model import (
    DataType,
    LwM2MObject,
    MultipleResource,
    Node,
    ObjectInstance,
    ObjLink,
    Path,
    ResourceInstance,
    SingleResource,
    Value,
)
from tests.codec.models import TEST_MODEL
from tests.conftest import REPO

FIXTURE = REPO / "tests" / "fixtures" / "interop" / "single_formats.json"
ENTRIES: list[dict[str, Any]] = json.loads(FIXTURE.read_text(encoding="utf-8"))
PAYLOADS = [e for e in ENTRIES if e["kind"] == "payload"]
TEXT = [e for e in PAYLOADS if e["content_format"] == 0]
TLV = [
    e
    for e in PAYLOADS
    if e["content_format"] is not None and canonical(e["content_format"]) == 11542
]
LINKS = [e for e in PAYLOADS if e["content_format"] in (40, None)]
WRITE_ATTRIBUTES = [e for e in ENTRIES if e["kind"] == "write_attributes"]


def _ids(entries: list[dict[str, Any]]) -> list[str]:
    return [f"{e['id']}-{e['message']}" if "message" in e else e["id"] for e in entries]


def _path(entry: dict[str, Any]) -> Path:
    return Path.parse(entry["uri_path"] or "/")


def _payload(entry: dict[str, Any]) -> bytes:
    return bytes.fromhex(entry["payload_hex"])


# -- text ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("entry", TEXT, ids=_ids(TEXT))
def test_text_payloads_decode_to_what_the_capture_shows(entry: dict[str, Any]) -> None:
    codec, path = TextCodec(), _path(entry)
    node = decode(0, _payload(entry), path, TEST_MODEL)
    assert isinstance(node, SingleResource | ResourceInstance)
    raw = node.value.value
    shown = entry["decoded"]["text"]
    assert raw == (int(shown) if isinstance(raw, int) else shown)
    assert codec.encode(node, path, TEST_MODEL) == _payload(entry)


def test_text_vectors_cover_typed_and_untyped_resources() -> None:
    nodes = [TextCodec().decode(_payload(e), _path(e), TEST_MODEL) for e in TEXT]
    types = {n.value.type for n in nodes if isinstance(n, SingleResource | ResourceInstance)}
    assert {DataType.STRING, DataType.INTEGER, DataType.TIME} <= types


# -- TLV ----------------------------------------------------------------------------------------
def _expected_value(value: Value, raw: bytes) -> object:
    """What ``raw`` (the capture's value bytes) means as ``value``'s type, decoded here."""
    if value.type in (DataType.STRING, DataType.CORELNK):
        return raw.decode("utf-8")
    if value.type in (DataType.INTEGER, DataType.TIME):
        return int.from_bytes(raw, "big", signed=True)
    if value.type is DataType.OBJLNK:
        return ObjLink(int.from_bytes(raw[:2], "big"), int.from_bytes(raw[2:], "big"))
    return raw


def _check_value(value: Value, tlv: dict[str, Any]) -> None:
    raw = bytes.fromhex(tlv["value_hex"])
    assert len(raw) == tlv["length"]
    assert value.value == _expected_value(value, raw)
    if "as_text" in tlv and value.type is DataType.STRING:
        assert value.value == tlv["as_text"]
    if "as_int" in tlv and value.type in (DataType.INTEGER, DataType.TIME):
        assert value.value == tlv["as_int"]


def _check_resource(resource: SingleResource | MultipleResource, tlv: dict[str, Any]) -> None:
    assert resource.id == tlv["id"]
    if isinstance(resource, SingleResource):
        assert tlv["type"] == "resource"
        _check_value(resource.value, tlv)
        return
    assert tlv["type"] == "multiple_resource"
    assert list(resource.instances) == [child["id"] for child in tlv["children"]]
    for child in tlv["children"]:
        assert child["type"] == "resource_instance"
        _check_value(resource.instances[child["id"]], child)


def _check_resources(instance: ObjectInstance, tlvs: list[dict[str, Any]]) -> None:
    assert list(instance.resources) == [t["id"] for t in tlvs]
    for tlv in tlvs:
        _check_resource(instance.resources[tlv["id"]], tlv)


def _check_node(node: Node, tlvs: list[dict[str, Any]]) -> None:
    if isinstance(node, LwM2MObject):
        assert [t["type"] for t in tlvs] == ["object_instance"] * len(tlvs)
        assert list(node.instances) == [t["id"] for t in tlvs]
        for tlv in tlvs:
            _check_resources(node.instances[tlv["id"]], tlv["children"])
    elif isinstance(node, ObjectInstance):
        if len(tlvs) == 1 and tlvs[0]["type"] == "object_instance":
            tlvs = tlvs[0]["children"]
        _check_resources(node, tlvs)
    elif isinstance(node, ResourceInstance):
        assert len(tlvs) == 1 and tlvs[0]["type"] == "resource_instance"
        assert node.id == tlvs[0]["id"]
        _check_value(node.value, tlvs[0])
    else:
        assert len(tlvs) == 1
        _check_resource(node, tlvs[0])


def _is_create(entry: dict[str, Any]) -> bool:
    return entry["method"] == "0.02" and entry["message"] == "request" and _path(entry).is_object


@pytest.mark.parametrize("entry", TLV, ids=_ids(TLV))
def test_tlv_payloads_decode_to_what_the_capture_shows(entry: dict[str, Any]) -> None:
    codec, path, payload = TlvCodec(), _path(entry), _payload(entry)
    tlvs = entry["decoded"]["tlv"]
    if _is_create(entry):
        created = codec.decode_create(payload, path, TEST_MODEL)
        assert codec.encode_create(created, path, TEST_MODEL) == payload
        if created[0].id is None:
            _check_resources(ObjectInstance.of(0, created[0].resources), tlvs)
        else:
            _check_node(
                LwM2MObject.of(
                    path.ids[0], [ObjectInstance.of(c.id or 0, c.resources) for c in created]
                ),
                tlvs,
            )
        return
    node = decode(entry["content_format"], payload, path, TEST_MODEL)  # 1542 maps to TLV
    _check_node(node, tlvs)
    assert encode(entry["content_format"], node, path, TEST_MODEL) == payload  # as clients do


def test_tlv_vectors_include_wakaamas_legacy_number_and_single_resource_answers() -> None:
    assert {e["content_format"] for e in TLV} == {11542, 1542}
    assert any(_path(e).is_resource and e["message"] == "response" for e in TLV)


# -- link format --------------------------------------------------------------------------------
_QUOTED_NAME = re.compile(r'([A-Za-z0-9!#$%&\'*+.^_`|~-]+)="')
_OBJECT_LINK = re.compile(r"</(\d+)(?:/(\d+))?>")


@pytest.mark.parametrize("entry", LINKS, ids=_ids(LINKS))
def test_link_payloads_parse_and_format_back_to_the_same_text(entry: dict[str, Any]) -> None:
    text = entry["decoded"]["text"]
    links = parse_links(_payload(entry))
    assert len(links) == text.count("<") + (0 if text.startswith("<") else 1)
    assert format_links(links, quoted=set(_QUOTED_NAME.findall(text))) == text
    for link in links:
        Attributes.from_link(link)  # every attribute the clients sent is well-typed


def _registers(entry: dict[str, Any]) -> bool:
    return entry["message"] == "request" and (entry["uri_path"] or "").startswith("/rd")


REGISTRATIONS = [e for e in LINKS if _registers(e)]


@pytest.mark.parametrize("entry", REGISTRATIONS, ids=_ids(REGISTRATIONS))
def test_register_and_update_payloads_list_the_clients_objects(entry: dict[str, Any]) -> None:
    text = entry["decoded"]["text"]
    reg = parse_registration(_payload(entry))
    pairs = _OBJECT_LINK.findall(text)
    assert reg.objects == tuple(dict.fromkeys(int(o) for o, _ in pairs))
    assert reg.instances == tuple(Path.of(int(o), int(i)) for o, i in pairs if i)
    ct = re.search(r'rt="oma\.lwm2m";ct=(\d+)', text)
    assert reg.content_formats == ((int(ct[1]),) if ct else ())
    for oid, ver in re.findall(r'</(\d+)>;ver="?([\d.]+)"?', text):
        assert reg.version_of(int(oid)) == ver


BOOTSTRAP_DISCOVERS = [e for e in LINKS if "lwm2m=" in e["decoded"]["text"]]


@pytest.mark.parametrize("entry", BOOTSTRAP_DISCOVERS, ids=_ids(BOOTSTRAP_DISCOVERS))
def test_bootstrap_discover_gives_the_clients_version_and_servers(entry: dict[str, Any]) -> None:
    text = entry["decoded"]["text"]
    reg = parse_registration(_payload(entry))
    version = re.search(r'lwm2m="?([\d.]+)"?', text)
    assert version is not None and reg.lwm2m_version == version[1]
    for oid, iid, ssid in re.findall(r"</(\d+)/(\d+)>;ssid=(\d+)", text):
        assert reg.attributes[Path.of(int(oid), int(iid))].ssid == int(ssid)


DISCOVERS = [e for e in LINKS if e["message"] == "response" and "pmin=" in e["decoded"]["text"]]


@pytest.mark.parametrize("entry", DISCOVERS, ids=_ids(DISCOVERS))
def test_discover_attributes_match_the_capture(entry: dict[str, Any]) -> None:
    text = entry["decoded"]["text"]
    found = {}
    for link in parse_links(text):
        attrs = Attributes.from_link(link)
        if attrs.pmin is not None:
            found[link.path] = (attrs.pmin, attrs.pmax)
    expected = re.findall(r"<([\d/]+)>;pmin=(\d+);pmax=(\d+)", text)
    assert found == {Path.parse(p): (int(a), int(b)) for p, a, b in expected}


@pytest.mark.parametrize("entry", WRITE_ATTRIBUTES, ids=_ids(WRITE_ATTRIBUTES))
def test_write_attributes_queries_parse(entry: dict[str, Any]) -> None:
    update = parse_write_attributes(entry["uri_query"])
    for item in entry["uri_query"].split("&"):
        name, _, value = item.partition("=")
        assert str(getattr(update.set, name)) == value


def test_every_link_format_payload_kind_is_present() -> None:
    assert REGISTRATIONS and BOOTSTRAP_DISCOVERS and DISCOVERS and WRITE_ATTRIBUTES
    assert any(e["content_format"] is None for e in REGISTRATIONS)  # wakaama's bare Update


# -- the fixture is complete --------------------------------------------------------------------
def test_the_fixture_is_what_the_extractor_makes_from_shared(shared_dir: FsPath) -> None:
    spec = importlib.util.spec_from_file_location(
        "extract_interop", REPO / "tests" / "fixtures" / "extract_interop.py"
    )
    assert spec is not None and spec.loader is not None
    extractor = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(extractor)
    vectors = json.loads((shared_dir / "interop" / "interop-vectors.json").read_text("utf-8"))
    assert extractor.render(extractor.extract(vectors)) == FIXTURE.read_text(encoding="utf-8")

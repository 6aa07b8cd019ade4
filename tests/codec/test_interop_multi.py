"""Real wakaama and Anjay payloads in SenML JSON/CBOR, LwM2M JSON and LwM2M CBOR.

Each payload from ``tests/fixtures/interop/multi_formats.json`` (extracted from the shared
capture by ``tests/fixtures/extract_interop_multi.py``) must decode, and its values must agree
with the capture's own ``decoded`` view, read here by a deliberately naive interpreter (plain
string concatenation of names, first value label wins) that shares no code with the codecs.
"""

from __future__ import annotations

import base64
import importlib.util
import json
from pathlib import Path as FsPath
from types import ModuleType
from typing import Any

import pytest

from lwm2m.codec import multi_codec_for
from lwm2m.codec.api import MultiNodeCodec
from lwm2m.codec.lwm2m_cbor import LwM2MCborCodec
from lwm2m.codec.lwm2m_json import LwM2MJsonCodec
from lwm2m.codec.multi_values import types_compatible
from lwm2m.codec.senml_cbor import SenmlCborCodec
from lwm2m.codec.senml_json import SenmlJsonCodec
from lwm2m.model import (
    DataType,
    InvalidPath,
    Node,
    Path,
    Value,
    iter_leaves,
    resource_definition,
)
from tests.codec.models import TEST_MODEL
from tests.conftest import REPO

SCRIPT = REPO / "tests" / "fixtures" / "extract_interop_multi.py"
FIXTURE = REPO / "tests" / "fixtures" / "interop" / "multi_formats.json"
ENTRIES: list[dict[str, Any]] = json.loads(FIXTURE.read_text(encoding="utf-8"))
CODECS: dict[int, MultiNodeCodec] = {
    110: SenmlJsonCodec(),
    112: SenmlCborCodec(),
    1543: LwM2MJsonCodec(),
    11543: LwM2MJsonCodec(),
    11544: LwM2MCborCodec(),
}
CBOR_LABELS = {-2: "bn", -3: "bt", 0: "n", 2: "v", 3: "vs", 4: "vb", 6: "t", 8: "vd", "vlo": "vlo"}
LWM2M_JSON_LABELS = {"n": "n", "t": "t", "v": "v", "sv": "vs", "bv": "vb", "ov": "vlo"}
Expected = tuple[float | None, str, tuple[str, object]]


def _kind(item: object) -> tuple[str, object]:
    """A plain value tagged with its JSON/CBOR shape (so True never equals 1)."""
    if isinstance(item, dict) and "bytes_hex" in item:
        return ("bytes", bytes.fromhex(item["bytes_hex"]))
    if isinstance(item, bool):
        return ("bool", item)
    if isinstance(item, int | float):
        return ("number", item)
    return (type(item).__name__, item)


def _value_kind(value: Value) -> tuple[str, object]:
    if value.type is DataType.OBJLNK:
        return ("str", str(value.value))
    return _kind(value.value)


def _naive_senml(records: list[dict[str, Any]]) -> set[Expected]:
    name, base_time, out = "", None, set()
    for record in records:
        name = record.get("bn", name)
        base_time = record.get("bt", base_time)
        time = None
        if base_time is not None or "t" in record:
            time = float((base_time or 0) + record.get("t", 0))
        label = next(k for k in ("v", "vs", "vb", "vd", "vlo") if k in record)
        item = record[label]
        if label == "vd" and isinstance(item, str):
            item = {"bytes_hex": base64.urlsafe_b64decode(item + "==").hex()}
        out.add((time, name + record.get("n", ""), _kind(item)))
    return out


def _naive_lwm2m_cbor(pairs: list[Any], prefix: str) -> set[Expected]:
    out: set[Expected] = set()
    for key, item in pairs:
        ids = key if isinstance(key, list) else [key]
        path = prefix + "".join(f"/{i}" for i in ids)
        if isinstance(item, list):  # the capture shows maps as lists of [key, value]
            out |= _naive_lwm2m_cbor(item, path)
        else:
            out.add((None, path, _kind(item)))
    return out


def expected_leaves(entry: dict[str, Any]) -> set[Expected]:
    decoded, cf = entry["decoded"], entry["content_format"]
    if cf == 110:
        return _naive_senml(decoded)
    if cf == 112:
        return _naive_senml([{CBOR_LABELS[k]: v for k, v in record} for record in decoded])
    if cf in (1543, 11543):
        entries = [{LWM2M_JSON_LABELS[k]: v for k, v in e.items()} for e in decoded["e"]]
        if entries:
            entries[0] |= {k: decoded[k] for k in ("bn", "bt") if k in decoded}
        return _naive_senml(entries)
    return _naive_lwm2m_cbor(decoded, "")


def _leaves(node: Node, path: Path) -> set[tuple[str, tuple[str, object]]]:
    return {(str(p), _value_kind(v)) for p, v in iter_leaves(node, path)}


def _target(entry: dict[str, Any]) -> Path | None:
    """The path a payload is about: a Read/Write target, or None for /dp and /bspack packs."""
    try:
        return Path.parse(entry["path"])
    except InvalidPath:
        return None


def _label(entry: dict[str, Any]) -> str:
    return f"{entry['id']} {entry['role']} {entry['description'][:50]}"


@pytest.mark.parametrize("entry", ENTRIES, ids=_label)
def test_payload_decodes_to_the_captured_values(entry: dict[str, Any]) -> None:
    codec = CODECS[entry["content_format"]]
    payload = bytes.fromhex(entry["payload_hex"])
    actual = {
        (instant.timestamp, *leaf)
        for instant in codec.decode_timestamped(payload, TEST_MODEL)
        for path, node in instant.nodes.items()
        for leaf in _leaves(node, path)
    }
    assert actual == expected_leaves(entry)
    target = _target(entry)
    if target is not None:
        node = codec.decode(payload, target, TEST_MODEL)
        assert _leaves(node, target) == {(path, value) for _, path, value in expected_leaves(entry)}


@pytest.mark.parametrize("entry", ENTRIES, ids=_label)
def test_known_resources_get_the_model_types(entry: dict[str, Any]) -> None:
    codec = CODECS[entry["content_format"]]
    nodes = codec.decode_nodes(bytes.fromhex(entry["payload_hex"]), TEST_MODEL)
    for path, node in nodes.items():
        for leaf_path, value in iter_leaves(node, path):
            definition = resource_definition(TEST_MODEL, leaf_path.object_id, leaf_path.resource_id)
            if definition is not None:
                assert types_compatible(definition.type, value.type), leaf_path


SERVER_BUILT = [e for e in ENTRIES if e["built_by"] == "server"]


@pytest.mark.parametrize("entry", SERVER_BUILT, ids=_label)
def test_server_built_payloads_re_encode_to_the_same_bytes(entry: dict[str, Any]) -> None:
    """The capture server wrote SenML the way Leshan and wakaama do; so do we."""
    codec = CODECS[entry["content_format"]]
    payload = bytes.fromhex(entry["payload_hex"])
    target = _target(entry)
    if target is not None:
        again = codec.encode(codec.decode(payload, target, TEST_MODEL), target, TEST_MODEL)
    else:
        again = codec.encode_nodes(codec.decode_nodes(payload, TEST_MODEL), TEST_MODEL)
    assert again == payload


def test_fixture_covers_every_format_and_both_clients() -> None:
    assert {e["content_format"] for e in ENTRIES} >= {110, 112, 11543, 11544}
    assert {e["client"].split()[0] for e in ENTRIES} == {"wakaama", "Anjay"}
    assert SERVER_BUILT


def _extractor() -> ModuleType:
    spec = importlib.util.spec_from_file_location("extract_interop_multi", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_fixture_is_current_with_the_shared_capture(shared_dir: FsPath) -> None:
    extractor = _extractor()
    vectors = json.loads((shared_dir / "interop" / "interop-vectors.json").read_text("utf-8"))
    assert extractor.render(extractor.extract(vectors)) == FIXTURE.read_text(encoding="utf-8"), (
        "run: python tests/fixtures/extract_interop_multi.py"
    )


@pytest.mark.parametrize(
    ("content_format", "codec_type"),
    [
        (110, SenmlJsonCodec),
        (112, SenmlCborCodec),
        (11543, LwM2MJsonCodec),
        (1543, LwM2MJsonCodec),
        (11544, LwM2MCborCodec),
    ],
)
def test_registry_dispatches_every_multi_path_number(content_format: int, codec_type: type) -> None:
    codec = multi_codec_for(content_format)
    assert isinstance(codec, codec_type)
    assert isinstance(codec, MultiNodeCodec)

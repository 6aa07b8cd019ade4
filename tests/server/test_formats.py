"""choose_format: the format the server asks for or sends, per version, announcement,
operation and path; and format_problem, which refuses overrides that cannot work."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from lwm2m.codec import ContentFormat
from lwm2m.model import DataType, Path
from lwm2m.server.formats import (
    CLIENT_CHOICE,
    FormatOperation,
    choose_format,
    composite_format,
    format_problem,
    multi_format,
)
from objects import BUILTIN_MODEL

CF = ContentFormat
Op = FormatOperation


@dataclass(frozen=True)
class Client:
    lwm2m_version: str
    supported_formats: tuple[int, ...] = ()


def pick(
    client: Client, op: FormatOperation, path: str, value_type: DataType | None = None
) -> int | None:
    return choose_format(client, op, Path.parse(path), BUILTIN_MODEL, value_type)


@pytest.mark.parametrize("version", ["1.0", "1.1", "1.2"])
def test_single_values_are_text_or_octet_stream_for_every_version(version: str) -> None:
    client = Client(version, (CF.SENML_CBOR,))
    for op in (Op.READ, Op.OBSERVE, Op.WRITE):
        assert pick(client, op, "/3/0/0") == CF.TEXT  # String
        assert pick(client, op, "/3/0/9") == CF.TEXT  # Integer
        assert pick(client, op, "/3/0/7/0") == CF.TEXT  # resource instance
        assert pick(client, op, "/32001/0/2") == CF.OPAQUE  # Opaque


def test_lwm2m_1_0_uses_tlv_for_several_values() -> None:
    client = Client("1.0", (CF.SENML_CBOR,))  # announcements do not matter in 1.0
    assert pick(client, Op.READ, "/3/0") == CF.TLV
    assert pick(client, Op.READ, "/3") == CF.TLV
    assert pick(client, Op.READ, "/3/0/7") == CF.TLV  # multiple resource
    assert pick(client, Op.WRITE, "/1/0") == CF.TLV
    assert pick(client, Op.CREATE, "/11") == CF.TLV


@pytest.mark.parametrize(
    ("version", "announced", "expected"),
    [
        ("1.1", (), CF.TLV),  # Anjay 1.1 announces nothing; TLV is safe
        ("1.1", (CF.SENML_JSON,), CF.SENML_JSON),  # wakaama udp
        ("1.1", (CF.SENML_CBOR,), CF.SENML_CBOR),  # wakaama cbor build
        ("1.1", (CF.SENML_JSON, CF.SENML_CBOR), CF.SENML_CBOR),
        ("1.1", (CF.LWM2M_CBOR,), CF.TLV),  # 1.1 has no LwM2M CBOR
        ("1.1", (CF.LEGACY_TLV,), CF.TLV),
        ("1.1", (CF.LWM2M_JSON,), CF.LWM2M_JSON),
        ("1.2", (), CF.SENML_CBOR),  # Anjay 1.2's default
        ("1.2", (CF.LWM2M_CBOR, CF.SENML_CBOR), CF.LWM2M_CBOR),
        ("1.2", (CF.SENML_JSON,), CF.SENML_JSON),
    ],
)
def test_several_values_follow_the_announcement(
    version: str, announced: tuple[int, ...], expected: int
) -> None:
    client = Client(version, announced)
    assert multi_format(client) == expected
    assert pick(client, Op.READ, "/3/0") == expected
    assert pick(client, Op.WRITE, "/3/0/7") == expected


@pytest.mark.parametrize(
    ("version", "announced", "expected"),
    [
        ("1.1", (), CF.SENML_CBOR),
        ("1.1", (CF.SENML_JSON,), CF.SENML_JSON),
        ("1.1", (CF.TLV,), CF.SENML_CBOR),
        ("1.2", (CF.LWM2M_CBOR,), CF.LWM2M_CBOR),
        ("1.2", (CF.SENML_JSON, CF.SENML_CBOR), CF.SENML_CBOR),
    ],
)
def test_composite_operations_need_a_multi_path_format(
    version: str, announced: tuple[int, ...], expected: int
) -> None:
    client = Client(version, announced)
    assert composite_format(client) == expected
    for op in (Op.READ_COMPOSITE, Op.WRITE_COMPOSITE, Op.OBSERVE_COMPOSITE):
        assert pick(client, op, "/3/0/0") == expected


def test_resources_the_model_does_not_know() -> None:
    client = Client("1.1", (CF.SENML_CBOR,))
    assert pick(client, Op.READ, "/9999/0/1") is None  # no Accept: the client picks
    assert pick(client, Op.OBSERVE, "/9999/0/1") is None
    assert pick(client, Op.WRITE, "/9999/0/1", DataType.OPAQUE) == CF.OPAQUE
    assert pick(client, Op.WRITE, "/9999/0/1", DataType.INTEGER) == CF.TEXT
    assert pick(client, Op.READ, "/9999/0") == CF.SENML_CBOR


def test_format_problem_refuses_what_cannot_work() -> None:
    root, inst, res = Path(()), Path.parse("/3/0"), Path.parse("/3/0/0")
    assert format_problem(CF.TEXT, Op.READ, res) is None
    assert format_problem(CF.TLV, Op.READ, inst) is None
    assert format_problem(CF.TEXT, Op.READ, inst) is not None
    assert format_problem(CF.CBOR, Op.WRITE, inst) is not None
    assert format_problem(CF.LINK, Op.READ, res) is not None
    assert format_problem(12345, Op.READ, res) is not None
    assert format_problem(CF.TLV, Op.READ_COMPOSITE, res) is not None
    assert format_problem(CF.SENML_JSON, Op.READ_COMPOSITE, root) is None
    assert format_problem(CF.SENML_JSON, Op.READ, root) is not None
    assert format_problem(CF.LEGACY_TLV, Op.READ, inst) is None
    assert format_problem(CLIENT_CHOICE, Op.READ, inst) is None
    assert format_problem(CLIENT_CHOICE, Op.WRITE, inst) is not None

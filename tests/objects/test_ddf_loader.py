"""The DDF loader on hand-written documents: leniency, every error path, folders, assembly."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from lwm2m.model import DataType, Operations
from objects import (
    BUILTIN,
    DdfError,
    ModelConflict,
    NotAnObjectDefinition,
    dump_ddf,
    load_ddf,
    load_directory,
    load_model,
    parse_ddf,
    scan_directory,
)
from objects.builtin import DEVICE, FLEET_CONFIG, FLEET_CONFIG_OBJECT_ID
from objects.ddf import MAX_DDF_BYTES

ITEM = """\
      <Item ID="{rid}">
        <Name>{name}</Name>
        <Operations>{ops}</Operations>
        <MultipleInstances>{multi}</MultipleInstances>
        <Mandatory>Mandatory</Mandatory>
        <Type>{type}</Type>
        <RangeEnumeration>{range}</RangeEnumeration>
        <Units>{units}</Units>
        <Description>{name} resource.</Description>
      </Item>
"""


def item(
    rid: int | str,
    name: str = "Thing",
    ops: str = "R",
    type: str = "Integer",
    multi: str = "Single",
    range: str = "",
    units: str = "",
) -> str:
    return ITEM.format(
        rid=rid, name=name, ops=ops, type=type, multi=multi, range=range, units=units
    )


def document(*items: str, oid: str = "40001", header: str | None = None, extra: str = "") -> str:
    if header is None:
        header = f"""\
    <Name>Test Object</Name>
    <Description1>For tests.</Description1>
    <ObjectID>{oid}</ObjectID>
    <ObjectURN>urn:oma:lwm2m:x:{oid}</ObjectURN>
    <LWM2MVersion>1.1</LWM2MVersion>
    <ObjectVersion>1.0</ObjectVersion>
    <MultipleInstances>Multiple</MultipleInstances>
    <Mandatory>Optional</Mandatory>
"""
    body = "".join(items)
    return f"""\
<?xml version="1.0" encoding="UTF-8"?>
<LWM2M xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">
  <Object ObjectType="MODefinition">
{header}    <Resources>
{body}    </Resources>
  </Object>
{extra}</LWM2M>
"""


def write(tmp_path: Path, name: str, text: str | bytes) -> Path:
    path = tmp_path / name
    if isinstance(text, str):
        path.write_text(text, encoding="utf-8")
    else:
        path.write_bytes(text)
    return path


def line_of(text: str, needle: str) -> int:
    return text[: text.index(needle)].count("\n") + 1


# -- reading well-formed documents ----------------------------------------------------------


def test_a_plain_document_loads_every_field() -> None:
    text = document(
        item(0, "Count", "RW", "Integer", range="0..10", units="s"),
        item(1, "Reset", "E", ""),
        item(2, "Tags", "R", "String", multi="Multiple"),
    )
    [definition] = parse_ddf(text)
    assert (definition.id, definition.name, definition.version, definition.lwm2m_version) == (
        40001,
        "Test Object",
        "1.0",
        "1.1",
    )
    assert definition.multiple and not definition.mandatory
    assert definition.urn == "urn:oma:lwm2m:x:40001"
    assert definition.description == "For tests."
    count = definition.resources[0]
    assert (count.operations, count.type, count.range_enumeration, count.units) == (
        Operations.RW,
        DataType.INTEGER,
        "0..10",
        "s",
    )
    assert count.mandatory and not count.multiple
    assert definition.resources[1].type is DataType.NONE
    assert definition.resources[2].multiple


def test_bytes_paths_and_text_give_the_same_definitions(tmp_path: Path) -> None:
    text = document(item(0))
    path = write(tmp_path, "obj.xml", text)
    assert load_ddf(path) == load_ddf(str(path)) == load_ddf(text.encode()) == parse_ddf(text)


@pytest.mark.parametrize(
    ("spelling", "expected"),
    [
        ("Objlnk", DataType.OBJLNK),
        ("ObjLnk", DataType.OBJLNK),
        ("objlink", DataType.OBJLNK),
        ("Corelnk", DataType.CORELNK),
        ("CoreLnk", DataType.CORELNK),
        ("unsigned integer", DataType.UNSIGNED_INTEGER),
        ("Unsigned  Integer", DataType.UNSIGNED_INTEGER),
        ("UnsignedInteger", DataType.UNSIGNED_INTEGER),
        (" float ", DataType.FLOAT),
        ("TIME", DataType.TIME),
    ],
)
def test_type_spellings_seen_in_the_wild_are_accepted(spelling: str, expected: DataType) -> None:
    [definition] = parse_ddf(document(item(0, type=spelling)))
    assert definition.resources[0].type is expected


def test_harmless_sloppiness_is_accepted() -> None:
    header = """\
    <Name>
       Sloppy   Object
    </Name>
    <ObjectID> 40002 </ObjectID>
    <MultipleInstances> single </MultipleInstances>
    <Mandatory>MANDATORY</Mandatory>
"""
    sloppy_item = """\
      <Item id=" 7 ">
        <Name>  Spaced   name </Name>
        <Operations> rw </Operations>
        <MultipleInstances>MULTIPLE</MultipleInstances>
        <Mandatory>optional</Mandatory>
        <Type>string</Type>
      </Item>
      <Item ID="8"><Name>Run</Name><Operations>E</Operations>
        <MultipleInstances>Single</MultipleInstances><Mandatory>Optional</Mandatory>
        <Type>String</Type></Item>
      <Item ID="9"><Name>No type</Name><Operations>R</Operations>
        <MultipleInstances>Single</MultipleInstances><Mandatory>Optional</Mandatory>
      </Item>
"""
    [definition] = parse_ddf("\ufeff" + document(sloppy_item, header=header))
    assert (definition.id, definition.name) == (40002, "Sloppy Object")
    assert not definition.multiple and definition.mandatory
    # missing ObjectURN, versions and descriptions take their defaults
    assert (definition.urn, definition.version, definition.lwm2m_version) == (
        "urn:oma:lwm2m:x:40002",
        "1.0",
        "1.0",
    )
    spaced = definition.resources[7]
    assert (spaced.name, spaced.operations, spaced.multiple, spaced.mandatory) == (
        "Spaced name",
        Operations.RW,
        True,
        False,
    )
    assert (spaced.range_enumeration, spaced.units, spaced.description) == ("", "", "")
    assert definition.resources[8].type is DataType.NONE  # executables carry no value
    assert definition.resources[9].type is DataType.OPAQUE  # untyped readable: raw bytes


def test_bom_encodings_namespaces_and_several_objects_in_one_file() -> None:
    second = document(item(0), oid="40004").split("<LWM2M", 1)[1].split(">", 1)[1]
    second_object = second.rsplit("</LWM2M>", 1)[0]
    text = document(item(0), oid="40003", extra=second_object)
    assert [d.id for d in parse_ddf(text)] == [40003, 40004]
    assert [d.id for d in load_ddf(b"\xef\xbb\xbf" + text.encode())] == [40003, 40004]
    latin = text.replace('encoding="UTF-8"', 'encoding="ISO-8859-1"').replace("Thing", "Thing\xe9")
    assert load_ddf(latin.encode("latin-1"))[0].resources[0].name == "Thing\xe9"
    assert parse_ddf(latin)[0].resources[0].name == "Thing\xe9"  # text ignores the declaration
    namespaced = text.replace("<LWM2M ", '<LWM2M xmlns="urn:example" ')
    assert [d.id for d in parse_ddf(namespaced)] == [40003, 40004]


def test_an_object_without_resources_loads_empty() -> None:
    text = document().replace("    <Resources>\n    </Resources>\n", "")
    assert "<Resources>" not in text
    [definition] = parse_ddf(text)
    assert dict(definition.resources) == {}


def test_what_we_write_is_what_we_read() -> None:
    assert load_ddf(dump_ddf([DEVICE, FLEET_CONFIG])) == [DEVICE, FLEET_CONFIG]


# -- errors name the file, the line and the element -----------------------------------------


def assert_located(err: DdfError, source: str, line: int | None, element: str | None) -> None:
    assert err.source == source
    assert err.line == line
    assert err.element == element
    assert str(err).startswith(f"{source}:{line}: " if line else f"{source}: ")
    if element:
        assert element in str(err)


def test_broken_xml_names_file_and_line(tmp_path: Path) -> None:
    text = document(item(0)).replace("</Operations>", "</Operation>", 1)
    path = write(tmp_path, "broken.xml", text)
    with pytest.raises(DdfError) as info:
        load_ddf(path)
    assert_located(info.value, str(path), line_of(text, "</Operation>"), None)
    assert "mismatched tag" in info.value.reason


def test_missing_object_id_names_the_object(tmp_path: Path) -> None:
    text = document(item(0)).replace("    <ObjectID>40001</ObjectID>\n", "")
    path = write(tmp_path, "noid.xml", text)
    with pytest.raises(DdfError) as info:
        load_ddf(path)
    assert_located(info.value, str(path), line_of(text, "<Object "), "<Object> #1")
    assert "<ObjectID>" in info.value.reason


def test_bad_type_names_the_item_and_its_type_element(tmp_path: Path) -> None:
    text = document(item(0), item(3, type="Strng"))
    path = write(tmp_path, "badtype.xml", text)
    with pytest.raises(DdfError) as info:
        load_ddf(path)
    element = '<Object> 40001/<Item ID="3">/<Type>'
    assert_located(info.value, str(path), line_of(text, "<Type>Strng"), element)
    assert "'Strng'" in info.value.reason


@pytest.mark.parametrize(
    ("mutate", "element", "needle", "reason"),
    [
        (
            lambda t: t.replace('<Item ID="0">', "<Item>"),
            "<Object> 40001/<Item>",
            "<Item>",
            "ID attribute",
        ),
        (
            lambda t: t.replace('<Item ID="0">', '<Item ID="x1">'),
            "<Object> 40001/<Item ID='x1'>",
            '<Item ID="x1">',
            "not a decimal",
        ),
        (
            lambda t: t.replace('<Item ID="0">', '<Item ID="65535">'),
            "<Object> 40001/<Item ID='65535'>",
            '<Item ID="65535">',
            "out of range",
        ),
        (
            lambda t: t.replace("<ObjectID>40001", "<ObjectID>-1"),
            "<Object> #1/<ObjectID>",
            "<ObjectID>",
            "not a decimal",
        ),
        (
            lambda t: t.replace("<Operations>R<", "<Operations>RX<"),
            '<Object> 40001/<Item ID="0">/<Operations>',
            "<Operations>RX",
            "'X'",
        ),
        (
            lambda t: t.replace("<MultipleInstances>Multiple<", "<MultipleInstances>Many<"),
            "<Object> 40001/<MultipleInstances>",
            "<MultipleInstances>Many",
            "Single or Multiple",
        ),
        (
            lambda t: t.replace("<Mandatory>Mandatory</Mandatory>", "", 1),
            '<Object> 40001/<Item ID="0">',
            '<Item ID="0">',
            "<Mandatory>",
        ),
        (
            lambda t: t.replace("<Name>Thing</Name>", "<Name> </Name>", 1),
            '<Object> 40001/<Item ID="0">/<Name>',
            '<Item ID="0">',
            "empty",
        ),
        (
            lambda t: t.replace("<ObjectVersion>1.0", "<ObjectVersion>v2"),
            "<Object> 40001/<ObjectVersion>",
            "<ObjectVersion>",
            "major.minor",
        ),
        (
            lambda t: t.replace("<Name>Test Object</Name>", "<Name>A</Name><Name>B</Name>"),
            "<Object> #1/<Name>",
            "<Name>A",
            "more than once",
        ),
        (
            lambda t: t.replace('<Item ID="1">', '<Item ID="0">'),
            '<Object> 40001/<Item ID="0">',
            '<Item ID="0">\n        <Name>Other',
            "duplicate resource id",
        ),
    ],
)
def test_invalid_definitions_are_located(
    tmp_path: Path, mutate: Callable[[str], str], element: str, needle: str, reason: str
) -> None:
    text = mutate(document(item(0), item(1, "Other")))
    path = write(tmp_path, "bad.xml", text)
    with pytest.raises(DdfError) as info:
        load_ddf(path)
    assert_located(info.value, str(path), line_of(text, needle), element)
    assert reason in info.value.reason


def test_duplicate_object_ids_in_one_file_are_refused() -> None:
    object_text = document(item(0)).split("<Object ", 1)[1].split("</Object>", 1)[0]
    text = document(item(0), extra=f"  <Object {object_text}</Object>\n")
    with pytest.raises(DdfError, match="already defined by <Object> #1") as info:
        parse_ddf(text, source="dup.xml")
    assert info.value.element == "<Object> #2"


DTD_ATTACKS = {
    "doctype": '<!DOCTYPE LWM2M SYSTEM "LWM2M.dtd">',
    "billion laughs": '<!DOCTYPE LWM2M [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;">]>',
    "external entity": '<!DOCTYPE LWM2M [<!ENTITY x SYSTEM "file:///etc/passwd">]>',
    "parameter entity": '<!DOCTYPE LWM2M [<!ENTITY % p SYSTEM "http://example.invalid/">%p;]>',
}


@pytest.mark.parametrize("declaration", DTD_ATTACKS.values(), ids=DTD_ATTACKS.keys())
def test_documents_with_a_doctype_are_refused(tmp_path: Path, declaration: str) -> None:
    text = document(item(0, name="&b;" if "laughs" in declaration else "Thing"))
    text = text.replace("<LWM2M ", f"{declaration}\n<LWM2M ", 1)
    path = write(tmp_path, "dtd.xml", text)
    with pytest.raises(DdfError, match="DOCTYPE") as info:
        load_ddf(path)
    assert_located(info.value, str(path), 2, None)


def test_an_undefined_entity_is_an_xml_error_not_an_expansion() -> None:
    with pytest.raises(DdfError, match="undefined entity"):
        parse_ddf(document(item(0, name="&secret;")), source="ent.xml")


@pytest.mark.parametrize(
    ("text", "kind"),
    [
        ("<DDFList><Item/></DDFList>", NotAnObjectDefinition),
        ('<xs:schema xmlns:xs="http://www.w3.org/2001/XMLSchema"/>', NotAnObjectDefinition),
        ("<html><body/></html>", NotAnObjectDefinition),
        ('<LWM2M><Object ObjectType="CommonResources"><Resources/></Object></LWM2M>', None),
        ("<LWM2M></LWM2M>", DdfError),
        ("", DdfError),
        ("not xml at all", DdfError),
    ],
)
def test_documents_that_are_not_object_definitions(text: str, kind: type[DdfError] | None) -> None:
    expected = kind or NotAnObjectDefinition
    with pytest.raises(DdfError) as info:
        parse_ddf(text, source="x.xml")
    assert type(info.value) is expected
    assert str(info.value).startswith("x.xml")


def test_unreadable_and_oversized_files_are_ddf_errors(tmp_path: Path) -> None:
    with pytest.raises(DdfError, match="cannot read") as info:
        load_ddf(tmp_path / "missing.xml")
    assert info.value.source == str(tmp_path / "missing.xml")
    with pytest.raises(DdfError, match="cannot read"):
        load_ddf(tmp_path)  # a directory
    with pytest.raises(DdfError, match="invalid path"):
        load_ddf("bad\0name.xml")
    big = write(tmp_path, "big.xml", b" " * (MAX_DDF_BYTES + 1))
    with pytest.raises(DdfError, match="larger than"):
        load_ddf(big)


# -- folders and model assembly -------------------------------------------------------------


def test_scanning_a_folder_loads_objects_and_lists_what_it_skipped(tmp_path: Path) -> None:
    write(tmp_path, "b.xml", document(item(0), oid="40011"))
    write(tmp_path, "A.XML", document(item(0), oid="40010"))
    write(tmp_path, "DDF.xml", "<DDFList/>")
    write(tmp_path, "notes.txt", "not xml, not looked at")
    write(tmp_path, "schema.xsd", "<xs:schema xmlns:xs='x'/>")
    (tmp_path / "sub.xml").mkdir()  # a folder named like a file is not read
    scan = scan_directory(tmp_path)
    assert [d.id for d in scan.definitions] == [40010, 40011]
    assert scan.origins[40010] == tmp_path / "A.XML"
    assert scan.skipped == ((tmp_path / "DDF.xml", scan.skipped[0][1]),)
    assert "registry index" in scan.skipped[0][1]
    model = load_directory(tmp_path)
    assert [d.id for d in model] == [40010, 40011]


def test_a_broken_file_in_a_folder_fails_the_whole_load(tmp_path: Path) -> None:
    write(tmp_path, "good.xml", document(item(0), oid="40010"))
    bad = write(tmp_path, "bad.xml", document(item(0, type="?"), oid="40011"))
    with pytest.raises(DdfError) as info:
        scan_directory(tmp_path)
    assert info.value.source == str(bad)


def test_two_files_defining_one_object_conflict(tmp_path: Path) -> None:
    first = write(tmp_path, "a.xml", document(item(0)))
    second = write(tmp_path, "b.xml", document(item(1)))
    with pytest.raises(ModelConflict) as info:
        scan_directory(tmp_path)
    assert str(first) in str(info.value) and str(second) in str(info.value)


def test_a_missing_folder_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(DdfError, match="not a directory"):
        scan_directory(tmp_path / "nope")


def test_load_model_layers_folders_over_builtins(tmp_path: Path) -> None:
    early, late = tmp_path / "early", tmp_path / "late"
    early.mkdir()
    late.mkdir()
    device_v2 = dump_ddf([DEVICE]).replace(b"<ObjectVersion>1.2", b"<ObjectVersion>2.0")
    write(early, "3.xml", device_v2)
    write(early, "40020.xml", document(item(0, "Early"), oid="40020"))
    write(late, "40020.xml", document(item(0, "Late"), oid="40020"))
    loaded = load_model([early, late])
    assert loaded.get(3) is not None and loaded.model.get(3) == loaded.get(3)
    assert loaded.get(3).version == "2.0"  # type: ignore[union-attr]
    assert loaded.get(40020).resources[0].name == "Late"  # type: ignore[union-attr]
    assert [(o.object_id, o.replaced_origin, o.origin) for o in loaded.overrides] == [
        (3, BUILTIN, str(early / "3.xml")),
        (40020, str(early / "40020.xml"), str(late / "40020.xml")),
    ]
    assert loaded.overrides[0].replaced_version == "1.2"
    assert loaded.origins[5] == BUILTIN
    assert load_model().overrides == ()


def test_load_model_refuses_to_replace_fleetloops_own_object(tmp_path: Path) -> None:
    path = write(tmp_path, "cfg.xml", document(item(0), oid=str(FLEET_CONFIG_OBJECT_ID)))
    with pytest.raises(ModelConflict, match="Fleetloop Config") as info:
        load_model([tmp_path])
    assert str(path) in str(info.value)

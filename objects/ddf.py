"""OMA DDF XML: load object definitions from registry files, and write ours out as DDF.

Operators extend fleetloop's schema by dropping DDF files (the XML the OMA registry and most
vendors publish, schemas ``LWM2M.xsd`` / ``LWM2M-v1_1.xsd``) into a folder. Those files come
from many hands, so the loader is lenient where leniency cannot change meaning — surrounding
whitespace, the case of ``Single``/``Multiple``/``Mandatory``/type names, an empty ``<Type>`` on
an executable resource, missing optional elements, a byte-order mark — and strict everywhere
else: anything it cannot read unambiguously raises :class:`DdfError` naming the file, the line
and the element.

Safety: the XML comes from outside, so documents with a DOCTYPE (and therefore any entity
declaration) are refused outright — no entity expansion ("billion laughs"), no external
fetches — and files above :data:`MAX_DDF_BYTES` are not read. Parsing uses the stdlib's expat
driving an ``xml.etree.ElementTree.TreeBuilder``, which lets the loader record the line of every
element for its error messages.
"""

from __future__ import annotations

import os
import re
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from xml.parsers import expat

from lwm2m.model import (
    DataType,
    InvalidNode,
    InvalidValue,
    ObjectDefinition,
    Operations,
    ResourceDefinition,
    StaticModel,
)
from objects.builtin._dsl import urn_for
from objects.errors import DdfError, ModelConflict, NotAnObjectDefinition

MAX_DDF_BYTES = 8 * 1024 * 1024
"""Largest DDF file the loader reads; the biggest registry file is well under 100 KiB."""

DdfSource = str | os.PathLike[str] | bytes | bytearray | memoryview
"""A file path (``str`` or path-like) or the document's bytes."""

_MAX_ID = 65534
_NOT_OBJECT_ROOTS = {
    "ddflist": "a registry index (DDF.xml)",
    "units": "a SenML units list",
    "schema": "an XML schema",
}
_TYPE_ALIASES = {
    "unsignedinteger": DataType.UNSIGNED_INTEGER,
    "uint": DataType.UNSIGNED_INTEGER,
    "objlink": DataType.OBJLNK,
    "corelink": DataType.CORELNK,
}
_VERSION = re.compile(r"(\d{1,3})(?:\.(\d{1,3}))?")
_WS = re.compile(r"\s+")


# -- reading --------------------------------------------------------------------------------


def load_ddf(source: DdfSource, *, name: str | None = None) -> list[ObjectDefinition]:
    """The object definitions in one DDF document, in document order.

    ``source`` is a path (``str`` or path-like) or the document's bytes; ``name`` overrides how
    errors refer to it. Raises :class:`NotAnObjectDefinition` for well-formed XML that defines
    no object (registry index, reusable resources, schema) and :class:`DdfError` for anything
    unreadable or invalid.
    """
    if isinstance(source, bytes | bytearray | memoryview):
        return parse_ddf(bytes(source), source=name or "<bytes>")
    label = name or os.fspath(source)
    return parse_ddf(_read(source, label), source=label)


def parse_ddf(document: bytes | str, *, source: str = "<string>") -> list[ObjectDefinition]:
    """Like :func:`load_ddf` for a document already in memory (bytes or text)."""
    root, lines = _parse_xml(document, source)
    return _Reader(source, lines).document(root)


def _read(path: str | os.PathLike[str], label: str) -> bytes:
    try:
        with open(path, "rb") as handle:
            data = handle.read(MAX_DDF_BYTES + 1)
    except OSError as exc:
        raise DdfError(f"cannot read the file: {exc.strerror or exc}", source=label) from exc
    except ValueError as exc:  # e.g. a NUL character in the path
        raise DdfError(f"invalid path: {exc}", source=label) from exc
    if len(data) > MAX_DDF_BYTES:
        raise DdfError(f"file larger than {MAX_DDF_BYTES} bytes; refusing to parse", source=label)
    return data


def _parse_xml(document: bytes | str, source: str) -> tuple[ET.Element, dict[ET.Element, int]]:
    """Parse with expat into an ElementTree, refusing DTDs, recording each element's line."""
    if len(document) > MAX_DDF_BYTES:
        raise DdfError(f"document larger than {MAX_DDF_BYTES} bytes; refusing", source=source)
    if isinstance(document, str):
        # Text is already decoded: make expat ignore whatever encoding the declaration names.
        parser = expat.ParserCreate(encoding="UTF-8")
        data = document.removeprefix("\ufeff").encode("utf-8", "surrogatepass")
    else:
        parser = expat.ParserCreate()
        data = document
    builder = ET.TreeBuilder()
    lines: dict[ET.Element, int] = {}

    def start(tag: str, attrs: dict[str, str]) -> None:
        lines[builder.start(tag, attrs)] = parser.CurrentLineNumber

    def refuse(*_: object) -> int:
        raise DdfError(
            "DOCTYPE/ENTITY declarations are refused (entities can expand without bound or "
            "fetch external content); DDF files need neither",
            source=source,
            line=parser.CurrentLineNumber,
        )

    parser.StartElementHandler = start
    parser.EndElementHandler = builder.end
    parser.CharacterDataHandler = builder.data
    parser.StartDoctypeDeclHandler = refuse
    parser.EntityDeclHandler = refuse
    parser.UnparsedEntityDeclHandler = refuse
    parser.ExternalEntityRefHandler = refuse
    parser.SetParamEntityParsing(expat.XML_PARAM_ENTITY_PARSING_NEVER)
    parser.buffer_text = True
    try:
        parser.Parse(data, True)
        root = builder.close()
    except expat.ExpatError as exc:
        reason = expat.ErrorString(exc.code) if exc.code is not None else str(exc)
        raise DdfError(f"not well-formed XML: {reason}", source=source, line=exc.lineno) from exc
    except (ValueError, LookupError) as exc:
        if isinstance(exc, DdfError):
            raise
        raise DdfError(f"not readable as XML: {exc}", source=source) from exc
    return root, lines


def _local(tag: str) -> str:
    """Tag name without namespace or prefix, lower-cased (files differ in all three)."""
    return tag.rpartition("}")[2].rpartition(":")[2].lower()


def _clean(text: str | None) -> str:
    return (text or "").strip()


def _one_line(text: str | None) -> str:
    return _WS.sub(" ", text or "").strip()


class _Reader:
    """Turns a parsed tree into definitions; knows the source and lines for error messages."""

    def __init__(self, source: str, lines: Mapping[ET.Element, int]) -> None:
        self.source = source
        self.lines = lines

    def error(self, elem: ET.Element, where: str, reason: str) -> DdfError:
        return DdfError(reason, source=self.source, line=self.lines.get(elem), element=where)

    def document(self, root: ET.Element) -> list[ObjectDefinition]:
        tag = _local(root.tag)
        if tag != "lwm2m":
            what = _NOT_OBJECT_ROOTS.get(tag, "not an LwM2M object definition")
            raise NotAnObjectDefinition(
                f"root element <{root.tag}> is {what}; expected <LWM2M>",
                source=self.source,
                line=self.lines.get(root),
                element=f"<{root.tag}>",
            )
        objects = [child for child in root if _local(child.tag) == "object"]
        common = [o for o in objects if _clean(o.get("ObjectType")).lower() == "commonresources"]
        definitions = [o for o in objects if o not in common]
        if not definitions:
            if common:
                raise NotAnObjectDefinition(
                    "holds reusable resources (ObjectType CommonResources), not objects",
                    source=self.source,
                    line=self.lines.get(common[0]),
                    element="<Object ObjectType='CommonResources'>",
                )
            raise self.error(root, "<LWM2M>", "contains no <Object>")
        result: list[ObjectDefinition] = []
        seen: dict[int, int] = {}
        for index, elem in enumerate(definitions, start=1):
            definition = self.object(elem, index)
            if definition.id in seen:
                raise self.error(
                    elem,
                    f"<Object> #{index}",
                    f"object id {definition.id} already defined by <Object> #{seen[definition.id]}",
                )
            seen[definition.id] = index
            result.append(definition)
        return result

    # -- elements ---------------------------------------------------------------------------

    def child(
        self, parent: ET.Element, where: str, name: str, *, required: bool
    ) -> ET.Element | None:
        found = [c for c in parent if _local(c.tag) == name.lower()]
        if len(found) > 1:
            raise self.error(found[1], f"{where}/<{name}>", f"<{name}> appears more than once")
        if not found:
            if required:
                raise self.error(parent, where, f"missing required element <{name}>")
            return None
        return found[0]

    def text(self, parent: ET.Element, where: str, name: str, *, required: bool) -> str | None:
        elem = self.child(parent, where, name, required=required)
        return None if elem is None else (elem.text or "")

    def object(self, elem: ET.Element, index: int) -> ObjectDefinition:
        where = f"<Object> #{index}"
        name = _one_line(self.text(elem, where, "Name", required=True))
        id_elem = self.child(elem, where, "ObjectID", required=True)
        assert id_elem is not None
        object_id = self.ident(id_elem, f"{where}/<ObjectID>", id_elem.text)
        where = f"<Object> {object_id}"
        if not name:
            raise self.error(elem, f"{where}/<Name>", "object name is empty")
        multiple = self.choice(elem, where, "MultipleInstances", ("single", "multiple"))
        mandatory = self.choice(elem, where, "Mandatory", ("optional", "mandatory"))
        version = self.version(elem, where, "ObjectVersion")
        urn = _clean(self.text(elem, where, "ObjectURN", required=False))
        resources = self.resources(elem, where)
        return ObjectDefinition(
            id=object_id,
            name=name,
            multiple=multiple,
            mandatory=mandatory,
            resources=resources,
            version=version,
            lwm2m_version=self.version(elem, where, "LWM2MVersion"),
            urn=urn or urn_for(object_id, version),
            description=_clean(self.text(elem, where, "Description1", required=False)),
        )

    def resources(self, obj: ET.Element, where: str) -> dict[int, ResourceDefinition]:
        container = self.child(obj, where, "Resources", required=False)
        result: dict[int, ResourceDefinition] = {}
        if container is None:
            return result
        for item in container:
            if _local(item.tag) != "item":
                continue
            res = self.resource(item, where)
            if res.id in result:
                raise self.error(item, f'{where}/<Item ID="{res.id}">', "duplicate resource id")
            result[res.id] = res
        return result

    def resource(self, item: ET.Element, object_where: str) -> ResourceDefinition:
        raw_id = next((v for k, v in item.attrib.items() if k.lower() == "id"), None)
        if raw_id is None:
            raise self.error(item, f"{object_where}/<Item>", "missing the ID attribute")
        resource_id = self.ident(item, f"{object_where}/<Item ID={raw_id!r}>", raw_id)
        where = f'{object_where}/<Item ID="{resource_id}">'
        name = _one_line(self.text(item, where, "Name", required=True))
        if not name:
            raise self.error(item, f"{where}/<Name>", "resource name is empty")
        ops_text = self.text(item, where, "Operations", required=True) or ""
        try:
            operations = Operations.from_ddf(ops_text)
        except InvalidNode as exc:
            elem = self.child(item, where, "Operations", required=True)
            assert elem is not None
            raise self.error(elem, f"{where}/<Operations>", str(exc)) from None
        return ResourceDefinition(
            id=resource_id,
            name=name,
            operations=operations,
            multiple=self.choice(item, where, "MultipleInstances", ("single", "multiple")),
            mandatory=self.choice(item, where, "Mandatory", ("optional", "mandatory")),
            type=self.data_type(item, where, operations),
            range_enumeration=_clean(self.text(item, where, "RangeEnumeration", required=False)),
            units=_clean(self.text(item, where, "Units", required=False)),
            description=_clean(self.text(item, where, "Description", required=False)),
        )

    # -- values -----------------------------------------------------------------------------

    def ident(self, elem: ET.Element, where: str, raw: str | None) -> int:
        text = _clean(raw)
        if not (text.isascii() and text.isdigit()):
            raise self.error(elem, where, f"id {text!r} is not a decimal integer")
        value = int(text)
        if value > _MAX_ID:
            raise self.error(elem, where, f"id {value} out of range 0..{_MAX_ID}")
        return value

    def choice(self, parent: ET.Element, where: str, name: str, options: tuple[str, str]) -> bool:
        """A two-valued element; True for the second option. Case and whitespace are free."""
        elem = self.child(parent, where, name, required=True)
        assert elem is not None
        value = _clean(elem.text).lower()
        if value not in options:
            spelled = " or ".join(o.capitalize() for o in options)
            raise self.error(elem, f"{where}/<{name}>", f"{elem.text!r} is not {spelled}")
        return value == options[1]

    def version(self, parent: ET.Element, where: str, name: str) -> str:
        elem = self.child(parent, where, name, required=False)
        text = _clean(elem.text if elem is not None else None)
        if not text:
            return "1.0"
        match = _VERSION.fullmatch(text)
        if match is None:
            assert elem is not None
            raise self.error(elem, f"{where}/<{name}>", f"version {text!r} is not 'major.minor'")
        return f"{int(match[1])}.{int(match[2] or 0)}"

    def data_type(self, item: ET.Element, where: str, operations: Operations) -> DataType:
        """The resource type; executables have none whatever the file says.

        An empty type on a non-executable resource (it happens in the registry) is read as
        Opaque: bytes are the one type that can carry any value the device sends unchanged.
        """
        elem = self.child(item, where, "Type", required=False)
        text = _one_line(elem.text if elem is not None else None)
        if operations.executable:
            return DataType.NONE
        if not text:
            return DataType.OPAQUE
        alias = _TYPE_ALIASES.get(text.lower().replace(" ", ""))
        if alias is not None:
            return alias
        try:
            data_type = DataType.from_ddf(text)
        except InvalidValue:
            data_type = DataType.NONE
        if data_type is DataType.NONE:
            assert elem is not None
            raise self.error(elem, f"{where}/<Type>", f"unknown data type {text!r}")
        return data_type


# -- directories ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DirectoryScan:
    """What :func:`scan_directory` found: definitions, where each came from, what it skipped."""

    directory: Path
    definitions: tuple[ObjectDefinition, ...]
    origins: Mapping[int, Path]
    skipped: tuple[tuple[Path, str], ...]

    def model(self) -> StaticModel:
        return StaticModel(self.definitions)


def scan_directory(directory: str | os.PathLike[str]) -> DirectoryScan:
    """Load every ``*.xml`` file directly in ``directory`` (sorted by name, not recursive).

    Files that are well-formed but define no object (a registry checkout's ``DDF.xml``,
    ``Common.xml``, ``LWM2M_senml_units.xml``) are skipped and listed; any other broken file
    raises :class:`DdfError`, because silently ignoring an object the operator meant to add
    would surface much later as undecodable payloads. Two files defining the same object id
    raise :class:`ModelConflict` naming both.
    """
    folder = Path(directory)
    if not folder.is_dir():
        raise DdfError("not a directory", source=str(folder))
    definitions: list[ObjectDefinition] = []
    origins: dict[int, Path] = {}
    skipped: list[tuple[Path, str]] = []
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() == ".xml" and p.is_file())
    for path in files:
        try:
            loaded = load_ddf(path)
        except NotAnObjectDefinition as exc:
            skipped.append((path, exc.reason))
            continue
        for definition in loaded:
            if definition.id in origins:
                raise ModelConflict(
                    f"object {definition.id} is defined by both {origins[definition.id]} and "
                    f"{path}; keep one file per object in {folder}"
                )
            origins[definition.id] = path
            definitions.append(definition)
    definitions.sort(key=lambda d: d.id)
    return DirectoryScan(folder, tuple(definitions), MappingProxyType(origins), tuple(skipped))


def load_directory(directory: str | os.PathLike[str]) -> StaticModel:
    """A model of the objects defined in ``directory``; see :func:`scan_directory`."""
    return scan_directory(directory).model()


# -- writing --------------------------------------------------------------------------------


def dump_ddf(definitions: Iterable[ObjectDefinition]) -> bytes:
    """DDF XML (LWM2M-v1_1.xsd element order) for ``definitions``.

    This is how fleetloop's own object reaches device teams and other LwM2M servers, and it
    lets the tests check that loading what we write gives back the same definitions. Text XML
    cannot carry (control characters, lone surrogates) raises :class:`DdfError` rather than
    producing a file no parser would read.
    """
    root = ET.Element("LWM2M")
    for definition in definitions:
        obj = ET.SubElement(root, "Object", ObjectType="MODefinition")
        _sub(obj, "Name", definition.name)
        _sub(obj, "Description1", definition.description)
        _sub(obj, "ObjectID", str(definition.id))
        _sub(obj, "ObjectURN", definition.urn or urn_for(definition.id, definition.version))
        _sub(obj, "LWM2MVersion", definition.lwm2m_version)
        _sub(obj, "ObjectVersion", definition.version)
        _sub(obj, "MultipleInstances", "Multiple" if definition.multiple else "Single")
        _sub(obj, "Mandatory", "Mandatory" if definition.mandatory else "Optional")
        resources = ET.SubElement(obj, "Resources")
        for res in definition.resources.values():
            item = ET.SubElement(resources, "Item", ID=str(res.id))
            _sub(item, "Name", res.name)
            _sub(item, "Operations", res.operations.to_ddf())
            _sub(item, "MultipleInstances", "Multiple" if res.multiple else "Single")
            _sub(item, "Mandatory", "Mandatory" if res.mandatory else "Optional")
            _sub(item, "Type", "" if res.type is DataType.NONE else res.type.value)
            _sub(item, "RangeEnumeration", res.range_enumeration)
            _sub(item, "Units", res.units)
            _sub(item, "Description", res.description)
        _sub(obj, "Description2", "")
    ET.indent(root)
    data: bytes = ET.tostring(root, encoding="utf-8", xml_declaration=True)
    return data + b"\n"


_NOT_XML_CHAR = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def _sub(parent: ET.Element, tag: str, text: str) -> None:
    bad = _NOT_XML_CHAR.search(text)
    if bad is not None:
        raise DdfError(
            f"character {bad[0]!r} cannot be written in XML ({text!r})",
            source="<dump_ddf>",
            element=f"<{tag}>",
        )
    ET.SubElement(parent, tag).text = text


__all__ = [
    "MAX_DDF_BYTES",
    "DdfError",
    "DdfSource",
    "DirectoryScan",
    "NotAnObjectDefinition",
    "dump_ddf",
    "load_ddf",
    "load_directory",
    "parse_ddf",
    "scan_directory",
]

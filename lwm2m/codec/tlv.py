"""OMA TLV (content format 11542; wakaama still answers with the legacy number 1542).

TLV is LwM2M 1.0's binary format and the one every client speaks: wakaama answers TLV even for
a single resource, Anjay 1.0 for everything. Each entry is a type byte (what the entry is: object
instance, resource instance, multiple resource or resource with value; 8- or 16-bit id; how the
length is given), the id, a 0-3 byte length and the value. The value bytes carry no data type,
so the object model types them; a resource the model does not know decodes as Opaque.

The parser reads headers into :class:`_Entry` records first and builds nodes second, so every
fault (truncated header, length beyond its enclosing entry, an entry of the wrong kind for its
place, a duplicate id, a bad integer width, invalid UTF-8) is a :class:`DecodeError` naming the
byte offset of the entry at fault. Work is linear in the payload and nesting is at most three
deep, so hostile input cannot hang the decoder.

Create requests are the one place the node vocabulary does not fit: a Create without an
instance id carries bare resources whose instance the client picks. :meth:`TlvCodec.decode_create`
and :meth:`TlvCodec.encode_create` handle that with :class:`NewInstance`.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Sequence
from dataclasses import dataclass

from lwm2m.codec.errors import DecodeError, EncodeError, UnsupportedContentFormat
from lwm2m.codec.scalar import check_type, types_compatible
from lwm2m.model import (
    DataType,
    LwM2MObject,
    ModelError,
    MultipleResource,
    Node,
    ObjectInstance,
    ObjectModel,
    ObjLink,
    Path,
    Resource,
    ResourceDefinition,
    ResourceInstance,
    SingleResource,
    Value,
    node_level,
    resource_definition,
)
from lwm2m.model.path import MAX_ID

CONTENT_FORMAT = 11542

INSTANCE, RESOURCE_INSTANCE, MULTIPLE_RESOURCE, RESOURCE = 0, 1, 2, 3
_KIND_NAMES = ("object instance", "resource instance", "multiple resource", "resource")
_RESOURCE_KINDS = (RESOURCE, MULTIPLE_RESOURCE)
_MAX_LENGTH = (1 << 24) - 1
_INT_WIDTHS = (1, 2, 4, 8)


@dataclass(frozen=True, slots=True)
class NewInstance:
    """One object instance of a Create request; ``id`` None lets the client choose it."""

    id: int | None
    resources: tuple[Resource, ...]


@dataclass(frozen=True, slots=True)
class _Entry:
    kind: int
    id: int
    offset: int  # of the type byte
    start: int  # of the value
    end: int

    @property
    def name(self) -> str:
        return f"{_KIND_NAMES[self.kind]} TLV {self.id}"


def _fail(message: str, offset: int) -> DecodeError:
    return DecodeError(message, content_format=CONTENT_FORMAT, offset=offset)


# -- parsing ------------------------------------------------------------------------------------
def _entries(data: bytes, start: int, end: int) -> list[_Entry]:
    """The TLV entries between ``start`` and ``end``, with ids unique and in range."""
    entries: list[_Entry] = []
    seen: set[int] = set()
    pos = start
    while pos < end:
        type_byte = data[pos]
        id_size = 2 if type_byte & 0x20 else 1
        length_size = (type_byte >> 3) & 0x03
        value_start = pos + 1 + id_size + length_size
        if value_start > end:
            raise _fail("truncated TLV header", pos)
        ident = int.from_bytes(data[pos + 1 : pos + 1 + id_size], "big")
        if length_size:
            length = int.from_bytes(data[pos + 1 + id_size : value_start], "big")
        else:
            length = type_byte & 0x07
        if length > end - value_start:
            raise _fail(f"TLV length {length} runs past the enclosing data", pos)
        entry = _Entry(type_byte >> 6, ident, pos, value_start, value_start + length)
        if ident > MAX_ID:
            raise _fail(f"{entry.name}: id {ident} is reserved", pos)
        if ident in seen:
            raise _fail(f"duplicate {entry.name}", pos)
        seen.add(ident)
        entries.append(entry)
        pos = entry.end
    return entries


def _value(data: bytes, entry: _Entry, data_type: DataType) -> Value:
    raw = data[entry.start : entry.end]
    size = len(raw)
    if data_type in (DataType.STRING, DataType.CORELNK):
        try:
            return Value(data_type, raw.decode("utf-8"))
        except UnicodeDecodeError as exc:
            raise _fail(f"{entry.name}: invalid UTF-8", entry.start + exc.start) from None
        except ModelError as exc:  # NUL (U+0000): refused for every store alike
            raise _fail(f"{entry.name}: {exc}", entry.start + raw.find(b"\x00")) from None
    if data_type is DataType.OPAQUE:
        return Value.opaque(raw)
    if data_type in (DataType.INTEGER, DataType.TIME, DataType.UNSIGNED_INTEGER):
        if size not in _INT_WIDTHS:
            raise _fail(f"{entry.name}: an integer is 1, 2, 4 or 8 bytes, got {size}", entry.start)
        signed = data_type is not DataType.UNSIGNED_INTEGER
        return Value(data_type, int.from_bytes(raw, "big", signed=signed))
    if data_type is DataType.FLOAT:
        if size not in (4, 8):
            raise _fail(f"{entry.name}: a Float is 4 or 8 bytes, got {size}", entry.start)
        return Value.float_(struct.unpack(">f" if size == 4 else ">d", raw)[0])
    if data_type is DataType.BOOLEAN:
        if raw not in (b"\x00", b"\x01"):
            raise _fail(f"{entry.name}: a Boolean is one byte 0 or 1", entry.start)
        return Value.boolean(raw == b"\x01")
    if data_type is DataType.OBJLNK:
        if size != 4:
            raise _fail(f"{entry.name}: an Objlnk is 4 bytes, got {size}", entry.start)
        return Value(DataType.OBJLNK, ObjLink(*struct.unpack(">HH", raw)))
    if size:
        raise _fail(f"{entry.name}: an executable resource carries no value", entry.start)
    return Value.none()


def _expect(entry: _Entry, kinds: Sequence[int], where: str) -> None:
    if entry.kind not in kinds:
        raise _fail(f"unexpected {entry.name} {where}", entry.offset)


def _resource(data: bytes, entry: _Entry, object_id: int, model: ObjectModel) -> Resource:
    definition = resource_definition(model, object_id, entry.id)
    data_type = definition.type if definition is not None else DataType.OPAQUE
    if entry.kind == RESOURCE:
        if definition is not None and definition.multiple:
            raise _fail(f"{entry.name}: /{object_id}/*/{entry.id} is multiple", entry.offset)
        return SingleResource(entry.id, _value(data, entry, data_type))
    if definition is not None and not definition.multiple:
        raise _fail(f"{entry.name}: /{object_id}/*/{entry.id} is single", entry.offset)
    values: dict[int, Value] = {}
    for child in _entries(data, entry.start, entry.end):
        _expect(child, (RESOURCE_INSTANCE,), f"inside {entry.name}")
        values[child.id] = _value(data, child, data_type)
    return MultipleResource(entry.id, data_type, values)


def _resources(
    data: bytes, entries: list[_Entry], object_id: int, model: ObjectModel, where: str
) -> list[Resource]:
    for entry in entries:
        _expect(entry, _RESOURCE_KINDS, where)
    return [_resource(data, entry, object_id, model) for entry in entries]


def _instance(data: bytes, entry: _Entry, object_id: int, model: ObjectModel) -> ObjectInstance:
    children = _entries(data, entry.start, entry.end)
    resources = _resources(data, children, object_id, model, f"inside {entry.name}")
    return ObjectInstance.of(entry.id, resources)


# -- encoding -----------------------------------------------------------------------------------
def _header(kind: int, ident: int, length: int) -> bytes:
    if length > _MAX_LENGTH:
        raise EncodeError(
            f"TLV value of {length} bytes exceeds 16 MiB", content_format=CONTENT_FORMAT
        )
    type_byte = kind << 6 | (0x20 if ident > 0xFF else 0)
    id_bytes = ident.to_bytes(2 if ident > 0xFF else 1, "big")
    if length < 8:
        return bytes([type_byte | length]) + id_bytes
    length_size = 1 if length <= 0xFF else 2 if length <= 0xFFFF else 3
    return bytes([type_byte | length_size << 3]) + id_bytes + length.to_bytes(length_size, "big")


def _tlv(kind: int, ident: int, value: bytes) -> bytes:
    return _header(kind, ident, len(value)) + value


def _shortest_int(number: int, signed: bool) -> bytes:
    for width in _INT_WIDTHS:
        try:
            return number.to_bytes(width, "big", signed=signed)
        except OverflowError:
            continue
    raise EncodeError(f"integer {number} does not fit in 8 bytes", content_format=CONTENT_FORMAT)


def encode_tlv_value(value: Value) -> bytes:
    """The value bytes of one TLV entry: shortest integers, binary32 floats when lossless."""
    raw = value.value
    if isinstance(raw, str):
        try:
            return raw.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise EncodeError(
                f"string holds an unencodable code point at index {exc.start}",
                content_format=CONTENT_FORMAT,
            ) from None
    if isinstance(raw, bool):
        return b"\x01" if raw else b"\x00"
    if isinstance(raw, int):
        return _shortest_int(raw, value.type is not DataType.UNSIGNED_INTEGER)
    if isinstance(raw, float):
        try:
            single = struct.pack(">f", raw)
        except OverflowError:
            return struct.pack(">d", raw)
        back: float = struct.unpack(">f", single)[0]
        lossless = back == raw or (math.isnan(back) and math.isnan(raw))
        return single if lossless else struct.pack(">d", raw)
    if isinstance(raw, ObjLink):
        return struct.pack(">HH", raw.object_id, raw.instance_id)
    if isinstance(raw, bytes):
        return raw
    return b""


class _Encoder:
    """Encodes one node tree, checking each value against the model as it goes."""

    def __init__(self, object_id: int, model: ObjectModel) -> None:
        self.object_id = object_id
        self.model = model

    def _definition(
        self, resource_id: int, multiple: bool, path: Path
    ) -> ResourceDefinition | None:
        definition = resource_definition(self.model, self.object_id, resource_id)
        if definition is not None and definition.multiple != multiple:
            shape = "multiple" if definition.multiple else "single"
            raise EncodeError(
                f"{path} ({definition.name}) is a {shape} resource in the model",
                content_format=CONTENT_FORMAT,
            )
        return definition

    def resource(self, resource: Resource, path: Path) -> bytes:
        multiple = isinstance(resource, MultipleResource)
        definition = self._definition(resource.id, multiple, path)
        if isinstance(resource, SingleResource):
            if definition is not None:
                check_type(CONTENT_FORMAT, definition, resource.value, path)
            return _tlv(RESOURCE, resource.id, encode_tlv_value(resource.value))
        if definition is not None and not types_compatible(definition.type, resource.type):
            raise EncodeError(
                f"{path} ({definition.name}) is {definition.type.value}, "
                f"got {resource.type.value} instances",
                content_format=CONTENT_FORMAT,
            )
        children = b"".join(
            _tlv(RESOURCE_INSTANCE, riid, encode_tlv_value(val))
            for riid, val in resource.instances.items()
        )
        return _tlv(MULTIPLE_RESOURCE, resource.id, children)

    def resource_instance(self, instance: ResourceInstance, path: Path) -> bytes:
        definition = self._definition(path.ids[2], True, path)
        if definition is not None:
            check_type(CONTENT_FORMAT, definition, instance.value, path)
        return _tlv(RESOURCE_INSTANCE, instance.id, encode_tlv_value(instance.value))

    def resources(self, resources: Sequence[Resource], path: Path) -> bytes:
        return b"".join(self.resource(r, path.child(r.id)) for r in resources)

    def instance(self, instance: ObjectInstance, path: Path) -> bytes:
        return self.resources(list(instance.resources.values()), path)


# -- codec --------------------------------------------------------------------------------------
class TlvCodec:
    """Content format 11542 (and 1542): any node at any object, instance or resource path."""

    content_format = CONTENT_FORMAT

    def decode(self, payload: bytes, path: Path, model: ObjectModel) -> Node:
        data = bytes(payload)
        if path.is_root:
            raise UnsupportedContentFormat(CONTENT_FORMAT, "TLV needs an object or deeper path")
        entries = _entries(data, 0, len(data))
        object_id = path.ids[0]
        if path.is_object:
            return self._decode_object(data, entries, object_id, model)
        if path.is_object_instance:
            return self._decode_instance(data, entries, path, model)
        if path.is_resource:
            return self._decode_resource(data, entries, path, model)
        return self._decode_resource_instance(data, entries, path, model)

    def _decode_object(
        self, data: bytes, entries: list[_Entry], object_id: int, model: ObjectModel
    ) -> LwM2MObject:
        if entries and entries[0].kind != INSTANCE:
            # LwM2M 1.0 lets a single-instance object's Read omit the instance TLV.
            definition = model.get(object_id)
            if definition is None or definition.multiple:
                raise _fail(
                    f"resources without an object instance TLV at /{object_id} "
                    "(a Create payload? see decode_create)",
                    entries[0].offset,
                )
            resources = _resources(data, entries, object_id, model, f"at /{object_id}")
            return LwM2MObject.of(object_id, [ObjectInstance.of(0, resources)])
        instances = []
        for entry in entries:
            _expect(entry, (INSTANCE,), f"at /{object_id}")
            instances.append(_instance(data, entry, object_id, model))
        return LwM2MObject.of(object_id, instances)

    def _decode_instance(
        self, data: bytes, entries: list[_Entry], path: Path, model: ObjectModel
    ) -> ObjectInstance:
        object_id, instance_id = path.ids[0], path.ids[1]
        if len(entries) == 1 and entries[0].kind == INSTANCE:
            # Some clients wrap an instance's resources in its instance TLV.
            if entries[0].id != instance_id:
                raise _fail(f"{entries[0].name} at {path}", entries[0].offset)
            return _instance(data, entries[0], object_id, model)
        resources = _resources(data, entries, object_id, model, f"at {path}")
        return ObjectInstance.of(instance_id, resources)

    def _decode_resource(
        self, data: bytes, entries: list[_Entry], path: Path, model: ObjectModel
    ) -> Resource:
        object_id, resource_id = path.ids[0], path.ids[2]
        definition = resource_definition(model, object_id, resource_id)
        if not entries:
            if definition is not None and definition.multiple:
                return MultipleResource(resource_id, definition.type, {})
            raise _fail(f"empty payload for {path}", 0)
        if all(e.kind == RESOURCE_INSTANCE for e in entries):
            # Instances without their multiple-resource TLV: accept, the path says which.
            data_type = definition.type if definition is not None else DataType.OPAQUE
            if definition is not None and not definition.multiple:
                raise _fail(f"resource instance TLVs for single resource {path}", 0)
            values = {e.id: _value(data, e, data_type) for e in entries}
            return MultipleResource(resource_id, data_type, values)
        if len(entries) != 1:
            raise _fail(f"{len(entries)} TLVs for the one resource {path}", entries[1].offset)
        entry = entries[0]
        _expect(entry, _RESOURCE_KINDS, f"at {path}")
        if entry.id != resource_id:
            raise _fail(f"{entry.name} at {path}", entry.offset)
        return _resource(data, entry, object_id, model)

    def _decode_resource_instance(
        self, data: bytes, entries: list[_Entry], path: Path, model: ObjectModel
    ) -> ResourceInstance:
        if len(entries) == 1 and entries[0].kind == MULTIPLE_RESOURCE:
            if entries[0].id != path.ids[2]:
                raise _fail(f"{entries[0].name} at {path}", entries[0].offset)
            entries = _entries(data, entries[0].start, entries[0].end)
        if len(entries) != 1:
            where = entries[1].offset if entries else 0
            raise _fail(f"expected one resource instance TLV at {path}", where)
        entry = entries[0]
        _expect(entry, (RESOURCE_INSTANCE,), f"at {path}")
        if entry.id != path.ids[3]:
            raise _fail(f"{entry.name} at {path}", entry.offset)
        definition = resource_definition(model, path.ids[0], path.ids[2])
        if definition is not None and not definition.multiple:
            raise _fail(f"{path.parent} is a single resource", entry.offset)
        data_type = definition.type if definition is not None else DataType.OPAQUE
        return ResourceInstance(entry.id, _value(data, entry, data_type))

    def encode(self, node: Node, path: Path, model: ObjectModel) -> bytes:
        if path.is_root or node_level(node) != path.level or node.id != path.ids[-1]:
            raise EncodeError(
                f"a {type(node).__name__} with id {node.id} cannot live at {path}",
                content_format=CONTENT_FORMAT,
            )
        encoder = _Encoder(path.ids[0], model)
        if isinstance(node, LwM2MObject):
            return b"".join(
                _tlv(INSTANCE, inst.id, encoder.instance(inst, path.child(inst.id)))
                for inst in node.instances.values()
            )
        if isinstance(node, ObjectInstance):
            return encoder.instance(node, path)
        if isinstance(node, ResourceInstance):
            return encoder.resource_instance(node, path)
        return encoder.resource(node, path)

    # -- Create -----------------------------------------------------------------------------
    def decode_create(self, payload: bytes, path: Path, model: ObjectModel) -> list[NewInstance]:
        """The instances a Create on object ``path`` asks for: instance TLVs, or bare resources
        (one instance whose id the client picks)."""
        if not path.is_object:
            raise _fail(f"a Create targets an object path, not {path}", 0)
        data = bytes(payload)
        entries = _entries(data, 0, len(data))
        object_id = path.ids[0]
        if entries and entries[0].kind != INSTANCE:
            resources = _resources(data, entries, object_id, model, f"in a Create on {path}")
            return [NewInstance(None, tuple(ObjectInstance.of(0, resources).resources.values()))]
        created = []
        for entry in entries:
            _expect(entry, (INSTANCE,), f"in a Create on {path}")
            instance = _instance(data, entry, object_id, model)
            created.append(NewInstance(instance.id, tuple(instance.resources.values())))
        return created

    def encode_create(
        self, instances: Sequence[NewInstance], path: Path, model: ObjectModel
    ) -> bytes:
        """A Create payload; an instance with ``id`` None is sent as bare resources."""
        if not path.is_object:
            raise EncodeError(f"a Create targets an object path, not {path}")
        if any(i.id is None for i in instances) and len(instances) != 1:
            raise EncodeError("an instance without id must be the only one in a Create")
        encoder = _Encoder(path.ids[0], model)
        parts = []
        for new in instances:
            instance = ObjectInstance.of(new.id or 0, new.resources)
            body = encoder.instance(instance, path.child(instance.id))
            parts.append(body if new.id is None else _tlv(INSTANCE, new.id, body))
        return b"".join(parts)


__all__ = ["CONTENT_FORMAT", "NewInstance", "TlvCodec", "encode_tlv_value"]

"""Which content format the server asks for (Accept) or sends (Content-Format).

One function, :func:`choose_format`, decides for every operation from three facts: the
client's LwM2M version, the formats it announced (``ct=`` on the root link of its Register
payload), and what the target path holds according to the object model. The rules, and why:

* **Single values** (a single resource, a resource instance): text, or octet-stream for an
  Opaque resource. Every client of every version reads and writes these (both wakaama and
  Anjay answer ``Accept: 0`` on a single resource), and they are the cheapest on the wire.
* **Several values** (object, instance, multiple resource) and Create:

  - LwM2M 1.0: TLV, the only multi-value format 1.0 makes mandatory.
  - 1.1 / 1.2 with ``ct=``: the first of our preference that the client announced --
    1.2: LwM2M CBOR, SenML CBOR, SenML JSON, TLV, LwM2M JSON; 1.1: SenML CBOR, SenML JSON,
    TLV, LwM2M JSON. CBOR first because it is smaller over NB-IoT.
  - 1.1 / 1.2 without ``ct=`` (Anjay announces nothing): SenML CBOR for 1.2 (what Anjay
    answers by default), TLV for 1.1 (every 1.1 client we know still speaks it; wakaama
    builds without SenML CBOR answer 4.06 to it).
* **Composite** operations (Read-, Write-, Observe-Composite) need a format that carries
  several paths: SenML CBOR or JSON (as announced; SenML CBOR when nothing is announced), or
  LwM2M CBOR for a 1.2 client that announced it. LwM2M 1.0 has no composite operations.
* A resource the object model does not know is read **without** Accept: the client picks, and
  the response's Content-Format says what it picked.

The caller can always override with ``format=``; :func:`format_problem` checks the override
can carry the content before anything is sent.
"""

from __future__ import annotations

from enum import Enum
from typing import Protocol

from lwm2m.codec.formats import ContentFormat, canonical
from lwm2m.codec.registry import MULTI_NODE_FORMATS, NODE_FORMATS
from lwm2m.model import DataType, ObjectModel, Path, resource_definition

CF = ContentFormat

CLIENT_CHOICE = -1
"""``format=CLIENT_CHOICE`` on a Read or Observe sends no Accept option: the client answers
in its own default (ETS int-237) and the result says which format that was."""


class FormatOperation(Enum):
    """What the format is for."""

    READ = "read"
    OBSERVE = "observe"
    WRITE = "write"
    CREATE = "create"
    READ_COMPOSITE = "read-composite"
    WRITE_COMPOSITE = "write-composite"
    OBSERVE_COMPOSITE = "observe-composite"

    @property
    def composite(self) -> bool:
        return self in _COMPOSITE


_COMPOSITE = frozenset(
    {
        FormatOperation.READ_COMPOSITE,
        FormatOperation.WRITE_COMPOSITE,
        FormatOperation.OBSERVE_COMPOSITE,
    }
)


class ClientFormats(Protocol):
    """What the choice needs from a registration (``lwm2m.store.Registration`` has both)."""

    @property
    def lwm2m_version(self) -> str: ...

    @property
    def supported_formats(self) -> tuple[int, ...]: ...


_MULTI_PREFERENCE = {
    "1.1": (CF.SENML_CBOR, CF.SENML_JSON, CF.TLV, CF.LWM2M_JSON),
    "1.2": (CF.LWM2M_CBOR, CF.SENML_CBOR, CF.SENML_JSON, CF.TLV, CF.LWM2M_JSON),
}
_MULTI_DEFAULT = {"1.1": CF.TLV, "1.2": CF.SENML_CBOR}
_COMPOSITE_PREFERENCE = {
    "1.1": (CF.SENML_CBOR, CF.SENML_JSON),
    "1.2": (CF.LWM2M_CBOR, CF.SENML_CBOR, CF.SENML_JSON),
}
SINGLE_VALUE_FORMATS = frozenset({int(CF.TEXT), int(CF.OPAQUE), int(CF.CBOR)})


def _announced(client: ClientFormats) -> frozenset[int]:
    return frozenset(canonical(f) for f in client.supported_formats)


def _version(client: ClientFormats) -> str:
    """1.0, 1.1, or 1.2 for anything newer (the server accepts no newer version anyway)."""
    version = client.lwm2m_version
    return version if version in ("1.0", "1.1") else "1.2"


def is_single_value(path: Path, model: ObjectModel) -> bool | None:
    """True for a single resource or a resource instance, False for anything holding several
    values, None for a resource the model does not know."""
    if path.is_resource_instance:
        return True
    if not path.is_resource:
        return False
    definition = resource_definition(model, path.object_id, path.resource_id)
    if definition is None:
        return None
    return not definition.multiple


def _single_format(path: Path, model: ObjectModel, value_type: DataType | None) -> int:
    definition = resource_definition(model, path.object_id, path.resource_id)
    data_type = definition.type if definition is not None else value_type
    return int(CF.OPAQUE) if data_type is DataType.OPAQUE else int(CF.TEXT)


def multi_format(client: ClientFormats) -> int:
    """The format for a node holding several values (see the module docstring)."""
    version = _version(client)
    if version == "1.0":
        return int(CF.TLV)
    announced = _announced(client)
    for candidate in _MULTI_PREFERENCE[version]:
        if candidate in announced:
            return int(candidate)
    return int(_MULTI_DEFAULT[version])


def composite_format(client: ClientFormats) -> int:
    """The format for composite requests and responses."""
    announced = _announced(client)
    for candidate in _COMPOSITE_PREFERENCE[_version(client)]:
        if candidate in announced:
            return int(candidate)
    return int(CF.SENML_CBOR)


def choose_format(
    client: ClientFormats,
    operation: FormatOperation,
    path: Path,
    model: ObjectModel,
    value_type: DataType | None = None,
) -> int | None:
    """The Accept (reads, observes) or Content-Format (writes, creates) for ``operation`` at
    ``path``; None means "send no Accept, let the client choose". ``value_type`` is the type
    of the value being written when the model does not know the resource."""
    if operation.composite:
        return composite_format(client)
    if operation is FormatOperation.CREATE:
        return multi_format(client)
    single = is_single_value(path, model)
    if single is None:
        if operation in (FormatOperation.READ, FormatOperation.OBSERVE):
            return None
        single = True  # writing a value to an unknown resource: its type decides
    if single:
        return _single_format(path, model, value_type)
    return multi_format(client)


def format_problem(content_format: int, operation: FormatOperation, path: Path) -> str | None:
    """Why ``content_format`` cannot serve ``operation`` at ``path``, or None when it can."""
    if content_format == CLIENT_CHOICE:
        if operation in (FormatOperation.READ, FormatOperation.OBSERVE):
            return None
        return "only Read and Observe can leave the content format to the client"
    fmt = canonical(content_format)
    if fmt not in NODE_FORMATS:
        return f"content format {content_format} is not an LwM2M data format"
    if operation.composite:
        if fmt not in MULTI_NODE_FORMATS:
            return f"content format {content_format} cannot carry several paths (use SenML)"
        return None
    if path.is_root:
        return "this operation needs an object, instance or resource path, not /"
    if fmt in SINGLE_VALUE_FORMATS and not (path.is_resource or path.is_resource_instance):
        return f"content format {content_format} carries one value, but {path} holds several"
    return None


__all__ = [
    "CLIENT_CHOICE",
    "SINGLE_VALUE_FORMATS",
    "ClientFormats",
    "FormatOperation",
    "choose_format",
    "composite_format",
    "format_problem",
    "is_single_value",
    "multi_format",
]

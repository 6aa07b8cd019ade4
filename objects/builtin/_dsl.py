"""A compact notation for writing object definitions by hand.

The built-in objects are transcribed from the resource tables of the LwM2M specifications, so
the notation mirrors those tables column by column: id, name, operations, instances, presence,
type, then range and units. Instances and presence are two distinct enums (not two booleans) so
that swapping the two columns is a type error rather than a silently wrong schema.
"""

from __future__ import annotations

from enum import Enum

from lwm2m.model import DataType, ObjectDefinition, Operations, ResourceDefinition


class Instances(Enum):
    """The "Instances" column: can the resource (or object) hold several instances?"""

    SINGLE = "Single"
    MULTIPLE = "Multiple"


class Presence(Enum):
    """The "Mandatory" column: must every client implement the resource (or object)?"""

    MANDATORY = "Mandatory"
    OPTIONAL = "Optional"


SINGLE = Instances.SINGLE
MULTIPLE = Instances.MULTIPLE
MANDATORY = Presence.MANDATORY
OPTIONAL = Presence.OPTIONAL

STRING = DataType.STRING
INTEGER = DataType.INTEGER
UNSIGNED = DataType.UNSIGNED_INTEGER
FLOAT = DataType.FLOAT
BOOLEAN = DataType.BOOLEAN
OPAQUE = DataType.OPAQUE
TIME = DataType.TIME
OBJLNK = DataType.OBJLNK
CORELNK = DataType.CORELNK
NONE = DataType.NONE


def res(
    resource_id: int,
    name: str,
    operations: str,
    instances: Instances,
    presence: Presence,
    data_type: DataType,
    desc: str,
    *,
    range: str = "",
    units: str = "",
) -> ResourceDefinition:
    """One row of a resource table.

    ``operations`` is spelled as in the tables ("R", "RW", "E"; "" for the Security and OSCORE
    resources, which only a Bootstrap-Server may touch).
    """
    ops = Operations.from_ddf(operations)
    if ops.executable != (data_type is NONE):
        raise ValueError(f"resource {resource_id} {name!r}: executable iff type is none")
    return ResourceDefinition(
        id=resource_id,
        name=name,
        operations=ops,
        multiple=instances is MULTIPLE,
        mandatory=presence is MANDATORY,
        type=data_type,
        range_enumeration=range,
        units=units,
        description=desc,
    )


def urn_for(object_id: int, version: str) -> str:
    """The object URN the registry assigns: label by id range, version suffix unless 1.0."""
    if object_id <= 1023:
        label = "oma"
    elif 2048 <= object_id <= 10240:
        label = "ext"
    else:
        label = "x"
    base = f"urn:oma:lwm2m:{label}:{object_id}"
    return base if version == "1.0" else f"{base}:{version}"


def obj(
    object_id: int,
    name: str,
    desc: str,
    *,
    version: str,
    lwm2m: str,
    instances: Instances,
    presence: Presence,
    resources: list[ResourceDefinition],
) -> ObjectDefinition:
    """An object header plus its resource table; duplicate resource ids are a bug."""
    ids = [r.id for r in resources]
    if len(ids) != len(set(ids)):
        raise ValueError(f"object {object_id} {name!r} declares a resource id twice")
    return ObjectDefinition(
        id=object_id,
        name=name,
        multiple=instances is MULTIPLE,
        mandatory=presence is MANDATORY,
        resources={r.id: r for r in resources},
        version=version,
        lwm2m_version=lwm2m,
        urn=urn_for(object_id, version),
        description=desc,
    )

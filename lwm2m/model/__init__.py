"""The LwM2M data model: paths, typed values, immutable nodes and object definitions.

Pure data; no I/O. Everything above (codecs, server, store, fleet) speaks these types.
"""

from lwm2m.model.definitions import (
    EMPTY_MODEL,
    ObjectDefinition,
    ObjectModel,
    Operations,
    ResourceDefinition,
    StaticModel,
    resource_definition,
)
from lwm2m.model.errors import InvalidNode, InvalidPath, InvalidValue, ModelError
from lwm2m.model.nodes import (
    LwM2MObject,
    MultipleResource,
    Node,
    ObjectInstance,
    Resource,
    ResourceInstance,
    SingleResource,
    iter_leaves,
    node_at,
    node_level,
)
from lwm2m.model.path import MAX_ID, ROOT, Path, PathLevel
from lwm2m.model.tree import build_node
from lwm2m.model.values import DataType, ObjLink, Value, ValueType

__all__ = [
    "EMPTY_MODEL",
    "MAX_ID",
    "ROOT",
    "DataType",
    "InvalidNode",
    "InvalidPath",
    "InvalidValue",
    "LwM2MObject",
    "ModelError",
    "MultipleResource",
    "Node",
    "ObjLink",
    "ObjectDefinition",
    "ObjectInstance",
    "ObjectModel",
    "Operations",
    "Path",
    "PathLevel",
    "Resource",
    "ResourceDefinition",
    "ResourceInstance",
    "SingleResource",
    "StaticModel",
    "Value",
    "ValueType",
    "build_node",
    "iter_leaves",
    "node_at",
    "node_level",
    "resource_definition",
]

"""Hypothesis strategies drawing values and nodes that fit :data:`tests.codec.models.TEST_MODEL`."""

from __future__ import annotations

from hypothesis import strategies as st

from lwm2m.model import (
    MAX_ID,
    DataType,
    LwM2MObject,
    MultipleResource,
    ObjectInstance,
    ObjLink,
    Path,
    Resource,
    ResourceInstance,
    SingleResource,
    Value,
)
from tests.codec.models import ALL_TYPES, ALL_TYPES_ID

ids = st.integers(min_value=0, max_value=MAX_ID)


def values_of(dtype: DataType) -> st.SearchStrategy[Value]:
    """Any valid value of ``dtype`` (floats finite: NaN/inf are tested separately)."""
    inner: st.SearchStrategy[object]
    if dtype in (DataType.STRING, DataType.CORELNK):
        inner = st.text(max_size=40).filter(lambda t: "\x00" not in t)  # NUL: no LwM2M string
    elif dtype in (DataType.INTEGER, DataType.TIME):
        inner = st.integers(min_value=-(2**63), max_value=2**63 - 1)
    elif dtype is DataType.UNSIGNED_INTEGER:
        inner = st.integers(min_value=0, max_value=2**64 - 1)
    elif dtype is DataType.FLOAT:
        inner = st.floats(allow_nan=False, allow_infinity=False)
    elif dtype is DataType.BOOLEAN:
        inner = st.booleans()
    elif dtype is DataType.OPAQUE:
        inner = st.binary(max_size=40)
    elif dtype is DataType.OBJLNK:
        inner = st.builds(ObjLink, st.integers(0, 65535), st.integers(0, 65535))
    else:
        inner = st.none()
    return inner.map(lambda v: Value(dtype, v))  # type: ignore[arg-type]


_readable = [r for r in ALL_TYPES.resources.values() if r.type is not DataType.NONE]


@st.composite
def resources(draw: st.DrawFn, allow_empty_multiple: bool = True) -> Resource:
    """A single or multiple resource of object 30000, typed by its definition."""
    definition = draw(st.sampled_from(_readable))
    if definition.multiple:
        instances = draw(
            st.dictionaries(
                ids,
                values_of(definition.type),
                min_size=0 if allow_empty_multiple else 1,
                max_size=4,
            )
        )
        return MultipleResource(definition.id, definition.type, instances)
    return SingleResource(definition.id, draw(values_of(definition.type)))


@st.composite
def object_instances(draw: st.DrawFn, allow_empty: bool = True) -> ObjectInstance:
    res = draw(
        st.lists(
            resources(allow_empty_multiple=allow_empty),
            max_size=6,
            unique_by=lambda r: r.id,
            min_size=0 if allow_empty else 1,
        )
    )
    return ObjectInstance.of(draw(ids), res)


@st.composite
def objects(draw: st.DrawFn, allow_empty: bool = True) -> LwM2MObject:
    insts = draw(
        st.lists(
            object_instances(allow_empty),
            max_size=3,
            unique_by=lambda i: i.id,
            min_size=0 if allow_empty else 1,
        )
    )
    return LwM2MObject.of(ALL_TYPES_ID, insts)


@st.composite
def nodes_with_paths(draw: st.DrawFn, allow_empty: bool = True) -> tuple[Path, object]:
    """``(path, node)`` at any level: object, instance, resource or resource instance."""
    level = draw(st.integers(1, 4))
    if level == 1:
        return Path.of(ALL_TYPES_ID), draw(objects(allow_empty))
    iid = draw(ids)
    if level == 2:
        inst = draw(object_instances(allow_empty))
        return Path.of(ALL_TYPES_ID, inst.id), inst
    if level == 3:
        res = draw(resources(allow_empty))
        return Path.of(ALL_TYPES_ID, iid, res.id), res
    definition = draw(st.sampled_from([r for r in _readable if r.multiple]))
    ri = ResourceInstance(draw(ids), draw(values_of(definition.type)))
    return Path.of(ALL_TYPES_ID, iid, definition.id, ri.id), ri

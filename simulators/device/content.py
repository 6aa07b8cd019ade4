"""Reading the store into payloads: one format choice and one encode path for Read, Observe,
notifications, the composite operations and Send.

Keeping this in one module means a notification is byte-for-byte what a Read of the same path
in the same format returns, which is what a server comparing the two expects.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from lwm2m.codec import CodecError, ContentFormat, canonical, encode, encode_nodes
from lwm2m.model import DataType, Node, Path, ResourceInstance, SingleResource
from simulators.device.errors import MethodNotAllowed, NotAcceptable, NotFound, Unauthorized
from simulators.device.formats import FormatProfile
from simulators.device.objects import ObjectStore

PROTECTED = frozenset({0, 21})
"""Security and OSCORE: a DM server may not touch them (4.01)."""


def check_dm_access(path: Path) -> None:
    """4.01 for a DM server addressing the Security or OSCORE object."""
    if path.ids and path.ids[0] in PROTECTED:
        raise Unauthorized(f"{path}: object {path.ids[0]} is not accessible to a DM server")


def read_format(
    profile: FormatProfile, node: Node, accept: int | None, version: str, *, observe: bool = False
) -> tuple[int, int]:
    """``(canonical format, format number to answer with)`` for a read of ``node`` (or an
    Observe, which some clients answer in another default format)."""
    if accept is not None:
        if accept not in profile.readable or accept == ContentFormat.LINK:
            raise NotAcceptable(f"content format {accept} is not supported")
        return canonical(accept), accept
    single = isinstance(node, SingleResource | ResourceInstance)
    opaque = single and node.value.type is DataType.OPAQUE  # type: ignore[union-attr]
    chosen = profile.default_for(single, opaque, version, observe=observe)
    return canonical(chosen), chosen


def encode_node(store: ObjectStore, node: Node, path: Path, content_format: int) -> bytes:
    """``node`` in ``content_format``; 4.06 when the format cannot carry it."""
    try:
        return encode(content_format, node, path, store.model)
    except CodecError as exc:
        raise NotAcceptable(str(exc)) from None


def composite_nodes(store: ObjectStore, paths: Sequence[Path], now: float) -> dict[Path, Node]:
    """The readable nodes at ``paths``; absent ones are left out (partial presence), ``/``
    expands to every object but Security and OSCORE. 4.04 when nothing at all is found."""
    nodes: dict[Path, Node] = {}
    for path in paths:
        if path.is_root:
            for oid in store.object_ids():
                if oid not in PROTECTED:
                    nodes[Path((oid,))] = store.read(Path((oid,)), now)
            continue
        check_dm_access(path)
        try:
            nodes[path] = store.read(path, now)
        except (NotFound, MethodNotAllowed):
            continue
    if not nodes:
        raise NotFound("none of the requested paths exists")
    return nodes


def encode_composite(store: ObjectStore, nodes: Mapping[Path, Node], content_format: int) -> bytes:
    try:
        return encode_nodes(content_format, nodes, store.model)
    except CodecError as exc:
        raise NotAcceptable(str(exc)) from None


__all__ = [
    "PROTECTED",
    "check_dm_access",
    "composite_nodes",
    "encode_composite",
    "encode_node",
    "read_format",
]

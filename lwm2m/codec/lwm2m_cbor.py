"""LwM2M CBOR (content format 11544, ``application/vnd.oma.lwm2m+cbor``, LwM2M 1.2 §7.4.7).

A document is a CBOR map whose keys are path ids and whose values are either nested maps (the
next ids) or a leaf value. A key may be an array of ids to skip levels that would hold a single
entry, so ``{[3, 0]: {0: "vec", 6: {0: 0}}}`` is ``/3/0/0 = "vec"`` and ``/3/0/6/0 = 0``; the
same path may be split differently in one document (``{[13, 26, 1]: 42, [13, 26]: {2: 21}}``).
Leaves are plain CBOR items: integers, floats, booleans, text (String, Corelnk and Objlnk
``"OID:IID"``), byte strings (Opaque); a Time may also come as tag 1, a Float as a tag-4
decimal fraction. Anjay writes indefinite-length maps; cbor2 reads both kinds.

The format has no timestamps (so timestamped encoding refuses a time) and no path-only
request form — LwM2M 1.2 defines Read-/Observe-Composite request bodies for SenML only, and
Anjay's LwM2M CBOR reader has no composite-read mode — so the path methods raise
:class:`UnsupportedContentFormat`. CBOR ``null`` leaves (which Anjay's reader can skip) hold no
LwM2M value and are refused.
"""

from __future__ import annotations

from collections.abc import Sequence

from lwm2m.codec.api import TimestampedNodes
from lwm2m.codec.errors import DecodeError, EncodeError
from lwm2m.codec.formats import ContentFormat
from lwm2m.codec.multi_codec import LeafCodec, TimedLeaves, WireLeaf
from lwm2m.codec.multi_nodes import per_resource
from lwm2m.codec.multi_values import Quirks, RawValue
from lwm2m.codec.multi_wire import dump_cbor, load_cbor
from lwm2m.model import MAX_ID, ObjectModel, Path

Tree = dict[int, "Tree | RawValue"]


class LwM2MCborCodec(LeafCodec):
    content_format = int(ContentFormat.LWM2M_CBOR)
    quirks = Quirks(objlnk_text=True)

    # -- decoding ----------------------------------------------------------------------------
    def _read(self, payload: bytes) -> list[WireLeaf]:
        document = load_cbor(payload, self.content_format)
        if not isinstance(document, dict):
            raise DecodeError("an LwM2M CBOR document is a map", content_format=self.content_format)
        leaves: list[WireLeaf] = []
        self._walk(document, (), leaves)
        return leaves

    def _walk(
        self, mapping: dict[object, object], prefix: tuple[int, ...], out: list[WireLeaf]
    ) -> None:
        for key, item in mapping.items():
            ids = prefix + self._key_ids(key, prefix)
            where = "/" + "/".join(str(i) for i in ids)
            if len(ids) > 4:
                raise self._error(f"{where} is deeper than a resource instance", where)
            if isinstance(item, dict):
                self._walk(item, ids, out)
                continue
            if len(ids) < 3:
                raise self._error(f"a value needs a resource path, got {where}", where)
            value = self._wire_value(item, where)
            out.append(WireLeaf(Path(ids), value, None, f"value at {where}"))

    def _key_ids(self, key: object, prefix: tuple[int, ...]) -> tuple[int, ...]:
        parts = key if isinstance(key, tuple) else (key,)
        where = "/" + "/".join(str(i) for i in prefix) + f" key {key!r}"[:60]
        if not parts:
            raise self._error("an empty id array is not a path", where)
        ids = []
        for part in parts:
            if isinstance(part, bool) or not isinstance(part, int) or not 0 <= part <= MAX_ID:
                raise self._error(f"a key holds ids 0..{MAX_ID}, got {part!r}"[:80], where)
            ids.append(part)
        return tuple(ids)

    def _wire_value(self, item: object, where: str) -> RawValue:
        if isinstance(item, bool):
            return RawValue("vb", item)
        if isinstance(item, int | float):
            return RawValue("v", item)
        if isinstance(item, str):
            return RawValue("vs", item)
        if isinstance(item, bytes):
            return RawValue("vd", item)
        kind = "null" if item is None else type(item).__name__
        raise self._error(f"a {kind} holds no LwM2M value", where)

    def _error(self, message: str, where: str) -> DecodeError:
        return DecodeError(message, content_format=self.content_format, field=where)

    def decode_timestamped(
        self, payload: bytes, model: ObjectModel, *, now: float | None = None
    ) -> list[TimestampedNodes]:
        """Always one entry without time: the format carries none."""
        leaves = self._leaves(payload, model, now)
        return [TimestampedNodes(None, per_resource(leaves, model, self.content_format))]

    # -- encoding ----------------------------------------------------------------------------
    def _write(self, groups: Sequence[TimedLeaves]) -> bytes:
        tree: Tree = {}
        for time, leaves in groups:
            if time is not None:
                raise EncodeError(
                    "LwM2M CBOR carries no timestamps; use SenML JSON or CBOR",
                    content_format=self.content_format,
                )
            for leaf in leaves:
                node = tree
                for ident in leaf.path.ids[:-1]:
                    child = node.setdefault(ident, {})
                    assert isinstance(child, dict)  # overlapping leaves were refused upstream
                    node = child
                node[leaf.path.ids[-1]] = leaf.raw
        return dump_cbor(_compress(tree), self.content_format)


def _compress(tree: Tree) -> dict[object, object]:
    """Nested maps with every chain of single-entry levels folded into one array key."""
    out: dict[object, object] = {}
    for ident, child in tree.items():
        key = [ident]
        while isinstance(child, dict) and len(child) == 1:
            [(next_id, child)] = child.items()
            key.append(next_id)
        value = _compress(child) if isinstance(child, dict) else child.raw
        out[key[0] if len(key) == 1 else tuple(key)] = value
    return out

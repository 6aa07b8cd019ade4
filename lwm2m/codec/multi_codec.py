"""The shared :class:`~lwm2m.codec.api.MultiNodeCodec` behaviour of the four leaf formats.

Each format only says how its bytes map to wire leaves (:meth:`LeafCodec._read`) and back
(:meth:`LeafCodec._write`); typing values with the object model, grouping leaves into nodes,
relative times and every encode-side check live here, so SenML JSON, SenML CBOR, LwM2M JSON and
LwM2M CBOR agree on all of it.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from lwm2m.codec.api import TimestampedNodes
from lwm2m.codec.errors import DecodeError, UnsupportedContentFormat
from lwm2m.codec.multi_nodes import (
    Leaf,
    by_requested,
    group_by_time,
    leaves_of,
    leaves_of_all,
    newest_per_path,
    node_at,
    per_resource,
)
from lwm2m.codec.multi_values import (
    RELATIVE_TIME_LIMIT,
    SENML,
    Quirks,
    RawValue,
    raw_value,
    typed_value,
)
from lwm2m.model import ModelError, Node, ObjectModel, Path, Value, resource_definition

_NO_PATH_REQUESTS = "Read-/Observe-Composite requests are SenML JSON or CBOR only"
MAX_LEAVES = 65_536
"""More records than any real device sends; bounds the work a hostile payload can cause."""


@dataclass(frozen=True, slots=True)
class WireLeaf:
    """A leaf as read off the wire: resolved path, untyped value, resolved time, and ``where``
    (e.g. ``"record 3"``) for error messages."""

    path: Path
    raw: RawValue
    time: float | None
    where: str


@dataclass(frozen=True, slots=True)
class OutLeaf:
    """A leaf to write: the path of the node it belongs to (SenML factors its base name from
    it), its own path and its wire value."""

    node: Path
    path: Path
    raw: RawValue


TimedLeaves = tuple[float | None, list[OutLeaf]]
"""One instant's leaves, as handed to :meth:`LeafCodec._write`."""


class LeafCodec(ABC):
    """Base of the SenML JSON/CBOR, LwM2M JSON and LwM2M CBOR codecs."""

    content_format: int
    quirks: Quirks = SENML

    # -- what a format implements ----------------------------------------------------------
    @abstractmethod
    def _read(self, payload: bytes) -> list[WireLeaf]:
        """The payload's leaves; raises DecodeError on malformed bytes or a record with no
        value."""

    @abstractmethod
    def _write(self, groups: Sequence[TimedLeaves]) -> bytes:
        """Bytes for ``groups`` (each leaf path unique across all groups)."""

    def _read_paths(self, payload: bytes) -> list[Path]:
        """Formats without a path-only body refuse; LwM2M 1.1/1.2 define Read-/Observe-Composite
        request bodies for SenML only."""
        raise UnsupportedContentFormat(self.content_format, _NO_PATH_REQUESTS)

    def _write_paths(self, paths: Sequence[Path]) -> bytes:
        raise UnsupportedContentFormat(self.content_format, _NO_PATH_REQUESTS)

    # -- decoding ----------------------------------------------------------------------------
    def _leaves(self, payload: bytes, model: ObjectModel, now: float | None) -> list[Leaf]:
        return resolve_times(self._raw_leaves(payload, model), now)

    def _raw_leaves(self, payload: bytes, model: ObjectModel) -> list[Leaf]:
        """Typed leaves with their times as the payload gives them (relative ones unresolved:
        see :func:`resolve_times`)."""
        wire = self._read(bytes(payload))
        if len(wire) > MAX_LEAVES:
            raise DecodeError(
                f"{len(wire)} values exceed the limit of {MAX_LEAVES}",
                content_format=self.content_format,
            )
        leaves = []
        content_format, quirks = self.content_format, self.quirks
        for item in wire:
            path = item.path
            definition = resource_definition(model, path.object_id, path.resource_id)
            try:
                value = typed_value(
                    item.raw,
                    definition,
                    where=item.where,
                    content_format=content_format,
                    quirks=quirks,
                )
            except DecodeError:
                # Again, naming the path too: formatting it for every leaf cost more than
                # typing the value, and errors are rare (the same call fails the same way).
                value = typed_value(
                    item.raw,
                    definition,
                    where=f"{item.where} ({path})",
                    content_format=content_format,
                    quirks=quirks,
                )
            leaves.append(Leaf(path, value, item.time))
        return leaves

    def decode_report_and_nodes(
        self,
        payload: bytes,
        model: ObjectModel,
        paths: Sequence[Path],
        *,
        composite: bool,
        now: float,
    ) -> tuple[dict[Path, Node], list[TimestampedNodes]]:
        """One read of a notification for both of its uses: the requested nodes (newest value
        per leaf, as :meth:`decode` / :meth:`decode_nodes` give them) and the timestamped
        groups (as :meth:`decode_timestamped` with ``now``). Reading the payload twice was
        half of a SenML notification's server CPU (issue 13)."""
        raw = self._raw_leaves(payload, model)
        newest = newest_per_path(resolve_times(raw, None), self.content_format)
        if composite:
            nodes = by_requested(newest, paths, model, self.content_format)
        else:
            nodes = {paths[0]: node_at(paths[0], newest, model, self.content_format)}
        groups = [
            TimestampedNodes(time, per_resource(group, model, self.content_format))
            for time, group in group_by_time(resolve_times(raw, now))
        ]
        return nodes, groups

    def decode(self, payload: bytes, path: Path, model: ObjectModel) -> Node:
        """The node at ``path``; when the payload reports history, each leaf's newest value."""
        leaves = newest_per_path(self._leaves(payload, model, None), self.content_format)
        return node_at(path, leaves, model, self.content_format)

    def decode_nodes(
        self, payload: bytes, model: ObjectModel, paths: Sequence[Path] | None = None
    ) -> dict[Path, Node]:
        leaves = newest_per_path(self._leaves(payload, model, None), self.content_format)
        if paths is None:
            return per_resource(leaves, model, self.content_format)
        return by_requested(leaves, paths, model, self.content_format)

    def decode_timestamped(
        self, payload: bytes, model: ObjectModel, *, now: float | None = None
    ) -> list[TimestampedNodes]:
        """Nodes per instant. Relative SenML times (below 2**28) become ``now + t`` when ``now``
        is given; without it they are returned as they are (negative seconds before the
        receiver's now), except 0, which means "now" and is reported as None."""
        leaves = self._leaves(payload, model, now)
        return [
            TimestampedNodes(time, per_resource(group, model, self.content_format))
            for time, group in group_by_time(leaves)
        ]

    def decode_paths(self, payload: bytes) -> list[Path]:
        return self._read_paths(bytes(payload))

    # -- encoding ----------------------------------------------------------------------------
    def _out(self, leaves: Sequence[tuple[Path, Path, Value]]) -> list[OutLeaf]:
        cf, quirks = self.content_format, self.quirks
        return [
            OutLeaf(node, p, raw_value(v, where=str(p), content_format=cf, quirks=quirks))
            for node, p, v in leaves
        ]

    def encode(self, node: Node, path: Path, model: ObjectModel) -> bytes:
        leaves = leaves_of(path, node, model, self.content_format)
        return self._write([(None, self._out([(path, p, v) for p, v in leaves]))])

    def encode_nodes(self, nodes: Mapping[Path, Node], model: ObjectModel) -> bytes:
        return self._write([(None, self._out(leaves_of_all(nodes, model, self.content_format)))])

    def encode_timestamped(self, data: Sequence[TimestampedNodes], model: ObjectModel) -> bytes:
        # one leaf may appear at several instants (history), but not twice at one instant
        return self._write(
            [
                (item.timestamp, self._out(leaves_of_all(item.nodes, model, self.content_format)))
                for item in data
            ]
        )

    def encode_paths(self, paths: Sequence[Path]) -> bytes:
        return self._write_paths(paths)


def resolve_times(leaves: list[Leaf], now: float | None) -> list[Leaf]:
    """``leaves`` with :func:`absolute_time` applied (the same list when nothing changes)."""
    if all(leaf.time is None or leaf.time >= RELATIVE_TIME_LIMIT for leaf in leaves):
        return leaves
    return [Leaf(leaf.path, leaf.value, absolute_time(leaf.time, now)) for leaf in leaves]


def absolute_time(time: float | None, now: float | None) -> float | None:
    """Apply RFC 8428 §4.5.3: a time below 2**28 is relative to the receiver's now."""
    if time is None or time >= RELATIVE_TIME_LIMIT:
        return time
    if now is not None:
        return now + time
    return None if time == 0 else time


_PATHS: dict[str, Path] = {}
_PATHS_MAX = 4096


def cached_path(text: str) -> Path | None:
    """The path a record name parsed to before, if it did (issue 13: a Send of buffered
    readings names the same few paths in every record; parsing each was a tenth of the
    decode)."""
    return _PATHS.get(text)


def parse_path(text: str, *, where: str, content_format: int) -> Path:
    """A path from a record name, as a DecodeError naming the record when it is not one.
    Valid names are remembered (paths are immutable; the cache is emptied when full)."""
    found = _PATHS.get(text)
    if found is not None:
        return found
    try:
        path = Path.parse(text)
    except ModelError as exc:
        raise DecodeError(str(exc), content_format=content_format, field=where) from None
    if len(_PATHS) >= _PATHS_MAX:
        _PATHS.clear()
    _PATHS[text] = path
    return path

"""The contract every node codec fulfils, and the content types it exchanges.

Two kinds of codec exist:

* :class:`NodeCodec` — one node at one path (text, opaque, CBOR single value, TLV);
* :class:`MultiNodeCodec` — additionally several paths in one payload, optionally timestamped
  (SenML JSON/CBOR, LwM2M JSON, LwM2M CBOR). These carry Read-Composite, Write-Composite,
  Observe-Composite, Send and timestamped notifications.

All codecs are pure functions of their input (sans-IO) and raise only
:class:`~lwm2m.codec.errors.CodecError` subclasses, whatever bytes they are handed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from lwm2m.model import Node, ObjectModel, Path


@dataclass(frozen=True, slots=True)
class TimestampedNodes:
    """The nodes reported for one instant; ``timestamp`` is seconds since the Unix epoch (float),
    or None when the payload gave no time (meaning "now" to the receiver)."""

    timestamp: float | None
    nodes: Mapping[Path, Node] = field(default_factory=dict)


@runtime_checkable
class NodeCodec(Protocol):
    content_format: int

    def decode(self, payload: bytes, path: Path, model: ObjectModel) -> Node:
        """The node at ``path`` (object, instance, resource or resource instance level)."""
        ...

    def encode(self, node: Node, path: Path, model: ObjectModel) -> bytes:
        """``node``, which lives at ``path``, as this format's bytes."""
        ...


@runtime_checkable
class MultiNodeCodec(NodeCodec, Protocol):
    def decode_nodes(
        self, payload: bytes, model: ObjectModel, paths: Sequence[Path] | None = None
    ) -> dict[Path, Node]:
        """Several nodes from one payload (Read-Composite response, Write-Composite, Send).

        With ``paths`` given (the paths a Read-Composite asked for), leaves are grouped under
        the requested path that contains them and the result is keyed by those paths; a
        requested path with no leaf is absent from the result. With ``paths`` None, leaves are
        grouped per resource: keys are ``/O/I/R`` paths (a multiple resource gathers its
        instances), or ``/O/I/R/RI`` when the payload addresses a lone resource instance of a
        resource the model does not know.
        """
        ...

    def encode_nodes(self, nodes: Mapping[Path, Node], model: ObjectModel) -> bytes: ...

    def decode_timestamped(self, payload: bytes, model: ObjectModel) -> list[TimestampedNodes]:
        """Send / notification payloads with times; ordered by time (None first), nodes grouped
        per resource as in :meth:`decode_nodes` without ``paths``."""
        ...

    def encode_timestamped(self, data: Sequence[TimestampedNodes], model: ObjectModel) -> bytes: ...

    def decode_paths(self, payload: bytes) -> list[Path]:
        """The paths of a Read-Composite / Observe-Composite request body (names, no values)."""
        ...

    def encode_paths(self, paths: Sequence[Path]) -> bytes: ...

"""Observations the server holds, and turning reports into telemetry (pure).

An observation is identified towards callers by an opaque id (the hex of its CoAP token, which
is also its key in the store). Its state is small and lives in one dict by id and one by CoAP
request handle, so a notification costs two dict lookups before decoding.

:func:`report_values` turns decoded content -- a notification, a Send, a Read -- into the
store's ``ReportedValue`` rows: one per leaf value, stamped with the device's own time when
the payload carries one (SenML ``bt``/``t``, LwM2M CBOR), else the arrival time.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from lwm2m.codec import CodecError, TimestampedNodes
from lwm2m.model import (
    ModelError,
    Node,
    ObjectModel,
    Path,
    ResourceInstance,
    SingleResource,
    iter_leaves,
)
from lwm2m.server.operations import Response, decode_report, is_multi_format
from lwm2m.server.results import ObservationInfo
from lwm2m.store import ReportedValue, Source


class ObservationState:
    """One active observation: which device, which paths, how it is encoded."""

    __slots__ = (
        "composite",
        "content_format",
        "created_at",
        "device",
        "handle",
        "id",
        "notifications",
        "paths",
    )

    def __init__(
        self,
        observation_id: str,
        device: Any,
        handle: Any,
        paths: tuple[Path, ...],
        composite: bool,
        content_format: int | None,
        created_at: float,
    ) -> None:
        self.id = observation_id
        #: The runtime's per-device record (typed loosely to keep this module pure).
        self.device = device
        #: The CoAP core's RequestHandle of the Observe request.
        self.handle = handle
        self.paths = paths
        self.composite = composite
        self.content_format = content_format
        self.created_at = created_at
        self.notifications = 0

    def info(self, endpoint: str) -> ObservationInfo:
        return ObservationInfo(
            observation_id=self.id,
            endpoint=endpoint,
            paths=self.paths,
            composite=self.composite,
            content_format=self.content_format,
            created_at=self.created_at,
            notifications=self.notifications,
        )


#: A tuple, not ``SingleResource | ResourceInstance``: the union is built anew each time the
#: expression runs, and ``isinstance`` checks a tuple faster (once per reported value).
_ONE_VALUE = (SingleResource, ResourceInstance)


def leaf_values(
    endpoint: str, content: Mapping[Path, Node], at: float, source: Source
) -> list[ReportedValue]:
    """Every leaf of ``content`` as a reported value at time ``at``."""
    values: list[ReportedValue] = []
    for path, node in content.items():
        if isinstance(node, _ONE_VALUE):  # a notification's usual node
            values.append(ReportedValue(endpoint, path, node.value, at, source))
        else:
            values.extend(
                ReportedValue(endpoint, leaf, value, at, source)
                for leaf, value in iter_leaves(node, path)
            )
    return values


def timestamped_values(
    endpoint: str, groups: Iterable[TimestampedNodes], now: float, source: Source
) -> list[ReportedValue]:
    """Values of timestamped groups (Send, SenML notifications); no time means ``now``."""
    values: list[ReportedValue] = []
    for group in groups:
        at = group.timestamp if group.timestamp is not None else now
        values.extend(leaf_values(endpoint, group.nodes, at, source))
    return values


def newest_content(groups: Iterable[TimestampedNodes]) -> dict[Path, Node]:
    """The newest node per path over timestamped groups (ordered oldest first)."""
    merged: dict[Path, Node] = {}
    for group in groups:
        merged.update(group.nodes)
    return merged


def report_values(
    endpoint: str,
    response: Response,
    content: Mapping[Path, Node],
    content_format: int,
    model: ObjectModel,
    now: float,
    source: Source,
) -> tuple[list[ReportedValue], float]:
    """Telemetry rows for a decoded report, and the time it describes.

    For the multi-path formats the payload is read again with its timestamps (a device that
    batched measurements reports each at its own time); other formats have no time, so every
    value is stamped ``now``.
    """
    if is_multi_format(content_format):
        try:
            groups = decode_report(content_format, response.payload, model, now)
        except (CodecError, ModelError):
            groups = []
        if groups:
            times = [g.timestamp for g in groups if g.timestamp is not None]
            return timestamped_values(endpoint, groups, now, source), max(times, default=now)
    return leaf_values(endpoint, content, now, source), now


__all__ = [
    "ObservationState",
    "leaf_values",
    "newest_content",
    "report_values",
    "timestamped_values",
]

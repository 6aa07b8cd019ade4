"""A notification read once for both of its uses: the nodes the observers and the events get,
and the telemetry rows with the times the payload gives.

``decode_content`` followed by ``report_values`` read a SenML or LwM2M CBOR/JSON payload twice
(once for the newest value per leaf, once with its timestamps), and that second read was about
half of such a notification's server CPU (issue 13, ``benchmarks/bench_ingest.py``). The other
formats (text, opaque, TLV, CBOR) carry no time and take the two-step path as before; so does a
multi-path payload whose codec is not a leaf codec.
"""

from __future__ import annotations

from collections.abc import Sequence

from lwm2m.codec import decode
from lwm2m.codec.formats import ContentFormat
from lwm2m.codec.multi_codec import LeafCodec
from lwm2m.codec.registry import multi_codec_for
from lwm2m.model import Node, ObjectModel, Path
from lwm2m.server.observations import leaf_values, report_values, timestamped_values
from lwm2m.server.operations import (
    Response,
    _response_format,
    decode_content,
    is_multi_format,
)
from lwm2m.store import ReportedValue, Source


def decode_notification(
    endpoint: str,
    response: Response,
    paths: Sequence[Path],
    model: ObjectModel,
    *,
    composite: bool,
    accept: int | None,
    now: float,
    source: Source,
) -> tuple[dict[Path, Node], int, list[ReportedValue], float]:
    """``(nodes, content format, telemetry rows, the time the report describes)``, exactly as
    ``decode_content`` + ``report_values`` give them. Raises what ``decode_content`` raises
    (:class:`~lwm2m.codec.CodecError`, :class:`~lwm2m.model.ModelError`)."""
    if composite:
        fmt = response.content_format if response.content_format is not None else accept
        if fmt is None:
            fmt = int(ContentFormat.SENML_CBOR)
    else:
        fmt = _response_format(response, accept, paths[0])
    multi = is_multi_format(fmt)
    if multi:
        codec = multi_codec_for(fmt)
        if isinstance(codec, LeafCodec):
            nodes, groups = codec.decode_report_and_nodes(
                bytes(response.payload), model, list(paths), composite=composite, now=now
            )
            if groups:
                times = [g.timestamp for g in groups if g.timestamp is not None]
                values = timestamped_values(endpoint, groups, now, source)
                return nodes, fmt, values, max(times, default=now)
            return nodes, fmt, leaf_values(endpoint, nodes, now, source), now
    if composite or multi:
        nodes, fmt = decode_content(response, paths, model, composite=composite, accept=accept)
        values, at = report_values(endpoint, response, nodes, fmt, model, now, source)
        return nodes, fmt, values, at
    # One value, untimed (text, opaque, CBOR, TLV): what ``decode_content`` decodes with the
    # format chosen above, and ``report_values``' rows for a single-path format, stamped
    # ``now``, without choosing the format and testing it again (issue 13).
    path = paths[0]
    nodes = {path: decode(fmt, response.payload, path, model)}
    return nodes, fmt, leaf_values(endpoint, nodes, now, source), now

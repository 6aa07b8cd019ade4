"""LwM2M JSON (content format 11543, legacy 1543, ``application/vnd.oma.lwm2m+json``).

The LwM2M 1.0 JSON format (TS 1.0 §6.4.4, kept in 1.1 §7.4.5) is an early SenML draft: one
object with a base name ``bn``, an optional base time ``bt`` and the records in ``e``::

    {"bn":"/3/0/","e":[{"n":"0","sv":"x"},{"n":"9","v":80},{"n":"1","bv":true},
                       {"n":"22/0","ov":"3:0"}]}

Values are ``v`` (number), ``bv`` (boolean — not SenML's base value), ``sv`` (string; Opaque
as base64 text) and ``ov`` (object link); ``t`` is a time relative to ``bt``, read with the same
rules as SenML. Names resolve like SenML too, so wakaama's ``"bn":"/3/0/","n":"0"`` and
Anjay's ``"bn":"/3/0","n":"/0"`` both work; SenML's ``vlo`` is accepted for an object link.

The format defines no path-only body, and LwM2M 1.1/1.2 define the Composite operations for
SenML only, so :meth:`decode_paths`/:meth:`encode_paths` raise UnsupportedContentFormat.
"""

from __future__ import annotations

from collections.abc import Sequence

from lwm2m.codec.errors import DecodeError
from lwm2m.codec.formats import ContentFormat
from lwm2m.codec.multi_codec import LeafCodec, TimedLeaves
from lwm2m.codec.multi_values import Quirks
from lwm2m.codec.multi_wire import dump_json, load_json
from lwm2m.codec.senml import Record, SenmlCodec, check_count, compact, record_from_fields

_TO_SENML = {"n": "n", "t": "t", "v": "v", "bv": "vb", "sv": "vs", "ov": "vlo", "vlo": "vlo"}
_FROM_SENML = {"v": "v", "vb": "bv", "vs": "sv", "vlo": "ov"}


class LwM2MJsonCodec(SenmlCodec):
    content_format = int(ContentFormat.LWM2M_JSON)
    quirks = Quirks(opaque_text=True)

    def _parse(self, payload: bytes) -> list[Record]:
        cf = self.content_format
        document = load_json(payload, cf)
        if not isinstance(document, dict) or not isinstance(document.get("e"), list):
            raise DecodeError(
                "an LwM2M JSON document is an object with an 'e' array", content_format=cf
            )
        entries: list[object] = document["e"]
        check_count(len(entries), cf)
        top = {k: document[k] for k in ("bn", "bt") if k in document}
        base = record_from_fields("document", top, cf, vd_text=False)
        records = []
        for index, entry in enumerate(entries):
            if not isinstance(entry, dict):
                raise DecodeError(
                    f"an entry is an object, got {type(entry).__name__}",
                    content_format=cf,
                    field=f"record {index}",
                )
            fields: dict[str, object] = {}
            for key, item in entry.items():
                label = _TO_SENML.get(key)
                if label is None:
                    continue  # unknown entry labels carry nothing LwM2M reads
                if label in fields:
                    raise DecodeError(
                        f"'{key}' repeats another label", content_format=cf, field=f"record {index}"
                    )
                fields[label] = item
            record = record_from_fields(f"record {index}", fields, cf, vd_text=False)
            if index == 0:
                record = Record(base.bn, base.bt, None, record.n, record.t, record.value)
            records.append(record)
        return records

    # no path-only body: refuse as LeafCodec does, not as SenML accepts
    _read_paths = LeafCodec._read_paths
    _write_paths = LeafCodec._write_paths

    def _serialize(self, records: Sequence[Record]) -> bytes:  # pragma: no cover
        raise NotImplementedError("LwM2M JSON is written from leaves (_write), not records")

    def _write(self, groups: Sequence[TimedLeaves]) -> bytes:
        """One base name for the whole document (LwM2M JSON has no per-record ``bn``): the
        longest common prefix of the leaf paths. Times are written absolute, per entry, so
        they read back exactly."""
        leaves = [(time, leaf.path, leaf.raw) for time, items in groups for leaf in items]
        document: dict[str, object] = {}
        prefix: tuple[int, ...] = ()
        if leaves:
            paths = [path.ids for _, path, _ in leaves]
            shortest = min(len(ids) for ids in paths)
            for position in range(shortest - 1):
                if len({ids[position] for ids in paths}) != 1:
                    break
                prefix += (paths[0][position],)
            document["bn"] = "/" + "".join(f"{i}/" for i in prefix)
        entries = []
        for time, path, raw in leaves:
            entry: dict[str, object] = {"n": "/".join(str(i) for i in path.ids[len(prefix) :])}
            entry[_FROM_SENML[raw.kind]] = raw.raw
            if time is not None:
                entry["t"] = compact(time)
            entries.append(entry)
        document["e"] = entries
        return dump_json(document, self.content_format)

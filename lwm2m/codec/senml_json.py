"""SenML JSON (content format 110, ``application/senml+json``).

The pack is a JSON array of objects labelled by name (``bn``, ``bt``, ``n``, ``t``, ``v``,
``vs``, ``vb``, ``vd``, and LwM2M's ``vlo`` object-link extension). ``vd`` is base64 text: we
write the URL-safe alphabet without padding that RFC 8428 prescribes and read either alphabet.
Everything else — name/time resolution, typing, grouping — is the shared SenML core.
"""

from __future__ import annotations

from collections.abc import Sequence

from lwm2m.codec.errors import DecodeError
from lwm2m.codec.formats import ContentFormat
from lwm2m.codec.multi_values import b64encode_url
from lwm2m.codec.multi_wire import dump_json, load_json
from lwm2m.codec.senml import Record, SenmlCodec, check_count, record_from_fields


class SenmlJsonCodec(SenmlCodec):
    content_format = int(ContentFormat.SENML_JSON)

    def _parse(self, payload: bytes) -> list[Record]:
        document = load_json(payload, self.content_format)
        if not isinstance(document, list):
            raise DecodeError("a SenML JSON pack is an array", content_format=self.content_format)
        check_count(len(document), self.content_format)
        records = []
        for index, item in enumerate(document):
            if not isinstance(item, dict):
                raise DecodeError(
                    f"a record is an object, got {type(item).__name__}",
                    content_format=self.content_format,
                    field=f"record {index}",
                )
            records.append(
                record_from_fields(f"record {index}", item, self.content_format, vd_text=True)
            )
        return records

    def _serialize(self, records: Sequence[Record]) -> bytes:
        return dump_json([_to_object(r) for r in records], self.content_format)


def _to_object(record: Record) -> dict[str, object]:
    out: dict[str, object] = {}
    for label, item in (("bn", record.bn), ("bt", record.bt), ("n", record.n), ("t", record.t)):
        if item is not None:
            out[label] = item
    if record.value is not None:
        raw = record.value.raw
        out[record.value.kind] = b64encode_url(raw) if isinstance(raw, bytes) else raw
    return out

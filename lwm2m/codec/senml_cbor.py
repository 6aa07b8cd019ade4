"""SenML CBOR (content format 112, ``application/senml+cbor``).

The same records as SenML JSON with RFC 8428 §6's integer labels (``bn`` -2, ``bt`` -3, ``n``
0, ``v`` 2, ``vs`` 3, ``vb`` 4, ``t`` 6, ``vd`` 8 as a byte string) and LwM2M's object-link
extension under the text label ``"vlo"`` (RFC 8428 reserves integers for its own table). Anjay
writes ``bt`` as a float64 in notifications and Send; wakaama's SenML-CBOR build and Anjay
both write the base name on the first record.
"""

from __future__ import annotations

from collections.abc import Sequence

from lwm2m.codec.errors import DecodeError
from lwm2m.codec.formats import ContentFormat
from lwm2m.codec.multi_wire import dump_cbor, load_cbor
from lwm2m.codec.senml import Record, SenmlCodec, check_count, record_from_fields

LABELS: dict[int, str] = {
    -2: "bn",
    -3: "bt",
    -5: "bv",
    0: "n",
    2: "v",
    3: "vs",
    4: "vb",
    6: "t",
    8: "vd",
}
"""RFC 8428 Table 4, for the labels LwM2M reads (units, sums and bver are read past)."""
KEYS: dict[str, int | str] = {label: key for key, label in LABELS.items()} | {"vlo": "vlo"}


class SenmlCborCodec(SenmlCodec):
    content_format = int(ContentFormat.SENML_CBOR)

    def _parse(self, payload: bytes) -> list[Record]:
        document = load_cbor(payload, self.content_format)
        if not isinstance(document, list):
            raise DecodeError("a SenML CBOR pack is an array", content_format=self.content_format)
        check_count(len(document), self.content_format)
        records = []
        for index, item in enumerate(document):
            if not isinstance(item, dict):
                raise DecodeError(
                    f"a record is a map, got {type(item).__name__}",
                    content_format=self.content_format,
                    field=f"record {index}",
                )
            fields = {}
            for key, value in item.items():
                label = _label(key)
                if label is not None:
                    fields[label] = value
            records.append(
                record_from_fields(f"record {index}", fields, self.content_format, vd_text=False)
            )
        return records

    def _serialize(self, records: Sequence[Record]) -> bytes:
        return dump_cbor([_to_map(r) for r in records], self.content_format)


def _label(key: object) -> str | None:
    """The label a map key stands for; None for keys LwM2M ignores (RFC 8428 §4.4)."""
    if isinstance(key, bool):
        return None
    if isinstance(key, int):
        return LABELS.get(key)
    if isinstance(key, str):
        # integers are SenML's own table; text keys are extensions: LwM2M's vlo, or
        # must-understand ones (ending in '_') that record_from_fields refuses
        return key if key == "vlo" or key.endswith("_") else None
    return None


def _to_map(record: Record) -> dict[object, object]:
    out: dict[object, object] = {}
    for label, item in (("bn", record.bn), ("bt", record.bt), ("n", record.n), ("t", record.t)):
        if item is not None:
            out[KEYS[label]] = item
    if record.value is not None:
        out[KEYS[record.value.kind]] = record.value.raw
    return out

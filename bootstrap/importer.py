"""Bulk import of factory identities from CSV or JSON, all or nothing.

The factory's export is parsed and validated row by row (:func:`parse_identities`, pure); every
problem becomes a :class:`Rejection` naming the row, the endpoint, a stable reason code and a
sentence, and the import refuses to write anything while any row is rejected -- a half-imported
production batch is worse than none, because the missing devices only show up when they fail
to bootstrap in the field. ``allow_partial`` imports the accepted rows (still in one
transaction) for operators who have read the report and want the rest in now. A dry run does
every check, including the ones against the database, and writes nothing.

CSV: a header row, then one identity per row. Columns: ``endpoint`` (required), ``serial``,
``hardware_id``, ``imei``, ``eid``, ``sku``, ``tenant``, ``region``, ``policy_group``,
``security_mode`` (``nosec``, ``psk``, ``x509``; default ``psk``), ``psk_identity`` (default:
the endpoint name), ``psk_key`` (hex). ``country``, ``carrier``, ``plmn``, ``iccid``/``iccids``
and ``labels`` are accepted and ignored here: the lifecycle inventory reads them.
JSON: a list of objects with the same keys (or
``{"identities": [...]}``), plus optionally ``certificate`` (PEM) for an ``x509`` identity whose
certificate fleetloop's CA already issued. An ``x509`` identity without one gets a fresh
certificate and key from the CA at import, written to ``key_dir`` (key files 0600).
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from enum import StrEnum
from pathlib import Path
from typing import Any

from bootstrap.ca import (
    CertificateAuthority,
    IssuedCertificate,
    fingerprint_of,
    load_certificate,
    write_issued,
)
from bootstrap.errors import CaError, ImportFailed, InvalidIdentity
from bootstrap.identities import (
    BootstrapCredential,
    FactoryIdentity,
    SecurityMode,
    check_identity,
    parse_psk_key,
)

COLUMNS: tuple[str, ...] = (
    "endpoint",
    "serial",
    "hardware_id",
    "imei",
    "eid",
    "sku",
    "tenant",
    "region",
    "policy_group",
    "security_mode",
    "psk_identity",
    "psk_key",
)
JSON_ONLY_COLUMNS = ("certificate",)
INVENTORY_COLUMNS = ("country", "carrier", "plmn", "iccid", "iccids", "labels")
"""Accepted and ignored here: the lifecycle inventory reads them from the same file."""
MAX_ROWS = 200_000
_UNIQUE = ("endpoint", "serial", "imei", "eid", "psk_identity")
_PENDING_FINGERPRINT = "0" * 64  # placeholder until the CA issues the certificate


class Reason(StrEnum):
    """Why a row was rejected (stable codes for scripts; the message says the rest)."""

    FILE = "file"
    MISSING_ENDPOINT = "missing_endpoint"
    MALFORMED = "malformed"
    MALFORMED_KEY = "malformed_key"
    MISSING_KEY = "missing_key"
    BAD_SECURITY_MODE = "bad_security_mode"
    BAD_CERTIFICATE = "bad_certificate"
    NO_CA = "no_ca"
    DUPLICATE_IN_FILE = "duplicate_in_file"
    DUPLICATE_EXISTING = "duplicate_existing"


@dataclass(frozen=True, slots=True)
class Rejection:
    """One refused row: ``row`` is the 1-based data row (CSV: not counting the header; 0 for
    a problem with the file as a whole)."""

    row: int
    endpoint: str | None
    reason: Reason
    field: str | None
    message: str

    def as_dict(self) -> dict[str, Any]:
        return {
            "row": self.row,
            "endpoint": self.endpoint,
            "reason": str(self.reason),
            "field": self.field,
            "message": self.message,
        }


@dataclass(frozen=True, slots=True)
class ParsedRow:
    """A row that passed validation; ``certificate`` is a given PEM for x509 identities."""

    row: int
    identity: FactoryIdentity
    certificate: bytes | None = field(default=None, repr=False)

    @property
    def needs_certificate(self) -> bool:
        return self.identity.security_mode is SecurityMode.X509 and self.certificate is None


@dataclass(frozen=True, slots=True)
class ImportReport:
    """What an import did (or, in a dry run, would do)."""

    batch: str
    source: str
    digest: str
    rows: int
    accepted: tuple[str, ...]
    rejected: tuple[Rejection, ...]
    dry_run: bool
    imported: int = 0
    issued: Mapping[str, tuple[str, str]] = field(default_factory=dict)
    """endpoint -> (certificate file, key file) for certificates issued by this import."""

    @property
    def ok(self) -> bool:
        return not self.rejected

    def summary(self) -> str:
        verb = "would import" if self.dry_run else "imported"
        count = len(self.accepted) if self.dry_run else self.imported
        text = f"{self.source}: {self.rows} rows, {verb} {count}, rejected {len(self.rejected)}"
        if self.rejected and not self.dry_run and self.imported == 0:
            text += " -- nothing was imported"
        return text

    def as_dict(self) -> dict[str, Any]:
        return {
            "batch": self.batch,
            "source": self.source,
            "sha256": self.digest,
            "rows": self.rows,
            "dry_run": self.dry_run,
            "accepted": list(self.accepted),
            "imported": self.imported,
            "rejected": [r.as_dict() for r in self.rejected],
            "issued_certificates": {k: list(v) for k, v in self.issued.items()},
            "summary": self.summary(),
        }


@dataclass(frozen=True, slots=True)
class ParseResult:
    """The pure part of an import: accepted rows and rejections, in file order."""

    rows: int
    accepted: tuple[ParsedRow, ...]
    rejected: tuple[Rejection, ...]


def _clean(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool | int | float):
        value = str(value)
    if not isinstance(value, str):
        raise InvalidIdentity("value", f"{value!r} is not text")
    value = value.strip()
    return value or None


def _parse_record(row: int, record: Mapping[str, Any], now: float, batch: str) -> ParsedRow:
    """One validated identity, or :class:`_Refused` with the reason."""
    endpoint = _clean(record.get("endpoint"))
    if endpoint is None:
        raise _Refused(Reason.MISSING_ENDPOINT, "endpoint", "the endpoint name is empty")
    try:
        mode_text = _clean(record.get("security_mode")) or "psk"
        try:
            mode = SecurityMode(mode_text.lower())
        except ValueError:
            raise _Refused(
                Reason.BAD_SECURITY_MODE,
                "security_mode",
                f"{mode_text!r} is not nosec, psk or x509",
            ) from None
        certificate: bytes | None = None
        if mode is SecurityMode.PSK:
            key_text = _clean(record.get("psk_key"))
            if key_text is None:
                raise _Refused(
                    Reason.MISSING_KEY,
                    "psk_key",
                    "a psk identity needs the key it was flashed with",
                )
            try:
                key = parse_psk_key(key_text)
            except InvalidIdentity as exc:
                raise _Refused(Reason.MALFORMED_KEY, "psk_key", str(exc)) from None
            credential = BootstrapCredential.psk(
                _clean(record.get("psk_identity")) or endpoint, key
            )
        elif mode is SecurityMode.X509:
            if _clean(record.get("psk_key")) is not None:
                raise _Refused(
                    Reason.MALFORMED_KEY, "psk_key", "an x509 identity has no PSK; remove the key"
                )
            pem = _clean(record.get("certificate"))
            fingerprint = _PENDING_FINGERPRINT
            if pem is not None:
                certificate = pem.encode("ascii", "replace")
                try:
                    fingerprint = fingerprint_of(load_certificate(certificate))
                except CaError as exc:
                    raise _Refused(Reason.BAD_CERTIFICATE, "certificate", str(exc)) from None
            credential = BootstrapCredential.x509(fingerprint)
        else:
            if _clean(record.get("psk_key")) is not None:
                raise _Refused(
                    Reason.MALFORMED_KEY, "psk_key", "a nosec identity has no PSK; remove the key"
                )
            credential = BootstrapCredential.nosec()
        identity = FactoryIdentity(
            endpoint=endpoint,
            credential=credential,
            serial=_clean(record.get("serial")),
            hardware_id=_clean(record.get("hardware_id")),
            imei=_clean(record.get("imei")),
            eid=_clean(record.get("eid")),
            sku=_clean(record.get("sku")),
            tenant=_clean(record.get("tenant")),
            region=_clean(record.get("region")),
            policy_group=_clean(record.get("policy_group")),
            created_at=now,
            updated_at=now,
            import_batch=batch,
        )
        return ParsedRow(row, check_identity(identity), certificate)
    except InvalidIdentity as exc:
        reason = Reason.MALFORMED_KEY if exc.field == "psk_key" else Reason.MALFORMED
        raise _Refused(reason, exc.field, str(exc)) from None


class _Refused(Exception):
    def __init__(self, reason: Reason, field_name: str | None, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.field = field_name
        self.message = message


def _records_from_csv(text: str) -> list[dict[str, Any]]:
    reader = csv.DictReader(io.StringIO(text), restkey="\x00extra")
    header = reader.fieldnames
    if not header:
        raise _Refused(Reason.FILE, None, "the CSV is empty: a header row is required")
    names = [(h or "").strip().lower() for h in header]
    if "endpoint" not in names:
        raise _Refused(
            Reason.FILE,
            "endpoint",
            f"the header row has no 'endpoint' column (columns: {', '.join(COLUMNS)})",
        )
    unknown = [n for n in names if n not in COLUMNS and n not in INVENTORY_COLUMNS]
    if unknown:
        raise _Refused(
            Reason.FILE,
            None,
            f"unknown column(s) {', '.join(repr(u) for u in unknown)}; known: {', '.join(COLUMNS)}",
        )
    if len(set(names)) != len(names):
        raise _Refused(Reason.FILE, None, "a column appears twice in the header row")
    records: list[dict[str, Any]] = []
    for raw in reader:
        if "\x00extra" in raw:
            records.append({"\x00error": "the row has more fields than the header"})
            continue
        record = {names[i]: raw.get(h) for i, h in enumerate(header)}
        if all(v is None or str(v).strip() == "" for v in record.values()):
            records.append({"\x00blank": True})
            continue
        records.append(record)
    return records


def _records_from_json(text: str) -> list[dict[str, Any]]:
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise _Refused(Reason.FILE, None, f"not JSON: {exc}") from None
    if isinstance(doc, dict) and isinstance(doc.get("identities"), list):
        doc = doc["identities"]
    if not isinstance(doc, list):
        raise _Refused(Reason.FILE, None, "JSON import is a list of identity objects")
    records: list[dict[str, Any]] = []
    known = set(COLUMNS) | set(JSON_ONLY_COLUMNS) | set(INVENTORY_COLUMNS)
    for item in doc:
        if not isinstance(item, dict):
            records.append({"\x00error": "not a JSON object"})
            continue
        unknown = sorted(str(k) for k in item if k not in known)
        if unknown:
            records.append({"\x00error": f"unknown field(s) {', '.join(unknown)}"})
            continue
        records.append(item)
    return records


def detect_format(name: str, text: str) -> str:
    """``json`` or ``csv``, by file extension, else by the first character."""
    lowered = name.lower()
    if lowered.endswith(".json"):
        return "json"
    if lowered.endswith(".csv"):
        return "csv"
    return "json" if text.lstrip()[:1] in ("[", "{") else "csv"


def parse_identities(text: str, *, format: str, now: float = 0.0, batch: str = "") -> ParseResult:
    """Validate every row of a CSV/JSON export (pure; nothing is checked against a database).

    Never raises for anything the file contains: file-level problems are a rejection at row 0.
    Within the file, a second row reusing an endpoint, serial, IMEI, EID or PSK identity is
    rejected as ``duplicate_in_file`` naming the first row.
    """
    try:
        records = _records_from_json(text) if format == "json" else _records_from_csv(text)
    except _Refused as exc:
        return ParseResult(0, (), (Rejection(0, None, exc.reason, exc.field, exc.message),))
    except (csv.Error, UnicodeError) as exc:
        return ParseResult(0, (), (Rejection(0, None, Reason.FILE, None, f"unreadable: {exc}"),))
    if len(records) > MAX_ROWS:
        message = f"{len(records)} rows; import at most {MAX_ROWS} per file"
        return ParseResult(len(records), (), (Rejection(0, None, Reason.FILE, None, message),))
    accepted: list[ParsedRow] = []
    rejected: list[Rejection] = []
    seen: dict[tuple[str, str], int] = {}
    rows = 0
    for index, record in enumerate(records, start=1):
        if record.get("\x00blank"):
            continue
        rows += 1
        if "\x00error" in record:
            rejected.append(Rejection(index, None, Reason.MALFORMED, None, record["\x00error"]))
            continue
        try:
            parsed = _parse_record(index, record, now, batch)
        except _Refused as exc:
            endpoint = record.get("endpoint")
            shown = endpoint.strip() if isinstance(endpoint, str) and endpoint.strip() else None
            rejected.append(Rejection(index, shown, exc.reason, exc.field, exc.message))
            continue
        identity = parsed.identity
        values = {
            "endpoint": identity.endpoint,
            "serial": identity.serial,
            "imei": identity.imei,
            "eid": identity.eid,
            "psk_identity": identity.credential.psk_identity,
        }
        clash = next(
            ((k, seen[(k, v)]) for k, v in values.items() if v is not None and (k, v) in seen),
            None,
        )
        if clash is not None:
            rejected.append(
                Rejection(
                    index,
                    identity.endpoint,
                    Reason.DUPLICATE_IN_FILE,
                    clash[0],
                    f"{clash[0]} {values[clash[0]]!r} already appears in row {clash[1]}",
                )
            )
            continue
        for key, value in values.items():
            if value is not None:
                seen[(key, value)] = index
        accepted.append(parsed)
    return ParseResult(rows, tuple(accepted), tuple(rejected))


def batch_id(digest: str, now: float) -> str:
    """``imp-<unix seconds>-<first 8 hex of the file's SHA-256>``: sortable, and the same file
    imported twice is recognisable."""
    return f"imp-{int(now)}-{digest[:8]}"


def file_digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def existing_rejections(
    parsed: Sequence[ParsedRow], clashes: Mapping[str, tuple[str, str]]
) -> list[Rejection]:
    """Turn the repository's conflicts into ``duplicate_existing`` rejections."""
    out: list[Rejection] = []
    for item in parsed:
        clash = clashes.get(item.identity.endpoint)
        if clash is not None:
            field_name, other = clash
            message = (
                f"endpoint {other!r} is already imported"
                if field_name == "endpoint"
                else f"{field_name} already belongs to identity {other!r}"
            )
            out.append(
                Rejection(
                    item.row, item.identity.endpoint, Reason.DUPLICATE_EXISTING, field_name, message
                )
            )
    return out


def certificate_rejections(
    parsed: Sequence[ParsedRow], ca: CertificateAuthority | None
) -> list[Rejection]:
    """x509 rows: a CA is needed to issue a certificate or to check a given one."""
    out: list[Rejection] = []
    for item in parsed:
        if item.identity.security_mode is not SecurityMode.X509:
            continue
        if ca is None:
            out.append(
                Rejection(
                    item.row,
                    item.identity.endpoint,
                    Reason.NO_CA,
                    "security_mode",
                    "x509 identities need fleetloop's CA (none is configured)",
                )
            )
            continue
        if item.certificate is not None:
            try:
                ca.verify(item.certificate)
            except CaError as exc:
                out.append(
                    Rejection(
                        item.row,
                        item.identity.endpoint,
                        Reason.BAD_CERTIFICATE,
                        "certificate",
                        str(exc),
                    )
                )
    return out


def with_issued_certificate(item: ParsedRow, issued: IssuedCertificate) -> ParsedRow:
    """The row with the fingerprint and serial of the certificate just issued for it."""
    credential = BootstrapCredential.x509(issued.fingerprint, issued.serial)
    return replace(item, identity=replace(item.identity, credential=credential))


def write_issued_keys(
    issued: Mapping[str, IssuedCertificate], key_dir: Path | str
) -> dict[str, tuple[str, str]]:
    """Write each issued certificate and its key (0600) as ``<endpoint>.crt.pem/.key.pem``."""
    paths: dict[str, tuple[str, str]] = {}
    for endpoint, cert in issued.items():
        stem = endpoint.replace(":", "_").replace("/", "_")
        cert_path, key_path = write_issued(cert, key_dir, stem)
        paths[endpoint] = (str(cert_path), str(key_path))
    return paths


def failure(report: ImportReport) -> ImportFailed:
    first = report.rejected[0]
    where = f"row {first.row}" if first.row else "the file"
    return ImportFailed(
        f"{report.source}: {len(report.rejected)} of {report.rows} rows rejected (first: {where}: "
        f"{first.message}); nothing was imported -- fix the rows, or import with "
        "allow_partial to import the other rows",
        report,
    )


__all__ = [
    "COLUMNS",
    "INVENTORY_COLUMNS",
    "ImportReport",
    "ParseResult",
    "ParsedRow",
    "Reason",
    "Rejection",
    "batch_id",
    "certificate_rejections",
    "detect_format",
    "existing_rejections",
    "failure",
    "file_digest",
    "parse_identities",
    "with_issued_certificate",
    "write_issued_keys",
]

"""JSON views of the server's records: registrations, security, observations, queue, events.

Separate from :mod:`lifecycle.api.render` (values and nodes) because these depend on the server's
and the store's types; both are pure. Shapes are documented in ``docs/API.md``. Secrets never
leave through here: a PSK is shown by its length and a short SHA-256 fingerprint, which is
enough to check which key is configured without revealing any of its bits.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from lifecycle.api.render import (
    JsonObject,
    enum_label,
    nodes_to_json,
    path_name,
    resource_name,
    timestamp_fields,
    value_fields,
)
from lifecycle.jsonview import iso8601, shown_address
from lwm2m.codec import ContentFormat
from lwm2m.codec.errors import CodecError
from lwm2m.codec.link import Link, parse_registration
from lwm2m.model import ObjectModel, Path
from lwm2m.server import (
    Deregistered,
    Expired,
    Notification,
    ObservationEnded,
    ObservationInfo,
    QueueStateChanged,
    Registered,
    RegistrationRefused,
    Removed,
    SendReceived,
    ServerEvent,
    Updated,
)
from lwm2m.store import EndpointSecurity, QueuedRequest, Registration, ReportedValue
from lwm2m.store.secrets import key_fingerprint

FORMAT_NAMES: dict[str, int] = {
    f.name.lower().replace("_", "-"): int(f)
    for f in ContentFormat
    if f not in (ContentFormat.LEGACY_TLV, ContentFormat.LEGACY_JSON)
}


def format_name(content_format: int | None) -> str | None:
    """``"senml-json"`` for 110; the number as text for formats without a name."""
    if content_format is None:
        return None
    try:
        return ContentFormat(content_format).name.lower().replace("_", "-")
    except ValueError:
        return str(content_format)


def registration_json(reg: Registration) -> JsonObject:
    """A device's registration (``GET /v1/devices`` items)."""
    return {
        "endpoint": reg.endpoint,
        "registration_id": reg.id,
        "address": shown_address(reg.address.host, reg.address.port),
        "secure": reg.secure,
        "identity": {"kind": reg.identity.kind.value, "value": reg.identity.value or None},
        "lwm2m_version": reg.lwm2m_version,
        "binding": reg.binding,
        "queue_mode": reg.queue_mode,
        "lifetime": reg.lifetime,
        "sms_number": reg.sms_number,
        "root_path": reg.root_path,
        "supported_formats": [format_name(f) for f in reg.supported_formats],
        **timestamp_fields("registered_at", reg.registered_at),
        **timestamp_fields("updated_at", reg.updated_at),
        **timestamp_fields("expires_at", reg.expires_at),
        "last_seen": iso8601(reg.updated_at or reg.registered_at),
        "reachability": "sleeping" if reg.queue_mode else "online",
    }


def objects_json(reg: Registration, model: ObjectModel) -> list[JsonObject]:
    """The objects and instances the device listed when it registered, with model names."""
    try:
        parsed = parse_registration(reg.object_links)
    except CodecError:
        return []
    out: list[JsonObject] = []
    for object_id in parsed.objects:
        definition = model.get(object_id)
        out.append(
            {
                "id": object_id,
                "path": f"/{object_id}",
                "name": definition.name if definition is not None else None,
                "version": parsed.version_of(object_id),
                "instances": list(parsed.instances_of(object_id)),
            }
        )
    return out


def reported_value_json(value: ReportedValue, model: ObjectModel) -> JsonObject:
    """A reported value; an enumerated one carries its ``label`` ("normal") beside the number."""
    out: JsonObject = {
        "path": str(value.path),
        "name": resource_name(model, value.path),
        "type": value.value.type.value,
        **value_fields(value.value),
        **timestamp_fields("at", value.at),
        "source": value.source.value,
    }
    label = enum_label(value.path, out.get("value"))
    if label is not None:
        out["label"] = label
    return out


def last_values_json(values: Mapping[Path, ReportedValue], model: ObjectModel) -> list[JsonObject]:
    return [reported_value_json(values[p], model) for p in sorted(values)]


def security_json(security: EndpointSecurity, store: Any) -> JsonObject:
    """An endpoint's credentials with the key withheld (module docstring): the key shows as
    its length and its keyed fingerprint (``lwm2m.store.secrets.key_fingerprint``, HMAC under
    the server's secrets key) -- a plain SHA-256 prefix of a short key is reversed by trying
    keys (issue 14)."""
    psk = security.psk
    x509 = security.x509
    modes = [m for m, on in (("psk", psk), ("x509", x509), ("nosec", security.allow_nosec)) if on]
    return {
        "endpoint": security.endpoint,
        "modes": modes,
        "psk_identity": psk.identity if psk else None,
        "psk_key_length": len(psk.key) if psk else None,
        "psk_key_fingerprint": key_fingerprint(store, psk.key) if psk else None,
        "x509_subject": x509.subject if x509 else None,
        "x509_fingerprint_sha256": x509.fingerprint_sha256 if x509 else None,
        "allow_nosec": security.allow_nosec,
        **timestamp_fields("updated_at", security.updated_at),
    }


def observation_json(info: ObservationInfo, model: ObjectModel) -> JsonObject:
    return {
        "observation_id": info.observation_id,
        "endpoint": info.endpoint,
        "paths": [str(p) for p in info.paths],
        "names": [path_name(model, p) for p in info.paths],
        "composite": info.composite,
        "content_format": format_name(info.content_format),
        "notifications": info.notifications,
        **timestamp_fields("created_at", info.created_at),
    }


def queued_request_json(request: QueuedRequest) -> JsonObject:
    return {
        "id": request.id,
        "endpoint": request.endpoint,
        "operation": request.operation,
        "paths": [str(p) for p in request.paths],
        "state": request.state.value,
        "content_format": format_name(request.content_format),
        "correlation": request.correlation,
        "response_code": request.response_code,
        **timestamp_fields("created_at", request.created_at),
        **timestamp_fields("deadline", request.deadline),
        **timestamp_fields("sent_at", request.sent_at),
        **timestamp_fields("finished_at", request.finished_at),
    }


def link_json(link: Link, model: ObjectModel) -> JsonObject:
    """A Discover link: its path, the model's name for it, and its attributes as given."""
    path = link.path
    return {
        "path": str(path) if path is not None else link.target,
        "name": path_name(model, path) if path is not None else None,
        "attributes": {name: value for name, value in link.params},
    }


EVENT_TYPES: dict[type[Any], str] = {
    Registered: "registered",
    Updated: "updated",
    Deregistered: "deregistered",
    Expired: "expired",
    Removed: "removed",
    RegistrationRefused: "registration_refused",
    Notification: "notification",
    SendReceived: "send",
    QueueStateChanged: "queue_state",
    ObservationEnded: "observation_ended",
}


def event_type(event: ServerEvent) -> str:
    return EVENT_TYPES[type(event)]


def event_json(event: ServerEvent, model: ObjectModel) -> JsonObject:
    """One server event for the ``/events`` stream (``type`` is also the SSE event name)."""
    out: JsonObject = {"type": event_type(event), "endpoint": event.endpoint}
    if isinstance(event, Registered):
        out["device"] = registration_json(event.registration)
        out["replaced"] = event.replaced is not None
    elif isinstance(event, Updated):
        out["device"] = registration_json(event.registration)
    elif isinstance(event, Deregistered | Expired | Removed):
        out["registration_id"] = event.registration.id
        if isinstance(event, Removed):
            out["actor"] = event.actor
    elif isinstance(event, RegistrationRefused):
        out.update(
            reason=event.reason, identity=event.identity, code=event.code, address=event.address
        )
    elif isinstance(event, Notification):
        out["observation_id"] = event.observation_id
        out["paths"] = [str(p) for p in event.paths]
        out["content"] = nodes_to_json(event.content, model)
        out.update(timestamp_fields("timestamp", event.timestamp))
    elif isinstance(event, SendReceived):
        out["content"] = nodes_to_json(event.content, model)
        out["timestamps"] = [
            {
                **timestamp_fields("timestamp", group.timestamp),
                "content": nodes_to_json(group.nodes, model),
            }
            for group in event.timestamps
        ]
    elif isinstance(event, QueueStateChanged):
        out.update(
            request_id=event.request_id,
            operation=event.operation,
            state=event.state.value,
            code=event.code,
        )
    elif isinstance(event, ObservationEnded):
        out.update(observation_id=event.observation_id, reason=event.reason)
    return out

"""Per-endpoint security: which DTLS credentials an endpoint must present, or a NoSec grant.

``PUT /v1/security/{endpoint}`` replaces the endpoint's record as a whole -- what the request
says is exactly what is configured afterwards, which is the least surprising rule for
credentials. Keys go in as hex and never come out: responses show a PSK's length and the
keyed fingerprint (:func:`lifecycle.api.views.security_json`).

A certificate is given as PEM; its subject (RFC 4514) and SHA-256 fingerprint are stored, so
the device must present that exact certificate (pinning) or one with that subject.
"""

from __future__ import annotations

import hashlib
import time
from typing import Annotated, Any

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from fastapi import APIRouter, Depends, Query
from pydantic import BaseModel, ConfigDict, Field, StrictBool

from lifecycle.api.audit_routes import audit_change
from lifecycle.api.auth import Role, context_of, needs
from lifecycle.api.context import ApiContext
from lifecycle.api.errors import ApiError
from lifecycle.api.models import SecurityChange, SecurityOut, SecurityPage
from lifecycle.api.parse import InputError
from lifecycle.api.render import JsonObject
from lifecycle.api.scope import Scoped
from lifecycle.api.selection import filtered_page, selected
from lifecycle.api.views import security_json
from lwm2m.store import EndpointSecurity, PskCredential, X509Credential
from lwm2m.store.secrets import MIN_PSK_BYTES, key_fingerprint

router = APIRouter()
Context = Annotated[ApiContext, Depends(context_of)]

MAX_PSK_BYTES = 64


class SecurityBody(BaseModel):
    """The endpoint's credentials; give a PSK, a certificate, a NoSec grant, or a mix."""

    model_config = ConfigDict(extra="forbid")
    psk_identity: str | None = Field(default=None, min_length=1, max_length=256)
    psk_key: str | None = Field(
        default=None,
        description="the pre-shared key as hex",
        examples=["000102030405060708090a0b0c0d0e0f"],
    )
    certificate: str | None = Field(
        default=None,
        description="the device's certificate, PEM; its subject and SHA-256 are pinned",
    )
    x509_subject: str | None = Field(
        default=None, description="certificate subject (RFC 4514) if no certificate is given"
    )
    x509_fingerprint: str | None = Field(
        default=None, description="SHA-256 of the device certificate (DER), 64 hex digits"
    )
    # Strict: JSON true/false only -- 0, 1 and "yes" were taken as booleans (issue 14 item 9).
    allow_nosec: StrictBool = Field(
        default=False, description="allow this endpoint to register over plain CoAP"
    )


def _psk(body: SecurityBody) -> PskCredential | None:
    if body.psk_identity is None and body.psk_key is None:
        return None
    if body.psk_identity is None:
        raise InputError("body.psk_identity", "a PSK key needs its identity (psk_identity)")
    if body.psk_key is None:
        raise InputError("body.psk_key", "a PSK identity needs its key (psk_key, hex)")
    text = body.psk_key.strip().replace(":", "")
    try:
        key = bytes.fromhex(text)
    except ValueError:
        raise InputError(
            "body.psk_key", "the key must be hex, two digits per byte (e.g. 0011aabb...)"
        ) from None
    if not MIN_PSK_BYTES <= len(key) <= MAX_PSK_BYTES:
        raise InputError(
            "body.psk_key",
            f"the key is {len(key)} bytes; it must be {MIN_PSK_BYTES}..{MAX_PSK_BYTES} bytes "
            f"({2 * MIN_PSK_BYTES} hex digits at least: a shorter key is guessed offline from "
            "one recorded handshake)",
        )
    return PskCredential(body.psk_identity, key)


def _x509(body: SecurityBody) -> X509Credential | None:
    subject = body.x509_subject
    fingerprint = body.x509_fingerprint
    if body.certificate is not None:
        try:
            cert = x509.load_pem_x509_certificate(body.certificate.encode("utf-8"))
        except (ValueError, UnicodeEncodeError):
            raise InputError(
                "body.certificate",
                "not a PEM certificate (-----BEGIN CERTIFICATE----- ...); convert DER with "
                "`openssl x509 -inform der -in cert.der`",
            ) from None
        cert_subject = cert.subject.rfc4514_string()
        cert_fingerprint = hashlib.sha256(cert.public_bytes(Encoding.DER)).hexdigest()
        if subject is not None and subject != cert_subject:
            raise InputError(
                "body.x509_subject", f"does not match the certificate's subject {cert_subject!r}"
            )
        if fingerprint is not None and fingerprint.replace(":", "").lower() != cert_fingerprint:
            raise InputError("body.x509_fingerprint", "does not match the certificate's SHA-256")
        subject, fingerprint = cert_subject, cert_fingerprint
    if subject is None and fingerprint is None:
        return None
    if subject is None:
        raise InputError(
            "body.x509_subject", "a fingerprint needs the certificate subject (or the certificate)"
        )
    if not subject.strip():
        raise InputError("body.x509_subject", "must not be empty")
    return X509Credential(subject, fingerprint)


@router.get(
    "/security",
    response_model=SecurityPage,
    response_model_exclude_unset=True,
    tags=["security"],
    summary="List endpoint security records",
)
async def list_security(
    ctx: Context,
    scope: Scoped,
    after: Annotated[str | None, Query(description="older name of cursor")] = None,
    cursor: Annotated[str | None, Query(description="next_cursor of the previous page")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 1000,
    select: Annotated[
        str | None, Query(description="only devices the selector names (docs/GROUPS.md)")
    ] = None,
) -> JsonObject:
    """Security records in endpoint order; ``next_cursor`` pages on (keys are never shown).
    ``select`` keeps the records of the devices an inventory selector names."""
    after = after if after is not None else cursor
    chosen = await selected(ctx, scope, select)

    async def fetch(start: str | None, size: int) -> Any:
        return await ctx.store.read(
            lambda tx: ctx.store.security.list_page(tx, after=start, limit=size)
        )

    page = await filtered_page(
        fetch,
        lambda s: chosen is None or s.endpoint in chosen,
        lambda s: s.endpoint,
        after=after,
        limit=limit,
    )
    items = await scope.filter(page.items, lambda s: s.endpoint)
    return {
        "items": [security_json(s, ctx.store) for s in items],
        "next_after": page.next_after,
        "next_cursor": page.next_after,
    }


@router.get(
    "/security/{endpoint}",
    response_model=SecurityOut,
    response_model_exclude_unset=True,
    tags=["security"],
    summary="Show an endpoint's security",
)
async def get_security(ctx: Context, scope: Scoped, endpoint: str) -> JsonObject:
    await scope.endpoint(endpoint, missing=_no_record)
    found = await ctx.store.read(lambda tx: ctx.store.security.get(tx, endpoint))
    if found is None:
        raise _no_record(endpoint)
    return security_json(found, ctx.store)


@router.put(
    "/security/{endpoint}",
    response_model=SecurityChange,
    response_model_exclude_unset=True,
    tags=["security"],
    summary="Set an endpoint's security",
    openapi_extra=needs(Role.ADMIN),
)
async def set_security(
    ctx: Context, scope: Scoped, endpoint: str, body: SecurityBody
) -> JsonObject:
    """Replace the endpoint's credentials. A device already registered keeps its registration
    until it registers again; the new credentials apply from its next DTLS handshake."""
    if not endpoint.strip():
        raise InputError("endpoint", "the endpoint name must not be empty")
    await scope.endpoint(endpoint, missing=_not_in_tenants)
    psk = _psk(body)
    cert = _x509(body)
    if psk is None and cert is None and not body.allow_nosec:
        raise InputError(
            "body",
            "give psk_identity + psk_key, a certificate, or allow_nosec: true (to remove the "
            "record use DELETE /v1/security/{endpoint})",
        )
    record = EndpointSecurity(endpoint, psk=psk, x509=cert, allow_nosec=body.allow_nosec)
    now = time.time()
    try:
        audited = await audit_change(
            ctx, scope, "security.set", endpoint, _audit_detail(ctx, record)
        )
        previous = await ctx.store.write(
            lambda tx: (ctx.store.security.set(tx, record, now), audited(tx))[0]
        )
    except ValueError as err:  # the store's own fingerprint check
        raise InputError("body.x509_fingerprint", str(err)) from err
    stored = await ctx.store.read(lambda tx: ctx.store.security.get(tx, endpoint))
    assert stored is not None
    return {**security_json(stored, ctx.store), "replaced": previous is not None}


@router.delete(
    "/security/{endpoint}",
    response_model=SecurityChange,
    response_model_exclude_unset=True,
    tags=["security"],
    summary="Remove an endpoint's security",
    openapi_extra=needs(Role.ADMIN),
)
async def remove_security(ctx: Context, scope: Scoped, endpoint: str) -> JsonObject:
    """Delete the record: the endpoint then registers as the server's default allows."""
    await scope.endpoint(endpoint, missing=_no_record)
    found = await ctx.store.read(lambda tx: ctx.store.security.get(tx, endpoint))
    if found is None:
        raise _no_record(endpoint)
    audited = await audit_change(ctx, scope, "security.delete", endpoint, _audit_detail(ctx, found))
    removed = await ctx.store.write(
        lambda tx: (ctx.store.security.remove(tx, endpoint), audited(tx))[0]
    )
    return {**security_json(removed, ctx.store), "removed": True}


def _audit_detail(ctx: ApiContext, record: EndpointSecurity) -> dict[str, Any]:
    """What the audit may say about credentials: identities and a key fingerprint, no key."""
    psk, cert = record.psk, record.x509
    return {
        "psk_identity": psk.identity if psk is not None else None,
        "psk_key_fingerprint": key_fingerprint(ctx.store, psk.key) if psk is not None else None,
        "x509_subject": cert.subject if cert is not None else None,
        "x509_fingerprint": cert.fingerprint_sha256 if cert is not None else None,
        "allow_nosec": record.allow_nosec,
    }


def _no_record(endpoint: str) -> ApiError:
    return ApiError(
        404,
        "not_found",
        f"endpoint {endpoint!r} has no security record; set one with PUT /v1/security/{endpoint} "
        "(`fleetloop security set`)",
        endpoint=endpoint,
    )


def _not_in_tenants(endpoint: str) -> ApiError:
    """A tenant-scoped token setting credentials for a device that is not one of its tenants'
    -- unknown or another tenant's, the answer is the same."""
    return ApiError(
        404,
        "unknown_endpoint",
        f"device {endpoint!r} is not a device of this token's tenants; import its factory "
        "identity with a tenant first (`fleetloop identities import`), or use an all-tenant "
        "token",
        endpoint=endpoint,
    )

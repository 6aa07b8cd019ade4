"""The firmware repository over HTTP: ``/v1/firmware/...``.

* ``POST /v1/firmware/keys`` (admin) trusts a vendor's P-256 public key; ``GET`` lists them.
* ``POST /v1/firmware/images?version=&skus=&signature=`` uploads an image as the raw request
  body (``curl --data-binary @fw.bin``), signed by a trusted vendor key (the DER signature of
  its SHA-256 in hex or base64). The answer (201) comes once the image is committed.
* ``GET /v1/firmware/images[?version=&sku=]``, ``GET /v1/firmware/images/{image}`` (with the
  pull URIs of fleetloop's own ``/fw`` endpoint and download progress).
* ``POST|DELETE /v1/firmware/images/{image}/quarantine``: quarantine (with a reason) or lift.
* ``GET /v1/firmware/progress[?image=&endpoint=]``: blocks served per device and image.

Errors are the repository's typed errors (:class:`~lifecycle.artifacts.firmware.FirmwareError`)
with the image and the fix in the message: 422 invalid, 404 unknown, 409 conflict/quarantined.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, ConfigDict, Field

from lifecycle.api.auth import Role, context_of, needs
from lifecycle.api.errors import ApiError
from lifecycle.api.render import JsonObject, timestamp_fields
from lifecycle.api.scope import Scoped
from lifecycle.artifacts.firmware import (
    MAX_IMAGE_SIZE,
    FirmwareError,
    FirmwareImage,
    FirmwareRepository,
    VendorKey,
    parse_signature,
)
from lifecycle.artifacts.firmware_serving import DownloadProgress, FirmwareServing

router = APIRouter()
ADMIN = needs(Role.ADMIN)
TAGS = [
    {
        "name": "firmware",
        "description": "The firmware repository: signed images, vendor keys, quarantine, "
        "download progress (docs/FIRMWARE.md).",
    }
]


def _serving(request: Request) -> FirmwareServing | None:
    found = getattr(request.app.state, "firmware", None)
    return found if isinstance(found, FirmwareServing) else None


def _repo(request: Request) -> FirmwareRepository:
    serving = _serving(request)
    if serving is not None:
        return serving.repository
    return FirmwareRepository(context_of(request).store.audit)


@contextmanager
def _errors() -> Iterator[None]:
    try:
        yield
    except FirmwareError as err:
        code = {404: "not_found", 409: "conflict"}.get(err.status, "invalid_input")
        raise ApiError(err.status, code, str(err), image=err.image, fix=err.fix) from None


# -- models ------------------------------------------------------------------------------------


class QuarantineOut(BaseModel):
    by: str
    reason: str
    at: str
    at_epoch: float


class FirmwareImageOut(BaseModel):
    model_config = ConfigDict(extra="forbid")
    id: str = Field(description="the first 16 hex digits of sha256; the serving path /fw/<id>")
    sha256: str
    version: str
    skus: list[str] = Field(description="compatible SKUs; empty: any device")
    size: int
    signature: str = Field(description="DER ECDSA signature of the SHA-256, hex")
    signer: str = Field(description="the trusted vendor key that verified the signature")
    description: str
    published_by: str
    published_at: str | None
    published_at_epoch: float | None
    quarantined: bool
    quarantine: QuarantineOut | None = None
    uris: dict[str, str] | None = Field(
        default=None, description="pull URIs of the image on fleetloop's own CoAP/CoAPs sockets"
    )
    downloads: int | None = Field(default=None, description="devices that started downloading")
    downloaded: int | None = Field(default=None, description="devices that got every block")


class FirmwareImageList(BaseModel):
    items: list[FirmwareImageOut]


class VendorKeyOut(BaseModel):
    name: str
    public_key: str
    fingerprint: str
    added_by: str
    added_at: str | None
    added_at_epoch: float | None


class VendorKeyList(BaseModel):
    items: list[VendorKeyOut]


class VendorKeyBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(description="a name for the key", examples=["acme-2026"])
    public_key: str = Field(description="ECDSA P-256 public key, PEM")


class QuarantineBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    reason: str = Field(description="why the image must not be used", examples=["boot loops"])


class DownloadProgressOut(BaseModel):
    who: str = Field(description="the device's endpoint, or its address when not registered")
    image: str
    size: int
    blocks: int
    bytes: int
    last_block: int
    percent: float
    done: bool
    started_at_epoch: float
    updated_at_epoch: float


class DownloadProgressList(BaseModel):
    items: list[DownloadProgressOut]


# -- rendering ---------------------------------------------------------------------------------


def image_json(image: FirmwareImage, serving: FirmwareServing | None = None) -> JsonObject:
    doc: dict[str, Any] = image.as_dict()
    doc.update(timestamp_fields("published_at", doc.pop("published_at")))
    q = doc.pop("quarantine", None)
    if q is not None:
        doc["quarantine"] = {
            "by": q["by"],
            "reason": q["reason"],
            **timestamp_fields("at", q["at"]),
        }
    if serving is not None:
        doc["uris"] = {scheme: image.uri(base) for scheme, base in serving.base_uris.items()}
        progress = serving.progress(image=image.id)
        doc["downloads"] = len(progress)
        doc["downloaded"] = sum(1 for p in progress if p.done)
    return doc


def key_json(key: VendorKey) -> JsonObject:
    doc: dict[str, Any] = {
        "name": key.name,
        "public_key": key.public_key,
        "fingerprint": key.fingerprint,
        "added_by": key.added_by,
    }
    doc.update(timestamp_fields("added_at", key.added_at))
    return doc


def progress_json(p: DownloadProgress) -> JsonObject:
    return {
        "who": p.who,
        "image": p.image,
        "size": p.size,
        "blocks": p.blocks,
        "bytes": p.bytes,
        "last_block": p.last_block,
        "percent": round(p.percent, 1),
        "done": p.done,
        "started_at_epoch": p.started_at,
        "updated_at_epoch": p.updated_at,
    }


# -- routes ------------------------------------------------------------------------------------


@router.post(
    "/firmware/keys",
    response_model=VendorKeyOut,
    tags=["firmware"],
    summary="Trust a vendor signing key",
    status_code=201,
    openapi_extra=ADMIN,
)
async def add_firmware_key(request: Request, scope: Scoped, body: VendorKeyBody) -> JsonObject:
    """Uploads must be signed by one of the trusted keys; a name is never reused for
    another key."""
    repo, store = _repo(request), context_of(request).store
    actor = scope.principal.actor
    with _errors():
        key = await store.write(
            lambda tx: repo.add_vendor_key(
                tx, body.name, body.public_key, actor=actor, now=time.time()
            )
        )
    return key_json(key)


@router.get(
    "/firmware/keys",
    response_model=VendorKeyList,
    tags=["firmware"],
    summary="List the trusted vendor keys",
)
async def list_firmware_keys(request: Request, scope: Scoped) -> JsonObject:
    repo, store = _repo(request), context_of(request).store
    keys = await store.read(repo.vendor_keys)
    return {"items": [key_json(k) for k in keys]}


_UPLOAD_BODY = {
    "requestBody": {
        "required": True,
        "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
    }
}


@router.post(
    "/firmware/images",
    response_model=FirmwareImageOut,
    response_model_exclude_unset=True,
    tags=["firmware"],
    summary="Upload a signed firmware image",
    status_code=201,
    openapi_extra=_UPLOAD_BODY,
)
async def upload_firmware(
    request: Request,
    scope: Scoped,
    version: Annotated[str, Query(description="semantic version", max_length=64)],
    signature: Annotated[
        str, Query(description="DER ECDSA P-256 signature of the SHA-256, hex or base64")
    ],
    skus: Annotated[str, Query(description="compatible SKUs, comma-separated")] = "",
    description: Annotated[str, Query(max_length=1000)] = "",
) -> JsonObject:
    """The image is the raw body. It is checked (signature against the trusted vendor keys,
    version, size) before anything is written, and committed before the answer: an
    acknowledged upload survives a crash. The same bytes again answer the same image."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > MAX_IMAGE_SIZE:
        raise ApiError(
            422, "invalid_input", f"body: an image is at most {MAX_IMAGE_SIZE} bytes", field="body"
        )
    content = bytearray()
    async for chunk in request.stream():
        content += chunk
        if len(content) > MAX_IMAGE_SIZE:
            raise ApiError(
                422,
                "invalid_input",
                f"body: an image is at most {MAX_IMAGE_SIZE} bytes",
                field="body",
            )
    data = bytes(content)
    repo, store = _repo(request), context_of(request).store
    actor = scope.principal.actor
    with _errors():
        signed = parse_signature(signature)
        image = await store.write(
            lambda tx: repo.publish(
                tx,
                data,
                version=version,
                signature=signed,
                skus=skus.split(","),
                description=description,
                actor=actor,
                now=time.time(),
            )
        )
    serving = _serving(request)
    if serving is not None:
        serving.preload(image, data)
    return image_json(image, serving)


@router.get(
    "/firmware/images",
    response_model=FirmwareImageList,
    response_model_exclude_unset=True,
    tags=["firmware"],
    summary="List firmware images",
)
async def list_firmware(
    request: Request,
    scope: Scoped,
    version: Annotated[str | None, Query(max_length=64)] = None,
    sku: Annotated[str | None, Query(max_length=64)] = None,
) -> JsonObject:
    """Newest version first; quarantined images included (``quarantined``)."""
    repo, store = _repo(request), context_of(request).store
    images = await store.read(lambda tx: repo.images(tx, version=version, sku=sku))
    serving = _serving(request)
    return {"items": [image_json(i, serving) for i in images]}


async def _image(request: Request, image: str) -> FirmwareImage:
    repo, store = _repo(request), context_of(request).store
    found = await store.read(lambda tx: repo.image(tx, image[:64]))
    if found is None:
        raise ApiError(
            404,
            "not_found",
            f"firmware {image[:64]}: no such image; list them with GET /v1/firmware/images",
            image=image[:64],
        )
    return found


@router.get(
    "/firmware/images/{image}",
    response_model=FirmwareImageOut,
    response_model_exclude_unset=True,
    tags=["firmware"],
    summary="Show a firmware image",
)
async def show_firmware(request: Request, scope: Scoped, image: str) -> JsonObject:
    """By id (16 hex digits) or full SHA-256; with pull URIs and download counts."""
    return image_json(await _image(request, image), _serving(request))


@router.post(
    "/firmware/images/{image}/quarantine",
    response_model=FirmwareImageOut,
    response_model_exclude_unset=True,
    tags=["firmware"],
    summary="Quarantine a firmware image",
)
async def quarantine_firmware(
    request: Request, scope: Scoped, image: str, body: QuarantineBody
) -> JsonObject:
    """No new download and no new campaign may use it from now on (downloads under way may
    finish), and every campaign delivering it halts; who, why and when are recorded and
    audited."""
    repo, store = _repo(request), context_of(request).store
    actor = scope.principal.actor
    ref = (await _image(request, image)).id
    with _errors():
        marked = await store.write(
            lambda tx: repo.quarantine(tx, ref, reason=body.reason, actor=actor, now=time.time())
        )
    serving = _serving(request)
    if serving is not None:
        serving.refresh(marked)
    await _halt_campaigns(request, marked.id, body.reason, actor, scope.principal.token_id)
    return image_json(marked, serving)


async def _halt_campaigns(
    request: Request, image_id: str, reason: str, actor: str, token_id: str | None
) -> None:
    """Campaigns name a firmware image by its id: quarantining it here halts every campaign
    that delivers it too, as ``POST /v1/artifacts/quarantine`` does (when the campaign engine
    runs in this server)."""
    engine = getattr(context_of(request), "campaigns", None) or getattr(
        request.app.state, "campaigns", None
    )
    quarantine = getattr(engine, "quarantine", None)
    if quarantine is None:
        return
    await quarantine(image_id, actor=actor, reason=reason, token_id=token_id)


@router.delete(
    "/firmware/images/{image}/quarantine",
    response_model=FirmwareImageOut,
    response_model_exclude_unset=True,
    tags=["firmware"],
    summary="Lift a firmware image's quarantine",
)
async def unquarantine_firmware(request: Request, scope: Scoped, image: str) -> JsonObject:
    repo, store = _repo(request), context_of(request).store
    actor = scope.principal.actor
    ref = (await _image(request, image)).id
    with _errors():
        lifted = await store.write(
            lambda tx: repo.unquarantine(tx, ref, actor=actor, now=time.time())
        )
    serving = _serving(request)
    if serving is not None:
        serving.refresh(lifted)
    # one quarantine: campaigns may use the image again (and those it halted may resume)
    engine = getattr(context_of(request), "campaigns", None) or getattr(
        request.app.state, "campaigns", None
    )
    unquarantine = getattr(engine, "unquarantine", None)
    if unquarantine is not None:
        await unquarantine(lifted.id, actor=actor, token_id=scope.principal.token_id)
    return image_json(lifted, serving)


@router.get(
    "/firmware/progress",
    response_model=DownloadProgressList,
    tags=["firmware"],
    summary="Firmware download progress per device",
)
async def list_firmware_progress(
    request: Request,
    scope: Scoped,
    image: Annotated[str | None, Query(max_length=64)] = None,
    endpoint: Annotated[str | None, Query(max_length=256)] = None,
) -> JsonObject:
    """Blocks and bytes served by fleetloop's ``/fw`` endpoint per device and image (in
    memory: since this server started)."""
    serving = _serving(request)
    if serving is None:
        return {"items": []}
    found = serving.progress(image=image[:16] if image else None, who=endpoint)
    allowed = await scope.filter(found, lambda p: p.who)  # a tenant sees its own devices
    return {"items": [progress_json(p) for p in allowed]}


__all__ = ["TAGS", "image_json", "router"]

"""``fleetloop firmware``: the firmware repository (docs/FIRMWARE.md).

Through the management API (``/v1/firmware/...``)::

    fleetloop firmware key add acme acme-public.pem          # admin: trust a vendor key
    fleetloop firmware sign fw-2.4.1.bin --key acme.pem      # vendor side: hex signature
    fleetloop firmware upload fw-2.4.1.bin --version 2.4.1 --signature-file fw.sig --sku t1
    fleetloop firmware list | show ID | progress --image ID
    fleetloop firmware quarantine ID --reason "boot loops on t1"   (unquarantine ID)

Exit codes as the rest of the CLI: 1 the request failed (the message names the image and the
fix), 2 a usage mistake, 3 no server reached.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import quote

import click

from cli.client import ApiClient, CliFailure, Response, _body, failure_message
from cli.commands import api, json_option
from cli.output import print_json, table, widen


@click.group()
def firmware() -> None:
    """Firmware images: signed uploads, quarantine, download progress."""


def _read(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as err:
        raise click.UsageError(f"cannot read the {what} {path}: {err.strerror or err}") from None


def _upload(client: ApiClient, data: bytes, params: dict[str, Any]) -> Any:
    """POST the raw image (the JSON client sends only JSON bodies)."""
    headers = {"Content-Type": "application/octet-stream"}
    sock, answer = client._open(
        "POST", "/firmware/images", params, data, headers, max(client.timeout, 120.0)
    )
    try:
        response = Response(answer.status, answer.reason, answer.body())
    except OSError as err:
        raise CliFailure(
            f"the upload's answer broke off: {err}; retry (it is idempotent)"
        ) from None
    finally:
        sock.close()
    if response.status_code >= 400:
        raise failure_message(response, client.target)
    return _body(response)


def _show(image: dict[str, Any]) -> None:
    state = "QUARANTINED" if image["quarantined"] else "published"
    click.echo(f"image {image['id']}  version {image['version']}  ({state})")
    click.echo(f"  sha256     {image['sha256']}")
    click.echo(f"  size       {image['size']} bytes")
    click.echo(f"  skus       {', '.join(image['skus']) or 'any'}")
    click.echo(f"  signer     {image['signer']}")
    click.echo(f"  published  {image['published_at']} by {image['published_by']}")
    if image.get("quarantine"):
        q = image["quarantine"]
        click.echo(f"  quarantine {q['at']} by {q['by']}: {q['reason']}")
    for scheme, uri in sorted((image.get("uris") or {}).items()):
        click.echo(f"  {scheme + ' uri':<10} {uri}")
    if image.get("downloads") is not None:
        click.echo(f"  downloads  {image['downloaded']} done of {image['downloads']} started")


@firmware.group("key")
def key() -> None:
    """Trusted vendor signing keys (ECDSA P-256)."""


@key.command("add")
@click.argument("name")
@click.argument("public_key", type=click.Path(path_type=Path, dir_okay=False))
@json_option
def key_add(name: str, public_key: Path, as_json: bool) -> None:
    """Trust the vendor public key in PUBLIC_KEY (PEM) as NAME (admin)."""
    pem = _read(public_key, "public key").decode("utf-8", "replace")
    with api() as client:
        added = client.request(
            "POST", "/firmware/keys", json_body={"name": name, "public_key": pem}
        )
    if as_json:
        print_json(added)
        return
    click.echo(f"trusted vendor key {added['name']} (fingerprint {added['fingerprint'][:16]}...)")


@key.command("list")
@json_option
def key_list(as_json: bool) -> None:
    """The trusted vendor keys."""
    with api() as client:
        found = client.request("GET", "/firmware/keys")
    if as_json:
        print_json(found)
        return
    items = found["items"]
    rows = [(k["name"], k["fingerprint"][:16], k["added_by"], k["added_at"]) for k in items]
    headers, rows = widen(
        ("NAME", "FINGERPRINT", "ADDED BY", "ADDED"),
        rows,
        items,
        [("FULL FINGERPRINT", lambda k: k["fingerprint"])],
    )
    click.echo(table(headers, rows))


@firmware.command("sign")
@click.argument("image", type=click.Path(path_type=Path, dir_okay=False))
@click.option(
    "--key",
    "key_file",
    type=click.Path(path_type=Path, dir_okay=False),
    required=True,
    help="the vendor's ECDSA P-256 private key (PEM)",
)
def sign(image: Path, key_file: Path) -> None:
    """Print the hex signature of IMAGE (ECDSA P-256 over its SHA-256) -- the vendor's step,
    done where the private key lives; no server is involved."""
    from lifecycle.artifacts.firmware import FirmwareError, sign_image

    try:
        signature = sign_image(_read(image, "image"), _read(key_file, "private key"))
    except (FirmwareError, ValueError, TypeError) as err:
        raise click.UsageError(f"cannot sign with {key_file}: {err}") from None
    click.echo(signature.hex())


@firmware.command("upload")
@click.argument("image", type=click.Path(path_type=Path, dir_okay=False))
@click.option("--version", "version", required=True, help="semantic version, e.g. 2.4.1")
@click.option("--signature", default=None, help="hex (or base64) DER signature")
@click.option(
    "--signature-file",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="a file holding the signature (hex, base64 or raw DER)",
)
@click.option("--sku", "skus", multiple=True, help="a compatible SKU (repeat); none: any")
@click.option("--description", default="", help="free text shown with the image")
@json_option
def upload(
    image: Path,
    version: str,
    signature: str | None,
    signature_file: Path | None,
    skus: tuple[str, ...],
    description: str,
    as_json: bool,
) -> None:
    """Upload IMAGE, signed by a trusted vendor key; prints the published image."""
    if (signature is None) == (signature_file is None):
        raise click.UsageError("give exactly one of --signature and --signature-file")
    if signature_file is not None:
        raw = _read(signature_file, "signature file")
        try:
            signature = raw.decode("ascii").strip()
        except UnicodeDecodeError:
            signature = raw.hex()  # raw DER
    data = _read(image, "image")
    params = {
        "version": version,
        "signature": signature,
        "skus": ",".join(skus),
        "description": description or None,
    }
    with api() as client:
        published = _upload(client, data, params)
    if as_json:
        print_json(published)
        return
    _show(published)


@firmware.command("list")
@click.option("--version", "version", default=None, help="only this version")
@click.option("--sku", default=None, help="only images a device of this SKU may take")
@json_option
def list_(version: str | None, sku: str | None, as_json: bool) -> None:
    """Images, newest version first."""
    with api() as client:
        found = client.request("GET", "/firmware/images", params={"version": version, "sku": sku})
    if as_json:
        print_json(found)
        return
    rows = [
        (
            i["id"],
            i["version"],
            ",".join(i["skus"]) or "*",
            i["size"],
            "quarantined" if i["quarantined"] else "ok",
            i["published_at"],
        )
        for i in found["items"]
    ]
    headers, rows = widen(
        ("ID", "VERSION", "SKUS", "SIZE", "STATE", "PUBLISHED"),
        rows,
        found["items"],
        [
            ("SHA-256", lambda i: i["sha256"]),
            ("SIGNER", lambda i: i["signer"]),
            ("BY", lambda i: i["published_by"]),
            ("QUARANTINE", lambda i: (i.get("quarantine") or {}).get("reason") or "-"),
            ("DESCRIPTION", lambda i: i["description"] or "-"),
        ],
    )
    click.echo(table(headers, rows))


@firmware.command("show")
@click.argument("image")
@json_option
def show(image: str, as_json: bool) -> None:
    """One image (by id or SHA-256), with its pull URIs and download counts."""
    with api() as client:
        found = client.request("GET", f"/firmware/images/{quote(image, safe='')}")
    if as_json:
        print_json(found)
        return
    _show(found)


@firmware.command("quarantine")
@click.argument("image")
@click.option("--reason", required=True, help="why no device may take it")
@json_option
def quarantine(image: str, reason: str, as_json: bool) -> None:
    """Quarantine IMAGE: no new download, no new campaign (downloads under way may finish)."""
    with api() as client:
        done = client.request(
            "POST",
            f"/firmware/images/{quote(image, safe='')}/quarantine",
            json_body={"reason": reason},
        )
    if as_json:
        print_json(done)
        return
    click.echo(f"quarantined {done['id']} ({done['version']}): {reason}")


@firmware.command("unquarantine")
@click.argument("image")
@json_option
def unquarantine(image: str, as_json: bool) -> None:
    """Lift IMAGE's quarantine."""
    with api() as client:
        done = client.request("DELETE", f"/firmware/images/{quote(image, safe='')}/quarantine")
    if as_json:
        print_json(done)
        return
    click.echo(f"{done['id']} ({done['version']}) may be used again")


@firmware.command("progress")
@click.option("--image", default=None, help="only this image id")
@click.option("--endpoint", default=None, help="only this device")
@json_option
def progress(image: str | None, endpoint: str | None, as_json: bool) -> None:
    """Blocks served per device and image by fleetloop's /fw endpoint."""
    with api() as client:
        found = client.request(
            "GET", "/firmware/progress", params={"image": image, "endpoint": endpoint}
        )
    if as_json:
        print_json(found)
        return
    rows = [
        (p["who"], p["image"], p["blocks"], p["bytes"], f"{p['percent']:.1f}%", p["done"])
        for p in found["items"]
    ]
    click.echo(table(("DEVICE", "IMAGE", "BLOCKS", "BYTES", "PROGRESS", "DONE"), rows))


__all__ = ["firmware"]

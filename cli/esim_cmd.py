"""The eIM: ``fleetloop esim ...`` (operator commands through the API) and, for ``fleetloop
serve``, the optional ESipa HTTPS listener (``--esipa-https``) with the esim dimension's
applier (:mod:`lifecycle.esim`).

Operator commands (``/v1/esim/...``; docs/ESIM.md)::

    fleetloop esim import EUICC.pem --eum EUM.pem [--endpoint EP] [--eid EID]
    fleetloop esim import --manifest euiccs.json      # [{"euicc_certificate": PEM, ...}, ...]
    fleetloop esim list | show EID|EP | results EID|EP | packages EID|EP
    fleetloop esim enable EID|EP ICCID [--no-rollback] | disable | delete EID|EP ICCID
    fleetloop esim list-profiles EID|EP
    fleetloop esim fallback EID|EP ICCID | --unset
    fleetloop esim download EID|EP '1$smdp.example.com$MATCHING-ID'
    fleetloop esim ipa-data EID|EP                     # IpaEuiccDataRequest
    fleetloop esim eims                                # the eIM identities of the deployment
    fleetloop esim eim add|update EID|EP... [--select SEL] [--bound-to EIMID] EIMID [--fqdn ..]
    fleetloop esim eim delete EID|EP... [--select SEL] EIMID | eim list EID|EP...

Exit codes as the rest of the CLI: 1 the request failed (the message names the eUICC and the
fix), 2 a usage mistake, 3 no server reached.

The eIM signing key lives in the data directory (``eim-key.pem``, P-256, 0600, made on first
start); ``--eim-ci`` names the PEM bundle of CI certificates eUICC chains must lead to (the GSMA
CI in production). TLS uses the deployment's certificate (``--x509-cert``/``--x509-key``);
without it the listener only starts on a loopback address. docs/SGP32.md, docs/CONFIG.md.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import logging
import os
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import click

from cli.client import EXIT_FAILED
from cli.commands import api, json_option
from cli.output import iso_time, print_json, table, widen

if TYPE_CHECKING:  # the serve side is imported when serve starts it: the CLI stays light
    from cryptography import x509
    from cryptography.hazmat.primitives.asymmetric import ec

    from cli.settings import ServeSettings
    from lifecycle.esim import EsimComponent
    from lifecycle.service import LifecycleService
    from lifecycle.state.component import StateComponent
    from lwm2m.server import LwM2MServer
    from lwm2m.store import Store
    from sgp32.eim.sql import EimStore
    from sgp32.esipa.https import EsipaHttpsServer
    from sgp32.signing import EimIdentity

log = logging.getLogger("fleetloop.esim")
KEY_FILE = "eim-key.pem"


class EsimSetupError(RuntimeError):
    """The eIM cannot start as configured; the message names the setting to fix."""


@dataclass
class RunningEsipa:
    server: EsipaHttpsServer
    eims: EimStore
    host: str
    port: int
    component: EsimComponent

    def json(self) -> dict[str, object]:
        return {"host": self.host, "port": self.port}

    async def stop(self) -> None:
        await self.server.stop()
        await self.component.stop()


def load_or_create_key(data_dir: Path) -> ec.EllipticCurvePrivateKey:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    path = data_dir / KEY_FILE
    if not path.exists():
        key = ec.generate_private_key(ec.SECP256R1())
        pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as out:
            out.write(pem)
        log.info("generated the eIM signing key", extra={"file": str(path)})
    loaded = serialization.load_pem_private_key(path.read_bytes(), None)
    if not isinstance(loaded, ec.EllipticCurvePrivateKey):
        raise EsimSetupError(f"{path}: not an EC private key; delete it to have one generated")
    return loaded


def load_cis(path: Path | None) -> list[x509.Certificate]:
    from cryptography import x509

    if path is None:
        log.warning("no --eim-ci: eUICCs cannot be imported until a CI is configured")
        return []
    try:
        return x509.load_pem_x509_certificates(path.read_bytes())
    except (OSError, ValueError) as exc:
        raise EsimSetupError(f"--eim-ci {path}: cannot read PEM certificates ({exc})") from exc


def load_identities(path: Path | None) -> list[EimIdentity]:
    """The extra eIM identities of ``--eim-identities FILE``: a JSON list of ``{"eim_id",
    "key": PEM file (EC private key), "certificate": PEM file (optional, must match the
    key)}``; relative paths are relative to the file. Every mistake names the entry."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    from sgp32.errors import Sgp32Error
    from sgp32.signing import EimIdentity

    if path is None:
        return []
    where = f"--eim-identities {path}"
    try:
        entries = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise EsimSetupError(f"{where}: cannot read a JSON list ({exc})") from exc
    if not isinstance(entries, list):
        raise EsimSetupError(f'{where}: expected a JSON list of {{"eim_id", "key", ...}}')
    out = []
    for i, entry in enumerate(entries):
        at = f"{where}: [{i}]"
        if not isinstance(entry, dict) or not isinstance(entry.get("eim_id"), str):
            raise EsimSetupError(f"{at}: needs eim_id (text) and key (a PEM file)")
        unknown = set(entry) - {"eim_id", "key", "certificate"}
        if unknown:
            raise EsimSetupError(f"{at}: unknown key(s) {', '.join(sorted(unknown))}")
        try:
            key_file = path.parent / str(entry["key"])
            key = serialization.load_pem_private_key(key_file.read_bytes(), None)
            cert = None
            if entry.get("certificate") is not None:
                cert_file = path.parent / str(entry["certificate"])
                cert = x509.load_pem_x509_certificate(cert_file.read_bytes())
        except (KeyError, OSError, ValueError, TypeError) as exc:
            raise EsimSetupError(f"{at} ({entry.get('eim_id')}): {exc}") from exc
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise EsimSetupError(f"{at} ({entry['eim_id']}): the key is not an EC private key")
        try:
            out.append(EimIdentity(entry["eim_id"], key, cert))
        except Sgp32Error as exc:
            raise EsimSetupError(f"{at}: {exc}") from exc
    return out


async def start_in_serve(
    settings: ServeSettings,
    store: Store,
    data_dir: Path,
    state: StateComponent | None = None,
    dm_server: LwM2MServer | None = None,
    service: LifecycleService | None = None,
) -> RunningEsipa | None:
    """Start the ESipa HTTPS listener when ``--esipa-https`` is set (default: off), with the
    applier of the esim dimension attached to ``state``'s reconciler, and ESipa over CoAP
    (``POST /gsma/rsp2/asn1``) on ``dm_server``'s CoAP and CoAPs sockets, and through object
    3443 of the devices registered with it (``service``'s events)."""
    from lifecycle.esim import EsimComponent
    from sgp32.eim import Eim, EimDeployment
    from sgp32.eim.schema import create_schema
    from sgp32.eim.sessions import SqlSessions
    from sgp32.eim.sql import EimStore
    from sgp32.esipa.https import EsipaHttpsServer, server_ssl_context
    from sgp32.esipa.relay import Es9Relay
    from sgp32.signing import EimIdentity

    listen = settings.esipa_https
    if listen is None:
        return None
    create_schema(store)
    identity = EimIdentity(settings.eim_id, load_or_create_key(data_dir))
    identities = [identity, *load_identities(settings.eim_identities)]
    eims = EimStore(store, Eim(EimDeployment.of(identities, load_cis(settings.eim_ci))))
    tls = None
    if settings.x509_cert is not None and settings.x509_key is not None:
        tls = server_ssl_context(settings.x509_cert, settings.x509_key)
    ca = os.environ.get("FLEETLOOP_EIM_SMDP_CA")  # SM-DP+ TLS roots (default: the system's)
    relay = Es9Relay(
        ssl.create_default_context(cafile=ca) if ca else None, sessions=SqlSessions(store)
    )
    component = EsimComponent(eims, state, relay=relay)
    server = EsipaHttpsServer(component.handle, tls=tls)
    host, port = await server.start(listen.host or "127.0.0.1", listen.port)
    component.attach()
    if dm_server is not None:
        from sgp32.esipa.coap import METHODS, PREFIX, esipa_provider

        dm_server.serve_resource(PREFIX, esipa_provider(component.handle), methods=METHODS)
        if service is not None:  # ESipa through object 3443 for LwM2M-only devices
            from lifecycle.esim.object3443 import Object3443Binding

            binding = Object3443Binding(dm_server, component)
            binding.install(service)
            component.on_stop.append(binding.stop)
    log.info(
        "ESipa HTTPS listening",
        extra={
            "address": f"{host}:{port}",
            "tls": tls is not None,
            "eim_ids": ",".join(i.eim_id for i in identities),
        },
    )
    return RunningEsipa(server, eims, host, port, component)


# ---- fleetloop esim ... (operator commands) ----------------------------------------------------


@click.group()
def esim() -> None:
    """eSIM (SGP.32 eIM): eUICCs, profiles, signed packages and their results."""


def _pem(path: Path, what: str) -> str:
    try:
        return path.read_text()
    except (OSError, UnicodeDecodeError) as err:
        raise click.UsageError(f"cannot read the {what} {path}: {err}") from None


def _ref(euicc: str) -> str:
    return quote(euicc, safe="")


@esim.command("import")
@click.argument("euicc_cert", required=False, type=click.Path(path_type=Path, dir_okay=False))
@click.option("--eum", "eum_cert", type=click.Path(path_type=Path, dir_okay=False))
@click.option("--eid", help="the EID the certificate must carry (refused if it differs)")
@click.option("--endpoint", help="the LwM2M device carrying this eUICC")
@click.option(
    "--manifest",
    type=click.Path(path_type=Path, dir_okay=False),
    help='JSON list of {"euicc_certificate", "eum_certificate", "eid"?, "endpoint"?}',
)
@click.option("--tenant", help="the tenant the eUICCs belong to")
@click.option("--eim-id", help="the eIM identity they are associated with (default: --eim-id)")
@json_option
def import_(
    euicc_cert: Path | None,
    eum_cert: Path | None,
    eid: str | None,
    endpoint: str | None,
    manifest: Path | None,
    tenant: str | None,
    eim_id: str | None,
    as_json: bool,
) -> None:
    """Import eUICCs: their certificate chains must verify to the server's CI (--eim-ci).

    One eUICC: EUICC_CERT (PEM) --eum EUM.pem; many: --manifest FILE.json. A batch is all or
    nothing."""
    if manifest is not None:
        if euicc_cert is not None:
            raise click.UsageError("give either EUICC_CERT --eum EUM or --manifest, not both")
        try:
            items = json.loads(_pem(manifest, "manifest"))
        except json.JSONDecodeError as err:
            raise click.UsageError(f"{manifest}: not JSON ({err})") from None
        if not isinstance(items, list) or not items:
            raise click.UsageError(f"{manifest}: expected a non-empty JSON list of eUICCs")
    else:
        if euicc_cert is None or eum_cert is None:
            raise click.UsageError("give EUICC_CERT and --eum EUM_CERT (or --manifest FILE)")
        item: dict[str, Any] = {
            "euicc_certificate": _pem(euicc_cert, "eUICC certificate"),
            "eum_certificate": _pem(eum_cert, "EUM certificate"),
        }
        if eid is not None:
            item["eid"] = eid
        if endpoint is not None:
            item["endpoint"] = endpoint
        items = [item]
    body: dict[str, Any] = {"euiccs": items}
    if tenant is not None:
        body["tenant"] = tenant
    if eim_id is not None:
        body["eim_id"] = eim_id
    with api() as client:
        done = client.request("POST", "/esim/euiccs", json_body=body)
    if as_json:
        print_json(done)
        return
    for e in done["items"]:
        linked = f" (device {e['endpoint']})" if e.get("endpoint") else ""
        click.echo(f"imported eUICC {e['eid']}{linked}, eIM {e['eim_id']}")


@esim.command("list")
@click.option("--eim-id", help="only the eUICCs bound to this eIM identity")
@json_option
def list_(eim_id: str | None, as_json: bool) -> None:
    """The eUICCs the eIM knows, with their eIM, enabled profile and queue."""
    path = "/esim/euiccs" + (f"?eim_id={quote(eim_id, safe='')}" if eim_id else "")
    with api() as client:
        found = client.request("GET", path)
    if as_json:
        print_json(found)
        return
    rows = [
        (
            e["eid"],
            e.get("endpoint") or "-",
            e["eim_id"],
            e.get("enabled_iccid") or "-",
            e["queued"],
        )
        for e in found["items"]
    ]
    if not rows:
        bound = f" bound to eIM {eim_id}" if eim_id else ""
        click.echo(
            f"no eUICCs{bound}; import them with `fleetloop esim import EUICC.pem --eum EUM.pem`"
            + (" (see `fleetloop esim eims` for the eIM identities)" if eim_id else "")
        )
        return
    headers, rows = widen(
        ("EID", "ENDPOINT", "EIM", "ENABLED", "QUEUED"),
        rows,
        found["items"],
        [
            ("COUNTER", lambda e: e.get("counter_value")),
            ("TENANT", lambda e: e.get("tenant")),
            ("REGISTERED", lambda e: e.get("registered_at")),
        ],
    )
    click.echo(table(headers, rows))


@esim.command("eims")
@json_option
def eims(as_json: bool) -> None:
    """The eIM identities of this deployment and how many eUICCs each is bound to."""
    with api() as client:
        found = client.request("GET", "/esim/eims")
    if as_json:
        print_json(found)
        return
    rows = [
        (
            i["eim_id"] + (" (default)" if i["default"] else ""),
            i["curve"],
            "yes" if i["certificate"] else "no",
            i["euiccs"],
        )
        for i in found["items"]
    ]
    headers, rows = widen(
        ("EIM", "CURVE", "CERTIFICATE", "EUICCS"),
        rows,
        found["items"],
        [("KEY SHA-256", lambda i: _pem_sha256(i.get("public_key")))],
    )
    click.echo(table(headers, rows))


def _pem_sha256(pem: str | None) -> str | None:
    """The SHA-256 of a PEM block's DER (the eIM's SubjectPublicKeyInfo), hex: what
    ``openssl pkey -pubin -outform DER | sha256sum`` prints for the same key."""
    body = "".join(
        line.strip() for line in (pem or "").splitlines() if line and not line.startswith("-----")
    )
    try:
        der = base64.b64decode(body, validate=True)
    except (binascii.Error, ValueError):
        return None
    return hashlib.sha256(der).hexdigest() if der else None


@esim.command("show")
@click.argument("euicc")
@json_option
def show(euicc: str, as_json: bool) -> None:
    """EID|EP: profiles, enabled, fallback, pending packages, last results."""
    with api() as client:
        e = client.request("GET", f"/esim/euiccs/{_ref(euicc)}")
    if as_json:
        print_json(e)
        return
    click.echo(f"eUICC {e['eid']}  device {e.get('endpoint') or '-'}  eIM {e['eim_id']}")
    click.echo(f"  EUM      {e['eum']}")
    click.echo(f"  counter  {e['counter_value']}")
    for a in e.get("associations", []):
        state = "bound" if a["bound"] else "deleted" if a["deleted_at_epoch"] else "associated"
        click.echo(f"  eIM      {a['eim_id']} ({state}, counter {a['counter_value']})")
    rows = [
        (
            p["iccid"],
            p["state"],
            "yes" if p["fallback"] else "",
            p.get("carrier") or "",
            p["note"],
        )
        for p in e["profiles"]
    ]
    click.echo(table(("ICCID", "STATE", "FALLBACK", "CARRIER", "NOTE"), rows))
    for p in e["queue"]:
        ops = ", ".join(o["op"] for o in p["operations"])
        click.echo(f"  queued   #{p['counter_value']} {ops} ({p['state']})")
    for p in e["packages"][:5]:
        click.echo(f"  result   #{p['counter_value']} {_result_line(p)}")


def _result_line(p: dict[str, Any]) -> str:
    result = p.get("result")
    if result is None:
        return str(p["state"])
    answers = ", ".join(f"{name}={value}" for name, value in result["results"])
    if result.get("message"):
        return f"failed: {result['message']}"
    if result["kind"] == "euiccPackageErrorSigned":
        return f"refused by the eUICC (error {result['error_code']})"
    return answers + (" -- ROLLED BACK" if result["rolled_back"] else "")


def _queue(euicc: str, body: dict[str, Any], as_json: bool) -> None:
    with api() as client:
        p = client.request("POST", f"/esim/euiccs/{_ref(euicc)}/packages", json_body=body)
    if as_json:
        print_json(p)
        return
    click.echo(
        f"queued {body['operation']} for eUICC {p['eid']}: package #{p['counter_value']} "
        f"(eimTransactionId {p['transaction_id']}); the IPA fetches it on its next poll"
    )


@esim.command("enable")
@click.argument("euicc")
@click.argument("iccid")
@click.option("--no-rollback", is_flag=True, help="enable without rollbackFlag")
@json_option
def enable(euicc: str, iccid: str, no_rollback: bool, as_json: bool) -> None:
    """Queue enabling profile ICCID on EID|EP (with rollbackFlag unless --no-rollback)."""
    _queue(euicc, {"operation": "enable", "iccid": iccid, "rollback": not no_rollback}, as_json)


@esim.command("disable")
@click.argument("euicc")
@click.argument("iccid")
@json_option
def disable(euicc: str, iccid: str, as_json: bool) -> None:
    """Queue disabling profile ICCID on EID|EP."""
    _queue(euicc, {"operation": "disable", "iccid": iccid}, as_json)


@esim.command("delete")
@click.argument("euicc")
@click.argument("iccid")
@json_option
def delete(euicc: str, iccid: str, as_json: bool) -> None:
    """Queue deleting (disabled) profile ICCID on EID|EP."""
    _queue(euicc, {"operation": "delete", "iccid": iccid}, as_json)


@esim.command("list-profiles")
@click.argument("euicc")
@json_option
def list_profiles(euicc: str, as_json: bool) -> None:
    """Queue listProfileInfo on EID|EP (the answer refreshes `esim show`)."""
    _queue(euicc, {"operation": "list-profiles"}, as_json)


@esim.command("fallback")
@click.argument("euicc")
@click.argument("iccid", required=False)
@click.option("--unset", is_flag=True, help="remove the fallback attribute")
@json_option
def fallback(euicc: str, iccid: str | None, unset: bool, as_json: bool) -> None:
    """Queue setting the fallback attribute on profile ICCID of EID|EP (or --unset it)."""
    if unset == (iccid is not None):
        raise click.UsageError("give the fallback profile's ICCID, or --unset")
    body = (
        {"operation": "unset-fallback"} if unset else {"operation": "set-fallback", "iccid": iccid}
    )
    _queue(euicc, body, as_json)


@esim.command("download")
@click.argument("euicc")
@click.argument("activation_code")
@json_option
def download(euicc: str, activation_code: str, as_json: bool) -> None:
    """Queue a ProfileDownloadTrigger: EID|EP downloads the profile of ACTIVATION_CODE
    (1$SM-DP+ address$matching ID) through the eIM's ES9+ relay."""
    _queue(euicc, {"operation": "download", "activation_code": activation_code}, as_json)


@esim.command("ipa-data")
@click.argument("euicc")
@json_option
def ipa_data(euicc: str, as_json: bool) -> None:
    """Queue an IpaEuiccDataRequest on EID|EP: its IPA reports EUICCInfo2, DeviceInfo and
    its capabilities (what the eIM needs to generate ctxParams1 and expand compact download
    messages)."""
    _queue(euicc, {"operation": "ipa-data"}, as_json)


@esim.command("packages")
@click.argument("euicc")
@json_option
def packages(euicc: str, as_json: bool) -> None:
    """EID|EP's packages, newest first, with their results."""
    with api() as client:
        found = client.request("GET", f"/esim/euiccs/{_ref(euicc)}/packages")
    if as_json:
        print_json(found)
        return
    rows = [
        (p["counter_value"], ", ".join(o["op"] for o in p["operations"]), _result_line(p))
        for p in found["items"]
    ]
    if not rows:
        click.echo(
            f"no packages for eUICC {euicc}; queue one with `fleetloop esim list-profiles "
            f"{euicc}` (or enable, disable, download)"
        )
        return
    headers, rows = widen(
        ("#", "OPERATIONS", "RESULT"),
        rows,
        found["items"],
        [
            ("STATE", lambda p: p.get("state")),
            ("EID", lambda p: p.get("eid")),
            ("EIM", lambda p: p.get("eim_id")),
            ("EIMTRANSACTIONID", lambda p: p.get("transaction_id")),
            ("BY", lambda p: p.get("actor")),
            ("QUEUED", lambda p: iso_time(p.get("created_at_epoch"))),
            ("DELIVERED", lambda p: iso_time(p.get("delivered_at_epoch"))),
            ("ANSWERED", lambda p: iso_time(p.get("result_at_epoch"))),
        ],
    )
    click.echo(table(headers, rows))


@esim.command("results")
@click.argument("euicc")
@json_option
def results(euicc: str, as_json: bool) -> None:
    """Every result EID|EP's IPA delivered (accepted or refused), newest first."""
    with api() as client:
        found = client.request("GET", f"/esim/euiccs/{_ref(euicc)}/results")
    if as_json:
        print_json(found)
        return
    rows = [
        (r["received_at_epoch"], r["outcome"], r.get("counter_value") or "-", r["detail"])
        for r in found["items"]
    ]
    if not rows:
        click.echo(
            f"no results from eUICC {euicc} yet; its IPA delivers them when it polls the eIM "
            f"(`fleetloop esim packages {euicc}` shows what waits for it)"
        )
        return
    headers, rows = widen(
        ("RECEIVED", "OUTCOME", "COUNTER", "DETAIL"),
        rows,
        found["items"],
        [
            ("RECEIVED AT", lambda r: iso_time(r.get("received_at_epoch"))),
            ("EIMTRANSACTIONID", lambda r: r.get("transaction_id")),
        ],
    )
    click.echo(table(headers, rows))


# ---- eCOs: fleetloop esim eim add|update|delete|list ----------------------------------------


@esim.group("eim")
def eim() -> None:
    """eIM Configuration Operations (eCO) for eUICCs: add, update, delete or list the eIMs
    an eUICC is associated with. Each package is signed by the eUICC's own eIM."""


def _targets(func: Any) -> Any:
    func = click.option("--select", help="the eUICCs of the devices this selector names")(func)
    func = click.option("--bound-to", help="only (or all) eUICCs bound to this eIM identity")(func)
    return json_option(func)


def _selection(
    euiccs: tuple[str, ...], select: str | None, bound_to: str | None, body: dict[str, Any]
) -> dict[str, Any] | None:
    """`body` with the selection the arguments name (eids, select, bound_to) for the
    selection routes; None when they name exactly one eUICC (its own route answers)."""
    if not euiccs and select is None and bound_to is None:
        raise click.UsageError("name the eUICCs: EID|EP arguments, --select or --bound-to")
    if len(euiccs) == 1 and select is None and bound_to is None:
        return None
    selection: dict[str, Any] = dict(body)
    if euiccs:
        selection["eids"] = list(euiccs)
    if select is not None:
        selection["select"] = select
    if bound_to is not None:
        selection["bound_to"] = bound_to
    return selection


def _queue_eco(
    euiccs: tuple[str, ...],
    select: str | None,
    bound_to: str | None,
    body: dict[str, Any],
    as_json: bool,
) -> None:
    selection = _selection(euiccs, select, bound_to, body)
    if selection is None:
        _queue(euiccs[0], body, as_json)
        return
    with api() as client:
        done = client.request("POST", "/esim/packages", json_body=selection)
    if as_json:
        print_json(done)
        return
    for p in done["items"]:
        click.echo(
            f"queued {body['operation']} for eUICC {p['eid']}: package #{p['counter_value']} "
            f"(eimTransactionId {p['transaction_id']})"
        )
    if done["missing"]:
        click.echo(f"no linked eUICC: {', '.join(done['missing'])}", err=True)


def _config(
    eim_id: str,
    fqdn: str | None,
    counter: int | None,
    token: int | None,
    public_key: Path | None,
    certificate: Path | None,
    indirect: bool,
) -> dict[str, Any]:
    config: dict[str, Any] = {"eim_id": eim_id}
    if fqdn is not None:
        config["fqdn"] = fqdn
    if counter is not None:
        config["counter_value"] = counter
    if token is not None:
        config["association_token"] = token
    if public_key is not None:
        config["public_key"] = _pem(public_key, "eIM public key")
    if certificate is not None:
        config["certificate"] = _pem(certificate, "eIM certificate")
    if indirect:
        config["indirect_profile_download"] = True
    return config


def _config_options(func: Any) -> Any:
    options = [
        click.option("--fqdn", help="eimFqdn: where the eUICC's IPA reaches that eIM"),
        click.option("--counter", type=int, help="the counterValue the eUICC starts from"),
        click.option(
            "--association-token", type=int, help="associationToken (-1: the eUICC makes one)"
        ),
        click.option(
            "--public-key",
            type=click.Path(path_type=Path, dir_okay=False),
            help="the eIM's public key (PEM); default for an eIM of this deployment: its own",
        ),
        click.option(
            "--certificate",
            type=click.Path(path_type=Path, dir_okay=False),
            help="the eIM's certificate (PEM), instead of --public-key",
        ),
        click.option("--indirect-download", is_flag=True, help="indirectProfileDownload"),
    ]
    for option in reversed(options):
        func = option(func)
    return func


@eim.command("add")
@click.argument("eim_id")
@click.argument("euiccs", nargs=-1)
@_config_options
@_targets
def eim_add(
    eim_id: str,
    euiccs: tuple[str, ...],
    fqdn: str | None,
    counter: int | None,
    association_token: int | None,
    public_key: Path | None,
    certificate: Path | None,
    indirect_download: bool,
    select: str | None,
    bound_to: str | None,
    as_json: bool,
) -> None:
    """Queue addEim EIM_ID on the eUICCs EID|EP... (or --select/--bound-to): associate them
    with another eIM (of this deployment: its key is filled in)."""
    config = _config(
        eim_id, fqdn, counter, association_token, public_key, certificate, indirect_download
    )
    _queue_eco(euiccs, select, bound_to, {"operation": "add-eim", "eim": config}, as_json)


@eim.command("update")
@click.argument("eim_id")
@click.argument("euiccs", nargs=-1)
@_config_options
@_targets
def eim_update(
    eim_id: str,
    euiccs: tuple[str, ...],
    fqdn: str | None,
    counter: int | None,
    association_token: int | None,
    public_key: Path | None,
    certificate: Path | None,
    indirect_download: bool,
    select: str | None,
    bound_to: str | None,
    as_json: bool,
) -> None:
    """Queue updateEim EIM_ID on the eUICCs EID|EP...: new key, counter, FQDN..."""
    config = _config(
        eim_id, fqdn, counter, association_token, public_key, certificate, indirect_download
    )
    _queue_eco(euiccs, select, bound_to, {"operation": "update-eim", "eim": config}, as_json)


@eim.command("delete")
@click.argument("eim_id")
@click.argument("euiccs", nargs=-1)
@_targets
def eim_delete(
    eim_id: str,
    euiccs: tuple[str, ...],
    select: str | None,
    bound_to: str | None,
    as_json: bool,
) -> None:
    """Queue deleteEim EIM_ID on the eUICCs EID|EP...: end their association with it."""
    _queue_eco(euiccs, select, bound_to, {"operation": "delete-eim", "eim_id": eim_id}, as_json)


@eim.command("move")
@click.argument("eim_id")
@click.argument("euiccs", nargs=-1)
@click.option(
    "--delete-old", is_flag=True, help="also queue deleteEim of the old eIM (signed by the new)"
)
@_targets
def eim_move(
    eim_id: str,
    euiccs: tuple[str, ...],
    delete_old: bool,
    select: str | None,
    bound_to: str | None,
    as_json: bool,
) -> None:
    """Move the eUICCs EID|EP... (or --select/--bound-to) to eIM EIM_ID of this deployment:
    their packages are signed by that eIM from now on. Only after each eUICC confirmed
    `esim eim add EIM_ID` (its signed result is in) and while none of its packages waits for
    a result; with a selection, those that cannot move yet are listed with the reason."""
    body: dict[str, Any] = {"eim_id": eim_id, "delete_old": delete_old}
    selection = _selection(euiccs, select, bound_to, body)
    if selection is None:
        with api() as client:
            done = client.request("POST", f"/esim/euiccs/{_ref(euiccs[0])}/eim", json_body=body)
        if as_json:
            print_json(done)
            return
        e = done["euicc"]
        _moved(e, done["moved_from"], done["delete_package"])
        return
    with api() as client:
        found = client.request("POST", "/esim/moves", json_body=selection)
    if as_json:
        print_json(found)
        return
    deletes = {p["eid"]: p for p in found["delete_packages"]}
    for e in found["items"]:
        _moved(e, None, deletes.get(e["eid"]))
    for r in found["refused"]:
        click.echo(f"not moved: {r['message']}", err=True)
    if found["missing"]:
        click.echo(f"no linked eUICC: {', '.join(found['missing'])}", err=True)
    if found["refused"]:
        raise click.exceptions.Exit(EXIT_FAILED)


def _moved(e: dict[str, Any], moved_from: str | None, delete: dict[str, Any] | None) -> None:
    origin = f" from eIM {moved_from}" if moved_from else ""
    click.echo(f"eUICC {e['eid']} moved{origin} to {e['eim_id']} (counter {e['counter_value']})")
    if delete is not None:
        old = delete["operations"][0].get("eim_id", "")
        click.echo(
            f"queued delete-eim {old}: package #{delete['counter_value']} "
            f"(eimTransactionId {delete['transaction_id']})"
        )


@eim.command("list")
@click.argument("euiccs", nargs=-1)
@_targets
def eim_list(
    euiccs: tuple[str, ...], select: str | None, bound_to: str | None, as_json: bool
) -> None:
    """Queue listEim on the eUICCs EID|EP...: the answer (`esim packages`) names every eIM
    each is associated with."""
    _queue_eco(euiccs, select, bound_to, {"operation": "list-eim"}, as_json)

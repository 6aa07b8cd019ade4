"""``fleetloop bootstrap ...`` and ``fleetloop rebootstrap``, and the bootstrap server's place
in ``fleetloop serve``.

The operator commands go through the management API (``/bootstrap/...``). ``bootstrap serve``
runs the bootstrap server alone (no API, no DM server) on a database a ``fleetloop serve``
elsewhere shares; :func:`start_in_serve` is what ``fleetloop serve`` calls to run it next to
its DM server:

* the CA lives in ``<data-dir>/ca`` (created on first start, key 0600); certificates issued
  at import go to ``<data-dir>/issued`` (keys 0600);
* the built-in default policy sends devices to this server's DM sockets. The address it
  advertises is the CoAP/CoAPs listen host, or ``127.0.0.1`` when listening on every address
  -- fine on one machine; for devices elsewhere add a policy with the public address;
* without ``--x509-*`` settings the DM server gets a certificate from the CA, so certificate
  devices bootstrapped here can register.
"""

from __future__ import annotations

import asyncio
import base64
import ipaddress
import json
import logging
import signal
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import click

from bootstrap import (
    BootstrapConfig,
    BootstrapManager,
    BootstrapServer,
    CertificateAuthority,
    create_schema,
)
from bootstrap.errors import CaError
from cli.client import CliFailure
from cli.commands import api, json_option, load_json_arg
from cli.identities_cmd import actor, move_body, move_options
from cli.output import print_json, table, widen
from lifecycle.api.bootstrap_routes import BootstrapApi
from lwm2m.store import Store, StoreError
from lwm2m.store.secrets import SecretsError, bind, load_box
from lwm2m.transport import Address, X509Credentials

if TYPE_CHECKING:
    from cli.settings import Listen, ServeSettings
    from lwm2m.server import LwM2MServer

log = logging.getLogger("fleetloop.bootstrap")

CA_DIR, ISSUED_DIR = "ca", "issued"
_WILDCARDS = (None, "", "0.0.0.0", "::")


def ep(endpoint: str) -> str:
    return quote(endpoint, safe="")


# -- running inside fleetloop serve ---------------------------------------------------------------


def open_ca(data_dir: Path) -> CertificateAuthority:
    box = load_box(data_dir)  # the CA key file is encrypted at rest (issue 14 item 11)
    try:
        return CertificateAuthority.open(
            data_dir / CA_DIR, passphrase=base64.b64encode(box.derive("ca key file"))
        )
    except CaError as err:
        if "passphrase" not in str(err):
            raise
        raise SecretsError(
            f"the CA key in {data_dir / CA_DIR} does not open with the secrets key from "
            f"{box.source}; start with the key this data directory was set up with"
        ) from None


def dm_certificate(ca: CertificateAuthority, settings: ServeSettings) -> X509Credentials:
    """A DM server certificate from the CA (for a serve without ``--x509-*``)."""
    names = ["localhost", "127.0.0.1", "::1"]
    for listen in (settings.coaps, settings.coap):
        if listen is not None and listen.host not in _WILDCARDS and listen.host not in names:
            names.append(listen.host)
    ips = [n for n in names if _is_ip(n)]
    dns = [n for n in names if not _is_ip(n)]
    return ca.credentials(ca.issue_server("fleetloop-dm", dns_names=dns, ip_addresses=ips))


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def _advertised(scheme: str, listen: Listen | None, bound: Address | None) -> str | None:
    if listen is None or bound is None:
        return None
    host = "127.0.0.1" if listen.host in _WILDCARDS else str(listen.host)
    shown = f"[{host}]" if ":" in host else host
    return f"{scheme}://{shown}:{bound[1]}"


async def start_in_serve(
    settings: ServeSettings, store: Store, dm: LwM2MServer, data_dir: Path
) -> BootstrapApi:
    """The bootstrap layer of ``fleetloop serve``: the server on ``--bs-coap``/``--bs-coaps``
    (none when both are off: identities and policies are still managed) and the manager."""
    ca = await asyncio.to_thread(open_ca, data_dir)
    issued = data_dir / ISSUED_DIR
    coap_uri = _advertised("coap", settings.coap, dm.coap_address)
    coaps_uri = _advertised("coaps", settings.coaps, dm.coaps_address)
    if settings.bs_coap is None and settings.bs_coaps is None:
        await asyncio.to_thread(create_schema, store)
        manager = BootstrapManager(store, ca=ca, dm_coap_uri=coap_uri, dm_coaps_uri=coaps_uri)
        log.info("bootstrap server off (--bs-coap/--bs-coaps off); identities and policies on")
        return BootstrapApi(manager, None, issued)
    config = BootstrapConfig(
        coap_host=settings.bs_coap.host if settings.bs_coap else None,
        coap_port=settings.bs_coap.port if settings.bs_coap else None,
        coaps_host=settings.bs_coaps.host if settings.bs_coaps else None,
        coaps_port=settings.bs_coaps.port if settings.bs_coaps else None,
        dm_coap_uri=coap_uri,
        dm_coaps_uri=coaps_uri,
    )
    server = await BootstrapServer.start(config, store, ca=ca, dm_server=dm)
    log.info(
        "bootstrap server listening",
        extra={
            "bs_coap": _shown(server.coap_address),
            "bs_coaps": _shown(server.coaps_address),
            "default_dm": coaps_uri or coap_uri,
        },
    )
    return BootstrapApi(server.manager, server, issued)


def _shown(address: Address | None) -> str:
    if address is None:
        return "off"
    host = str(address[0])
    return f"[{host}]:{address[1]}" if ":" in host else f"{host}:{address[1]}"


def bound_json(address: Address | None) -> dict[str, Any] | None:
    return None if address is None else {"host": str(address[0]), "port": int(address[1])}


def api_info_extra(bootstrap_api: BootstrapApi | None) -> dict[str, Any]:
    """The bootstrap sockets actually bound, for ``api.json``."""
    server = None if bootstrap_api is None else bootstrap_api.server
    return {
        "bs_coap": None if server is None else bound_json(server.coap_address),
        "bs_coaps": None if server is None else bound_json(server.coaps_address),
    }


# -- fleetloop bootstrap ... ----------------------------------------------------------------------


@click.group()
def bootstrap() -> None:
    """Bootstrap policies, explanations, device status, the audit trail; `serve` alone."""


@bootstrap.group()
def policy() -> None:
    """Versioned bootstrap policies (most specific match wins; see `bootstrap explain`)."""


def _policy_rows(items: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    rows = []
    for item in items:
        doc = item["document"]
        match = " ".join(f"{k}={v}" for k, v in doc["match"].items()) or "(everything)"
        servers = ", ".join(s["uri"] for s in doc["servers"])
        rows.append((item["name"], item["version"] or "-", match, servers, item["author"] or "-"))
    return rows


@policy.command("add")
@click.argument("document", metavar="FILE|JSON")
@click.option("--name", help="policy name (default: the document's 'name')")
@click.option("--comment", default="", help="why (recorded with the version and in the audit)")
@json_option
def policy_add(document: str, name: str | None, comment: str, as_json: bool) -> None:
    """Add a policy, or a new version of it, from a JSON file (or inline JSON / @file / @-).

    \b
    {"name": "eu-prod", "match": {"tenant": "acme", "region": "eu"},
     "servers": [{"uri": "coaps://dm-eu.example.net:5684", "lifetime": 3600}]}
    """
    text = (
        document
        if document.lstrip().startswith("{") or document.startswith("@")
        else "@" + document
    )
    doc = load_json_arg(text, "FILE|JSON")
    if not isinstance(doc, dict):
        raise click.BadParameter("a policy is a JSON object", param_hint="FILE|JSON")
    policy_name = name or doc.get("name")
    if not policy_name:
        raise click.UsageError("the document has no 'name'; give --name")
    body = {"policy": {**doc, "name": policy_name}, "comment": comment, "actor": actor()}
    with api() as client:
        result = client.request("PUT", f"/bootstrap/policies/{ep(policy_name)}", json_body=body)
    if as_json:
        print_json(result)
        return
    if result["changed"]:
        click.echo(f"policy {result['name']} is now at version {result['version']}")
    else:
        click.echo(f"policy {result['name']} v{result['version']} already says exactly that")


@policy.command("list")
@json_option
def policy_list(as_json: bool) -> None:
    """The policies in force, and the built-in default."""
    with api() as client:
        result = client.request("GET", "/bootstrap/policies")
    if as_json:
        print_json(result)
        return
    items = result["items"]
    if items:
        headers, rows = widen(
            ("NAME", "VERSION", "MATCH", "SERVERS", "AUTHOR"),
            _policy_rows(items),
            items,
            (
                ("CREATED", lambda p: p.get("created_at")),
                ("COMMENT", lambda p: p.get("comment")),
            ),
        )
        click.echo(table(headers, rows))
    else:
        click.echo("no policies")
    default = result["default"]
    if default is not None:
        servers = ", ".join(
            s["uri"] + (f" (nosec: {s['nosec_uri']})" if s.get("nosec_uri") else "")
            for s in default["document"]["servers"]
        )
        click.echo(f"when none matches: {default['name']} -> {servers}")


@policy.command("show")
@click.argument("name")
@click.option("--version", type=click.IntRange(min=1), help="default: the version in force")
@click.option("--reveal", is_flag=True, help="show APN passwords")
@json_option
def policy_show(name: str, version: int | None, reveal: bool, as_json: bool) -> None:
    """The policy document and its versions."""
    with api() as client:
        result = client.request(
            "GET",
            f"/bootstrap/policies/{ep(name)}",
            params={"version": version, "reveal": "true" if reveal else None},
        )
    if as_json:
        print_json(result)
        return
    click.echo(json.dumps(result["document"], indent=2, sort_keys=True))
    rows = [
        (
            v["version"],
            v["created_at"],
            v["author"],
            "retired" if v["retired"] else "",
            v["comment"],
        )
        for v in result["versions"]
    ]
    click.echo(table(("VERSION", "CREATED", "AUTHOR", "", "COMMENT"), rows))


@policy.command("diff")
@click.argument("name")
@click.option("--from", "old", type=click.IntRange(min=0), help="default: the version before")
@click.option("--to", "new", type=click.IntRange(min=1), help="default: the newest")
@json_option
def policy_diff(name: str, old: int | None, new: int | None, as_json: bool) -> None:
    """Unified diff between two versions of a policy (APN passwords hidden)."""
    with api() as client:
        result = client.request(
            "GET", f"/bootstrap/policies/{ep(name)}/diff", params={"from": old, "to": new}
        )
    if as_json:
        print_json(result)
        return
    click.echo(result["diff"] or "(no differences)", nl=not result["diff"])


@policy.command("retire")
@click.argument("name")
@click.option("--comment", default="", help="why")
@json_option
def policy_retire(name: str, comment: str, as_json: bool) -> None:
    """Take a policy out of force (its versions stay for the record)."""
    with api() as client:
        result = client.request(
            "DELETE",
            f"/bootstrap/policies/{ep(name)}",
            params={"actor": actor(), "comment": comment},
        )
    if as_json:
        print_json(result)
        return
    click.echo(f"policy {name} retired (version {result['version']})")


@bootstrap.command("explain")
@click.argument("endpoint")
@json_option
def explain(endpoint: str, as_json: bool) -> None:
    """Which policy ENDPOINT gets, why, and what it would provision."""
    with api() as client:
        result = client.request("GET", f"/bootstrap/explain/{ep(endpoint)}")
    if as_json:
        print_json(result)
        return
    chosen = result["policy"]
    label = "none" if chosen is None else f"{chosen['name']} v{chosen['version']}"
    if chosen is not None and chosen["builtin"]:
        label = chosen["name"]
    identity = result["identity"]
    attrs = " ".join(
        f"{k}={identity[k]}" for k in ("tenant", "region", "sku", "policy_group") if identity[k]
    )
    click.echo(f"{identity['endpoint']} ({identity['security_mode']}; {attrs or 'no attributes'})")
    click.echo(f"policy: {label}")
    click.echo(f"why: {result['why']}")
    for item in result["provisions"]:
        click.echo(
            f"provisions: {item['uri']} ssid={item['short_server_id']} "
            f"credentials={item['credentials']} lifetime={item['lifetime']} "
            f"binding={item['binding']}{' queue' if item['queue_mode'] else ''}"
        )
    for problem in result["problems"]:
        click.echo(f"problem: {problem}")
    if result["candidates"]:
        rows = [
            (c["name"], "yes" if c["matched"] else "no", "; ".join(c["reasons"]))
            for c in result["candidates"]
        ]
        click.echo(table(("POLICY", "MATCHES", "REASONS"), rows))


@bootstrap.command("status")
@click.argument("endpoint")
@json_option
def status(endpoint: str, as_json: bool) -> None:
    """Where ENDPOINT is in bootstrapping: phase, step, last error, what it got."""
    with api() as client:
        result = client.request("GET", f"/bootstrap/status/{ep(endpoint)}")
    if as_json:
        print_json(result)
        return
    policy_doc = result["policy"]
    rows = [
        ("endpoint", result["endpoint"]),
        ("phase", result["phase"]),
        ("step", result["step"] or None),
        (
            "policy",
            None if policy_doc is None else f"{policy_doc['name']} v{policy_doc['version']}",
        ),
        ("dm servers", ", ".join(result["dm_uris"]) or None),
        ("transport", result["transport"]),
        ("lwm2m", result["lwm2m_version"]),
        ("attempts / completed", f"{result['attempts']} / {result['completed']}"),
        ("started", result["started_at"]),
        ("finished", result["finished_at"]),
    ]
    click.echo(table(("FIELD", "VALUE"), rows))
    if result["detail"]:
        click.echo(result["detail"])


@bootstrap.command("audit")
@click.option("--subject", help="an endpoint, policy:<name>, or an import batch id")
@click.option("--action", help="action prefix, e.g. policy. or bootstrap.refused")
@click.option("--limit", type=click.IntRange(1, 1000), default=100)
@click.option("--verify", is_flag=True, help="verify the hash chain instead of listing")
@json_option
def audit(subject: str | None, action: str | None, limit: int, verify: bool, as_json: bool) -> None:
    """The bootstrap audit trail (hash-chained: --verify checks nothing was altered)."""
    with api() as client:
        if verify:
            verdict = client.request("GET", "/bootstrap/audit/verify")
            if as_json:
                print_json(verdict)
            elif verdict["ok"]:
                click.echo(
                    f"audit trail intact: {verdict['records']} records, head {verdict['head']}"
                )
            if not verdict["ok"]:
                raise CliFailure(
                    f"audit trail broken at record {verdict['broken_at']}: {verdict['reason']}"
                )
            return
        result = client.request(
            "GET", "/bootstrap/audit", params={"subject": subject, "action": action, "limit": limit}
        )
    if as_json:
        print_json(result)
        return
    rows = [
        (r["seq"], r["at"], r["actor"], r["action"], r["subject"], json.dumps(r["detail"])[:80])
        for r in result["items"]
    ]
    headers, rows = widen(
        ("SEQ", "AT", "ACTOR", "ACTION", "SUBJECT", "DETAIL"),
        rows,
        result["items"],
        (
            ("DEVICES", lambda r: ",".join(r.get("endpoints") or [])),
            ("OUTCOME", lambda r: r.get("outcome")),
            ("DETAIL (FULL)", lambda r: json.dumps(r.get("detail"), sort_keys=True)),
        ),
    )
    click.echo(table(headers, rows) if rows else "no records")


@click.command("rebootstrap")
@click.argument("endpoint")
@move_options
@json_option
def rebootstrap(
    endpoint: str,
    tenant: str | None,
    region: str | None,
    sku: str | None,
    policy_group: str | None,
    as_json: bool,
) -> None:
    """Make ENDPOINT bootstrap again now (Execute /1/x/9 through the DM server); with
    --region/--tenant/... it is moved first, so it comes back under that policy. Its DM
    credentials are rotated either way."""
    move = move_body(tenant=tenant, region=region, sku=sku, policy_group=policy_group)
    body: dict[str, Any] = {"actor": actor()}
    if move:
        body["move"] = move
    with api() as client:
        result = client.request("POST", f"/bootstrap/rebootstrap/{ep(endpoint)}", json_body=body)
    if as_json:
        print_json(result)
        return
    queued = " (queued for the sleeping device)" if result["queued"] else ""
    click.echo(
        f"{result['endpoint']}: Execute /1/{result['server_iid']}/9 answered {result['code']}"
        f"{queued}; follow it with `fleetloop bootstrap status {result['endpoint']}`"
    )


# -- fleetloop bootstrap serve --------------------------------------------------------------------


async def _serve_alone(
    data_dir: Path,
    database_url: str | None,
    config: BootstrapConfig,
) -> None:
    from cli.datadir import prepare

    folder = prepare(data_dir)
    store = await asyncio.to_thread(Store.open, database_url, folder)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    server: BootstrapServer | None = None
    try:
        await asyncio.to_thread(store.create_schema)
        bind(store, await asyncio.to_thread(load_box, folder))  # PSKs sealed at rest
        ca = await asyncio.to_thread(open_ca, folder)
        server = await BootstrapServer.start(config, store, ca=ca)
        log.info(
            "bootstrap server ready",
            extra={
                "bs_coap": _shown(server.coap_address),
                "bs_coaps": _shown(server.coaps_address),
                "database": store.url,
                "default_dm": config.dm_coaps_uri or config.dm_coap_uri or "none",
            },
        )
        await stop.wait()
    finally:
        if server is not None:
            await server.stop()
        await store.aclose()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)
        log.info("bootstrap server stopped")


def _listen(text: str | None, default: int) -> tuple[str | None, int | None]:
    if text is None:
        return None, default
    if text == "off":
        return None, None
    host, sep, port = text.rpartition(":")
    if not port.isdigit() or int(port) > 65535:
        raise click.BadParameter(f"{text!r} is not [HOST:]PORT or off")
    return (host.strip("[]") or None) if sep else None, int(port)


@bootstrap.command("serve")
@click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="database (SQLite) and CA directory (default: FLEETLOOP_DATA_DIR or the user's)",
)
@click.option("--database-url", metavar="URL", help="the DM server's database (PostgreSQL)")
@click.option("--bs-coap", metavar="[HOST:]PORT|off", help="CoAP port (default 5783)")
@click.option("--bs-coaps", metavar="[HOST:]PORT|off", help="CoAPs/DTLS port (default 5784)")
@click.option("--dm-coap-uri", metavar="URI", help="coap:// DM server for the default policy")
@click.option("--dm-coaps-uri", metavar="URI", help="coaps:// DM server for the default policy")
@click.option(
    "--log-level", type=click.Choice(["debug", "info", "warning", "error"]), default="info"
)
def serve_alone(
    data_dir: Path | None,
    database_url: str | None,
    bs_coap: str | None,
    bs_coaps: str | None,
    dm_coap_uri: str | None,
    dm_coaps_uri: str | None,
    log_level: str,
) -> None:
    """Run the bootstrap server alone (no API, no DM server) until SIGINT/SIGTERM.

    It shares the DM server's database, so DM credentials it provisions are in the DM store;
    a DM server in another process sees them after its PSK cache refresh (docs/BOOTSTRAP.md).
    Manage identities and policies through the `fleetloop serve` on the same database.
    """
    from cli import logs
    from cli.settings import default_data_dir

    logs.configure("kv", log_level)
    coap_host, coap_port = _listen(bs_coap, 5783)
    coaps_host, coaps_port = _listen(bs_coaps, 5784)
    try:
        config = BootstrapConfig(
            coap_host=coap_host,
            coap_port=coap_port,
            coaps_host=coaps_host,
            coaps_port=coaps_port,
            dm_coap_uri=dm_coap_uri,
            dm_coaps_uri=dm_coaps_uri,
        )
    except ValueError as err:
        raise CliFailure(str(err), 2) from None
    folder = data_dir or default_data_dir()
    try:
        asyncio.run(_serve_alone(folder, database_url, config))
    except (StoreError, OSError) as err:
        raise CliFailure(f"bootstrap server: {err}") from None


__all__ = [
    "api_info_extra",
    "bootstrap",
    "bound_json",
    "dm_certificate",
    "open_ca",
    "rebootstrap",
    "start_in_serve",
]

"""``fleetloop bundle`` and ``fleetloop apn-profile``: versioned config bundles and APN
profiles (docs/ARTIFACTS.md).

::

    fleetloop bundle publish tracker 1.4.0 @tracker.json --overlay region=eu=@eu-patch.json
    fleetloop bundle list [NAME]                  # bundles, or one bundle's versions
    fleetloop bundle show tracker@1.4.0 [--overlay region=eu]
    fleetloop bundle diff tracker 1.3.0 1.4.0     # + added, - removed, ~ changed keys
    fleetloop apn-profile create iot-2027 --apn iot.global --variant carrier=acme=iot.acme
    fleetloop apn-profile list | show NAME | update NAME ... | delete NAME
    fleetloop credentials rotate --select region=eu [--dry-run]
    fleetloop credentials renew --within-days 30 [--select ...] [--dry-run]

HTTP only (``/v1/bundles``, ``/v1/apn-profiles``, ``/v1/credentials``); ``--json`` prints
the API's JSON. Exit codes as everywhere: 1 the request failed (409: a published version
with other content), 2 a usage mistake, 3 no server reached.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote

import click

from cli.commands import api, json_option, load_json_arg
from cli.output import print_json, table, widen


def _q(text: str) -> str:
    return quote(text, safe="")


@click.group()
def bundle() -> None:
    """Versioned config bundles: publish (immutable), list, show, diff."""


def _overlay(text: str) -> tuple[str, Any]:
    scope, sep, patch = text.partition("=")
    kind_label, sep2, rest = patch.partition("=")
    if not sep or not sep2:
        raise click.BadParameter(
            f"{text!r}: give SCOPE=PATCH, e.g. region=eu=@eu.json or "
            "policy_group=pilot='{\"debug\": true}'",
            param_hint="--overlay",
        )
    data = load_json_arg(rest, "--overlay")
    if not isinstance(data, dict):
        raise click.BadParameter("an overlay patch is a JSON object", param_hint="--overlay")
    return f"{scope}={kind_label}", data


@bundle.command("publish")
@click.argument("name")
@click.argument("version")
@click.argument("content")
@click.option(
    "--overlay",
    "overlays",
    multiple=True,
    metavar="SCOPE=PATCH",
    help='a key patch for a cohort: region=eu=@eu.json ({"set": {...}, "remove": [...]} or a '
    "plain object); scopes region, policy_group, carrier, country (repeatable)",
)
@click.option("--description", default="", help="what changed, for the people after you")
@json_option
def bundle_publish(
    name: str,
    version: str,
    content: str,
    overlays: tuple[str, ...],
    description: str,
    as_json: bool,
) -> None:
    """Publish NAME VERSION with CONTENT (a JSON object, inline or @file.json; @- stdin).
    A published version is immutable: the same content again is a no-op."""
    data = load_json_arg(content, "CONTENT")
    if not isinstance(data, dict):
        raise click.BadParameter("a bundle is a JSON object", param_hint="CONTENT")
    body = {
        "version": version,
        "content": data,
        "overlays": dict(_overlay(o) for o in overlays),
        "description": description,
    }
    with api() as client:
        made = client.request("POST", f"/bundles/{_q(name)}/versions", json_body=body)
    if as_json:
        print_json(made)
        return
    verb = "published" if made.get("created") else "already published (same content)"
    click.echo(
        f"bundle {made['name']}@{made['version']} {verb}: sha-256 {made['digest']} "
        f"({made['size']} bytes)"
    )
    for overlay in made.get("overlays", []):
        click.echo(f"  overlay {overlay['scope']}: sha-256 {overlay['digest']}")


@bundle.command("list")
@click.argument("name", required=False)
@json_option
def bundle_list(name: str | None, as_json: bool) -> None:
    """The bundles (or NAME's versions, oldest first)."""
    with api() as client:
        found = client.request("GET", f"/bundles/{_q(name)}/versions" if name else "/bundles")
    if as_json:
        print_json(found)
        return
    if not found:
        click.echo("(no bundles)")
        return
    if name:
        rows = [
            (
                v["version"],
                v["digest"][:16],
                v["size"],
                ",".join(o["scope"] for o in v["overlays"]) or "-",
                v["published_by"],
                v["published_at"],
            )
            for v in found
        ]
        headers, rows = widen(
            ("VERSION", "SHA-256", "BYTES", "OVERLAYS", "BY", "AT"),
            rows,
            found,
            [
                ("FULL SHA-256", lambda v: v["digest"]),
                ("DESCRIPTION", lambda v: v["description"] or "-"),
            ],
        )
        click.echo(table(headers, rows))
        return
    names = [(b["name"], b["versions"], b["latest"]) for b in found]
    headers, names = widen(
        ("NAME", "VERSIONS", "LATEST"),
        names,
        found,
        [
            ("LATEST SHA-256", lambda b: b["latest_digest"][:16]),
            ("BY", lambda b: b["latest_published_by"]),
            ("AT", lambda b: b["latest_published_at"]),
        ],
    )
    click.echo(table(headers, names))


def _ref(text: str) -> tuple[str, str]:
    name, sep, version = text.partition("@")
    if not sep or not name or not version:
        raise click.BadParameter(f"{text!r}: give NAME@VERSION", param_hint="REF")
    return name, version


@bundle.command("show")
@click.argument("ref", metavar="NAME@VERSION")
@click.option("--overlay", metavar="SCOPE", help="the merged content of this overlay (region=eu)")
def bundle_show(ref: str, overlay: str | None) -> None:
    """One version with its content (JSON)."""
    name, version = _ref(ref)
    params = {"overlay": overlay} if overlay else None
    with api() as client:
        found = client.request("GET", f"/bundles/{_q(name)}/versions/{_q(version)}", params=params)
    click.echo(json.dumps(found, indent=2, ensure_ascii=False))


@bundle.command("diff")
@click.argument("name")
@click.argument("old")
@click.argument("new")
@click.option("--overlay", metavar="SCOPE", help="diff this overlay's merged content")
@json_option
def bundle_diff(name: str, old: str, new: str, overlay: str | None, as_json: bool) -> None:
    """Keys added (+), removed (-) and changed (~) from NAME@OLD to NAME@NEW."""
    params: dict[str, str] = {"from": old, "to": new}
    if overlay:
        params["overlay"] = overlay
    with api() as client:
        found = client.request("GET", f"/bundles/{_q(name)}/diff", params=params)
    if as_json:
        print_json(found)
        return

    def show(value: Any) -> str:
        return json.dumps(value, ensure_ascii=False)

    lines = [f"+ {k}: {show(v)}" for k, v in found["added"].items()]
    lines += [f"- {k}: {show(v)}" for k, v in found["removed"].items()]
    lines += [f"~ {k}: {show(c['old'])} -> {show(c['new'])}" for k, c in found["changed"].items()]
    click.echo("\n".join(lines) if lines else f"{name}@{old} and @{new} have the same keys")


# -- APN profiles ------------------------------------------------------------------------------


@click.group("apn-profile")
def apn_profile() -> None:
    """Named APN sets per carrier / country, for connectivity=profile:NAME."""


def _variant(text: str) -> tuple[str, dict[str, Any]]:
    scope, sep, rest = text.partition("=")
    label, sep2, apns = rest.partition("=")
    names = [a.strip() for a in apns.split(",") if a.strip()]
    if not sep or not sep2 or not names:
        raise click.BadParameter(
            f"{text!r}: give carrier=NAME=APN[,APN] or country=CC=APN[,APN]",
            param_hint="--variant",
        )
    return f"{scope}={label}", {"apns": names, "active": names[0]}


def _profile_body(
    apns: tuple[str, ...], variants: tuple[str, ...], description: str, from_file: str | None
) -> dict[str, Any]:
    if from_file is not None:
        data = load_json_arg(from_file, "--from")
        if not isinstance(data, dict):
            raise click.BadParameter("a profile is a JSON object", param_hint="--from")
        return data
    names = [a.strip() for text in apns for a in text.split(",") if a.strip()]
    if not names:
        raise click.UsageError("give --apn APN (first one active) or --from @profile.json")
    body: dict[str, Any] = {
        "apns": names,
        "active": names[0],
        "variants": dict(_variant(v) for v in variants),
    }
    if description:
        body["description"] = description
    return body


def _profile_options(f: Any) -> Any:
    f = click.option("--from", "from_file", metavar="@FILE", help="the whole profile as JSON")(f)
    f = click.option("--description", default="", help="free text")(f)
    f = click.option(
        "--variant",
        "variants",
        multiple=True,
        metavar="SCOPE=APN[,APN]",
        help="carrier=NAME=APNs or country=CC=APNs (first active; repeatable)",
    )(f)
    f = click.option(
        "--apn", "apns", multiple=True, metavar="APN[,APN]", help="the default set (first active)"
    )(f)
    return f


def _print_profile(found: dict[str, Any]) -> None:
    click.echo(f"APN profile {found['name']} (revision {found['revision']})")
    click.echo(f"  default: {found['active']} of {','.join(found['apns'])}")
    for scope, value in found.get("variants", {}).items():
        click.echo(f"  {scope}: {value['active']} of {','.join(value['apns'])}")


def _put(name: str, body: dict[str, Any], create: bool | None, as_json: bool) -> None:
    params = {"create": "true" if create else "false"} if create is not None else None
    with api() as client:
        found = client.request("PUT", f"/apn-profiles/{_q(name)}", json_body=body, params=params)
    if as_json:
        print_json(found)
        return
    _print_profile(found)


@apn_profile.command("create")
@click.argument("name")
@_profile_options
@json_option
def profile_create(
    name: str,
    apns: tuple[str, ...],
    variants: tuple[str, ...],
    description: str,
    from_file: str | None,
    as_json: bool,
) -> None:
    """Create profile NAME (refused when it exists)."""
    _put(name, _profile_body(apns, variants, description, from_file), True, as_json)


@apn_profile.command("update")
@click.argument("name")
@_profile_options
@json_option
def profile_update(
    name: str,
    apns: tuple[str, ...],
    variants: tuple[str, ...],
    description: str,
    from_file: str | None,
    as_json: bool,
) -> None:
    """Replace profile NAME (refused when it does not exist); its revision grows."""
    _put(name, _profile_body(apns, variants, description, from_file), False, as_json)


@apn_profile.command("list")
@json_option
def profile_list(as_json: bool) -> None:
    """Every APN profile."""
    with api() as client:
        found = client.request("GET", "/apn-profiles")
    if as_json:
        print_json(found)
        return
    rows = [
        (p["name"], p["revision"], p["active"], ",".join(p["apns"]), ",".join(p["variants"]) or "-")
        for p in found
    ]
    headers, rows = widen(
        ("NAME", "REV", "ACTIVE", "APNS", "VARIANTS"),
        rows,
        found,
        [
            ("UPDATED BY", lambda p: p["updated_by"]),
            ("UPDATED", lambda p: p["updated_at"]),
            ("DESCRIPTION", lambda p: p["description"] or "-"),
        ],
    )
    click.echo(table(headers, rows) if rows else "(no profiles)")


@apn_profile.command("show")
@click.argument("name")
@json_option
def profile_show(name: str, as_json: bool) -> None:
    """One APN profile."""
    with api() as client:
        found = client.request("GET", f"/apn-profiles/{_q(name)}")
    if as_json:
        print_json(found)
        return
    _print_profile(found)


@apn_profile.command("delete")
@click.argument("name")
def profile_delete(name: str) -> None:
    """Delete profile NAME (running campaigns keep what they resolved)."""
    with api() as client:
        found = client.request("DELETE", f"/apn-profiles/{_q(name)}")
    click.echo(f"deleted APN profile {found['name']} (revision {found['revision']})")


# -- credentials -------------------------------------------------------------------------------


@click.group("credentials")
def credentials() -> None:
    """DM credential rotation by re-bootstrap; certificate renewal."""


def _print_rotation(found: dict[str, Any], verb: str) -> None:
    for item in found.get("expiring") or []:
        click.echo(
            f"  {item['endpoint']}: certificate {item['serial']} expires {item['not_after']}"
        )
    if found["dry_run"]:
        click.echo(
            f"{found['selected']} devices would {verb} to credentials generation "
            f"{found['generation']} (dry run: nothing changed)"
        )
        return
    click.echo(
        f"{found['changed']} of {found['selected']} devices {verb} to credentials generation "
        f"{found['generation']}; follow with `fleetloop state drift --select ...`"
    )


@credentials.command("rotate")
@click.option("--select", "selector", required=True, help="inventory selector (region=eu,...)")
@click.option("--dry-run", is_flag=True, help="list the devices, change nothing")
@json_option
def credentials_rotate(selector: str, dry_run: bool, as_json: bool) -> None:
    """Rotate the DM PSK (or certificate) of the selected devices: each re-bootstraps, gets a
    fresh credential and registers with it; the old one is refused from then on."""
    with api() as client:
        found = client.request(
            "POST", "/credentials/rotate", json_body={"select": selector, "dry_run": dry_run}
        )
    if as_json:
        print_json(found)
        return
    _print_rotation(found, "rotate")


@credentials.command("renew")
@click.option("--within-days", type=float, required=True, help="certificates expiring this soon")
@click.option("--select", "selector", help="only devices this selector names")
@click.option("--dry-run", is_flag=True, help="list the devices, change nothing")
@json_option
def credentials_renew(
    within_days: float, selector: str | None, dry_run: bool, as_json: bool
) -> None:
    """Renew (by re-bootstrap) every DM certificate that expires within N days."""
    body: dict[str, Any] = {"within_days": within_days, "dry_run": dry_run}
    if selector:
        body["select"] = selector
    with api() as client:
        found = client.request("POST", "/credentials/renew", json_body=body)
    if as_json:
        print_json(found)
        return
    _print_rotation(found, "renew")


__all__ = ["apn_profile", "bundle", "credentials"]

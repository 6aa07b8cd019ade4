"""``fleetloop campaign``: staged roll-outs with health gates (docs/CAMPAIGNS.md).

Through the management API (``/v1/campaigns``, ``/v1/artifacts/quarantine``)::

    fleetloop campaign plan -f spec.yaml                  # dry run: waves, strata, bytes, time
    fleetloop campaign create -f spec.yaml                # the same spec, started
    fleetloop campaign create --name cfg2 --select region=eu --config tracker@2.0.0 \\
        --canary 5 --waves 10%,50%,100% --bake 5m --on-failure revert --revert-scope region
    fleetloop campaign list | status ID [--watch] | report ID
    fleetloop campaign pause|resume|approve ID
    fleetloop campaign abort ID --keep|--revert
    fleetloop campaign rollback ID --select region=eu
    fleetloop campaign rollback ID --scope region=eu      # also of an ended campaign
    fleetloop campaign quarantine ARTIFACT --reason "boot loops"
    fleetloop campaign unquarantine ARTIFACT

A spec file is YAML or JSON (the API takes JSON; this command converts). Flags fill in or
override the file's keys, so the simple case needs no file at all. A spec mistake exits 2 and
names the file (or the flag) and the spec path, with the fix; the server checks the spec,
so ``plan`` and ``create`` refuse exactly the same things.

Exit codes as the rest of the CLI: 1 the request failed (an unknown campaign, a verb the
campaign's state does not allow), 2 a usage or spec mistake, 3 no server reached.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any
from urllib.parse import quote

import click

from cli.client import EXIT_USAGE, ApiClient, CliFailure, Response, failure_message, parse_sse
from cli.commands import api, json_option, stop_on_sigterm
from cli.output import print_json, table, widen

FINAL = ("succeeded", "failed", "timed_out", "reverted", "skipped")
ORDER = (
    "queued",
    "delivering",
    "staged",
    "registering",
    "verified",
    "succeeded",
    "failed",
    "timed_out",
    "reverting",
    "reverted",
    "skipped",
)
ENDED = ("completed", "aborted", "reverted")
BAR = 30
FLAG_OF = {
    "name": "--name",
    "selector": "--select",
    "tenant": "--tenant",
    "change": "--config/--firmware/--apn",
    "kind": "--kind",
    "esim": "--iccid/--activation-code/--plmn",
    "canary": "--canary",
    "waves": "--waves",
    "on_failure": "--on-failure",
    "revert_scope": "--revert-scope",
}


@click.group()
def campaign() -> None:
    """Staged roll-outs of config, firmware and APN changes with health gates."""


def _path(cid: str) -> str:
    return f"/campaigns/{quote(cid, safe='')}"


# -- the spec --------------------------------------------------------------------------------------


def _load(file: Path) -> dict[str, Any]:
    """A spec file (YAML or JSON; ``-`` is stdin) as a mapping; exit 2 when it is not one."""
    try:
        text = sys.stdin.read() if str(file) == "-" else file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise click.UsageError(f"cannot read the spec {file}: {err}") from None
    try:
        if file.suffix == ".json":
            data = json.loads(text)
        else:
            import yaml  # type: ignore[import-untyped]  # only spec readers pay for it

            data = yaml.safe_load(text)
    except Exception as err:  # yaml's and json's errors alike: one usage error
        where = getattr(err, "problem_mark", None)
        at = f" at line {where.line + 1}, column {where.column + 1}" if where else ""
        first = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise click.UsageError(f"{file} is not valid YAML/JSON{at}: {first}") from None
    if not isinstance(data, dict):
        raise click.UsageError(
            f"{file}: a campaign spec is a mapping (name:, selector:, change:, ...); "
            "see docs/CAMPAIGNS.md"
        )
    return data


def _waves(text: str) -> list[dict[str, Any]]:
    """``10%,50%,100%``: cumulative shares of the selection (10 %, then up to 50 %, then
    the rest), as the spec's waves (percent of the whole selection each); a bare number is a
    wave of that many devices."""
    waves: list[dict[str, Any]] = []
    reached = 0.0
    for part in (p.strip() for p in text.split(",")):
        try:
            if part.endswith("%"):
                share = float(part[:-1])
                if not reached < share <= 100:
                    raise ValueError
                waves.append({"percent": round(share - reached, 6)})
                reached = share
            else:
                count = int(part)
                if count < 1:
                    raise ValueError
                waves.append({"count": count})
        except ValueError:
            raise click.BadParameter(
                f"{part!r}: give rising cumulative percentages (10%,50%,100%) or device "
                "counts (50,200)",
                param_hint="--waves",
            ) from None
    return waves


def _spec(file: Path | None, flags: dict[str, Any]) -> tuple[dict[str, Any], str, set[str]]:
    """The spec from the file and the flags; where it came from; the keys the flags set."""
    spec = _load(file) if file is not None else {}
    source = str(file) if file is not None else "the flags"
    set_by_flags: set[str] = set()

    def put(key: str, value: Any) -> None:
        spec[key] = value
        set_by_flags.add(key)

    if flags.get("name"):
        put("name", flags["name"])
    if flags.get("select"):
        put("selector", flags["select"])
    if flags.get("tenant"):
        put("tenant", flags["tenant"])
    change: list[dict[str, Any]] = []
    kind = flags.get("kind") or spec.get("kind")
    if flags.get("kind"):
        put("kind", flags["kind"])
    if flags.get("iccid") or flags.get("activation_code") or flags.get("plmn"):
        if kind != "esim":
            raise click.UsageError("--iccid/--activation-code/--plmn go with --kind esim")
        esim = {"iccid": flags.get("iccid"), "activation_code": flags.get("activation_code")}
        if flags.get("plmn"):  # the carrier check's networks (docs/ESIM.md)
            esim["plmns"] = list(flags["plmn"])
        put("esim", esim)
    if flags.get("config"):
        change.append({"config": flags["config"]})
    if flags.get("firmware"):
        change.append({"firmware": flags["firmware"]})
    if flags.get("apn"):
        apn = str(flags["apn"])
        use_profile = "," not in apn and not apn.startswith("profile:")
        change.append({"connectivity": f"profile:{apn}" if use_profile else apn})
    if change:
        put("change", change)
    elif kind == "esim" and "change" not in spec:
        spec["change"] = []  # the switch alone: nothing moves with it
    bake = flags.get("bake")
    if flags.get("canary") is not None or bake is not None:
        canary = dict(spec.get("canary") or {})
        if flags.get("canary") is not None:
            canary["max_devices"] = flags["canary"]
        if bake is not None:
            canary["bake"] = bake
        put("canary", canary)
    if flags.get("waves"):
        waves = _waves(flags["waves"])
        if bake is not None:
            for wave in waves:
                wave["bake"] = bake
        put("waves", waves)
    elif bake is not None and isinstance(spec.get("waves"), list):
        put("waves", [{**w, "bake": bake} if isinstance(w, dict) else w for w in spec["waves"]])
    if flags.get("on_failure"):
        put("on_failure", flags["on_failure"])
    if flags.get("revert_scope"):
        put("revert_scope", flags["revert_scope"])
    missing = [k for k in ("name", "selector", "change") if k not in spec]
    if missing:
        needs = ", ".join(FLAG_OF[k] for k in missing)
        raise click.UsageError(f"the campaign needs {', '.join(missing)}: give -f SPEC or {needs}")
    return spec, source, set_by_flags


def _send_spec(
    client: ApiClient, path: str, spec: dict[str, Any], source: str, flagged: set[str]
) -> Any:
    """POST the spec; a spec mistake becomes exit 2 naming the file or the flag."""
    try:
        return client.request("POST", path, json_body=spec)
    except CliFailure as failure:
        if failure.exit_code != EXIT_USAGE:
            raise
        message = failure.message
        key = message.split(":", 1)[0].split("[", 1)[0].split(".", 1)[0]
        origin = FLAG_OF.get(key, source) if key in flagged else source
        raise CliFailure(f"{origin}: {message}", EXIT_USAGE) from None


def spec_options(f: Any) -> Any:
    """``-f SPEC`` and the flags of the simple case (shared by plan and create)."""
    options = [
        click.option(
            "-f",
            "--file",
            "file",
            type=click.Path(path_type=Path, dir_okay=False, allow_dash=True),
            help="the campaign spec, YAML or JSON (docs/CAMPAIGNS.md); - reads stdin",
        ),
        click.option("--name", help="the campaign's name"),
        click.option("--select", help="which devices (selector, docs/GROUPS.md)"),
        click.option("--tenant", help="the tenant the campaign runs in"),
        click.option("--config", metavar="NAME[@VERSION]", help="a config bundle to roll out"),
        click.option("--firmware", metavar="IMAGE", help="a firmware image id or version"),
        click.option("--apn", metavar="PROFILE", help="an APN profile (or apn-a,apn-b)"),
        click.option(
            "--kind",
            type=click.Choice(["change", "esim"]),
            help="esim: an eSIM switch in two gated phases, download then enable "
            "(with --iccid and --activation-code; --apn/--config move with it)",
        ),
        click.option("--iccid", metavar="ICCID", help="--kind esim: the profile to switch to"),
        click.option(
            "--activation-code",
            metavar="1$SMDP$ID",
            help="--kind esim: where the eIM downloads the profile from",
        ),
        click.option(
            "--plmn",
            multiple=True,
            metavar="MCC-MNC",
            help="--kind esim: a network the devices must be on after the enable (repeat; "
            "compared with /4/0/10-9 when they re-register; none: not checked)",
        ),
        click.option("--canary", type=click.IntRange(min=1), help="canary devices at most"),
        click.option("--waves", metavar="10%,50%,100%", help="cumulative shares or counts"),
        click.option("--bake", metavar="DURATION", help="bake time of every wave: 30s, 5m"),
        click.option("--on-failure", type=click.Choice(["revert", "halt"])),
        click.option(
            "--revert-scope", type=click.Choice(["batch", "region", "carrier", "policy_group"])
        ),
    ]
    for option in reversed(options):
        f = option(f)
    return f


# -- output ----------------------------------------------------------------------------------------


def _counts(counts: dict[str, int]) -> str:
    shown = [f"{k} {counts[k]}" for k in ORDER if counts.get(k)]
    shown += [f"{k} {v}" for k, v in sorted(counts.items()) if k not in ORDER and v]
    return ", ".join(shown) or "-"


def _bar(counts: dict[str, int], total: int) -> str:
    done = sum(counts.get(k, 0) for k in FINAL)
    filled = round(BAR * done / total) if total else BAR
    return f"[{'#' * filled}{'.' * (BAR - filled)}] {done}/{total} done"


def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024  # type: ignore[assignment]
    return str(n)


def _seconds(s: float) -> str:
    if 0 < s < 1:
        return "under 1 s"
    if s < 120:
        return f"{s:.0f} s"
    if s < 7200:
        return f"{s / 60:.0f} min"
    return f"{s / 3600:.1f} h"


def show_plan(plan: dict[str, Any]) -> None:
    click.echo(
        f"plan {plan['name']!r}: {plan['devices']} devices in {len(plan['waves'])} waves, "
        f"{_size(plan['bytes_to_move'])} to move, about {_seconds(plan['estimated_s'])} with "
        "ideal links"
    )
    changes = ", ".join(
        f"{c['dimension']} {c['artifact'] or ''}".strip() for c in plan["components"]
    )
    click.echo(
        f"change: {changes}   selector: {plan['selector']}"
        + (f"   tenant: {plan['tenant']}" if plan.get("tenant") else "")
    )
    click.echo("")
    rows = [
        (w["index"], w["name"], w["devices"], _seconds(w["bake_s"]), w["approval"])
        for w in plan["waves"]
    ]
    click.echo(table(("WAVE", "NAME", "DEVICES", "BAKE", "APPROVAL"), rows))
    click.echo("")
    strata = [
        (s["region"] or "-", s["carrier"] or "-", s["sku"] or "-", s["devices"])
        for s in plan["strata"]
    ]
    click.echo(table(("REGION", "CARRIER", "SKU", "DEVICES"), strata))
    if plan["conflict_count"]:
        first = plan["conflicts"][0]
        click.echo(
            f"\nconflicts: {plan['conflict_count']} devices are held by other active campaigns "
            f"and are left out (e.g. {first['endpoint']} {first['dimension']} by "
            f"{first['campaign']})"
        )
    else:
        click.echo("\nconflicts: none")


def show_status(found: dict[str, Any]) -> None:
    reason = f" ({found['reason']})" if found.get("reason") else ""
    click.echo(f"campaign {found['id']}  {found['name']!r}  {found['state'].upper()}{reason}")
    parts = [f"created {found['created_at']} by {found['created_by']}"]
    if found.get("tenant"):
        parts.append(f"tenant {found['tenant']}")
    parts.append(
        "change "
        + ", ".join(f"{c['dimension']} {c['artifact']}".strip() for c in found["components"])
    )
    click.echo("  " + "   ".join(parts))
    if found.get("phases"):
        phases = " -> ".join(f"{p['name']} ({', '.join(p['components'])})" for p in found["phases"])
        now = f"; now: {found['phase']}" if found.get("phase") else ""
        click.echo(f"  phases {phases}{now}")
    click.echo(f"  {_bar(found['counts'], found['devices'])}   {_counts(found['counts'])}")
    if found.get("rolling_back"):
        click.echo(f"  rolling back: {found['rolling_back']} devices still reverting")
    if found.get("conflicts"):
        click.echo(f"  {found['conflicts']} devices left out: held by other campaigns")
    if found.get("reverted_cohorts"):
        cohorts = ", ".join(f"{c['scope']}={c['key']}" for c in found["reverted_cohorts"])
        click.echo(f"  reverted: {cohorts}")
    click.echo("")
    waves = [
        (
            w["index"],
            w["name"],
            f"{w['state']} ({w['phase']})" if w.get("phase") else w["state"],
            w["devices"],
            _bar(w["counts"], w["devices"]),
            _counts(w["counts"]),
        )
        for w in found["waves"]
    ]
    click.echo(table(("WAVE", "NAME", "STATE", "DEVICES", "PROGRESS", "COUNTS"), waves))
    rows = []
    for w in found["waves"]:
        verdicts = {(v["scope"], v["key"]): v for v in w["verdicts"]}
        for cohort in w["cohorts"]:
            if cohort["scope"] not in {v["scope"] for v in w["verdicts"]}:
                continue  # not a gate scope of this campaign
            v = verdicts.get((cohort["scope"], cohort["key"]))
            rows.append(
                (
                    w["index"],
                    f"{cohort['scope']}={cohort['key'] or '-'}",
                    _counts(cohort["counts"]),
                    v["verdict"] if v else "pending",
                )
            )
        batch = verdicts.get(("batch", ""))
        if batch is not None:
            rows.append((w["index"], "batch", _counts(w["counts"]), batch["verdict"]))
    if rows:
        click.echo("")
        click.echo(table(("WAVE", "COHORT", "COUNTS", "GATE"), rows))
    why = [
        (w["index"], f"{v['scope']}={v['key'] or '-'}", v["verdict"], "; ".join(v["reasons"]))
        for w in found["waves"]
        for v in w["verdicts"]
        if v["verdict"] in ("failed", "inconclusive")
    ]
    why += [
        (
            w["index"],
            f"{v['scope']}={v['key'] or '-'}",
            f"download {v['verdict']}",
            "; ".join(v.get("reasons", [])),
        )
        for w in found["waves"]
        for v in w.get("download_verdicts", [])
        if v.get("verdict") in ("failed", "inconclusive")
    ]
    if why:
        click.echo("")
        click.echo(table(("WAVE", "COHORT", "GATE", "WHY"), why))


def _show_verb(found: dict[str, Any], what: str) -> None:
    reason = f" ({found['reason']})" if found.get("reason") else ""
    click.echo(f"campaign {found['id']} {what}: now {found['state']}{reason}")


# -- commands --------------------------------------------------------------------------------------


@campaign.command("plan")
@spec_options
@json_option
def plan(file: Path | None, as_json: bool, **flags: Any) -> None:
    """Dry run: waves, devices per region x carrier x SKU, bytes to move, estimated time and
    conflicts with other active campaigns. Nothing is written."""
    spec, source, flagged = _spec(file, flags)
    with api() as client:
        found = _send_spec(client, "/campaigns/plan", spec, source, flagged)
    if as_json:
        print_json(found)
        return
    show_plan(found)


@campaign.command("create")
@spec_options
@json_option
def create(file: Path | None, as_json: bool, **flags: Any) -> None:
    """Create and start a campaign from a spec file and/or flags (the canary goes first)."""
    spec, source, flagged = _spec(file, flags)
    with api() as client:
        found = _send_spec(client, "/campaigns", spec, source, flagged)
    if as_json:
        print_json(found)
        return
    click.echo(
        f"created campaign {found['id']} ({found['devices']} devices, {len(found['waves'])} "
        f"waves); follow it with `fleetloop campaign status {found['id']} --watch`"
    )


@campaign.command("list")
@click.option("--state", "states", multiple=True, help="only this state (repeatable)")
@click.option("--active", is_flag=True, help="only campaigns still holding their devices")
@click.option("--limit", type=click.IntRange(1, 1000), default=100, show_default=True)
@json_option
def list_campaigns(states: tuple[str, ...], active: bool, limit: int, as_json: bool) -> None:
    """Campaigns, newest first."""
    params = {"state": list(states) or None, "active": active or None, "limit": limit}
    with api() as client:
        found = client.request("GET", "/campaigns", params=params)
    if as_json:
        print_json(found)
        return
    items = found["items"]
    rows = [
        (c["id"], c["name"], c["state"], c["tenant"], c["created_at"], ", ".join(c["artifacts"]))
        for c in items
    ]
    if not rows:
        click.echo("no campaigns; plan one with `fleetloop campaign plan -f spec.yaml`")
        return
    headers, rows = widen(
        ("ID", "NAME", "STATE", "TENANT", "CREATED", "ARTIFACTS"),
        rows,
        items,
        [
            ("WAVE", lambda c: c.get("wave")),
            ("CREATED BY", lambda c: c.get("created_by")),
            ("UPDATED", lambda c: c.get("updated_at")),
            ("FINISHED", lambda c: c.get("finished_at")),
            ("REASON", lambda c: c.get("reason") or None),
        ],
    )
    click.echo(table(headers, rows))


def _watch(client: ApiClient, cid: str, tty: bool) -> dict[str, Any] | None:
    """Follow the campaign's event stream, redrawing on every status; the last status."""
    sock, answer = client._open(
        "GET", _path(cid) + "/events", None, None, {"Accept": "text/event-stream"}, None
    )
    last: dict[str, Any] | None = None
    try:
        if answer.status >= 400:
            raise failure_message(
                Response(answer.status, answer.reason, answer.body()), client.target
            )
        stop_on_sigterm()
        for event, data in parse_sse(answer.lines()):
            if event == "status" and isinstance(data, dict):
                last = data
                if tty:
                    click.echo("\x1b[H\x1b[2J", nl=False)
                    show_status(data)
                    click.echo("\nwatching; Ctrl-C to stop", err=True)
                else:
                    click.echo(
                        f"{data['state']:<17} {_bar(data['counts'], data['devices'])}  "
                        f"{_counts(data['counts'])}"
                    )
            elif event == "end":
                break
    except KeyboardInterrupt:
        pass
    finally:
        sock.close()
    return last


@campaign.command("status")
@click.argument("cid", metavar="ID")
@click.option("--watch", is_flag=True, help="follow it live until it ends (Ctrl-C stops)")
@json_option
def status(cid: str, watch: bool, as_json: bool) -> None:
    """State, per-wave and per-cohort counts, gate verdicts (a live progress bar with
    --watch)."""
    with api() as client:
        if watch and not as_json:
            last = _watch(client, cid, sys.stdout.isatty())
            if last is not None and not sys.stdout.isatty():
                show_status(last)
            return
        found = client.request("GET", _path(cid))
    if as_json:
        print_json(found)
        return
    show_status(found)


campaign.add_command(status, name="show")  # `campaign show ID`: the same as status


@campaign.command("report")
@click.argument("cid", metavar="ID")
@click.option("--limit", type=click.IntRange(1, 10000), default=1000, show_default=True)
@json_option
def report(cid: str, limit: int, as_json: bool) -> None:
    """What changed where, what failed and why, and why the campaign stopped."""
    with api() as client:
        found = client.request("GET", _path(cid) + "/report", params={"limit": limit})
    if as_json:
        print_json(found)
        return
    click.echo(f"campaign {found['id']}  {found['name']!r}  {found['state'].upper()}")
    click.echo(f"  stopped: {found['stopped'] or '-'}")
    click.echo(
        f"  changed {found['changed']} of {found['devices']} devices, reverted "
        f"{found['reverted']}"
        + (
            f", {found['conflicts']} left out (held by other campaigns)"
            if found["conflicts"]
            else ""
        )
    )
    if found["reverted_cohorts"]:
        cohorts = ", ".join(f"{c['scope']}={c['key']}" for c in found["reverted_cohorts"])
        click.echo(f"  reverted at scope: {cohorts}")
    click.echo("")
    regions = [(r, _counts(c)) for r, c in sorted(found["by_region"].items())]
    click.echo(table(("REGION", "DEVICES"), regions))
    if found["failures"]:
        click.echo("")
        rows = [
            (f["devices"], f["reason"], ", ".join(f["examples"][:3])) for f in found["failures"]
        ]
        click.echo(table(("DEVICES", "WHY", "E.G."), rows))
    failed = [
        (w["index"], f"{v['scope']}={v['key'] or '-'}", v["verdict"], "; ".join(v["reasons"]))
        for w in found["waves"]
        for v in w["verdicts"]
        if v["verdict"] in ("failed", "inconclusive")
    ]
    if failed:
        click.echo("")
        click.echo(table(("WAVE", "COHORT", "GATE", "WHY"), failed))
    if found["no_rollback_target"]:
        shown = ", ".join(found["no_rollback_target"][:5])
        click.echo(
            f"\nno last-known-good value to revert to: {shown}"
            + (" ..." if len(found["no_rollback_target"]) > 5 else "")
        )


def _verb(cid: str, verb: str, body: Any = None) -> Any:
    with api() as client:
        return client.request("POST", f"{_path(cid)}/{verb}", json_body=body)


@campaign.command("pause")
@click.argument("cid", metavar="ID")
@json_option
def pause(cid: str, as_json: bool) -> None:
    """Admit no more devices (those in flight finish)."""
    found = _verb(cid, "pause")
    print_json(found) if as_json else _show_verb(found, "paused")


@campaign.command("resume")
@click.argument("cid", metavar="ID")
@json_option
def resume(cid: str, as_json: bool) -> None:
    """Go on after a pause, an inconclusive gate or a halt."""
    found = _verb(cid, "resume")
    print_json(found) if as_json else _show_verb(found, "resumed")


@campaign.command("approve")
@click.argument("cid", metavar="ID")
@json_option
def approve(cid: str, as_json: bool) -> None:
    """Leave the canary (when it needs approval), or accept an inconclusive gate."""
    found = _verb(cid, "approve")
    print_json(found) if as_json else _show_verb(found, "approved")


@campaign.command("abort")
@click.argument("cid", metavar="ID")
@click.option("--keep", "mode", flag_value="keep", help="keep what the campaign changed")
@click.option("--revert", "mode", flag_value="revert", help="put changed devices back")
@json_option
def abort(cid: str, mode: str | None, as_json: bool) -> None:
    """Stop for good: --revert puts every changed device back on its last-known-good value,
    --keep leaves them as they are (one of the two is required)."""
    if mode is None:
        raise click.UsageError(
            "say what happens to the devices already changed: --keep or --revert"
        )
    found = _verb(cid, "abort", {"revert": mode == "revert"})
    print_json(found) if as_json else _show_verb(found, f"aborted ({mode})")


@campaign.command("rollback")
@click.argument("cid", metavar="ID")
@click.option(
    "--scope",
    help="which of its devices by the campaign's own cohorts: all, wave=N (or a wave's "
    "name: canary), region=NAME, carrier=NAME, policy_group=NAME, sku=NAME",
)
@click.option("--select", "selector", help="which of its devices (selector on the inventory)")
@json_option
def rollback(cid: str, scope: str | None, selector: str | None, as_json: bool) -> None:
    """Put the campaign's devices in --scope and/or matching --select back on their
    last-known-good value (its queued ones are skipped); a running campaign goes on. Works
    on an ended campaign too (completed, aborted): follow it with `campaign status ID
    --watch`. Refused (exit 1) when a newer campaign changed those devices since."""
    if not scope and not selector:
        raise click.UsageError("say which devices: --scope all|wave=N|region=NAME|... or --select")
    body = {k: v for k, v in (("scope", scope), ("selector", selector)) if v}
    found = _verb(cid, "rollback", body)
    if as_json:
        print_json(found)
        return
    what = ", ".join(body.values())
    click.echo(f"rolling back {found['reverting']} devices of campaign {cid} ({what})")
    _show_verb(found["campaign"], "rollback started")


@campaign.command("quarantine")
@click.argument("artifact")
@click.option("--reason", required=True, help="why, for the audit log and the halted campaigns")
@json_option
def quarantine(artifact: str, reason: str, as_json: bool) -> None:
    """Quarantine ARTIFACT (bundle:NAME@VERSION, a firmware image id, apn-profile:NAME@rN):
    every campaign using it halts and no new one may use it (all-tenant token)."""
    with api() as client:
        found = client.request(
            "POST", "/artifacts/quarantine", json_body={"artifact": artifact, "reason": reason}
        )
    if as_json:
        print_json(found)
        return
    halted = ", ".join(found["halted"]) or "none"
    click.echo(f"quarantined {artifact}: campaigns halted: {halted}")


@campaign.command("unquarantine")
@click.argument("artifact")
@json_option
def unquarantine(artifact: str, as_json: bool) -> None:
    """Lift ARTIFACT's quarantine (bundle:NAME@VERSION, a firmware image id,
    apn-profile:NAME@rN): new campaigns may use it; campaigns it halted may be resumed
    (all-tenant token)."""
    with api() as client:
        found = client.request("DELETE", f"/artifacts/quarantine/{quote(artifact, safe='')}")
    if as_json:
        print_json(found)
        return
    resumable = ", ".join(found["resumable"]) or "none"
    click.echo(f"quarantine of {artifact} lifted; halted campaigns that may resume: {resumable}")

"""``fleetloop sim``: run a simulated device fleet against a server, and make its identities.

::

    fleetloop sim identities --devices 1000 --out ids.csv        # for the bootstrap import
    fleetloop sim run --devices 1000 --server coap://127.0.0.1:5683 --profile nbiot
    fleetloop sim run --identities ids.csv --server coaps://dm:5684 --duration 600
    fleetloop sim run --devices 50 --bootstrap coaps://bs:5784 --identities ids.csv
    fleetloop sim esim-pki lab-esim/                                  # eSIM lab (docs/ESIM.md)
    fleetloop sim run --devices 5 --server coap://127.0.0.1:5683 --esim lab-esim/

``run`` prints a progress line (registered / updates / failed) every second -- rewritten in
place on a terminal -- and a summary at the end; without ``--duration`` it runs until Ctrl-C
(or SIGTERM), then de-registers every device. The fleet itself is :mod:`simulators.fleet`;
``docs/FLEET.md`` describes profiles, link presets and behaviours.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import signal
import sys
from pathlib import Path
from typing import Any

import click

from cli.client import CliFailure
from cli.output import print_json, table
from simulators.identities import Identity, IdentityFileError, from_csv, generate, to_csv
from simulators.netem import PRESETS
from simulators.profiles import BEHAVIOUR_FIELDS, LINK_FIELDS, PROFILES, DeviceProfile

EXIT_USAGE = 2


def _pairs(values: tuple[str, ...], allowed: tuple[str, ...], option: str) -> dict[str, float]:
    """``KEY=VALUE`` options as floats, each KEY one of ``allowed``."""
    out: dict[str, float] = {}
    for item in values:
        key, sep, text = item.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or key not in allowed:
            raise click.BadParameter(
                f"{item!r}: expected KEY=VALUE with KEY one of {', '.join(allowed)}",
                param_hint=option,
            )
        try:
            out[key] = float(text)
        except ValueError:
            raise click.BadParameter(
                f"{item!r}: {text!r} is not a number", param_hint=option
            ) from None
    return out


def build_profile(
    name: str,
    *,
    lifetime: int | None,
    queue_mode: bool | None,
    behaviour: tuple[str, ...],
    link: tuple[str, ...],
) -> DeviceProfile:
    """The named profile with the command line's overrides (usage errors name the option)."""
    try:
        profile = PROFILES[name]
    except KeyError:
        raise click.BadParameter(
            f"unknown profile {name!r}; choose one of {', '.join(PROFILES)}",
            param_hint="--profile",
        ) from None
    try:
        if lifetime is not None:
            profile = profile.replace(lifetime=lifetime)
        if queue_mode is not None:
            profile = profile.replace(
                config=dataclasses.replace(profile.config, queue_mode=queue_mode)
            )
        changes = _pairs(behaviour, BEHAVIOUR_FIELDS, "--behaviour")
        if changes:
            profile = profile.with_behaviour(**changes)
        link_changes: dict[str, object] = dict(_pairs(link, LINK_FIELDS, "--link"))
        if "mtu" in link_changes:
            link_changes["mtu"] = int(link_changes["mtu"])  # type: ignore[call-overload]
        if link_changes:
            profile = profile.with_link(**link_changes)
    except ValueError as err:
        raise click.BadParameter(str(err)) from None
    return profile


def load_identities(
    path: Path | None, devices: int | None, prefix: str, seed: int
) -> list[Identity]:
    """The identities of the run: from the CSV (the first ``devices``), or generated."""
    if path is not None:
        try:
            identities = from_csv(path.read_text())
        except (OSError, UnicodeError) as err:
            raise CliFailure(f"cannot read {path}: {err}", EXIT_USAGE) from None
        except IdentityFileError as err:
            raise CliFailure(f"{path}: {err}", EXIT_USAGE) from None
        if devices is not None:
            if devices > len(identities):
                raise CliFailure(
                    f"{path} has {len(identities)} identities; --devices asks for {devices}",
                    EXIT_USAGE,
                )
            identities = identities[:devices]
        if not identities:
            raise CliFailure(f"{path} holds no identities", EXIT_USAGE)
        return identities
    if devices is None:
        raise click.UsageError("give --devices N (or --identities FILE)")
    return generate(devices, prefix=prefix, seed=seed)


def _raise_open_files(wanted: int) -> None:
    """One socket per device: lift the soft open-files limit as far as the hard limit allows."""
    try:
        import resource
    except ImportError:  # pragma: no cover - not on Linux
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


async def run_fleet(
    *,
    server: str | None,
    bootstrap: str | None,
    identities: list[Identity],
    profile: DeviceProfile,
    duration: float | None,
    seed: int,
    rate: float,
    interval: float,
    out: Any,
    give_up_after: float | None = None,
) -> dict[str, Any]:
    """Run until ``duration`` or a signal; returns the fleet's summary.

    When no device has registered after ``give_up_after`` seconds, nothing is answering at
    the server's address (or every device is refused): stop and say so rather than print
    ``registered 0`` forever.
    """
    from simulators.fleet.runner import DeviceFleet, FleetError

    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    tty = out.isatty()
    try:
        fleet = DeviceFleet(server, bootstrap_uri=bootstrap, seed=seed, start_rate=rate)
    except (FleetError, ValueError) as err:
        raise CliFailure(str(err), EXIT_USAGE) from None
    async with fleet:
        try:
            fleet.spawn(identities=identities, profile=profile)
        except (FleetError, ValueError, OSError) as err:
            raise CliFailure(str(err)) from None
        started = loop.time()
        deadline = None if duration is None else started + duration
        silent = False
        while not stop.is_set():
            if (
                give_up_after is not None
                and fleet.counters.registrations == 0
                and loop.time() - started >= give_up_after
            ):
                silent = True
                break
            wait = interval if deadline is None else min(interval, deadline - loop.time())
            if wait <= 0:
                break
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), wait)
            line = fleet.progress_line()
            out.write(("\r" + line + "\x1b[K") if tty else line + "\n")
            out.flush()
        if tty:
            out.write("\n")
        if silent:
            failures = fleet.counters.registration_failures
            answered = (
                f"{failures} Register attempts were refused or failed"
                f"{refusals_text(fleet.counters.failure_codes)}"
                if failures
                else "nothing answered"
            )
            await fleet.close()
            raise CliFailure(
                f"no device registered in {give_up_after:g} s at {server or bootstrap}: "
                f"{answered}; is `fleetloop serve` running there, on that port (see "
                "`fleetloop status`), and does it accept these devices' credentials?"
            )
        out.write("stopping: de-registering the fleet...\n")
        out.flush()
        await fleet.close()
        summary = fleet.summary()
        if fleet.counters.registrations == 0:
            raise CliFailure(
                f"no device registered at {server or bootstrap} in {summary['seconds']:g} s "
                f"({fleet.counters.registration_failures} Register attempts refused or "
                f"unanswered{refusals_text(fleet.counters.failure_codes)}, "
                f"{summary['io']['handshake_failures']} DTLS handshakes failed)"
            )
        return summary


CODE_NAMES = {
    "4.00": "Bad Request",
    "4.01": "Unauthorized",
    "4.03": "Forbidden",
    "4.04": "Not Found",
    "4.05": "Method Not Allowed",
    "4.06": "Not Acceptable",
    "4.13": "Request Entity Too Large",
    "4.15": "Unsupported Content-Format",
    "5.00": "Internal Server Error",
    "5.03": "Service Unavailable",
}


def refusals_text(failure_codes: dict[str, int]) -> str:
    """``": 4.03 Forbidden x12, no answer x3"``: why Register attempts failed, by CoAP code."""
    parts = []
    for key, count in sorted(failure_codes.items(), key=lambda item: -item[1]):
        operation, _, code = key.partition(" ")
        if operation != "register":
            continue
        name = CODE_NAMES.get(code)
        parts.append(f"{code}{f' {name}' if name else ''} x{count}")
    return f": {', '.join(parts)}" if parts else ""


@click.group()
def sim() -> None:
    """Simulated device fleet: run devices against a server, generate their identities."""


@sim.command("run")
@click.option("--devices", "-n", type=click.IntRange(min=1), help="number of devices")
@click.option("--server", metavar="URI", help="DM server: coap://host[:port] or coaps://...")
@click.option("--bootstrap", metavar="URI", help="bootstrap server: devices bootstrap first")
@click.option(
    "--profile",
    default="default",
    show_default=True,
    help=f"device profile: {', '.join(PROFILES)}",
)
@click.option(
    "--duration", type=click.FloatRange(min=0, min_open=True), help="seconds (default: Ctrl-C)"
)
@click.option(
    "--identities",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    help="CSV of identities (fleetloop sim identities); PSKs for coaps://",
)
@click.option("--prefix", default="sim-", show_default=True, help="endpoint name prefix")
@click.option("--seed", type=int, default=1, show_default=True, help="randomness and PSK seed")
@click.option(
    "--rate",
    type=click.FloatRange(min=0),
    default=500.0,
    show_default=True,
    help="devices started per second (0: all at once)",
)
@click.option("--lifetime", type=click.IntRange(min=1), help="registration lifetime, s")
@click.option("--queue-mode/--no-queue-mode", default=None, help="register in queue mode")
@click.option(
    "--behaviour",
    multiple=True,
    metavar="KEY=VALUE",
    help="misbehaviour, e.g. firmware_boot_failure=0.1 (repeatable)",
)
@click.option(
    "--link", multiple=True, metavar="KEY=VALUE", help="link override, e.g. loss=0.05, rtt=1.2"
)
@click.option(
    "--interval",
    type=click.FloatRange(min=0.1),
    default=1.0,
    show_default=True,
    help="seconds between progress lines",
)
@click.option(
    "--give-up-after",
    type=click.FloatRange(min=0, min_open=True),
    default=30.0,
    show_default=True,
    help="seconds without a single registration before the run stops with an error",
)
@click.option(
    "--esim",
    "esim_dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="devices with a simulated eUICC and IPA (ESipa over CoAP to the server's eIM), "
    "imported and linked to them; DIR: the lab PKI of `fleetloop sim esim-pki DIR`",
)
@click.option(
    "--esim-roaming",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    help="--esim: the first N devices are served by PLMN 001-01 whatever their profile",
)
@click.option(
    "--esim-poll",
    type=click.FloatRange(min=0.1),
    default=2.0,
    show_default=True,
    help="--esim: seconds between the IPAs' polls of the eIM",
)
@click.option("--json", "as_json", is_flag=True, help="print the summary as JSON")
def run(
    devices: int | None,
    server: str | None,
    bootstrap: str | None,
    profile: str,
    duration: float | None,
    identities: Path | None,
    prefix: str,
    seed: int,
    rate: float,
    lifetime: int | None,
    queue_mode: bool | None,
    behaviour: tuple[str, ...],
    link: tuple[str, ...],
    interval: float,
    give_up_after: float,
    esim_dir: Path | None,
    esim_roaming: int,
    esim_poll: float,
    as_json: bool,
) -> None:
    """Run simulated devices against SERVER until --duration or Ctrl-C, then de-register.

    Without --identities, devices are <prefix>000001... with PSKs derived from --seed (the
    same as `fleetloop sim identities --seed` writes).

    With --esim DIR each device also has an eUICC (profile 8988247000000000011 of Carrier A
    enabled, 8988247000000000029 of Carrier B installed) whose IPA polls the eIM over CoAP; the
    eUICCs are imported (`fleetloop esim import`) and linked to the devices first, and object 4
    reports the enabled profile's network (Carrier A 262-01, Carrier B 310-260).
    """
    if server is None and bootstrap is None:
        raise click.UsageError("give --server URI (and/or --bootstrap URI)")
    if esim_dir is not None:
        _run_esim(
            server, bootstrap, identities, devices, prefix, seed, rate, duration, interval,
            give_up_after, esim_dir, esim_roaming, esim_poll, as_json,
        )  # fmt: skip
        return
    chosen = build_profile(
        profile, lifetime=lifetime, queue_mode=queue_mode, behaviour=behaviour, link=link
    )
    ids = load_identities(identities, devices, prefix, seed)
    _raise_open_files(len(ids) + 1024)
    summary = asyncio.run(
        run_fleet(
            server=server,
            bootstrap=bootstrap,
            identities=ids,
            profile=chosen,
            duration=duration,
            seed=seed,
            rate=rate,
            interval=interval,
            out=sys.stderr,
            give_up_after=give_up_after,
        )
    )
    if as_json:
        print_json(summary)
        return
    status = summary["status"]
    counters = summary["counters"]
    rows = [
        ("devices", summary["devices"]),
        ("seconds", summary["seconds"]),
        ("registered (at the end)", status["registered"] + status["stopped"]),
        ("failed", status["failed"]),
        ("bootstraps", counters["bootstraps"]),
        ("registrations", counters["registrations"]),
        ("updates", counters["updates"]),
        ("update failures", counters["update_failures"]),
        ("de-registrations", counters["deregistrations"]),
        ("reboots", counters["reboots"]),
        ("notifications", counters["notifications"]),
        ("datagrams sent", counters["datagrams_sent"]),
        ("datagrams received", counters["datagrams_received"]),
        ("lost (link emulation)", counters["dropped_loss"] + counters["dropped_mtu"]),
    ]
    rows.extend((f"outcome {k}", v) for k, v in sorted(counters["outcomes"].items()))
    rows.extend((f"failed {k}", v) for k, v in sorted(counters["failure_codes"].items()))
    click.echo(table(("SUMMARY", ""), rows))


def _run_esim(
    server: str | None,
    bootstrap: str | None,
    identities: Path | None,
    devices: int | None,
    prefix: str,
    seed: int,
    rate: float,
    duration: float | None,
    interval: float,
    give_up_after: float,
    folder: Path,
    roaming: int,
    poll: float,
    as_json: bool,
) -> None:
    """``sim run --esim``: the lab's eUICCs made and imported, then the fleet with its modems."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    from cli.commands import api
    from simulators.esim.lab import LabError, lab_ipa, load_lab_pki
    from simulators.identities import endpoint_name

    if bootstrap is not None or identities is not None or server is None:
        raise click.UsageError("--esim runs plain devices: give --server coap://..., no "
                               "--bootstrap or --identities")  # fmt: skip
    if not server.startswith("coap://"):
        raise click.UsageError("--esim needs a coap:// server (the IPAs use ESipa over CoAP)")
    if devices is None:
        raise click.UsageError("give --devices N")
    try:
        pki = load_lab_pki(folder)
    except LabError as err:
        raise CliFailure(str(err), EXIT_USAGE) from None
    with api() as client:  # the eIM the eUICCs trust: the deployment's default one
        found = client.request("GET", "/esim/eims")
        default = next((i for i in found["items"] if i.get("default")), found["items"][0])
        key = serialization.load_pem_public_key(str(default["public_key"]).encode())
        if not isinstance(key, ec.EllipticCurvePublicKey):
            raise CliFailure(f"the eIM {default['eim_id']} has no EC public key")
        endpoints = [endpoint_name(prefix, n + 1) for n in range(devices)]
        made = [
            lab_ipa(pki, endpoint, str(default["eim_id"]), key, folder=folder)
            for endpoint in endpoints
        ]
        eum = pki.eum.public_bytes(serialization.Encoding.PEM).decode()
        items = [
            {"euicc_certificate": pem, "eum_certificate": eum, "endpoint": endpoint}
            for endpoint, (_, pem) in zip(endpoints, made, strict=True)
        ]
        client.request("POST", "/esim/euiccs", json_body={"euiccs": items})
    click.echo(
        f"imported {devices} eUICCs (eIM {default['eim_id']}), linked to {endpoints[0]}"
        f"{'...' + endpoints[-1] if devices > 1 else ''}",
        err=True,
    )
    summary = asyncio.run(
        run_esim_fleet(
            server=server,
            ipas=[ipa for ipa, _ in made],
            endpoints=endpoints,
            prefix=prefix,
            seed=seed,
            rate=rate,
            duration=duration,
            interval=interval,
            give_up_after=give_up_after,
            roaming=roaming,
            poll=poll,
            out=sys.stderr,
        )
    )
    if as_json:
        print_json(summary)
        return
    rows: list[tuple[str, Any]] = [
        ("devices", summary["devices"]),
        ("seconds", summary["seconds"]),
        ("registrations", summary["counters"]["registrations"]),
        ("updates", summary["counters"]["updates"]),
        ("profile switches (re-attached)", summary["esim"]["switches"]),
        ("ESipa errors", summary["esim"]["errors"]),
    ]
    rows.extend((f"enabled {k}", v) for k, v in sorted(summary["esim"]["enabled"].items()))
    click.echo(table(("SUMMARY", ""), rows))


async def run_esim_fleet(
    *,
    server: str,
    ipas: list[Any],
    endpoints: list[str],
    prefix: str,
    seed: int,
    rate: float,
    duration: float | None,
    interval: float,
    give_up_after: float,
    roaming: int,
    poll: float,
    out: Any,
) -> dict[str, Any]:
    """The eSIM fleet (``sim run --esim``) until ``duration`` or a signal: the devices with
    their IPAs on the CoAP binding, each IPA polling every ``poll`` s; returns the summary."""
    from simulators.esim.fleet import EsimFleet
    from simulators.esim.lab import LabModems
    from simulators.fleet.runner import DeviceFleet, FleetError

    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    try:
        fleet = DeviceFleet(server, seed=seed, start_rate=rate)
    except (FleetError, ValueError) as err:
        raise CliFailure(str(err), EXIT_USAGE) from None
    async with fleet:
        esim = EsimFleet(fleet, lambda n: ipas[n], coap_uri=server)
        try:
            spawned = esim.spawn(["coap"] * len(ipas), prefix=prefix)
        except (FleetError, ValueError, OSError) as err:
            raise CliFailure(str(err)) from None
        if [d.endpoint for d in spawned] != endpoints:  # the import linked these names
            raise CliFailure(
                f"the fleet named its devices {spawned[0].endpoint}...: not as imported"
            )
        for endpoint in endpoints[:roaming]:
            esim.network.roam(endpoint, (1, 1))
        modems = LabModems(esim)
        try:
            await fleet.wait_registered(timeout=give_up_after)
        except TimeoutError as err:
            await modems.close()
            raise CliFailure(
                f"{err}; is `fleetloop serve` running at {server} (see `fleetloop status`)?"
            ) from None
        polling = asyncio.create_task(modems.run(stop, poll))
        started = loop.time()
        deadline = None if duration is None else started + duration
        tty = out.isatty()
        while not stop.is_set():
            wait = interval if deadline is None else min(interval, deadline - loop.time())
            if wait <= 0:
                break
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), wait)
            enabled = " ".join(f"{k[-4:]}:{v}" for k, v in sorted(modems.counts().items()))
            line = f"{fleet.progress_line()} | profiles {enabled} | switches {modems.switches}"
            out.write(("\r" + line + "\x1b[K") if tty else line + "\n")
            out.flush()
        stop.set()
        await asyncio.gather(polling, return_exceptions=True)
        await modems.close()
        if tty:
            out.write("\n")
        out.write("stopping: de-registering the fleet...\n")
        out.flush()
        await fleet.close()
        summary = fleet.summary()
    summary["esim"] = {
        "enabled": modems.counts(),
        "switches": modems.switches,
        "errors": modems.errors,
    }
    return summary


@sim.command("esim-pki")
@click.argument("folder", type=click.Path(file_okay=False, path_type=Path))
def esim_pki(folder: Path) -> None:
    """Make an eSIM lab PKI in FOLDER: a CI (ci.pem: give it to `fleetloop serve --eim-ci`) and
    an EUM whose certificates `fleetloop sim run --esim FOLDER` gives its devices' eUICCs.

    \b
    fleetloop sim esim-pki lab-esim/
    fleetloop serve --esipa-https 127.0.0.1:8443 --eim-id eim.lab --eim-ci lab-esim/ci.pem
    fleetloop sim run --devices 5 --server coap://127.0.0.1:5683 --esim lab-esim/
    """
    from simulators.esim.lab import LabError, make_lab_pki

    try:
        make_lab_pki(folder)
    except (LabError, OSError) as err:
        raise CliFailure(str(err), EXIT_USAGE) from None
    click.echo(
        f"wrote the lab CI and EUM to {folder}; start serve with --eim-ci {folder / 'ci.pem'}",
        err=True,
    )


@sim.command("device")
@click.argument("endpoint")
@click.argument("server_uri", metavar="SERVER")
@click.option("--psk-identity", help="PSK identity for coaps:// (default: the endpoint name)")
@click.option("--psk-key", metavar="HEX", help="the pre-shared key, hex (for coaps://)")
@click.option(
    "--battery-every",
    type=click.FloatRange(min=0),
    default=5.0,
    show_default=True,
    help="seconds between Battery Level (/3/0/9) changes, so observing shows something (0: off)",
)
@click.option(
    "--give-up-after",
    type=click.FloatRange(min=0, min_open=True),
    default=30.0,
    show_default=True,
    help="seconds to wait for the registration before giving up",
)
def device(
    endpoint: str,
    server_uri: str,
    psk_identity: str | None,
    psk_key: str | None,
    battery_every: float,
    give_up_after: float,
) -> None:
    """Run ONE simulated device ENDPOINT against SERVER (coap://host:port or coaps://...)
    until Ctrl-C or SIGTERM, then de-register it.

    The device has the default objects plus object 11 (APN connection profiles), whose
    instances the server may create and delete (`fleetloop create ENDPOINT /11 0=name`).

    \b
    fleetloop sim device demo-1 coap://127.0.0.1:5683
    fleetloop sim device demo-1 coaps://127.0.0.1:5684 --psk-key 000102030405060708090a0b0c0d0e0f
    """
    from cli.checks import hex_key

    psk = None
    if psk_key is not None:
        psk = ((psk_identity or endpoint).encode(), bytes.fromhex(hex_key(psk_key)))
    elif server_uri.startswith("coaps://"):
        raise click.UsageError("coaps:// needs --psk-key (and --psk-identity if not ENDPOINT)")
    asyncio.run(_one_device(endpoint, server_uri, psk, battery_every, give_up_after))


def _walkthrough_template() -> Any:
    """The default device plus a creatable, deletable object 11 (docs/FIRST_RUN.md §3)."""
    from objects import builtin_definition
    from simulators.device.defaults import default_template
    from simulators.device.template import InstanceTemplate, ObjectTemplate

    apn = ObjectTemplate(
        builtin_definition(11),
        {},
        new_instance=InstanceTemplate({0: "default-apn", 1: "internet"}),
        deletable=True,
    )
    return default_template().replace(apn)


async def _one_device(
    endpoint: str,
    uri: str,
    psk: tuple[bytes, bytes] | None,
    battery_every: float,
    give_up_after: float,
) -> None:
    from simulators.runner import RegistrationError, SimulatedDevice

    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    try:
        simulated = SimulatedDevice(endpoint, uri, psk=psk, template=_walkthrough_template())
    except ValueError as err:
        raise CliFailure(str(err), EXIT_USAGE) from None
    await simulated.start()
    registered = False
    try:
        try:
            await asyncio.wait_for(simulated.wait_registered(), give_up_after)
        except (TimeoutError, RegistrationError) as err:
            from simulators.device.events import RegistrationFailed

            refusals = [e for e in simulated.events if isinstance(e, RegistrationFailed)]
            answered = [e for e in refusals if e.code]
            if answered:  # the server is there and said no: say what it said
                last = answered[-1]
                raise CliFailure(
                    f"{endpoint} did not register at {uri}: the server refused it with "
                    f"{last.code} {last.reason} ({len(answered)} attempts); give it "
                    "credentials (`fleetloop security set`) or a NoSec grant, or check the "
                    "server's log"
                ) from None
            detail = f": {err}" if str(err) else ""
            raise CliFailure(
                f"{endpoint} did not register at {uri} within {give_up_after:g} s{detail}; "
                "nothing answered: is `fleetloop serve` running there (see `fleetloop status` "
                "for its ports)?"
            ) from None
        registered = True
        click.echo(f"{endpoint} registered with {uri}; Ctrl-C to stop", err=True)
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), battery_every or None)
            if battery_every and not stop.is_set():
                level = simulated.read("/3/0/9")
                simulated.set("/3/0/9", (level - 1) % 100 if isinstance(level, int) else 100)
    finally:
        await simulated.stop(timeout=2.0)
        if registered:
            click.echo(f"{endpoint} de-registered", err=True)


@sim.command("identities")
@click.option("--devices", "-n", type=click.IntRange(min=1), required=True)
@click.option("--prefix", default="sim-", show_default=True)
@click.option("--seed", type=int, default=1, show_default=True, help="PSK seed")
@click.option("--nosec", is_flag=True, help="no PSKs (plain CoAP devices)")
@click.option(
    "--spread",
    is_flag=True,
    help="add inventory columns: tenants, regions, countries, carriers, policy groups, labels",
)
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    help="write here (default: stdout)",
)
def identities_cmd(
    devices: int, prefix: str, seed: int, nosec: bool, spread: bool, out: Path | None
) -> None:
    """Write device identities as the bootstrap identity import's CSV."""
    text = to_csv(generate(devices, prefix=prefix, seed=seed, psk=not nosec), spread=spread)
    if out is None:
        click.echo(text, nl=False)
        return
    out.write_text(text)
    out.chmod(0o600)  # the file holds every device's key
    click.echo(f"wrote {devices} identities to {out}", err=True)


@sim.command("profiles")
@click.option("--json", "as_json", is_flag=True)
def profiles_cmd(as_json: bool) -> None:
    """List the device profiles and link presets."""
    if as_json:
        data = {
            name: {"link": p.link.name, "lifetime": p.lifetime, "queue_mode": p.config.queue_mode}
            for name, p in PROFILES.items()
        }
        click.echo(json.dumps(data, indent=2))
        return
    rows = []
    for name, p in PROFILES.items():
        link = p.link
        rows.append(
            (
                name,
                link.name,
                f"{link.rtt * 1000:.0f} ms" if link.rtt else "-",
                f"{link.loss:.1%}" if link.loss else "-",
                f"{link.uplink_bps / 1000:g} kbit/s" if link.uplink_bps else "-",
                p.lifetime,
                "yes" if p.config.queue_mode else "no",
            )
        )
    click.echo(table(("PROFILE", "LINK", "RTT", "LOSS", "UPLINK", "LIFETIME", "QUEUE"), rows))
    click.echo(f"\nlink presets: {', '.join(PRESETS)}")


__all__ = ["build_profile", "load_identities", "run_fleet", "sim"]

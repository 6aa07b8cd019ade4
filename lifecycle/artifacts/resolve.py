"""From what an operator writes in a campaign spec to the component a campaign delivers.

:func:`make_resolver` returns the ``resolve`` callback of
:func:`lifecycle.campaigns.spec.parse_spec`: ``resolve(dimension, raw) -> Component``. It reads
the artifact repositories in the caller's transaction, so a plan sees one consistent state::

    plan = await store.read(lambda tx: parse_spec(raw, resolve=make_resolver(tx)))

Accepted forms, per dimension:

=============  ===============================================================================
config         ``"NAME@VERSION"``, ``"NAME"`` (its latest version; a name only the flat
               ``config=NAME`` registry knows resolves there), ``{"bundle": NAME, "version":
               V}``; overlays of the version become ``Component.overlays``
connectivity   ``"profile:NAME"`` or ``{"profile": NAME}`` (an APN profile; its carrier and
               country variants become overlays), or an APN set (``"apn-a,apn-b"``,
               ``{"apns": [...], "active": ...}``)
credentials    ``{"rotate": "psk"}`` (the next rotation number across the fleet) or
               ``{"generation": N}``
firmware       with ``base_uri``: an image id, SHA-256 or version, resolved by
               :class:`lifecycle.artifacts.firmware.FirmwareRepository` into a pull (or push)
               of fleetloop's own image; otherwise the state layer's ``"2.4.1"`` /
               ``{"version", "uri"}``
flags, esim    as the state layer parses them
=============  ===============================================================================

Errors are :class:`~lifecycle.campaigns.model.CampaignError` naming the spec field
(``components.config`` ...) and the fix, so ``campaign plan`` reports them as it reports
every other spec mistake.
"""

from __future__ import annotations

import importlib
import json
from collections.abc import Callable
from typing import Any

from sqlalchemy import select

from lifecycle.artifacts.bundles import BundleError, BundleRepository
from lifecycle.artifacts.connectivity import ConnectivityRepository, ProfileError
from lifecycle.campaigns.model import CampaignError, Component
from lifecycle.state.dimensions import Dimension, StateError, parse_desired
from lifecycle.state.repository import StateRepository
from lifecycle.state.tables import DESIRED
from lwm2m.store import Tx

Resolver = Callable[[Dimension, Any], Component]

PROFILE_PREFIX = "profile:"


def _field(dim: Dimension) -> str:
    return f"components.{dim.value}"


def resolve_config(tx: Tx, raw: Any, bundles: BundleRepository) -> Component:
    """A config bundle version (or a flat ``config=NAME`` bundle) as a component."""
    where = _field(Dimension.CONFIG)
    if isinstance(raw, dict) and "bundle" in raw and "digest" not in raw:
        extra = set(raw) - {"bundle", "version"}
        if extra:
            raise CampaignError(where, f"unknown key {sorted(extra)[0]!r}; give bundle, version")
        ref = str(raw["bundle"]) + (f"@{raw['version']}" if raw.get("version") else "")
    elif isinstance(raw, str):
        ref = raw
    else:
        try:
            value = parse_desired(Dimension.CONFIG, raw)
        except StateError as err:
            raise CampaignError(where, err.message) from None
        return Component(Dimension.CONFIG, value, artifact=f"bundle:{value.get('bundle', '')}")
    try:
        found = bundles.resolve(tx, ref)
    except BundleError as err:
        flat = bundles.state.bundle(tx, ref) if "@" not in ref else None
        if flat is None:
            raise CampaignError(where, err.message) from None
        return Component(
            Dimension.CONFIG,
            {"version": flat.name, "digest": flat.digest, "bundle": flat.name},
            artifact=f"bundle:{flat.name}",
            size=len(flat.content),
        )
    overlays = {o.scope: found.desired(o.scope) for o in found.overlays}
    return Component(
        Dimension.CONFIG,
        found.desired(),
        artifact=f"bundle:{found.ref}",
        size=found.size,
        overlays=overlays,
    )


def resolve_connectivity(tx: Tx, raw: Any, profiles: ConnectivityRepository) -> Component:
    """An APN profile (with carrier / country overlays) or a plain APN set."""
    where = _field(Dimension.CONNECTIVITY)
    name: str | None = None
    if isinstance(raw, str) and raw.startswith(PROFILE_PREFIX):
        name = raw[len(PROFILE_PREFIX) :].strip()
    elif isinstance(raw, dict) and "profile" in raw:
        if set(raw) != {"profile"}:
            raise CampaignError(where, 'give {"profile": NAME} alone')
        name = str(raw["profile"])
    if name is None:
        try:
            value = parse_desired(Dimension.CONNECTIVITY, raw)
        except StateError as err:
            raise CampaignError(where, err.message) from None
        return Component(Dimension.CONNECTIVITY, value, artifact="apns:" + ",".join(value["apns"]))
    try:
        profile = profiles.require(tx, name)
    except ProfileError as err:
        raise CampaignError(where, err.message) from None
    return Component(
        Dimension.CONNECTIVITY,
        profile.value,
        artifact=f"apn-profile:{profile.name}@r{profile.revision}",
        overlays={scope: dict(value) for scope, value in profile.variants.items()},
    )


def next_rotation(tx: Tx) -> int:
    """One more than the highest credentials generation desired anywhere (1 for the first)."""
    highest = 0
    rows = tx.execute(select(DESIRED.c.value).where(DESIRED.c.dimension == "credentials"))
    for (text,) in rows:
        try:
            gen = json.loads(text).get("generation")
        except (ValueError, AttributeError):
            continue
        if isinstance(gen, int) and gen > highest:
            highest = gen
    return highest + 1


def resolve_credentials(tx: Tx, raw: Any) -> Component:
    """``{"rotate": "psk"}`` -> the next rotation number; ``{"generation": N}`` as is."""
    where = _field(Dimension.CREDENTIALS)
    if isinstance(raw, dict) and "rotate" in raw:
        if raw.get("rotate") != "psk" or set(raw) - {"rotate"}:
            raise CampaignError(
                where,
                'give {"rotate": "psk"} (certificate renewal is rotated by re-bootstrap too: '
                "the policy decides the kind)",
            )
        return Component(
            Dimension.CREDENTIALS, {"generation": next_rotation(tx)}, artifact="credentials:psk"
        )
    try:
        value = parse_desired(Dimension.CREDENTIALS, raw)
    except StateError as err:
        raise CampaignError(where, err.message) from None
    return Component(Dimension.CREDENTIALS, value, artifact="credentials")


def _firmware_module() -> Any | None:
    try:
        return importlib.import_module("lifecycle.artifacts.firmware")
    except ModuleNotFoundError:
        return None


def make_resolver(
    tx: Tx,
    *,
    bundles: BundleRepository | None = None,
    profiles: ConnectivityRepository | None = None,
    firmware: Any | None = None,
    base_uri: str | None = None,
    method: str = "pull",
) -> Resolver:
    """The ``resolve`` callback of ``parse_spec`` reading the repositories through ``tx``
    (module docstring). ``firmware``: a ``FirmwareRepository`` (default: a new one when
    :mod:`lifecycle.artifacts.firmware` exists); ``base_uri``/``method``: how devices get
    images (``firmware_component``'s arguments)."""
    bundles = bundles or BundleRepository(StateRepository())
    profiles = profiles or ConnectivityRepository()
    fw_module = _firmware_module()
    if firmware is None and fw_module is not None and hasattr(fw_module, "FirmwareRepository"):
        firmware = fw_module.FirmwareRepository()

    def resolve(dimension: Dimension, raw: Any) -> Component:
        if dimension is Dimension.CONFIG:
            return resolve_config(tx, raw, bundles)
        if dimension is Dimension.CONNECTIVITY:
            return resolve_connectivity(tx, raw, profiles)
        if dimension is Dimension.CREDENTIALS:
            return resolve_credentials(tx, raw)
        if (
            dimension is Dimension.FIRMWARE
            and firmware is not None
            and fw_module is not None
            and base_uri is not None
            and isinstance(raw, str)
        ):
            try:
                image = firmware.resolve(tx, raw)
                component: Component = fw_module.firmware_component(
                    image, base_uri=base_uri, method=method
                )
            except ValueError as err:  # FirmwareError: unknown, ambiguous, quarantined
                raise CampaignError(_field(dimension), str(err)) from None
            return component
        try:
            value = parse_desired(dimension, raw)
        except StateError as err:
            raise CampaignError(_field(dimension), err.message) from None
        return Component(dimension, value)

    return resolve


__all__ = [
    "PROFILE_PREFIX",
    "Resolver",
    "make_resolver",
    "next_rotation",
    "resolve_config",
    "resolve_connectivity",
    "resolve_credentials",
]

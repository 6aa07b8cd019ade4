"""Connectivity profiles: named APN sets, per carrier and per country.

A fleet spans carriers, and an APN is a carrier's: ``iot.acme`` works on Acme's network and
nowhere else. So an APN change is rarely one value for every device; a **profile** names a
default APN set and the sets of particular carriers (``carrier=acme``) and countries
(``country=DE``), each ``{"apns": [...], "active": ...}`` -- exactly the connectivity
dimension's desired value (:func:`lifecycle.state.dimensions.parse_desired`). At plan time the
profile becomes a :class:`~lifecycle.campaigns.model.Component` whose overlays are keyed by
those scopes, and :meth:`Component.value_for
<lifecycle.campaigns.model.Component.value_for>` picks each device's set (carrier before
country before the default).

Delivery and verification are the state layer's: the reconciler creates the object 11
profiles, points the APN Link at the active one, and the change is verified when the device
re-attaches and reports the new active APN (/4/0/7) from a new registration update. A device
whose carrier does not serve the APN falls back to its old APN by itself; the reconciler
counts the switches and after :data:`~lifecycle.state.reconciler.MAX_APN_SWITCHES` marks the
generation failed, which a campaign gate counts.

Profiles are editable (``revision`` grows with each change): what a campaign resolved is
frozen in its components, so editing a profile changes the next campaign, not a running one.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select

from lifecycle.artifacts.bundle_tables import APN_PROFILE
from lifecycle.state.dimensions import Dimension, StateError, parse_desired
from lwm2m.store import Tx

VARIANT_KINDS = ("carrier", "country")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_LABEL = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


class ProfileError(ValueError):
    """An APN profile request is wrong; ``field`` names what, ``message`` why and the fix."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


class UnknownProfile(ProfileError):
    """No such profile."""


class ProfileExists(ProfileError):
    """Create of a name that exists (update it instead)."""


def apn_set(raw: object, field: str) -> dict[str, Any]:
    """One APN set, normalised as the connectivity dimension wants it."""
    try:
        return parse_desired(Dimension.CONNECTIVITY, raw)
    except StateError as err:
        raise ProfileError(field, err.message) from None


def check_variant(scope: object) -> str:
    kind, sep, label = str(scope).partition("=")
    if not sep or kind not in VARIANT_KINDS or not _LABEL.match(label):
        raise ProfileError(
            "variants", f"{scope!r} is not a variant; use carrier=NAME or country=CODE"
        )
    return f"{kind}={label}"


@dataclass(frozen=True, slots=True)
class ApnProfile:
    """A named APN set with per-carrier / per-country variants."""

    name: str
    apns: tuple[str, ...]
    active: str
    variants: Mapping[str, Mapping[str, Any]]
    description: str
    revision: int
    updated_by: str
    updated_at: float

    @property
    def value(self) -> dict[str, Any]:
        """The default set as the connectivity dimension's desired value."""
        return {"apns": list(self.apns), "active": self.active}

    def value_for(self, *, carrier: str = "", country: str = "") -> dict[str, Any]:
        """The set a device on ``carrier`` in ``country`` gets (carrier first)."""
        for key in (
            f"carrier={carrier}" if carrier else "",
            f"country={country}" if country else "",
        ):
            if key and key in self.variants:
                return dict(self.variants[key])
        return self.value

    def as_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "apns": list(self.apns),
            "active": self.active,
            "variants": {k: dict(v) for k, v in self.variants.items()},
            "description": self.description,
            "revision": self.revision,
            "updated_by": self.updated_by,
            "updated_at": self.updated_at,
        }


def parse_profile(raw: object) -> tuple[dict[str, Any], dict[str, dict[str, Any]], str]:
    """``(default set, variants, description)`` from a request body
    ``{"apns": [...], "active": ..., "variants": {"carrier=acme": {...}}, "description"}``."""
    if not isinstance(raw, dict):
        raise ProfileError("body", 'give {"apns": [...], "active": ..., "variants": {...}}')
    unknown = set(raw) - {"apns", "active", "variants", "description"}
    if unknown:
        raise ProfileError(sorted(unknown)[0], "unknown field; use apns, active, variants")
    base = apn_set({k: raw[k] for k in ("apns", "active") if k in raw}, "apns")
    variants_raw = raw.get("variants") or {}
    if not isinstance(variants_raw, dict):
        raise ProfileError("variants", 'give {"carrier=NAME": {"apns": [...]}, ...}')
    variants = {
        check_variant(scope): apn_set(value, f"variants.{scope}")
        for scope, value in sorted(variants_raw.items())
    }
    description = raw.get("description", "")
    if not isinstance(description, str) or len(description) > 1000:
        raise ProfileError("description", "text of at most 1000 characters")
    return base, variants, description


def _profile(row: Any) -> ApnProfile:
    return ApnProfile(
        name=row.name,
        apns=tuple(json.loads(row.apns)),
        active=row.active,
        variants=json.loads(row.variants or "{}"),
        description=row.description or "",
        revision=int(row.revision),
        updated_by=row.updated_by,
        updated_at=float(row.updated_at),
    )


_P = APN_PROFILE.c


class ConnectivityRepository:
    """APN profiles inside the store's transactions (create, update, get, list, delete)."""

    def put(
        self, tx: Tx, name: str, raw: object, *, actor: str, now: float, create: bool | None = None
    ) -> tuple[ApnProfile, bool]:
        """Create or replace profile ``name``; ``(profile, changed)``. ``create=True``
        refuses an existing name, ``create=False`` a missing one; the same content again
        changes nothing (the revision stays)."""
        if not isinstance(name, str) or not _NAME.match(name):
            raise ProfileError("name", f"{name!r} is not a profile name (letters, digits, . _ -)")
        base, variants, description = parse_profile(raw)
        row = {
            "apns": json.dumps(base["apns"]),
            "active": base["active"],
            "variants": json.dumps(variants, sort_keys=True),
            "description": description,
        }
        found = self.get(tx, name)
        if found is None:
            if create is False:
                raise UnknownProfile(
                    "name",
                    f"no APN profile {name!r}; create it with `fleetloop apn-profile create`",
                )
            tx.execute(
                APN_PROFILE.insert(),
                {"name": name, **row, "revision": 1, "updated_by": actor, "updated_at": now},
            )
        else:
            if create is True:
                raise ProfileExists(
                    "name",
                    f"APN profile {name!r} exists (revision {found.revision}); "
                    "change it with `fleetloop apn-profile update`",
                )
            current = {
                "apns": json.dumps(list(found.apns)),
                "active": found.active,
                "variants": json.dumps(dict(found.variants), sort_keys=True),
                "description": found.description,
            }
            if current == row:
                return found, False
            tx.execute(
                APN_PROFILE.update()
                .where(_P.name == name)
                .values(**row, revision=found.revision + 1, updated_by=actor, updated_at=now)
            )
        made = self.get(tx, name)
        assert made is not None
        return made, True

    def get(self, tx: Tx, name: str) -> ApnProfile | None:
        row = tx.execute(select(APN_PROFILE).where(_P.name == name)).first()
        return _profile(row) if row is not None else None

    def require(self, tx: Tx, name: str) -> ApnProfile:
        found = self.get(tx, name)
        if found is None:
            raise UnknownProfile(
                "profile", f"no APN profile {name!r}; list them with `fleetloop apn-profile list`"
            )
        return found

    def list(self, tx: Tx) -> list[ApnProfile]:
        return [_profile(r) for r in tx.execute(select(APN_PROFILE).order_by(_P.name))]

    def delete(self, tx: Tx, name: str) -> ApnProfile:
        found = self.require(tx, name)
        tx.execute(APN_PROFILE.delete().where(_P.name == name))
        return found


__all__ = [
    "VARIANT_KINDS",
    "ApnProfile",
    "ConnectivityRepository",
    "ProfileError",
    "ProfileExists",
    "UnknownProfile",
    "apn_set",
    "check_variant",
    "parse_profile",
]

"""The versioned config bundle repository: publish, versions, diff, overlays.

A **bundle** is a named configuration: a map with text keys, stored as canonical CBOR and
delivered through object 32001 (write Bundle + Digest, execute Apply, read back the applied
version). Each **version** of it (semantic, :mod:`lifecycle.versions` orders them) is
content-addressed -- its SHA-256 is the digest the device checks before applying -- and
**immutable once published**: publishing ``name@version`` again with the same content (and the
same overlays) is a no-op, with other content a :class:`BundleConflict` that names the version
and the fix (publish a new version). Why immutable: a device that reports ``1.4.0`` must run
exactly what ``1.4.0`` meant when it was rolled out, or verification and rollback lie.

**Overlays** are key patches over the base for one cohort -- ``region=eu``,
``policy_group=pilot``, ``carrier=acme``, ``country=DE`` -- published with the version (so
they are immutable too): ``{"set": {key: value}, "remove": [key, ...]}`` (a plain map means
``set``). The merged content of each overlay is a bundle of its own (its own digest), and
:mod:`lifecycle.artifacts.resolve` turns them into :attr:`Component.overlays
<lifecycle.campaigns.model.Component.overlays>` at plan time, so each device is sent the
content of its cohort. A patch rather than a second full bundle: the regional differences
stay visible (a few keys) and a change to the base reaches every region.

Content lives in the flat registry ``lc_config_bundle`` under a *delivery name*
(``NAME@VERSION``, ``NAME@VERSION:region=eu``): the reconciler fetches bundles by that name,
so versioned bundles and the older ``config=NAME`` ones are delivered by the same code.

The **diff** between two versions is key-level over the decoded maps: added, removed and
changed top-level keys (:func:`diff_content`).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import cbor2
from sqlalchemy import and_, select

from lifecycle.artifacts.bundle_tables import BUNDLE_OVERLAY, BUNDLE_VERSION
from lifecycle.state.repository import StateRepository
from lifecycle.versions import is_version, version_key
from lwm2m.store import Conflict, Tx

MAX_BUNDLE_BYTES = 256 * 1024
"""Largest encoded bundle: object 32001's Bundle is written in one request (block-wise)."""

SCOPE_KINDS = ("policy_group", "carrier", "country", "region")
"""Overlay scopes, most specific first (the precedence of Component.value_for)."""

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_LABEL = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_DEVICE_VERSION = re.compile(r"^[0-9A-Za-z][0-9A-Za-z._+~-]{0,63}$")


class BundleError(ValueError):
    """A bundle request is wrong; ``field`` names what, ``message`` says why and the fix.
    The API answers 422 (:class:`UnknownBundle` 404, :class:`BundleConflict` 409)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


class UnknownBundle(BundleError):
    """No such bundle or version."""


class BundleConflict(BundleError):
    """``name@version`` is already published with other content (immutable)."""


# -- pure helpers ----------------------------------------------------------------------------


def check_name(name: object) -> str:
    if not isinstance(name, str) or not _NAME.match(name):
        raise BundleError(
            "name", f"{name!r} is not a bundle name (1..64 of letters, digits, . _ -)"
        )
    return name


def check_version(version: object) -> str:
    """A semantic version a device can report as its Applied Version (1.4.0, 2.0.0-rc.1)."""
    if (
        not isinstance(version, str)
        or not _DEVICE_VERSION.match(version)
        or not is_version(version)
    ):
        raise BundleError(
            "version", f"{version!r} is not a semantic version (e.g. 1.4.0 or 2.0.0-rc.1)"
        )
    return version


def parse_ref(text: str) -> tuple[str, str | None]:
    """``NAME@VERSION`` -> (name, version); ``NAME`` -> (name, None) (the latest version)."""
    name, sep, version = text.strip().partition("@")
    check_name(name)
    return name, (check_version(version) if sep else None)


def check_scope(scope: object) -> str:
    """``region=eu`` and the like (:data:`SCOPE_KINDS`)."""
    kind, sep, label = str(scope).partition("=")
    if not sep or kind not in SCOPE_KINDS or not _LABEL.match(label):
        raise BundleError(
            "overlays",
            f"{scope!r} is not an overlay scope; use one of "
            + ", ".join(f"{k}=NAME" for k in SCOPE_KINDS),
        )
    return f"{kind}={label}"


def check_content(content: object, what: str = "content") -> dict[str, Any]:
    """A bundle's content: a JSON object with text keys that encodes to CBOR."""
    if not isinstance(content, dict):
        raise BundleError(what, "a bundle is a JSON object (a map with text keys)")
    bad = [k for k in content if not isinstance(k, str)]
    if bad:
        raise BundleError(what, f"key {bad[0]!r} is not text")
    return content


def encode(content: Mapping[str, Any]) -> bytes:
    """The canonical CBOR encoding (the bytes the digest is taken over)."""
    try:
        data = cbor2.dumps(dict(content), canonical=True)
    except (TypeError, ValueError, cbor2.CBOREncodeError) as err:
        raise BundleError("content", f"cannot be encoded as CBOR: {err}") from None
    if len(data) > MAX_BUNDLE_BYTES:
        raise BundleError(
            "content", f"{len(data)} bytes encoded; a bundle may have at most {MAX_BUNDLE_BYTES}"
        )
    return data


def digest_of(content: Mapping[str, Any]) -> str:
    return hashlib.sha256(encode(content)).hexdigest()


@dataclass(frozen=True, slots=True)
class Patch:
    """An overlay's key patch: set these keys, remove those."""

    set: Mapping[str, Any] = field(default_factory=dict)
    remove: tuple[str, ...] = ()

    @classmethod
    def parse(cls, raw: object, scope: str = "overlay") -> Patch:
        """``{"set": {...}, "remove": [...]}`` or a plain map (= set)."""
        if isinstance(raw, dict) and set(raw) <= {"set", "remove"} and raw:
            sets = raw.get("set", {})
            removes = raw.get("remove", [])
        else:
            sets, removes = raw, []
        where = f"overlays.{scope}"
        sets = check_content(sets, where)
        if not isinstance(removes, list) or not all(isinstance(k, str) for k in removes):
            raise BundleError(where, "remove must list keys (text)")
        both = sorted(set(sets) & set(removes))
        if both:
            raise BundleError(where, f"key {both[0]!r} is both set and removed")
        return cls(dict(sorted(sets.items())), tuple(sorted(set(removes))))

    def apply(self, base: Mapping[str, Any]) -> dict[str, Any]:
        merged = {k: v for k, v in base.items() if k not in self.remove}
        merged.update(self.set)
        return merged

    def as_json(self) -> dict[str, Any]:
        return {"set": dict(self.set), "remove": list(self.remove)}


@dataclass(frozen=True, slots=True)
class BundleDiff:
    """Key-level difference between two bundle contents (old -> new)."""

    added: Mapping[str, Any]
    removed: Mapping[str, Any]
    changed: Mapping[str, tuple[Any, Any]]

    @property
    def empty(self) -> bool:
        return not (self.added or self.removed or self.changed)

    def apply(self, old: Mapping[str, Any]) -> dict[str, Any]:
        """``old`` with this diff applied (``diff_content(a, b).apply(a) == b``)."""
        out = {k: v for k, v in old.items() if k not in self.removed}
        out.update(self.added)
        out.update({k: new for k, (_, new) in self.changed.items()})
        return out

    def as_json(self) -> dict[str, Any]:
        return {
            "added": dict(self.added),
            "removed": dict(self.removed),
            "changed": {k: {"old": a, "new": b} for k, (a, b) in self.changed.items()},
        }


def diff_content(old: Mapping[str, Any], new: Mapping[str, Any]) -> BundleDiff:
    """Added, removed and changed top-level keys (values compared as decoded CBOR)."""
    return BundleDiff(
        added={k: new[k] for k in sorted(new) if k not in old},
        removed={k: old[k] for k in sorted(old) if k not in new},
        changed={k: (old[k], new[k]) for k in sorted(old) if k in new and old[k] != new[k]},
    )


def delivery_name(name: str, version: str, scope: str | None = None) -> str:
    """The ``lc_config_bundle`` name a variant is delivered under."""
    return f"{name}@{version}" + (f":{scope}" if scope else "")


def _release_digest(digest: str, overlays: Mapping[str, tuple[Patch, str]]) -> str:
    parts = [digest] + [f"{s}={d}" for s, (_, d) in sorted(overlays.items())]
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()


def next_patch(version: str) -> str:
    """A suggestion for the fix of a conflict: the next patch version (1.4.0 -> 1.4.1)."""
    core = re.match(r"^[vV]?(\d+)(?:\.(\d+))?(?:\.(\d+))?", version)
    if core is None:
        return version + ".1"
    major, minor, patch = (int(g) if g else 0 for g in core.groups())
    return f"{major}.{minor}.{patch + 1}"


# -- the repository ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class BundleOverlay:
    scope: str
    patch: Patch
    digest: str
    size: int
    delivery: str


@dataclass(frozen=True, slots=True)
class BundleVersion:
    """One published version (content is fetched separately: :meth:`BundleRepository.content`)."""

    name: str
    version: str
    digest: str
    size: int
    delivery: str
    overlays: tuple[BundleOverlay, ...]
    description: str
    published_by: str
    published_at: float

    @property
    def ref(self) -> str:
        return f"{self.name}@{self.version}"

    def overlay(self, scope: str) -> BundleOverlay | None:
        return next((o for o in self.overlays if o.scope == scope), None)

    def desired(self, scope: str | None = None) -> dict[str, Any]:
        """The config dimension's desired value for the base (or one overlay's content)."""
        if scope is None:
            return {"version": self.version, "digest": self.digest, "bundle": self.delivery}
        found = self.overlay(scope)
        if found is None:
            raise UnknownBundle("scope", f"{self.ref} has no overlay {scope!r}")
        return {"version": self.version, "digest": found.digest, "bundle": found.delivery}


_V = BUNDLE_VERSION.c
_O = BUNDLE_OVERLAY.c


class BundleRepository:
    """Versioned config bundles inside the store's transactions (module docstring).
    Stateless; ``state`` is the flat registry that holds the content."""

    def __init__(self, state: StateRepository | None = None) -> None:
        self.state = state or StateRepository()

    def publish(
        self,
        tx: Tx,
        name: str,
        version: str,
        content: object,
        *,
        overlays: Mapping[str, object] | None = None,
        description: str = "",
        actor: str,
        now: float,
    ) -> tuple[BundleVersion, bool]:
        """Publish ``name@version``; ``(version, created)``. Same content and overlays again:
        ``created`` is False; other content: :class:`BundleConflict`."""
        check_name(name)
        check_version(version)
        base = check_content(content)
        encoded = encode(base)
        digest = hashlib.sha256(encoded).hexdigest()
        patches: dict[str, tuple[Patch, str]] = {}
        merged: dict[str, dict[str, Any]] = {}
        for raw_scope, raw_patch in sorted((overlays or {}).items()):
            scope = check_scope(raw_scope)
            patch = Patch.parse(raw_patch, scope)
            merged[scope] = patch.apply(base)
            patches[scope] = (patch, digest_of(merged[scope]))
        release = _release_digest(digest, patches)
        found = self.get(tx, name, version)
        if found is not None:
            existing = tx.execute(
                select(_V.release_digest).where(_V.name == name, _V.version == version)
            ).scalar_one()
            if existing != release:
                raise BundleConflict(
                    "version",
                    f"bundle {name}@{version} is already published with other content "
                    f"(sha-256 {found.digest[:12]}...); published versions are immutable: "
                    f"publish it as a new version, e.g. {name}@{next_patch(version)}",
                )
            return found, False
        try:
            self.state.put_bundle(tx, delivery_name(name, version), base, actor=actor, now=now)
            for scope, content_of in merged.items():
                self.state.put_bundle(
                    tx, delivery_name(name, version, scope), content_of, actor=actor, now=now
                )
        except Conflict as err:
            raise BundleConflict("version", str(err)) from None
        tx.execute(
            BUNDLE_VERSION.insert(),
            {
                "name": name,
                "version": version,
                "version_key": version_key(version),
                "digest": digest,
                "size": len(encoded),
                "delivery": delivery_name(name, version),
                "release_digest": release,
                "description": description,
                "published_by": actor,
                "published_at": now,
            },
        )
        if patches:
            tx.execute(
                BUNDLE_OVERLAY.insert(),
                [
                    {
                        "name": name,
                        "version": version,
                        "scope": scope,
                        "patch": json.dumps(patch.as_json(), sort_keys=True),
                        "digest": d,
                        "size": len(encode(merged[scope])),
                        "delivery": delivery_name(name, version, scope),
                    }
                    for scope, (patch, d) in patches.items()
                ],
            )
        made = self.get(tx, name, version)
        assert made is not None
        return made, True

    def _overlays(self, tx: Tx, name: str, versions: Sequence[str]) -> dict[str, list[Any]]:
        found: dict[str, list[Any]] = {v: [] for v in versions}
        if not versions:
            return found
        rows = tx.execute(
            select(BUNDLE_OVERLAY)
            .where(and_(_O.name == name, _O.version.in_(list(versions))))
            .order_by(_O.scope)
        )
        for r in rows:
            found[str(r.version)].append(r)
        return found

    @staticmethod
    def _version(row: Any, overlays: Sequence[Any]) -> BundleVersion:
        return BundleVersion(
            name=row.name,
            version=row.version,
            digest=row.digest,
            size=int(row.size),
            delivery=row.delivery,
            overlays=tuple(
                BundleOverlay(
                    o.scope,
                    Patch.parse(json.loads(o.patch), o.scope),
                    o.digest,
                    int(o.size),
                    o.delivery,
                )
                for o in overlays
            ),
            description=row.description or "",
            published_by=row.published_by,
            published_at=float(row.published_at),
        )

    def get(self, tx: Tx, name: str, version: str) -> BundleVersion | None:
        row = tx.execute(
            select(BUNDLE_VERSION).where(_V.name == name, _V.version == version)
        ).first()
        if row is None:
            return None
        return self._version(row, self._overlays(tx, name, [version])[version])

    def versions(self, tx: Tx, name: str) -> list[BundleVersion]:
        """Every version of ``name``, oldest first (semantic order)."""
        rows = list(
            tx.execute(
                select(BUNDLE_VERSION).where(_V.name == name).order_by(_V.version_key, _V.version)
            )
        )
        overlays = self._overlays(tx, name, [r.version for r in rows])
        return [self._version(r, overlays[r.version]) for r in rows]

    def latest(self, tx: Tx, name: str) -> BundleVersion | None:
        row = tx.execute(
            select(BUNDLE_VERSION)
            .where(_V.name == name)
            .order_by(_V.version_key.desc(), _V.version.desc())
            .limit(1)
        ).first()
        if row is None:
            return None
        return self._version(row, self._overlays(tx, name, [row.version])[row.version])

    def resolve(self, tx: Tx, ref: str) -> BundleVersion:
        """``NAME@VERSION`` (or ``NAME``: its latest version); :class:`UnknownBundle`."""
        name, version = parse_ref(ref)
        found = self.get(tx, name, version) if version else self.latest(tx, name)
        if found is None:
            what = f"{name}@{version}" if version else name
            raise UnknownBundle(
                "bundle",
                f"no published config bundle {what}; list them with `fleetloop bundle list`"
                + (f" and the versions with `fleetloop bundle list {name}`" if version else ""),
            )
        return found

    def names(self, tx: Tx) -> list[tuple[str, int, str]]:
        """``(name, versions, latest version)`` of every bundle, by name."""
        out: list[tuple[str, int, str]] = []
        rows = tx.execute(select(_V.name, _V.version, _V.version_key).order_by(_V.name))
        by_name: dict[str, list[tuple[str, str]]] = {}
        for r in rows:
            by_name.setdefault(r.name, []).append((r.version_key, r.version))
        for name, versions in by_name.items():
            out.append((name, len(versions), max(versions)[1]))
        return out

    def content(self, tx: Tx, found: BundleVersion, scope: str | None = None) -> dict[str, Any]:
        """The decoded content of a version (or of one overlay's merged content)."""
        delivery = found.delivery if scope is None else found.desired(scope)["bundle"]
        stored = self.state.bundle(tx, str(delivery))
        if stored is None:  # cannot happen: published in the same transaction
            raise UnknownBundle("bundle", f"content of {delivery} is missing")
        decoded = stored.decoded()
        assert isinstance(decoded, dict)
        return decoded

    def diff(
        self, tx: Tx, name: str, old: str, new: str, *, scope: str | None = None
    ) -> BundleDiff:
        """Key-level diff ``name@old`` -> ``name@new`` (of one overlay's content with
        ``scope``; a version without that overlay contributes its base)."""
        a = self.resolve(tx, f"{name}@{old}")
        b = self.resolve(tx, f"{name}@{new}")
        sa = scope if scope and a.overlay(scope) else None
        sb = scope if scope and b.overlay(scope) else None
        return diff_content(self.content(tx, a, sa), self.content(tx, b, sb))


__all__ = [
    "MAX_BUNDLE_BYTES",
    "SCOPE_KINDS",
    "BundleConflict",
    "BundleDiff",
    "BundleError",
    "BundleOverlay",
    "BundleRepository",
    "BundleVersion",
    "Patch",
    "UnknownBundle",
    "check_scope",
    "delivery_name",
    "diff_content",
    "digest_of",
    "encode",
    "parse_ref",
]

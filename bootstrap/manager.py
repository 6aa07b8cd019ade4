"""Operator functions of the bootstrap layer: identities, policies, explain, status, audit.

One :class:`BootstrapManager` per store. Every method is a coroutine that runs its database
work through the store (``store.read`` on a reader thread, ``store.write`` in the group commit),
so the HTTP API can call it from the event loop the servers run on. Every change is one
transaction together with its audit record: a revocation that is not audited does not happen.

The bootstrap server (:class:`bootstrap.server.BootstrapServer`) owns one and delegates to it;
tools without a running server create their own.
"""

from __future__ import annotations

import difflib
import hashlib
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Protocol

from bootstrap.audit import AuditRecord, AuditRepository, ChainVerdict
from bootstrap.ca import CertificateAuthority, IssuedCertificate
from bootstrap.errors import (
    ImportFailed,
    NotProvisionable,
    RebootstrapFailed,
    UnknownIdentity,
)
from bootstrap.identities import FactoryIdentity, IdentityStatus, SecurityMode
from bootstrap.importer import (
    ImportReport,
    ParsedRow,
    batch_id,
    certificate_rejections,
    detect_format,
    existing_rejections,
    failure,
    file_digest,
    parse_identities,
    with_issued_certificate,
    write_issued_keys,
)
from bootstrap.plan import check_provisionable
from bootstrap.policy import (
    CredentialKind,
    Policy,
    Selection,
    check_no_conflict,
    default_policy,
    diff_policies,
    select_policy,
)
from bootstrap.repository import (
    CertificateRepository,
    IdentityRepository,
    PolicyRepository,
    StateRepository,
)
from bootstrap.state import BootstrapState, Phase
from lwm2m.server.results import OperationResult
from lwm2m.store import Page, Registration, Store, Tx

DEFAULT_ACTOR = "operator"


class DmServer(Protocol):
    """What a re-bootstrap needs of the DM server (``lwm2m.server.LwM2MServer`` has it)."""

    def registration(self, endpoint: str) -> Registration | None: ...

    async def execute(
        self, endpoint: str, path: str, arguments: str | None = None
    ) -> OperationResult: ...


@dataclass(frozen=True, slots=True)
class RebootstrapResult:
    """What :meth:`BootstrapManager.rebootstrap` did."""

    endpoint: str
    server_iid: int
    code: str | None
    queued: bool
    state: BootstrapState

    def as_dict(self) -> dict[str, Any]:
        return {
            "endpoint": self.endpoint,
            "server_iid": self.server_iid,
            "code": self.code,
            "queued": self.queued,
            "state": self.state.as_dict(),
        }


@dataclass(frozen=True, slots=True)
class Explanation:
    """``bootstrap explain EP``: the policy that applies, why, and what it would provision."""

    identity: FactoryIdentity
    selection: Selection
    provisions: tuple[dict[str, Any], ...]
    problems: tuple[str, ...]

    def as_dict(self) -> dict[str, Any]:
        doc = self.selection.as_dict()
        doc["identity"] = identity_dict(self.identity)
        doc["provisions"] = list(self.provisions)
        doc["problems"] = list(self.problems)
        if self.selection.policy is not None:
            doc["policy"]["document"] = self.selection.policy.document(redact=True)
        return doc


def identity_dict(identity: FactoryIdentity) -> dict[str, Any]:
    """An identity for display and JSON: never the PSK key (only whether there is one)."""
    cred = identity.credential
    return {
        "endpoint": identity.endpoint,
        "serial": identity.serial,
        "hardware_id": identity.hardware_id,
        "imei": identity.imei,
        "eid": identity.eid,
        "sku": identity.sku,
        "tenant": identity.tenant,
        "region": identity.region,
        "policy_group": identity.policy_group,
        "security_mode": str(cred.mode),
        "psk_identity": cred.psk_identity,
        "has_psk_key": cred.psk_key is not None,
        "certificate_fingerprint": cred.certificate_fingerprint,
        "certificate_serial": cred.certificate_serial,
        "status": str(identity.status),
        "created_at": identity.created_at,
        "updated_at": identity.updated_at,
        "revoked_at": identity.revoked_at,
        "revoked_reason": identity.revoked_reason,
        "import_batch": identity.import_batch,
    }


class BootstrapManager:
    """Identities, policies, explanations, state and audit on one store."""

    def __init__(
        self,
        store: Store,
        *,
        ca: CertificateAuthority | None = None,
        dm_coap_uri: str | None = None,
        dm_coaps_uri: str | None = None,
        clock: Callable[[], float] = time.time,
        on_identities_changed: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self.store = store
        self.ca = ca
        self.dm_coap_uri = dm_coap_uri
        self.dm_coaps_uri = dm_coaps_uri
        self.clock = clock
        self.on_identities_changed = on_identities_changed
        self.identities = IdentityRepository()
        self.certificates = CertificateRepository()
        self.policies = PolicyRepository()
        self.states = StateRepository()
        self.audit_log = AuditRepository()

    @property
    def default_policy(self) -> Policy | None:
        return default_policy(self.dm_coap_uri, self.dm_coaps_uri)

    async def _changed(self) -> None:
        """Tell the bootstrap server (its PSK map) before the caller hears of the change, so a
        device imported a moment ago can handshake at once."""
        if self.on_identities_changed is not None:
            await self.on_identities_changed()

    # -- identities -----------------------------------------------------------------------------
    async def import_identities(
        self,
        data: bytes | str,
        *,
        source: str = "import",
        format: str | None = None,
        dry_run: bool = False,
        allow_partial: bool = False,
        key_dir: Path | str | None = None,
        actor: str = DEFAULT_ACTOR,
    ) -> ImportReport:
        """Import a factory CSV/JSON export (see :mod:`bootstrap.importer`).

        Raises :class:`ImportFailed` (with the report) when rows are rejected and
        ``allow_partial`` is off -- nothing is written then. A dry run returns the report of
        what would happen, checking against the database too, and writes nothing.
        """
        raw = data.encode("utf-8") if isinstance(data, str) else data
        try:
            text = raw.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            raise ImportFailed(f"{source}: not UTF-8 text ({exc})", None) from None
        now = self.clock()
        digest = file_digest(raw)
        batch = batch_id(digest, now)
        parsed = parse_identities(
            text, format=format or detect_format(source, text), now=now, batch=batch
        )
        rejected = list(parsed.rejected) + certificate_rejections(parsed.accepted, self.ca)
        rejected_rows = {r.row for r in rejected}
        candidates = [p for p in parsed.accepted if p.row not in rejected_rows]

        issued: dict[str, IssuedCertificate] = {}
        if not dry_run and self.ca is not None and (allow_partial or not rejected):
            for item in candidates:
                if item.needs_certificate:
                    issued[item.identity.endpoint] = self.ca.issue_device(
                        item.identity.endpoint, kind="device-bootstrap"
                    )
        ready: list[ParsedRow] = [
            with_issued_certificate(p, issued[p.identity.endpoint])
            if p.identity.endpoint in issued
            else p
            for p in candidates
        ]

        def report(accepted: list[ParsedRow], rejections: list[Any], imported: int) -> ImportReport:
            return ImportReport(
                batch=batch,
                source=source,
                digest=digest,
                rows=parsed.rows,
                accepted=tuple(p.identity.endpoint for p in accepted),
                rejected=tuple(sorted(rejections, key=lambda r: r.row)),
                dry_run=dry_run,
                imported=imported,
            )

        def check(tx: Tx) -> ImportReport:
            clashes = self.identities.conflicts(tx, [p.identity for p in ready])
            more = existing_rejections(ready, clashes)
            bad = {r.row for r in more}
            return report([p for p in ready if p.row not in bad], rejected + more, 0)

        if dry_run:
            return await self.store.read(check)

        def apply(tx: Tx) -> ImportReport:
            outcome = check(tx)
            if outcome.rejected and not allow_partial:
                raise failure(outcome)
            keep = [p for p in ready if p.identity.endpoint in set(outcome.accepted)]
            self.identities.add_many(tx, [p.identity for p in keep])
            for item in keep:
                cert = issued.get(item.identity.endpoint)
                if cert is not None:
                    self.certificates.record(tx, cert, now)
            if keep:
                self.audit_log.append(
                    tx,
                    actor=actor,
                    action="identities.import",
                    subject=batch,
                    detail={
                        "source": source,
                        "sha256": digest,
                        "rows": parsed.rows,
                        "imported": len(keep),
                        "rejected": len(outcome.rejected),
                        "endpoints": [p.identity.endpoint for p in keep][:1000],
                    },
                    now=now,
                )
            return replace(outcome, imported=len(keep))

        result = await self.store.write(apply)
        if issued and key_dir is not None:
            kept = {e: c for e, c in issued.items() if e in set(result.accepted)}
            result = replace(result, issued=write_issued_keys(kept, key_dir))
        await self._changed()
        return result

    def _resolve(self, tx: Tx, text: str) -> str:
        """The endpoint name of the identity ``text`` names (endpoint, serial, IMEI, ...)."""
        found = self.identities.find(tx, text)
        if found is None:
            raise UnknownIdentity(f"no factory identity {text!r}")
        return found.endpoint

    async def identity(self, endpoint: str) -> FactoryIdentity:
        found = await self.store.read(lambda tx: self.identities.find(tx, endpoint))
        if found is None:
            raise UnknownIdentity(
                f"no factory identity {endpoint!r} (searched endpoint, serial, IMEI, EID and "
                "PSK identity)"
            )
        return found

    async def list_identities(
        self,
        *,
        after: str | None = None,
        limit: int = 100,
        tenant: str | None = None,
        region: str | None = None,
        sku: str | None = None,
        policy_group: str | None = None,
        status: IdentityStatus | None = None,
        import_batch: str | None = None,
    ) -> Page[FactoryIdentity]:
        return await self.store.read(
            lambda tx: self.identities.list_page(
                tx,
                after=after,
                limit=limit,
                tenant=tenant,
                region=region,
                sku=sku,
                policy_group=policy_group,
                status=status,
                import_batch=import_batch,
            )
        )

    async def revoke_identity(
        self, endpoint: str, *, reason: str, actor: str = DEFAULT_ACTOR
    ) -> FactoryIdentity:
        """Revoke: the device can never bootstrap again with this identity; its certificates
        (bootstrap and DM) are revoked too. The DM credentials already provisioned stay until
        the operator removes them from the DM store (a revoked device may still need to be
        reached, e.g. to be wiped)."""
        now = self.clock()

        def op(tx: Tx) -> FactoryIdentity:
            name = self._resolve(tx, endpoint)
            revoked = self.identities.revoke(tx, name, reason, now)
            serials = self.certificates.revoke_endpoint(tx, name, reason, now)
            self.audit_log.append(
                tx,
                actor=actor,
                action="identity.revoke",
                subject=name,
                detail={"reason": reason, "certificates": serials},
                now=now,
            )
            return revoked

        result = await self.store.write(op)
        await self._changed()
        return result

    async def update_identity(
        self, endpoint: str, changes: Mapping[str, str | None], *, actor: str = DEFAULT_ACTOR
    ) -> FactoryIdentity:
        """Change tenant / region / SKU / policy group (moving a device); audited."""
        now = self.clock()

        def op(tx: Tx) -> FactoryIdentity:
            name = self._resolve(tx, endpoint)
            old, new = self.identities.update_attributes(tx, name, dict(changes), now)
            self.audit_log.append(
                tx,
                actor=actor,
                action="identity.update",
                subject=name,
                detail={k: {"from": getattr(old, k), "to": getattr(new, k)} for k in changes},
                now=now,
            )
            return new

        return await self.store.write(op)

    # -- policies -------------------------------------------------------------------------------
    async def add_policy(
        self, policy: Policy, *, actor: str = DEFAULT_ACTOR, comment: str = ""
    ) -> tuple[Policy, bool]:
        """Store ``policy`` as a new version of its name; ``(stored, changed)`` (an identical
        document adds no version and no audit record)."""
        now = self.clock()

        def op(tx: Tx) -> tuple[Policy, bool]:
            check_no_conflict(policy, self.policies.active(tx))
            previous = self.policies.latest(tx, policy.name)
            stored, changed = self.policies.add_version(
                tx, policy, author=actor, comment=comment, now=now
            )
            if changed:
                self.audit_log.append(
                    tx,
                    actor=actor,
                    action="policy.add" if previous is None else "policy.update",
                    subject=f"policy:{policy.name}",
                    detail={
                        "version": stored.version,
                        "previous": None if previous is None else previous.version,
                        "sha256": _digest(stored),
                        "comment": comment,
                        "diff": ""
                        if previous is None
                        else diff_policies(previous, stored, redact=True),
                    },
                    now=now,
                )
            return stored, changed

        return await self.store.write(op)

    async def retire_policy(
        self, name: str, *, actor: str = DEFAULT_ACTOR, comment: str = ""
    ) -> Policy:
        now = self.clock()

        def op(tx: Tx) -> Policy:
            retired = self.policies.retire(tx, name, author=actor, comment=comment, now=now)
            self.audit_log.append(
                tx,
                actor=actor,
                action="policy.retire",
                subject=f"policy:{name}",
                detail={"version": retired.version, "comment": comment},
                now=now,
            )
            return retired

        return await self.store.write(op)

    async def list_policies(self) -> list[Policy]:
        return await self.store.read(self.policies.active)

    async def policy(self, name: str, version: int | None = None) -> Policy:
        return await self.store.read(lambda tx: self.policies.get(tx, name, version))

    async def policy_versions(self, name: str) -> list[dict[str, Any]]:
        return await self.store.read(lambda tx: self.policies.versions(tx, name))

    async def diff_policy(
        self, name: str, old: int | None = None, new: int | None = None, *, redact: bool = True
    ) -> str:
        """Diff two versions (default: the newest against the one before it); APN passwords
        are hidden unless ``redact`` is off."""

        def op(tx: Tx) -> str:
            newest = (
                self.policies.get(tx, name, new)
                if new
                else self.policies.latest(tx, name, include_retired=True)
            )
            if newest is None:
                return ""
            before = old if old is not None else newest.version - 1
            if before < 1:  # the first version: everything is new
                return "".join(
                    difflib.unified_diff(
                        [],
                        newest.pretty(redact=redact).splitlines(keepends=True),
                        "(none)",
                        newest.label,
                    )
                )
            return diff_policies(self.policies.get(tx, name, before), newest, redact=redact)

        return await self.store.read(op)

    # -- explain and status ---------------------------------------------------------------------
    def _explain(self, identity: FactoryIdentity, policies: list[Policy]) -> Explanation:
        selection = select_policy(identity, policies, self.default_policy)
        provisions: list[dict[str, Any]] = []
        problems: list[str] = []
        if not identity.active:
            problems.append(f"identity is revoked ({identity.revoked_reason}): bootstrap refused")
        policy = selection.policy
        if policy is None:
            problems.append(selection.why)
        else:
            for server in policy.servers:
                kind = server.credentials_for(identity.security_mode)
                provisions.append(
                    {
                        "uri": server.uri_for(kind),
                        "short_server_id": server.short_server_id,
                        "credentials": str(kind),
                        "lifetime": server.lifetime,
                        "binding": server.binding,
                        "queue_mode": server.queue_mode,
                        "apn": server.apn,
                    }
                )
                if kind is CredentialKind.X509 and self.ca is None:
                    problems.append("the policy provisions a certificate but no CA is configured")
            try:
                check_provisionable(
                    identity,
                    policy,
                    secure_channel=identity.security_mode is not SecurityMode.NOSEC,
                )
            except NotProvisionable as exc:
                problems.append(str(exc))
        return Explanation(identity, selection, tuple(provisions), tuple(problems))

    async def explain(self, endpoint: str) -> Explanation:
        """Which policy applies to ``endpoint``, why, and what a bootstrap would provision."""

        def op(tx: Tx) -> tuple[FactoryIdentity | None, list[Policy]]:
            return self.identities.find(tx, endpoint), self.policies.active(tx)

        identity, policies = await self.store.read(op)
        if identity is None:
            raise UnknownIdentity(f"no factory identity {endpoint!r}")
        return self._explain(identity, policies)

    async def select(self, identity: FactoryIdentity) -> Selection:
        policies = await self.store.read(self.policies.active)
        return select_policy(identity, policies, self.default_policy)

    async def status(self, endpoint: str) -> BootstrapState:
        """The device's bootstrap state (phase ``never`` when it has not bootstrapped)."""
        identity = await self.identity(endpoint)
        found = await self.store.read(lambda tx: self.states.get(tx, identity.endpoint))
        return found if found is not None else BootstrapState(identity.endpoint)

    # -- server-initiated bootstrap -------------------------------------------------------------
    async def rebootstrap(
        self,
        endpoint: str,
        *,
        dm_server: DmServer,
        actor: str = DEFAULT_ACTOR,
        move: Mapping[str, str | None] | None = None,
    ) -> RebootstrapResult:
        """Make the device bootstrap again: Execute ``/1/<iid>/9`` through the DM server.

        ``move`` first changes the identity's tenant/region/sku/policy_group (audited), so the
        device comes back under another policy -- e.g. ``{"region": "eu-2"}`` moves it to that
        region's server. Its credentials rotate either way: every bootstrap provisions fresh
        ones, and they replace the old ones in the DM store atomically with the bootstrap's
        commit. Needs the device registered with ``dm_server`` (a device that is not can only
        be reached by its own fallback to bootstrap).
        """
        identity = await self.identity(endpoint)
        endpoint = identity.endpoint
        if dm_server.registration(endpoint) is None:
            raise RebootstrapFailed(
                f"{endpoint} is not registered with the DM server; it cannot be told to "
                "bootstrap (it bootstraps by itself when its registration fails for good)"
            )
        state = await self.store.read(lambda tx: self.states.get(tx, endpoint))
        server_iid = state.server_iids[0] if state is not None and state.server_iids else 0
        if move:
            await self.update_identity(endpoint, move, actor=actor)
        result = await dm_server.execute(endpoint, f"/1/{server_iid}/9")
        if not result.ok:
            raise RebootstrapFailed(
                f"Execute /1/{server_iid}/9 on {endpoint} failed: "
                f"{result.code or result.status.value} {result.reason}".strip()
            )
        now = self.clock()
        requested = replace(
            state or BootstrapState(endpoint),
            phase=Phase.REBOOTSTRAP_REQUESTED,
            detail=f"requested by {actor}",
            rebootstrap_requested_at=now,
            updated_at=now,
        )

        def op(tx: Tx) -> None:
            self.states.put(tx, requested)
            self.audit_log.append(
                tx,
                actor=actor,
                action="bootstrap.rebootstrap",
                subject=endpoint,
                detail={"server_iid": server_iid, "move": dict(move or {}), "code": result.code},
                now=now,
            )

        await self.store.write(op)
        return RebootstrapResult(endpoint, server_iid, result.code, result.queued, requested)

    # -- audit and certificates -----------------------------------------------------------------
    async def audit(
        self,
        *,
        subject: str | None = None,
        action_prefix: str | None = None,
        after: int | None = None,
        limit: int = 100,
    ) -> list[AuditRecord]:
        return await self.store.read(
            lambda tx: self.audit_log.list(
                tx, subject=subject, action_prefix=action_prefix, after=after, limit=limit
            )
        )

    async def verify_audit(self) -> ChainVerdict:
        return await self.store.read(self.audit_log.verify)

    async def revoke_certificate(
        self, serial: str, *, reason: str, actor: str = DEFAULT_ACTOR
    ) -> bool:
        now = self.clock()

        def op(tx: Tx) -> bool:
            changed = self.certificates.revoke(tx, serial, reason, now)
            if changed:
                self.audit_log.append(
                    tx,
                    actor=actor,
                    action="certificate.revoke",
                    subject=f"certificate:{serial.lower()}",
                    detail={"reason": reason},
                    now=now,
                )
            return changed

        return await self.store.write(op)

    async def crl(self) -> bytes:
        """The CA's current CRL (PEM) over every revoked certificate."""
        if self.ca is None:
            raise UnknownIdentity("no CA is configured")
        revocations = await self.store.read(self.certificates.revocations)
        return self.ca.crl(revocations)


def _digest(policy: Policy) -> str:
    return hashlib.sha256(policy.canonical().encode()).hexdigest()


__all__ = [
    "DEFAULT_ACTOR",
    "BootstrapManager",
    "DmServer",
    "Explanation",
    "RebootstrapResult",
    "identity_dict",
]

"""The indirect-download relay's sessions (SGP.32 3.2.3): which SM-DP+ an ES9+ transaction
goes to, which ProfileDownloadTrigger (eimTransactionId, activation code, EID) started it, and
the step it is at.

`Es9Relay` keeps them through a :class:`RelaySessions`: :class:`MemorySessions` for tests of
the plumbing, :class:`SqlSessions` on the store (``eim_download_session``, same database and
transactions as the package queue). The relay writes a session -- and each step -- *before* it
answers the IPA, so an eIM killed in the middle of a download relays the IPA's next call to the
right SM-DP+ after its restart (``tests/sgp32/test_download_crash.py``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Protocol

from sqlalchemy import Row, insert, select, update

from lwm2m.store import Store, Tx
from sgp32.eim.tables import DOWNLOAD_SESSION, DOWNLOAD_SESSION_PEER

SESSION_TTL = 600.0
"""A session untouched for this long is over (the SM-DP+ has given up on it too)."""

_S = DOWNLOAD_SESSION.c
_P = DOWNLOAD_SESSION_PEER.c


class Step(StrEnum):
    """The ES9+ call the session waits for next, or how it ended."""

    AUTHENTICATE = "authenticateClient"  # InitiateAuthentication answered
    BOUND_PACKAGE = "getBoundProfilePackage"  # AuthenticateClient answered
    INSTALLING = "installing"  # the bound profile package went to the IPA
    CANCELLED = "cancelled"  # CancelSession relayed
    FAILED = "failed"  # the SM-DP+ refused a step


@dataclass(frozen=True)
class DownloadSession:
    transaction_id: bytes
    smdp_address: str
    step: Step
    created_at: float
    updated_at: float
    eim_transaction_id: bytes | None = None
    eid: str | None = None
    activation_code: str | None = None
    server_address: str | None = None
    server_challenge: bytes | None = None
    ctx_params1: bytes | None = None
    """DER of the CtxParams1 the eIM generated for this session (None: the IPA's own)."""
    smdp_oid: str | None = None
    """The SM-DP+'s OID from its CERT.DPauth (what a compact CancelSession leaves out)."""
    bpp_euicc_otpk: bytes | None = None
    """smdpSigned2's bppEuiccOtpk (what a compact PrepareDownloadResponse may leave out)."""

    def json(self) -> dict[str, Any]:
        return {
            "transaction_id": self.transaction_id.hex().upper(),
            "smdp_address": self.smdp_address,
            "step": self.step.value,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
            "eim_transaction_id": (
                self.eim_transaction_id.hex() if self.eim_transaction_id is not None else None
            ),
            "eid": self.eid,
            "activation_code": self.activation_code,
            "ctx_params1_by_eim": self.ctx_params1 is not None,
        }


class RelaySessions(Protocol):
    async def open(self, session: DownloadSession) -> None:
        """Record a new session (after the SM-DP+ answered InitiateAuthentication)."""
        ...

    async def find(self, transaction_id: bytes, now: float) -> DownloadSession | None:
        """The live session of this transactionId (None: unknown or older than the TTL)."""
        ...

    async def advance(
        self,
        transaction_id: bytes,
        step: Step,
        now: float,
        *,
        bpp_euicc_otpk: bytes | None = None,
    ) -> None:
        """Move the session to `step`; `bpp_euicc_otpk`: smdpSigned2's, kept for later."""
        ...


class MemorySessions:
    """Sessions in a dictionary (not durable: a restart forgets them)."""

    def __init__(self) -> None:
        self.sessions: dict[bytes, DownloadSession] = {}

    async def open(self, session: DownloadSession) -> None:
        self.sessions[session.transaction_id] = session

    async def find(self, transaction_id: bytes, now: float) -> DownloadSession | None:
        for tid, s in list(self.sessions.items()):
            if now - s.updated_at > SESSION_TTL:
                del self.sessions[tid]
        return self.sessions.get(transaction_id)

    async def advance(
        self,
        transaction_id: bytes,
        step: Step,
        now: float,
        *,
        bpp_euicc_otpk: bytes | None = None,
    ) -> None:
        found = self.sessions.get(transaction_id)
        if found is not None:
            otpk = bpp_euicc_otpk if bpp_euicc_otpk is not None else found.bpp_euicc_otpk
            self.sessions[transaction_id] = dataclasses.replace(
                found, step=step, updated_at=now, bpp_euicc_otpk=otpk
            )


def _session(row: Row[Any], peer: Row[Any] | None = None) -> DownloadSession:
    return DownloadSession(
        transaction_id=bytes(row.transaction_id),
        smdp_address=row.smdp_address,
        step=Step(row.step),
        created_at=row.created_at,
        updated_at=row.updated_at,
        eim_transaction_id=(
            bytes(row.eim_transaction_id) if row.eim_transaction_id is not None else None
        ),
        eid=row.eid,
        activation_code=row.activation_code,
        server_address=row.server_address,
        server_challenge=(
            bytes(row.server_challenge) if row.server_challenge is not None else None
        ),
        ctx_params1=bytes(row.ctx_params1) if row.ctx_params1 is not None else None,
        smdp_oid=peer.smdp_oid if peer is not None else None,
        bpp_euicc_otpk=(
            bytes(peer.bpp_euicc_otpk)
            if peer is not None and peer.bpp_euicc_otpk is not None
            else None
        ),
    )


class SqlSessions:
    """Sessions in ``eim_download_session``: every change is one committed transaction (with
    an ``esim.download.step`` audit record when the EID is known) before the relay answers."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def _audit(self, tx: Tx, session: DownloadSession, now: float, outcome: str = "ok") -> None:
        if session.eid is None:
            return
        self.store.audit.append(
            tx,
            actor="system:eim",
            action="esim.download.step",
            subject=f"eid:{session.eid}",
            now=now,
            detail={
                "smdp_address": session.smdp_address,
                "transaction_id": session.transaction_id.hex().upper(),
                "step": session.step.value,
            },
            outcome=outcome,
        )

    async def open(self, session: DownloadSession) -> None:
        def write(tx: Tx) -> None:
            # a transactionId the SM-DP+ hands out again replaces the old row
            tx.execute(DOWNLOAD_SESSION.delete().where(_S.transaction_id == session.transaction_id))
            tx.execute(
                DOWNLOAD_SESSION_PEER.delete().where(_P.transaction_id == session.transaction_id)
            )
            if session.smdp_oid is not None or session.bpp_euicc_otpk is not None:
                tx.execute(
                    insert(DOWNLOAD_SESSION_PEER).values(
                        transaction_id=session.transaction_id,
                        smdp_oid=session.smdp_oid,
                        bpp_euicc_otpk=session.bpp_euicc_otpk,
                    )
                )
            tx.execute(
                insert(DOWNLOAD_SESSION).values(
                    transaction_id=session.transaction_id,
                    smdp_address=session.smdp_address,
                    eim_transaction_id=session.eim_transaction_id,
                    eid=session.eid,
                    activation_code=session.activation_code,
                    step=session.step.value,
                    created_at=session.created_at,
                    updated_at=session.updated_at,
                    server_address=session.server_address,
                    server_challenge=session.server_challenge,
                    ctx_params1=session.ctx_params1,
                )
            )
            self._audit(tx, session, session.created_at)

        await self.store.write(write)

    async def find(self, transaction_id: bytes, now: float) -> DownloadSession | None:
        def read(tx: Tx) -> DownloadSession | None:
            row = tx.execute(
                select(DOWNLOAD_SESSION).where(_S.transaction_id == transaction_id)
            ).one_or_none()
            if row is None:
                return None
            peer = tx.execute(
                select(DOWNLOAD_SESSION_PEER).where(_P.transaction_id == transaction_id)
            ).one_or_none()
            return _session(row, peer)

        found = await self.store.read(read)
        if found is None or now - found.updated_at > SESSION_TTL:
            return None
        return found

    async def advance(
        self,
        transaction_id: bytes,
        step: Step,
        now: float,
        *,
        bpp_euicc_otpk: bytes | None = None,
    ) -> None:
        def write(tx: Tx) -> None:
            tx.execute(
                update(DOWNLOAD_SESSION)
                .where(_S.transaction_id == transaction_id)
                .values(step=step.value, updated_at=now)
            )
            if bpp_euicc_otpk is not None:
                done = tx.execute(
                    update(DOWNLOAD_SESSION_PEER)
                    .where(_P.transaction_id == transaction_id)
                    .values(bpp_euicc_otpk=bpp_euicc_otpk)
                )
                if done.rowcount == 0:
                    tx.execute(
                        insert(DOWNLOAD_SESSION_PEER).values(
                            transaction_id=transaction_id, bpp_euicc_otpk=bpp_euicc_otpk
                        )
                    )
            row = tx.execute(
                select(DOWNLOAD_SESSION).where(_S.transaction_id == transaction_id)
            ).one_or_none()
            if row is not None:
                outcome = "failed" if step is Step.FAILED else "ok"
                self._audit(tx, _session(row), now, outcome)

        await self.store.write(write)

    async def of_eid(self, eid: str, limit: int = 20) -> list[DownloadSession]:
        """The EID's sessions, newest first (for ``esim show``)."""

        def read(tx: Tx) -> list[DownloadSession]:
            rows = tx.execute(
                select(DOWNLOAD_SESSION)
                .where(_S.eid == eid)
                .order_by(_S.created_at.desc())
                .limit(limit)
            )
            return [_session(r) for r in rows]

        return await self.store.read(read)

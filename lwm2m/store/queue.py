"""Requests queued for queue-mode devices, which are reachable only briefly after they wake.

The fleet layer enqueues (with a deadline); when the device's Register / Update / Send shows it
is awake, the server takes :meth:`QueueRepository.pending`, sends each, and records the
outcome. Every state change is a conditional ``UPDATE .. WHERE state IN (allowed)`` so two
actors (a server marking a request sent, an operator cancelling it) cannot both win; the loser
gets :class:`~lwm2m.store.errors.Conflict`. See :class:`~lwm2m.store.domain.QueueState` for the
state machine.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from sqlalchemy import Row, delete, select, update

from lwm2m.store.domain import NewQueuedRequest, QueuedRequest, QueueState
from lwm2m.store.engine import Tx
from lwm2m.store.errors import Conflict, CorruptRecord, NotFound
from lwm2m.store.observations import paths_from_json, paths_to_json
from lwm2m.store.tables import QUEUED_REQUEST

_Q = QUEUED_REQUEST.c
_FINAL = [s.value for s in QueueState if s.final]


def _from_row(row: Row[Any]) -> QueuedRequest:
    m = row._mapping
    try:
        state = QueueState(m["state"])
    except ValueError as err:
        raise CorruptRecord(f"queued request {m['id']}: unknown state {m['state']!r}") from err
    payload = m["payload"]
    response = m["response_payload"]
    return QueuedRequest(
        id=int(m["id"]),
        endpoint=m["endpoint"],
        operation=m["operation"],
        paths=paths_from_json(m["paths"], f"queued request {m['id']}"),
        content_format=m["content_format"],
        payload=bytes(payload) if payload is not None else None,
        deadline=m["deadline"],
        correlation=m["correlation"],
        state=state,
        created_at=float(m["created_at"]),
        sent_at=m["sent_at"],
        finished_at=m["finished_at"],
        response_code=m["response_code"],
        response_payload=bytes(response) if response is not None else None,
    )


class QueueRepository:
    """Queued requests per endpoint, in FIFO order (by id)."""

    def enqueue(self, tx: Tx, request: NewQueuedRequest, now: float) -> QueuedRequest:
        """Queue ``request`` as pending; returns it with its id."""
        if request.deadline is not None and request.deadline <= now:
            raise ValueError(f"deadline {request.deadline} is not after now ({now})")
        new_id = tx.execute(
            QUEUED_REQUEST.insert().returning(_Q.id),
            {
                "endpoint": request.endpoint,
                "operation": request.operation,
                "paths": paths_to_json(request.paths),
                "content_format": request.content_format,
                "payload": request.payload,
                "deadline": request.deadline,
                "correlation": request.correlation,
                "state": QueueState.PENDING.value,
                "created_at": now,
            },
        ).scalar_one()
        return QueuedRequest(
            id=int(new_id),
            endpoint=request.endpoint,
            operation=request.operation,
            paths=request.paths,
            content_format=request.content_format,
            payload=request.payload,
            deadline=request.deadline,
            correlation=request.correlation,
            state=QueueState.PENDING,
            created_at=now,
            sent_at=None,
            finished_at=None,
            response_code=None,
            response_payload=None,
        )

    def get(self, tx: Tx, request_id: int) -> QueuedRequest | None:
        row = tx.execute(select(QUEUED_REQUEST).where(_Q.id == request_id)).first()
        return _from_row(row) if row is not None else None

    def pending(
        self, tx: Tx, endpoint: str, now: float, *, limit: int = 100
    ) -> list[QueuedRequest]:
        """Pending requests for ``endpoint`` still within their deadline, oldest first."""
        query = (
            select(QUEUED_REQUEST)
            .where(
                _Q.endpoint == endpoint,
                _Q.state == QueueState.PENDING.value,
                (_Q.deadline.is_(None)) | (_Q.deadline > now),
            )
            .order_by(_Q.id)
            .limit(limit)
        )
        return [_from_row(r) for r in tx.execute(query)]

    def for_endpoint(
        self, tx: Tx, endpoint: str, *, states: tuple[QueueState, ...] | None = None
    ) -> list[QueuedRequest]:
        """All requests of ``endpoint`` (optionally only in ``states``), oldest first."""
        query = select(QUEUED_REQUEST).where(_Q.endpoint == endpoint)
        if states is not None:
            query = query.where(_Q.state.in_([s.value for s in states]))
        return [_from_row(r) for r in tx.execute(query.order_by(_Q.id))]

    def mark_sent(self, tx: Tx, request_id: int, now: float) -> QueuedRequest:
        """pending -> sent: the request is on its way to the device."""
        return self._transition(
            tx, request_id, (QueueState.PENDING,), QueueState.SENT, {"sent_at": now}
        )

    def mark_answered(
        self,
        tx: Tx,
        request_id: int,
        now: float,
        *,
        code: str,
        payload: bytes | None = None,
    ) -> QueuedRequest:
        """sent -> answered, with the device's response code (e.g. ``"2.04"``) and payload."""
        return self._transition(
            tx,
            request_id,
            (QueueState.SENT,),
            QueueState.ANSWERED,
            {"finished_at": now, "response_code": code, "response_payload": payload},
        )

    def mark_timeout(self, tx: Tx, request_id: int, now: float) -> QueuedRequest:
        """sent -> timeout: no response; the outcome on the device is unknown."""
        return self._transition(
            tx, request_id, (QueueState.SENT,), QueueState.TIMEOUT, {"finished_at": now}
        )

    def cancel(self, tx: Tx, request_id: int, now: float) -> QueuedRequest:
        """pending | sent -> cancelled (a late answer to a sent request is then ignored)."""
        return self._transition(
            tx,
            request_id,
            (QueueState.PENDING, QueueState.SENT),
            QueueState.CANCELLED,
            {"finished_at": now},
        )

    def expire(self, tx: Tx, now: float) -> list[QueuedRequest]:
        """pending -> expired for every request whose deadline is at or before ``now``."""
        rows = tx.execute(
            select(QUEUED_REQUEST)
            .where(_Q.state == QueueState.PENDING.value, _Q.deadline <= now)
            .order_by(_Q.id)
        ).all()
        expired = [_from_row(r) for r in rows]
        if expired:
            tx.execute(
                update(QUEUED_REQUEST)
                .where(_Q.id.in_([r.id for r in expired]), _Q.state == QueueState.PENDING.value)
                .values(state=QueueState.EXPIRED.value, finished_at=now)
            )
        return [_with(r, state=QueueState.EXPIRED, finished_at=now) for r in expired]

    def abandon_sent(self, tx: Tx, now: float) -> list[QueuedRequest]:
        """sent -> timeout for everything in flight: call once when the server starts.

        A request that was on the wire when the server stopped can no longer be matched to
        its response (the CoAP token lived in memory); its outcome is unknown, and resending is
        not safe for non-idempotent operations such as Execute.
        """
        rows = tx.execute(
            select(QUEUED_REQUEST).where(_Q.state == QueueState.SENT.value).order_by(_Q.id)
        ).all()
        abandoned = [_from_row(r) for r in rows]
        if abandoned:
            tx.execute(
                update(QUEUED_REQUEST)
                .where(_Q.state == QueueState.SENT.value)
                .values(state=QueueState.TIMEOUT.value, finished_at=now)
            )
        return [_with(r, state=QueueState.TIMEOUT, finished_at=now) for r in abandoned]

    def purge_finished(self, tx: Tx, before: float) -> int:
        """Delete requests that finished (any final state) before ``before``."""
        result = tx.execute(
            delete(QUEUED_REQUEST).where(_Q.state.in_(_FINAL), _Q.finished_at < before)
        )
        return int(result.rowcount)

    def _transition(
        self,
        tx: Tx,
        request_id: int,
        allowed: tuple[QueueState, ...],
        target: QueueState,
        values: dict[str, Any],
    ) -> QueuedRequest:
        result = tx.execute(
            update(QUEUED_REQUEST)
            .where(_Q.id == request_id, _Q.state.in_([s.value for s in allowed]))
            .values(state=target.value, **values)
        )
        current = self.get(tx, request_id)
        if current is None:
            raise NotFound(f"queued request {request_id} is unknown")
        if result.rowcount != 1:  # nothing written: failing here leaves the batch intact
            raise Conflict(
                f"queued request {request_id} is {current.state.value}; it cannot become "
                f"{target.value} (allowed from {', '.join(s.value for s in allowed)})"
            )
        return current


def _with(request: QueuedRequest, **changes: Any) -> QueuedRequest:
    return replace(request, **changes)

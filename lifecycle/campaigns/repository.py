"""Reads and writes of the campaign tables inside the store's transactions (synchronous,
``Tx`` first, like the other lifecycle repositories).

Writes are set-based per tick: every dirty device row of a tick goes in one upsert
``executemany`` (a 10 000-device wave is a handful of statements, not 10 000 transactions).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy import Insert, select, tuple_
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from lifecycle.campaigns.codec import dumps_spec, loads_spec
from lifecycle.campaigns.model import CampaignState, DeviceState
from lifecycle.campaigns.runs import (
    CampaignRun,
    adopt_phase,
    adopt_telemetry,
    device_from_row,
    device_row,
    phase_row,
    telemetry_rows,
    wave_from_row,
    wave_row,
)
from lifecycle.campaigns.tables import (
    CAMPAIGN,
    DEVICE,
    PHASE,
    QUARANTINE,
    STEP,
    TELEMETRY,
    WAVE,
)
from lwm2m.store import Tx

CHUNK = 500
_ACTIVE = [s.value for s in CampaignState if s.active]


def _upsert(insert: Any, table: Any, keys: Sequence[str]) -> Insert:
    ins = insert(table)
    columns = [c.name for c in table.columns if c.name not in keys]
    result: Insert = ins.on_conflict_do_update(
        index_elements=[table.c[k] for k in keys],
        set_={name: ins.excluded[name] for name in columns},
    )
    return result


_UPSERT = {
    (dialect, name): _upsert(insert, table, keys)
    for dialect, insert in (("sqlite", sqlite_insert), ("postgresql", pg_insert))
    for name, table, keys in (
        ("device", DEVICE, ("campaign", "endpoint")),
        ("wave", WAVE, ("campaign", "index")),
        ("campaign", CAMPAIGN, ("id",)),
        ("telemetry", TELEMETRY, ("campaign", "wave", "endpoint")),
        ("phase", PHASE, ("campaign", "wave")),
    )
}


def campaign_row(run: CampaignRun) -> dict[str, Any]:
    return {
        "id": run.id,
        "name": run.spec.name,
        "tenant": run.spec.tenant,
        "spec": dumps_spec(run.spec),
        "state": run.state.value,
        "reason": run.reason,
        "wave": run.wave,
        "seed": run.seed,
        "artifacts": json.dumps(list(run.artifacts)),
        "reverted_cohorts": json.dumps(sorted(list(c) for c in run.reverted_cohorts)),
        "conflicts": json.dumps(run.conflicts),
        "created_by": run.created_by,
        "created_at": run.created_at,
        "updated_at": run.updated_at,
        "finished_at": run.finished_at,
    }


class CampaignRepository:
    """The campaign tables (module docstring). Stateless."""

    # -- writing ---------------------------------------------------------------------------
    def save(
        self,
        tx: Tx,
        run: CampaignRun,
        *,
        campaign: bool = True,
        waves: Sequence[int] | None = None,
        endpoints: Sequence[str] | None = None,
        telemetry: Sequence[tuple[int, str]] = (),
        now: float = 0.0,
    ) -> int:
        """Write ``run``'s campaign row (``campaign``), the ``waves`` and the devices of
        ``endpoints`` (None: all of them). Leaves the dirty marks alone: the group commit may
        run this again (a batch it shared failed), so the caller clears them after the
        commit. Returns the device rows written."""
        dialect = tx.dialect
        if campaign:
            tx.execute(_UPSERT[(dialect, "campaign")], [campaign_row(run)])
        indices = range(len(run.waves)) if waves is None else sorted(waves)
        if indices:
            tx.execute(
                _UPSERT[(dialect, "wave")], [wave_row(run.id, run.waves[i]) for i in indices]
            )
            if run.spec.phase_split:  # the barrier between the phases, with the wave
                tx.execute(
                    _UPSERT[(dialect, "phase")], [phase_row(run.id, run.waves[i]) for i in indices]
                )
        chosen = list(run.devices) if endpoints is None else list(endpoints)
        for start in range(0, len(chosen), CHUNK):
            rows = [device_row(run.devices[e]) for e in chosen[start : start + CHUNK]]
            tx.execute(_UPSERT[(dialect, "device")], rows)
        guards = telemetry_rows(run, telemetry, now or run.updated_at)
        for start in range(0, len(guards), CHUNK):
            tx.execute(_UPSERT[(dialect, "telemetry")], guards[start : start + CHUNK])
        return len(chosen)

    def steps_taken(
        self, tx: Tx, campaign: str, keys: Sequence[tuple[str, str, int]]
    ) -> dict[tuple[str, str, int], int]:
        """Which of (endpoint, step, attempt) already have an idempotency key, with the
        generation each wrote."""
        found: dict[tuple[str, str, int], int] = {}
        c = STEP.c
        for start in range(0, len(keys), CHUNK):
            group = list(keys[start : start + CHUNK])
            rows = tx.execute(
                select(c.endpoint, c.step, c.attempt, c.generation).where(
                    c.campaign == campaign,
                    tuple_(c.endpoint, c.step, c.attempt).in_(group),
                )
            )
            for r in rows:
                found[(r.endpoint, r.step, int(r.attempt))] = int(r.generation)
        return found

    def add_steps(self, tx: Tx, rows: Sequence[dict[str, Any]]) -> None:
        """Insert idempotency keys (a duplicate violates the primary key: the write fails)."""
        if rows:
            tx.execute(STEP.insert(), list(rows))

    def quarantine(self, tx: Tx, artifact: str, *, reason: str, actor: str, now: float) -> bool:
        """Quarantine ``artifact``; False when it already was."""
        q = QUARANTINE.c
        if tx.execute(select(q.artifact).where(q.artifact == artifact)).first() is not None:
            return False
        tx.execute(
            QUARANTINE.insert(), {"artifact": artifact, "reason": reason, "actor": actor, "at": now}
        )
        return True

    def unquarantine(self, tx: Tx, artifact: str) -> bool:
        """Lift ``artifact``'s quarantine; False when it was not quarantined."""
        q = QUARANTINE.c
        done = tx.execute(QUARANTINE.delete().where(q.artifact == artifact))
        return bool(done.rowcount)

    # -- reading ---------------------------------------------------------------------------
    def quarantined(self, tx: Tx) -> dict[str, dict[str, Any]]:
        return {
            r.artifact: {"reason": r.reason, "actor": r.actor, "at": r.at}
            for r in tx.execute(select(QUARANTINE))
        }

    def active_ids(self, tx: Tx) -> list[str]:
        c = CAMPAIGN.c
        rows = tx.execute(select(c.id).where(c.state.in_(_ACTIVE)).order_by(c.created_at, c.id))
        return [r.id for r in rows]

    def rolling_back_ids(self, tx: Tx) -> list[str]:
        """Ended campaigns with devices still being rolled back (``rollback`` of an ended
        campaign): the engine loads them again after a restart."""
        c, d = CAMPAIGN.c, DEVICE.c
        rows = tx.execute(
            select(c.id)
            .where(
                c.state.not_in(_ACTIVE),
                select(d.endpoint)
                .where(d.campaign == c.id, d.state == DeviceState.REVERTING.value)
                .exists(),
            )
            .order_by(c.created_at, c.id)
        )
        return [r.id for r in rows]

    def load(self, tx: Tx, campaign: str) -> CampaignRun | None:
        """The whole campaign, rebuilt from its rows (nothing dirty)."""
        row = tx.execute(select(CAMPAIGN).where(CAMPAIGN.c.id == campaign)).first()
        if row is None:
            return None
        m = row._mapping
        run = CampaignRun(
            id=m["id"],
            spec=loads_spec(m["spec"]),
            state=CampaignState(m["state"]),
            created_by=m["created_by"],
            created_at=float(m["created_at"]),
            reason=m["reason"] or "",
            wave=int(m["wave"]),
            seed=m["seed"] or "",
            artifacts=tuple(json.loads(m["artifacts"] or "[]")),
            reverted_cohorts={tuple(c) for c in json.loads(m["reverted_cohorts"] or "[]")},
            conflicts=json.loads(m["conflicts"] or "[]"),
            updated_at=float(m["updated_at"]),
            finished_at=m["finished_at"],
        )
        waves = tx.execute(select(WAVE).where(WAVE.c.campaign == campaign).order_by(WAVE.c.index))
        run.waves = [wave_from_row(dict(w._mapping)) for w in waves]
        if run.spec.phase_split:
            phases = {
                int(p.wave): dict(p._mapping)
                for p in tx.execute(select(PHASE).where(PHASE.c.campaign == campaign))
            }
            for w in run.waves:
                found = phases.get(w.index)
                if found is not None:
                    adopt_phase(w, found)
                else:
                    w.phase = "download"
        devices = tx.execute(
            select(DEVICE).where(DEVICE.c.campaign == campaign).order_by(DEVICE.c.endpoint)
        )
        for d in devices:
            run.add(device_from_row(dict(d._mapping)))
        for t in tx.execute(select(TELEMETRY).where(TELEMETRY.c.campaign == campaign)):
            adopt_telemetry(run, dict(t._mapping))
        run.dirty_devices.clear()
        return run

    def summaries(
        self, tx: Tx, *, states: Iterable[str] | None = None, tenants: frozenset[str] | None = None
    ) -> list[dict[str, Any]]:
        c = CAMPAIGN.c
        query = select(
            c.id, c.name, c.tenant, c.state, c.reason, c.wave, c.created_by, c.created_at,
            c.updated_at, c.finished_at, c.artifacts,
        ).order_by(c.created_at.desc(), c.id)  # fmt: skip
        if states is not None:
            query = query.where(c.state.in_(list(states)))
        if tenants is not None:
            query = query.where(c.tenant.in_(sorted(tenants)))
        return [
            {**dict(r._mapping), "artifacts": json.loads(r.artifacts or "[]")}
            for r in tx.execute(query)
        ]

    def step_count(self, tx: Tx, campaign: str, endpoint: str | None = None) -> int:
        from sqlalchemy import func

        query = select(func.count()).select_from(STEP).where(STEP.c.campaign == campaign)
        if endpoint is not None:
            query = query.where(STEP.c.endpoint == endpoint)
        return int(tx.execute(query).scalar_one())


__all__ = ["CampaignRepository", "campaign_row"]

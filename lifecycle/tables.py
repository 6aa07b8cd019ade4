"""The lifecycle layer's tables: in the store's database, on their own metadata.

Like the bootstrap tables they live beside the store's (same engine, same transactions, so a
change and its audit record commit together) but :func:`lifecycle.schema.create_schema`
creates them; the store does not know this layer exists. Names are prefixed ``lc_``.

Conventions follow the store's: ``double precision`` epoch seconds, JSON as text. Each
component of the layer (inventory, groups, state, operators) declares its tables in its own
module on :class:`LifecycleModel`, so :data:`METADATA` holds them all once those modules are
imported -- :mod:`lifecycle.schema` imports them.
"""

from __future__ import annotations

from typing import cast

from sqlalchemy import Double, Index, Table, Text
from sqlalchemy.orm import registry
from sqlmodel import Field, SQLModel

SCHEMA_COMPONENT = "lifecycle"


class LifecycleModel(SQLModel, registry=registry()):
    """Base of the lifecycle tables; owns their private metadata."""


def table_of(model: type[LifecycleModel]) -> Table:
    """The Core table behind a table model (repositories query through Core)."""
    return cast(Table, model.__table__)  # type: ignore[attr-defined]


_VERSION_KEY = Text().with_variant(Text(collation="C"), "postgresql")
"""Version keys compare byte-wise: PostgreSQL's default collation would reorder them."""


class DeviceRow(LifecycleModel, table=True):
    """One device of the inventory: the factory identity joined with what the device reports.

    ``endpoint`` is the key every layer shares (bootstrap identity, registration, telemetry).
    Selection attributes are plain indexed columns so a selector compiles to one indexed
    query; ``firmware_key`` is the firmware version as a sortable key
    (:func:`lifecycle.versions.version_key`) so ``firmware<2.3.0`` is semantic in SQL too.
    """

    __tablename__ = "lc_device"
    __table_args__ = (
        Index("ix_lc_device_scope", "tenant", "region", "sku"),
        Index("ix_lc_device_stage", "stage"),
        Index("ix_lc_device_carrier", "carrier"),
        Index("ix_lc_device_firmware", "firmware_key"),
        Index("ix_lc_device_policy_group", "policy_group"),
    )

    endpoint: str = Field(primary_key=True)
    tenant: str | None = None
    region: str | None = None
    country: str | None = None
    carrier: str | None = None
    plmn: str | None = None
    sku: str | None = None
    policy_group: str | None = None
    serial: str | None = None
    imei: str | None = None
    eid: str | None = None
    iccids: str = Field(default="[]", sa_type=Text)  # JSON list
    stage: str = "manufactured"
    stage_history: str = Field(default="[]", sa_type=Text)  # JSON [[stage, at], ...]
    model: str | None = None
    manufacturer: str | None = None
    firmware: str | None = None
    firmware_key: str | None = Field(default=None, sa_type=_VERSION_KEY)
    radio: str | None = None
    serving_plmn: str | None = None
    registered: bool = False
    last_seen: float | None = Field(default=None, sa_type=Double)
    created_at: float = Field(sa_type=Double)
    updated_at: float = Field(sa_type=Double)


class DeviceLabelRow(LifecycleModel, table=True):
    """One label of one device (``value`` is ``""`` for a flag label). The only place labels
    live, so ``label:pilot`` is an index lookup and a bulk relabel is set-based."""

    __tablename__ = "lc_device_label"
    __table_args__ = (Index("ix_lc_device_label_name", "name", "value"),)

    endpoint: str = Field(primary_key=True)
    name: str = Field(primary_key=True)
    value: str = ""


METADATA = LifecycleModel.metadata
DEVICE = table_of(DeviceRow)
DEVICE_LABEL = table_of(DeviceLabelRow)

__all__ = [
    "DEVICE",
    "DEVICE_LABEL",
    "METADATA",
    "SCHEMA_COMPONENT",
    "DeviceLabelRow",
    "DeviceRow",
    "LifecycleModel",
    "table_of",
]

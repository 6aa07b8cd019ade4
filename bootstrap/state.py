"""A device's bootstrap state, as the operator sees it (``fleetloop bootstrap status EP``).

Written by the bootstrap server at every step, so a device stuck half-way is visible with the
step it is stuck at, how often it tried and the last error -- not only "not registered".
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any


class Phase(StrEnum):
    """Where a device is in bootstrapping.

    ``never``: no bootstrap seen. ``in-progress``: a Bootstrap-Request was accepted and the
    sequence runs (``step`` says which request). ``finished``: Bootstrap-Finish (or a
    Bootstrap-Pack) succeeded and the DM credentials are in the DM store. ``failed``: a step
    failed after its retries (``detail`` says why); the device will ask again.
    ``refused``: the request was refused (unknown, revoked, wrong credential or channel).
    ``rebootstrap-requested``: the DM server executed /1/x/9; the device should come back.
    """

    NEVER = "never"
    IN_PROGRESS = "in-progress"
    FINISHED = "finished"
    FAILED = "failed"
    REFUSED = "refused"
    REBOOTSTRAP_REQUESTED = "rebootstrap-requested"


@dataclass(frozen=True, slots=True)
class BootstrapState:
    """One row of ``bs_state``."""

    endpoint: str
    phase: Phase = Phase.NEVER
    step: str = ""
    detail: str = ""
    attempts: int = 0
    completed: int = 0
    policy_name: str | None = None
    policy_version: int | None = None
    lwm2m_version: str | None = None
    content_format: int | None = None
    transport: str | None = None
    peer: str | None = None
    dm_uris: tuple[str, ...] = ()
    server_iids: tuple[int, ...] = ()
    device_report: str = ""
    started_at: float | None = None
    updated_at: float = 0.0
    finished_at: float | None = None
    rebootstrap_requested_at: float | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "endpoint": self.endpoint,
            "phase": str(self.phase),
            "step": self.step,
            "detail": self.detail,
            "attempts": self.attempts,
            "completed": self.completed,
            "policy": None
            if self.policy_name is None
            else {"name": self.policy_name, "version": self.policy_version},
            "lwm2m_version": self.lwm2m_version,
            "content_format": self.content_format,
            "transport": self.transport,
            "peer": self.peer,
            "dm_uris": list(self.dm_uris),
            "server_iids": list(self.server_iids),
            "device_report": self.device_report,
            "started_at": self.started_at,
            "updated_at": self.updated_at,
            "finished_at": self.finished_at,
            "rebootstrap_requested_at": self.rebootstrap_requested_at,
        }


__all__ = ["BootstrapState", "Phase"]

"""What device behaviours need from the world around the device, as one injected interface.

A real device downloads firmware over its modem, attaches to an APN through the network, counts
its traffic in the modem, and fails in ways nobody schedules. The sans-IO behaviours of objects
5, 7, 10/11 and 32001 (:mod:`~simulators.device.firmware`, :mod:`~simulators.device.cellular`,
:mod:`~simulators.device.statistics`, :mod:`~simulators.device.models`) ask those questions
through :class:`DeviceServices`; the fleet engine (:mod:`simulators.fleet.engine`) answers them
with its shared CoAP endpoint, its link emulation, its byte counters and its seeded RNG.
:class:`NullServices` answers for a device without a fleet: nothing to download from, always
attached, no traffic, nothing fails.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from simulators.device.objects import ObjectStore
from simulators.device.template import DeviceActions

FetchDone = Callable[[bytes | None, str | None, float], None]
"""``done(payload, error, now)``: the whole body (``error`` None), or why it failed (a CoAP
code such as ``"4.04"``, or ``"timeout"``, ``"reset"``...) with ``payload`` None."""


class DeviceServices(Protocol):
    """The device's environment (see the module docstring)."""

    def fetch(self, device: DeviceActions, uri: str, now: float, done: FetchDone) -> int | None:
        """Start downloading ``uri`` (block-wise GET); ``done`` runs once with the outcome.

        Returns a Firmware Update Result code (7 invalid URI, 9 unsupported protocol) when the
        download cannot even start, else None.
        """

    def cancel_fetch(self, device: DeviceActions, now: float) -> None:
        """Abandon the device's download in progress, if any (``done`` is not called)."""

    def network_changed(self, device: DeviceActions, now: float) -> None:
        """The active APN may have changed (a server wrote object 1/10 or 11): re-attach."""

    def traffic(self, store: ObjectStore) -> tuple[int, int, int, int]:
        """``(bytes sent, bytes received, largest message, messages)`` since counting
        started (object 7), or zeros when not counting."""

    def traffic_control(self, device: DeviceActions, start: bool, now: float) -> None:
        """Object 7 Start (reset and count) / Stop (freeze the counters)."""

    def chance(self, probability: float) -> bool:
        """True with ``probability`` (the fleet's seeded RNG)."""

    def report(self, device: DeviceActions, outcome: str, now: float) -> None:
        """Count a behaviour outcome (``"firmware_updated"``, ``"config_rejected"``, ...)."""


class NullServices:
    """Services for a device on its own (see the module docstring)."""

    def fetch(self, device: DeviceActions, uri: str, now: float, done: FetchDone) -> int | None:
        return 9  # unsupported protocol: this device has no way to download

    def cancel_fetch(self, device: DeviceActions, now: float) -> None:
        return None

    def network_changed(self, device: DeviceActions, now: float) -> None:
        return None

    def traffic(self, store: ObjectStore) -> tuple[int, int, int, int]:
        return 0, 0, 0, 0

    def traffic_control(self, device: DeviceActions, start: bool, now: float) -> None:
        return None

    def chance(self, probability: float) -> bool:
        return False

    def report(self, device: DeviceActions, outcome: str, now: float) -> None:
        return None


__all__ = ["DeviceServices", "FetchDone", "NullServices"]

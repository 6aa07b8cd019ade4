"""Per-device-model knobs of the simulated client; frozen so one instance serves a fleet."""

from __future__ import annotations

from dataclasses import dataclass

from simulators.device.formats import FLEETLOOP, FormatProfile

SUPPORTED_VERSIONS = ("1.0", "1.1", "1.2")


@dataclass(frozen=True, slots=True)
class ClientConfig:
    """How a simulated client behaves (the server account itself lives in objects 0 and 1).

    ``lwm2m_version`` is tried first; a 4.12 answer to Register falls back to the highest of
    ``fallback_versions`` below it (Anjay re-registers at once, same payload). ``queue_mode``
    registers with queue mode and sleeps ``awake_time`` seconds after the last exchange (TS
    1.1 recommends MAX_TRANSMIT_WAIT, 93 s). ``update_margin`` overrides how long before the
    lifetime expires the Update goes out (default: see ``registration.update_margin``).
    ``reboot_delay`` is the time between answering Execute /3/0/4 and registering again.
    ``retry_jitter`` spreads registration retries by up to that fraction (a fleet that lost
    its server should not come back in lockstep); 0 keeps schedules exact for tests.

    Bootstrap (``simulators.device.bootstrap``): ``bootstrap_pack`` tries the LwM2M 1.2
    Bootstrap-Pack first when registering as 1.2 (as Anjay does); ``bootstrap_pct`` is the
    ``pct`` of the Bootstrap-Request (default: SenML JSON for the wakaama profile, SenML CBOR
    otherwise; 1.0 sends none); ``bootstrap_timeout`` is how long the device waits for the
    server's next request (and Finish); ``bootstrap_retry_delay`` the pause before asking
    again after a failure; ``bootstrap_attempts`` caps the attempts (0: no cap).
    """

    lwm2m_version: str = "1.2"
    fallback_versions: tuple[str, ...] = ("1.1", "1.0")
    formats: FormatProfile = FLEETLOOP
    queue_mode: bool = False
    awake_time: float = 93.0
    update_margin: float | None = None
    max_transmit_wait: float = 93.0
    reboot_delay: float = 0.0
    retry_jitter: float = 0.0
    bootstrap_pack: bool = True
    bootstrap_pct: int | None = None
    bootstrap_timeout: float = 120.0
    bootstrap_retry_delay: float = 60.0
    bootstrap_attempts: int = 0

    def __post_init__(self) -> None:
        for version in (self.lwm2m_version, *self.fallback_versions):
            if version not in SUPPORTED_VERSIONS:
                raise ValueError(f"LwM2M version {version!r} is not one of {SUPPORTED_VERSIONS}")
        if self.awake_time <= 0:
            raise ValueError("awake_time must be positive")
        if self.update_margin is not None and self.update_margin < 0:
            raise ValueError("update_margin must not be negative")
        if not 0.0 <= self.retry_jitter <= 1.0:
            raise ValueError("retry_jitter must be within 0..1")
        if self.bootstrap_timeout <= 0 or self.bootstrap_retry_delay < 0:
            raise ValueError("bootstrap_timeout must be positive, bootstrap_retry_delay >= 0")
        if self.bootstrap_attempts < 0:
            raise ValueError("bootstrap_attempts must not be negative")


__all__ = ["SUPPORTED_VERSIONS", "ClientConfig"]

"""Device profiles: what a group of simulated devices is like -- its bearer (network emulation),
its LwM2M client settings, and how often it misbehaves.

A fleet test or load run picks profiles instead of hand-building devices::

    fleet.spawn(900, profile=PROFILES["nbiot"])
    fleet.spawn(100, profile=PROFILES["nbiot"].with_behaviour(firmware_boot_failure=0.5))

Misbehaviour is probabilistic, drawn from the fleet's seeded RNG, so a run with the same seed
and the same order of events makes the same devices fail:

* **per operation** -- each firmware download fails with ``firmware_download_failure``, each
  installed image fails to boot (and the device reverts to the old one) with
  ``firmware_boot_failure``, each config Apply is rejected with ``config_reject``, each APN
  change loses connectivity with ``apn_loss``;
* **per bundle** -- a config Apply is refused (result 3, invalid) for every version in
  ``config_reject_versions`` and every bundle with a top-level key in ``config_reject_keys``:
  deterministic, so a test can make one bundle bad for one region's devices (spawn that
  region's identities with their own profile) while the others take it;
* **per device** -- a device is *silent* with probability ``silent`` (it registers and keeps
  its registration up to date, but never answers a server's request: a hung application
  task), slow with probability ``slow`` (each datagram it sends waits
  ``slow_delay`` seconds first: a busy MCU or a modem in deep coverage), and reboot-prone with
  probability ``reboot_prone`` (it restarts without warning after an exponentially distributed
  time with mean ``reboot_mean`` seconds, again and again). A device's traits are drawn from a
  hash of the fleet seed and its endpoint name, so they do not depend on start order.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from simulators.device.config import ClientConfig
from simulators.netem import IDEAL, PRESETS, LinkProfile


@dataclass(frozen=True, slots=True)
class Behaviour:
    """Misbehaviour probabilities and the timings of the simulated device logic."""

    firmware_download_failure: float = 0.0
    firmware_boot_failure: float = 0.0
    config_reject: float = 0.0
    apn_loss: float = 0.0
    #: Seconds a device stays offline after an APN change that lost connectivity before it
    #: falls back to the last APN that worked (0: it never does, and is lost).
    apn_fallback: float = 120.0
    slow: float = 0.0
    slow_delay: float = 3.0
    reboot_prone: float = 0.0
    reboot_mean: float = 3600.0
    #: Seconds to flash and boot a downloaded firmware image (Updating -> reboot).
    install_time: float = 2.0
    #: Probability a device never answers a server's request once registered.
    silent: float = 0.0
    #: Config versions every device of the profile refuses to apply (result 3).
    config_reject_versions: frozenset[str] = frozenset()
    #: Bundle keys every device of the profile refuses: a bundle with one is invalid here.
    config_reject_keys: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        for name in (
            "firmware_download_failure",
            "firmware_boot_failure",
            "config_reject",
            "apn_loss",
            "slow",
            "reboot_prone",
            "silent",
        ):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} is a probability (0..1), got {value}")
        for name in ("apn_fallback", "slow_delay", "install_time"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must not be negative")
        if self.reboot_mean <= 0:
            raise ValueError("reboot_mean must be positive")


@dataclass(frozen=True, slots=True)
class DeviceProfile:
    """A kind of device: bearer, client settings, lifetime and misbehaviour.

    ``reachable_apns``: the APNs through which the DM server can be reached (None: all). A
    device whose active APN (object 11, see :mod:`simulators.device.cellular`) is not in it is
    offline until it falls back.
    """

    name: str = "default"
    link: LinkProfile = IDEAL
    behaviour: Behaviour = field(default_factory=Behaviour)
    lifetime: int = 300
    config: ClientConfig = field(default_factory=ClientConfig)
    reachable_apns: frozenset[str] | None = None

    def __post_init__(self) -> None:
        if self.lifetime <= 0:
            raise ValueError("lifetime must be positive")

    def with_behaviour(self, **changes: float | frozenset[str]) -> DeviceProfile:
        """A copy whose behaviour has ``changes`` (probabilities and timings)."""
        behaviour = dataclasses.replace(self.behaviour, **changes)  # type: ignore[arg-type]
        return dataclasses.replace(self, behaviour=behaviour)

    def with_link(self, **changes: object) -> DeviceProfile:
        """A copy whose link profile has ``changes`` (``rtt=``, ``loss=``, ...)."""
        return dataclasses.replace(self, link=self.link.replace(**changes))

    def replace(self, **changes: object) -> DeviceProfile:
        return dataclasses.replace(self, **changes)  # type: ignore[arg-type]


PROFILES: dict[str, DeviceProfile] = {
    "default": DeviceProfile(),
    "lan": DeviceProfile("lan", link=PRESETS["lan"]),
    "ltem": DeviceProfile("ltem", link=PRESETS["ltem"], lifetime=3600),
    "nbiot": DeviceProfile("nbiot", link=PRESETS["nbiot"], lifetime=3600),
    # NB-IoT in PSM: queue mode, asleep 93 s after the last exchange.
    "nbiot-queue": DeviceProfile(
        "nbiot-queue",
        link=PRESETS["nbiot"],
        lifetime=3600,
        config=ClientConfig(queue_mode=True),
    ),
    # A fleet that exercises every failure path a little.
    "flaky": DeviceProfile(
        "flaky",
        link=PRESETS["ltem"],
        behaviour=Behaviour(
            firmware_download_failure=0.05,
            firmware_boot_failure=0.05,
            config_reject=0.05,
            apn_loss=0.1,
            slow=0.05,
            reboot_prone=0.02,
            reboot_mean=1800.0,
        ),
    ),
}
"""Named device profiles (``fleetloop sim run --profile NAME``)."""


def profile(name: str) -> DeviceProfile:
    """The profile called ``name`` (ValueError naming the choices otherwise)."""
    try:
        return PROFILES[name]
    except KeyError:
        raise ValueError(f"unknown profile {name!r}; choose one of {', '.join(PROFILES)}") from None


BEHAVIOUR_FIELDS = tuple(f.name for f in dataclasses.fields(Behaviour) if f.type == "float")
"""The numeric behaviour fields (``sim run --behaviour NAME=NUMBER``)."""
LINK_FIELDS = tuple(f.name for f in dataclasses.fields(LinkProfile) if f.name != "name")

__all__ = [
    "BEHAVIOUR_FIELDS",
    "LINK_FIELDS",
    "PROFILES",
    "Behaviour",
    "DeviceProfile",
    "profile",
]

"""The fleet's device model: the default device (objects 0, 1, 3, 4, 3443, 32001) plus the
behaviours a fleet needs -- a real firmware download (5), traffic counters (7), cellular
connectivity and APN profiles (10, 11, and the APN Link /1/x/10), config bundles that may be
rejected on purpose, and an eSIM placeholder whose EID matches the factory records (3443).

Built once per fleet group, so every device of the group shares it; the behaviours reach the
fleet through the :class:`~simulators.device.services.DeviceServices` they are given.
"""

from __future__ import annotations

import cbor2

from lwm2m.model import Path
from objects.builtin.fleet_config import FleetConfigResource as Cfg
from objects.builtin.fleet_config import FleetConfigResult
from objects.enums import SecurityMode
from simulators.device import behaviours as b
from simulators.device.bootstrap import bootstrap_template
from simulators.device.cellular import DEFAULT_APN, cellular_objects
from simulators.device.defaults import default_template
from simulators.device.esim import esim_object
from simulators.device.execute import Arguments
from simulators.device.firmware import firmware_object
from simulators.device.services import DeviceServices
from simulators.device.statistics import statistics_object
from simulators.device.template import DeviceActions, DeviceTemplate, ObjectTemplate
from simulators.profiles import Behaviour

CONFIG = 32001


def _refusal(bundle: object, version: object, behaviour: Behaviour) -> str | None:
    """Why this device refuses the staged bundle by its profile (None: it does not)."""
    if isinstance(version, str) and version in behaviour.config_reject_versions:
        return f"version {version} is refused here (simulated behaviour: config_reject_versions)"
    if behaviour.config_reject_keys and isinstance(bundle, bytes):
        try:
            content = cbor2.loads(bundle)
        except Exception:  # an undecodable bundle is config_apply's to refuse
            return None
        if isinstance(content, dict):
            bad = sorted(k for k in content if k in behaviour.config_reject_keys)
            if bad:
                return f"key {bad[0]!r} is refused here (simulated behaviour: config_reject_keys)"
    return None


def _config_object(
    base: DeviceTemplate, services: DeviceServices, behaviour: Behaviour
) -> ObjectTemplate:
    """32001 whose Apply is refused with probability ``config_reject``, and always for the
    versions and keys the behaviour lists (result 3; the detail says it was the simulated
    device's choice), and whose outcomes are counted."""
    template = base.objects[CONFIG]
    reject = behaviour.config_reject

    def apply(device: DeviceActions, path: Path, args: Arguments, now: float) -> None:
        iid = path.ids[1]
        result = Path.of(CONFIG, iid, Cfg.APPLY_RESULT)
        refused = None
        if (
            args.get(0) is not None
            and device.store.get(result, now) != FleetConfigResult.APPLYING
            and not args.has(1)
        ):
            refused = _refusal(
                device.store.get(Path.of(CONFIG, iid, Cfg.BUNDLE), now),
                device.store.get(Path.of(CONFIG, iid, Cfg.CONFIG_VERSION), now),
                behaviour,
            )
            if refused is None and services.chance(reject):
                refused = "the device refused the bundle (simulated behaviour: config_reject)"
        if refused is not None:
            device.store.set(Path.of(CONFIG, iid, Cfg.APPLY_RESULT_DETAIL), refused, now)
            device.store.set(result, int(FleetConfigResult.REJECTED_INVALID), now)
            services.report(device, "config_rejected", now)
            return
        b.config_apply(device, path, args, now)
        outcome = device.store.get(result, now)
        if outcome == FleetConfigResult.APPLIED:
            services.report(device, "config_applied", now)
        elif outcome != FleetConfigResult.VALIDATED:
            services.report(device, "config_rejected", now)

    handlers = dict(template.handlers)
    handlers[Cfg.APPLY] = apply
    return ObjectTemplate(
        template.definition,
        template.instances,
        new_instance=template.new_instance,
        deletable=template.deletable,
        handlers=handlers,
        version=template.version,
        on_write=template.on_write,
        write_guard=template.write_guard,
    )


def fleet_template(
    services: DeviceServices,
    *,
    server_uri: str = "coap://127.0.0.1:5683",
    lifetime: int = 300,
    security_mode: SecurityMode = SecurityMode.NO_SEC,
    bootstrap_uri: str | None = None,
    bootstrap_mode: SecurityMode = SecurityMode.NO_SEC,
    behaviour: Behaviour | None = None,
    apn: str | None = DEFAULT_APN,
) -> DeviceTemplate:
    """The fleet device model (see the module docstring).

    With ``bootstrap_uri`` the device leaves the factory with only its bootstrap account
    (:func:`~simulators.device.bootstrap.bootstrap_template`) and no APN profile: the
    bootstrap server provides both.
    """
    behaviour = behaviour or Behaviour()
    if bootstrap_uri is not None:
        base = bootstrap_template(
            bootstrap_uri=bootstrap_uri, security_mode=bootstrap_mode, lifetime=lifetime
        )
        apn = None
    else:
        base = default_template(
            server_uri=server_uri, lifetime=lifetime, security_mode=security_mode
        )
    return base.replace(
        firmware_object(
            services,
            download_failure=behaviour.firmware_download_failure,
            boot_failure=behaviour.firmware_boot_failure,
            install_time=behaviour.install_time,
        ),
        statistics_object(services),
        *cellular_objects(base, services, apn=apn),
        _config_object(base, services, behaviour),
        esim_object(),
    )


__all__ = ["fleet_template"]

"""The simulated IPA behind LwM2M object 3443 (eSIM IoT) on a simulated device: ESipa with no
HTTPS or CoAP of its own, for devices managed only over LwM2M.

`Object3443Ipa` glues a sans-IO `SimIpa` to the device's object store: the IPA's message goes
in /3443/0/3 (the server observes it), the eIM's answer arrives as a Write of /3443/0/2, and the
eIM's Execute of /3443/0/4 clears /3443/0/3 -- then the IPA puts its next message there, unless
it has nothing but a poll to send right after an empty one (it then waits for `poll`). A
TransferEimPackageRequest the eIM writes to /3443/0/2 unprompted (a push) is run at once and
answered in /3443/0/3 (eimPackageReceived); the result follows as usual.
`esim_template` is the default device model with this object 3443 in place of the
placeholder.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from lwm2m.model import Path
from objects import builtin_definition
from simulators.device.defaults import default_template
from simulators.device.errors import ServiceUnavailable
from simulators.device.execute import Arguments
from simulators.device.template import (
    DeviceActions,
    DeviceTemplate,
    InstanceTemplate,
    ObjectTemplate,
)
from simulators.esim.ipa import SimIpa

ESIM = 3443
EIM_MESSAGE = Path.of(ESIM, 0, 2)
IPA_MESSAGE = Path.of(ESIM, 0, 3)
POLL_TAG = b"\xbf\x4f"
TRANSFER_TAG = b"\xbf\x4e"


@dataclass
class Object3443Ipa:
    ipa: SimIpa
    last_sent: bytes | None = None
    answered: bool = False
    busy_writes: int = 0
    """Writes of /3443/0/2 to refuse with 5.03 (the IPA busy), for tests of the eIM's retry."""

    def template(self, server_uri: str) -> DeviceTemplate:
        return default_template(server_uri=server_uri).replace(self.object_template())

    def object_template(self) -> ObjectTemplate:
        """Object 3443 with this IPA behind it (to put into any device model)."""
        instance = InstanceTemplate({0: 0, 1: self.ipa.euicc.eid, 2: b"", 3: b"", 4: None})
        return ObjectTemplate(
            builtin_definition(ESIM),
            {0: instance},
            handlers={4: self._cleared},
            on_write={2: self._eim_message},
            write_guard=self._guard,
        )

    def poll(self, set_value: Callable[[Path, bytes], None], now: float) -> bool:
        """Put the IPA's next message in /3443/0/3 (a poll if nothing else) through
        ``set_value`` (``SimulatedDevice.set``); False while the previous one is not cleared
        yet or the IPA has no connectivity."""
        if self.last_sent is not None:
            return False
        return self._put(set_value, now)

    def _put(self, set_value: Callable[[Path, bytes], None], now: float) -> bool:
        message = self.ipa.outgoing(now)
        if message is None:
            return False
        self.last_sent, self.answered = message, False
        set_value(IPA_MESSAGE, message)
        return True

    def _guard(self, device: DeviceActions, path: Path, now: float) -> None:
        if self.busy_writes > 0 and path.ids[2:3] == (2,):
            self.busy_writes -= 1
            raise ServiceUnavailable("the IPA is busy")

    def _eim_message(self, device: DeviceActions, path: Path, now: float) -> None:
        answer = device.store.get(EIM_MESSAGE, now)
        if isinstance(answer, bytes) and answer[:2] == TRANSFER_TAG:  # the eIM pushed
            response = self.ipa.pushed(answer, now)
            if self.last_sent is None:  # else its result goes out after the current exchange
                self.last_sent, self.answered = response, False
                device.store.set(IPA_MESSAGE, response, now)
            return
        if self.last_sent is not None and isinstance(answer, bytes) and answer:
            self.ipa.incoming(self.last_sent, answer, now)
            self.answered = True

    def _cleared(self, device: DeviceActions, path: Path, args: Arguments, now: float) -> None:
        sent = self.last_sent
        if sent is not None and not self.answered:
            self.ipa.incoming(sent, None, now)  # the eIM had nothing to say (HTTPS 204)
        device.store.set(IPA_MESSAGE, b"", now)
        self.last_sent = None
        idle = self.ipa.last_get_answer == "eimPackageError:1"
        quiet = not self.ipa.pending and not self.ipa.euicc.notifications and not self.ipa.download
        if sent is not None and sent[:2] == POLL_TAG and idle and quiet:
            return  # nothing to do until the next poll
        self._put(lambda path, value: device.store.set(path, value, now), now)

"""The sans-IO CoAP endpoint (skeleton: API fixed, behaviour landing next)."""

from __future__ import annotations

from collections import deque
from collections.abc import Hashable

from aiocoap import Message

from lwm2m.coap.events import Event
from lwm2m.coap.exchange import IncomingRequest, Observation, RequestHandle
from lwm2m.coap.params import EndpointConfig
from lwm2m.coap.rng import RandomSource


class CoapEndpoint:
    """One local CoAP endpoint (one UDP socket / DTLS listener), serving many peers."""

    def __init__(self, *, rng: RandomSource, config: EndpointConfig | None = None) -> None:
        self.config = config or EndpointConfig()
        self._rng = rng
        self._events: deque[Event] = deque()
        self._out: list[tuple[bytes, Hashable]] = []

    def receive_datagram(self, data: bytes, peer: Hashable, now: float) -> None:
        raise NotImplementedError

    def datagrams_to_send(self, now: float) -> list[tuple[bytes, Hashable]]:
        out, self._out = self._out, []
        return out

    def get_timer(self) -> float | None:
        raise NotImplementedError

    def handle_timer(self, now: float) -> None:
        raise NotImplementedError

    def next_event(self) -> Event | None:
        return self._events.popleft() if self._events else None

    def send_request(
        self, peer: Hashable, message: Message, now: float, *, confirmable: bool = True
    ) -> RequestHandle:
        raise NotImplementedError

    def respond(self, request: IncomingRequest, message: Message, now: float) -> Observation | None:
        raise NotImplementedError

    def send_notification(
        self,
        observation: Observation,
        message: Message,
        now: float,
        *,
        confirmable: bool | None = None,
    ) -> None:
        raise NotImplementedError

    def cancel_request(self, request: RequestHandle, now: float) -> None:
        raise NotImplementedError

    def cancel_observation(
        self, request: RequestHandle, now: float, *, deregister: bool = True
    ) -> RequestHandle | None:
        raise NotImplementedError

    def remove_observer(self, observation: Observation, now: float) -> None:
        raise NotImplementedError

    def forget_peer(self, peer: Hashable, now: float) -> None:
        raise NotImplementedError

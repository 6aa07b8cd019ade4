"""The asyncio runtime of the LwM2M server (skeleton; the implementation follows)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from lwm2m.codec.link import AttributeUpdate
from lwm2m.model import Node, ObjectInstance, ObjectModel, Path, Resource
from lwm2m.server.config import ServerConfig
from lwm2m.server.results import (
    CompositeReadResult,
    CreateResult,
    DiscoverResult,
    ObservationInfo,
    ObserveResult,
    OperationResult,
    ReadResult,
)
from lwm2m.server.subscription import EventSubscription
from lwm2m.store import QueuedRequest, Registration, ReportedValue, Store
from lwm2m.transport import Address


class LwM2MServer:
    """The device-management server: see the :mod:`lwm2m.server` docstring for the API."""

    @classmethod
    async def start(
        cls, config: ServerConfig, store: Store, model: ObjectModel | None = None
    ) -> LwM2MServer:
        raise NotImplementedError

    async def stop(self) -> None:
        raise NotImplementedError

    @property
    def coap_address(self) -> Address | None:
        raise NotImplementedError

    @property
    def coaps_address(self) -> Address | None:
        raise NotImplementedError

    def registrations(self) -> list[Registration]:
        raise NotImplementedError

    def registration(self, endpoint: str) -> Registration | None:
        raise NotImplementedError

    async def read(
        self,
        endpoint: str,
        path: Path | str,
        *,
        format: int | None = None,
        timeout: float | None = None,
        queue_deadline: float | None = None,
    ) -> ReadResult:
        raise NotImplementedError

    async def write(
        self,
        endpoint: str,
        path: Path | str,
        content: Node,
        *,
        replace: bool = True,
        format: int | None = None,
        timeout: float | None = None,
        queue_deadline: float | None = None,
    ) -> OperationResult:
        raise NotImplementedError

    async def write_value(
        self,
        endpoint: str,
        path: Path | str,
        text: str,
        *,
        format: int | None = None,
        timeout: float | None = None,
        queue_deadline: float | None = None,
    ) -> OperationResult:
        raise NotImplementedError

    async def write_attributes(
        self,
        endpoint: str,
        path: Path | str,
        attributes: AttributeUpdate,
        *,
        timeout: float | None = None,
        queue_deadline: float | None = None,
    ) -> OperationResult:
        raise NotImplementedError

    async def discover(
        self,
        endpoint: str,
        path: Path | str,
        *,
        timeout: float | None = None,
        queue_deadline: float | None = None,
    ) -> DiscoverResult:
        raise NotImplementedError

    async def execute(
        self,
        endpoint: str,
        path: Path | str,
        arguments: str | None = None,
        *,
        timeout: float | None = None,
        queue_deadline: float | None = None,
    ) -> OperationResult:
        raise NotImplementedError

    async def create(
        self,
        endpoint: str,
        object_path: Path | str,
        instance: ObjectInstance | Sequence[Resource],
        *,
        format: int | None = None,
        timeout: float | None = None,
        queue_deadline: float | None = None,
    ) -> CreateResult:
        raise NotImplementedError

    async def delete(
        self,
        endpoint: str,
        path: Path | str,
        *,
        timeout: float | None = None,
        queue_deadline: float | None = None,
    ) -> OperationResult:
        raise NotImplementedError

    async def read_composite(
        self,
        endpoint: str,
        paths: Sequence[Path | str],
        *,
        format: int | None = None,
        timeout: float | None = None,
        queue_deadline: float | None = None,
    ) -> CompositeReadResult:
        raise NotImplementedError

    async def write_composite(
        self,
        endpoint: str,
        content: Mapping[Path, Node],
        *,
        format: int | None = None,
        timeout: float | None = None,
        queue_deadline: float | None = None,
    ) -> OperationResult:
        raise NotImplementedError

    async def observe(
        self,
        endpoint: str,
        path: Path | str,
        *,
        format: int | None = None,
        timeout: float | None = None,
        queue_deadline: float | None = None,
    ) -> ObserveResult:
        raise NotImplementedError

    async def observe_composite(
        self,
        endpoint: str,
        paths: Sequence[Path | str],
        *,
        format: int | None = None,
        timeout: float | None = None,
        queue_deadline: float | None = None,
    ) -> ObserveResult:
        raise NotImplementedError

    async def cancel_observation(
        self, observation_id: str, *, active: bool = True, timeout: float | None = None
    ) -> OperationResult:
        raise NotImplementedError

    def observations(self, endpoint: str | None = None) -> list[ObservationInfo]:
        raise NotImplementedError

    async def queued_requests(self, endpoint: str) -> list[QueuedRequest]:
        raise NotImplementedError

    async def cancel_queued(self, request_id: int) -> bool:
        raise NotImplementedError

    def subscribe(self) -> EventSubscription:
        raise NotImplementedError

    async def last_values(self, endpoint: str) -> dict[Path, ReportedValue]:
        raise NotImplementedError

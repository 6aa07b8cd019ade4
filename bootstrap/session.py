"""One device's bootstrap sequence as a sans-IO state machine.

The sequence (TS Core 1.1 §6.1, §5.2.7):

1. **Bootstrap-Discover** ``GET /`` (Accept 40): the version, the objects, the bootstrap
   account's Security instance. Refused or unparsable: carry on without it.
2. **Bootstrap-Read** ``GET /1`` (1.1+): the Server accounts the device had, kept in the
   state's device report for the operator. Refused (wakaama 4.00, Anjay's empty 2.05): fine.
3. The plan is built now (it depends on what Discover said) -- by the injected ``planner``,
   which generates the credentials.
4. **Bootstrap-Delete** of each target (2.02; 4.04 means "nothing there", also fine).
5. **Bootstrap-Write** ``PUT /O/I`` of each instance. A write refused with 4.00/4.06/4.15 in
   a format other than TLV is retried once in TLV and the rest of the sequence stays in TLV
   (a client that asked for a format it cannot take). An optional write (APN, config) refused
   with 4.04 is skipped and noted.
6. **Commit**: not a CoAP request -- the driver makes the new DM credentials valid in the DM
   store *before* Finish, because a device answering Finish registers at once, and its
   handshake must find the new key.
7. **Bootstrap-Finish** ``POST /bs``: 2.04 finishes; 4.06 means the device found the
   configuration inconsistent.

Every request that times out or gets a 5.xx is retried ``retries`` times before the session
fails. The driver (:mod:`bootstrap.server`) sends what :meth:`BootstrapSession.next_action`
returns and reports back with :meth:`on_response`, :meth:`on_failure`, :meth:`on_committed`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum

from aiocoap import Message
from aiocoap.numbers.codes import Code

from bootstrap.errors import BootstrapError, NotProvisionable
from bootstrap.plan import ProvisioningPlan, Write
from bootstrap.protocol import DeviceInfo, parse_discover, version_key
from lwm2m.codec import CodecError, ContentFormat, canonical, decode
from lwm2m.model import Path
from objects import BUILTIN_MODEL

Planner = Callable[[DeviceInfo | None, str], ProvisioningPlan]
"""``(discover result or None, LwM2M version) -> plan``; may raise NotProvisionable."""

_FORMAT_FALLBACK_CODES = frozenset(
    {int(Code.BAD_REQUEST), int(Code.NOT_ACCEPTABLE), int(Code.UNSUPPORTED_CONTENT_FORMAT)}
)


class StepKind(StrEnum):
    DISCOVER = "discover"
    READ = "read"
    DELETE = "delete"
    WRITE = "write"
    COMMIT = "commit"
    FINISH = "finish"


class SessionState(StrEnum):
    RUNNING = "running"
    FINISHED = "finished"
    FAILED = "failed"


def code_text(code: int) -> str:
    return f"{code >> 5}.{code & 31:02d}"


@dataclass(frozen=True, slots=True)
class Request:
    """A request to send to the device. Build a fresh :meth:`message` per transmission."""

    kind: StepKind
    path: Path
    method: Code
    accept: int | None = None
    content_format: int | None = None
    payload: bytes = field(default=b"", repr=False)

    def message(self) -> Message:
        uri_path = (
            tuple(str(i) for i in self.path.ids) if self.kind is not StepKind.FINISH else ("bs",)
        )
        message = Message(code=self.method, uri_path=uri_path, payload=self.payload)
        if self.accept is not None:
            message.opt.accept = self.accept
        if self.content_format is not None:
            message.opt.content_format = self.content_format
        return message

    def describe(self) -> str:
        target = "/bs" if self.kind is StepKind.FINISH else str(self.path)
        return f"{self.kind} {target}"


@dataclass(frozen=True, slots=True)
class Commit:
    """Make ``plan``'s credentials valid in the DM store now, then report back."""

    plan: ProvisioningPlan


Action = Request | Commit


@dataclass(frozen=True, slots=True)
class StepRecord:
    """One line of the session's log: what was asked, the answer, and a note."""

    step: str
    code: str | None
    note: str = ""

    def __str__(self) -> str:
        if self.code is None and self.step in ("commit", "plan"):
            return f"{self.step}: {self.note}"
        text = f"{self.step}: {self.code or 'no answer'}"
        return f"{text} ({self.note})" if self.note else text


class BootstrapSession:
    """The sequence for one device (see the module docstring)."""

    def __init__(
        self,
        endpoint: str,
        *,
        preferred_format: int | None,
        content_format: Callable[[str], int],
        planner: Planner,
        retries: int = 2,
    ) -> None:
        self.endpoint = endpoint
        self.preferred_format = preferred_format
        self._choose_format = content_format
        self._planner = planner
        self.retries = retries
        self.state = SessionState.RUNNING
        self.error = ""
        self.info: DeviceInfo | None = None
        self.plan: ProvisioningPlan | None = None
        self.lwm2m_version = "1.1" if preferred_format is not None else "1.0"
        self.content_format = content_format(self.lwm2m_version)
        self.log: list[StepRecord] = []
        self.device_report: list[str] = []
        self.committed = False
        self._queue: list[Action] = [Request(StepKind.DISCOVER, Path(()), Code.GET, accept=40)]
        self._current: Action | None = None
        self._attempts = 0
        self._fell_back = False

    # -- driving ----------------------------------------------------------------------------------
    @property
    def done(self) -> bool:
        return self.state is not SessionState.RUNNING

    @property
    def step(self) -> str:
        current = self._current
        if current is None:
            return "" if self.done else "starting"
        return "commit" if isinstance(current, Commit) else current.describe()

    def next_action(self) -> Action | None:
        """What to do now (None: the session is over). Call once per answer."""
        if self.done:
            return None
        if self._current is None:
            if not self._queue:
                self._fail("the sequence ended without Bootstrap-Finish")
                return None
            self._current = self._queue.pop(0)
            self._attempts = 0
        self._attempts += 1
        current = self._current
        if isinstance(current, Request) and current.kind is StepKind.WRITE:
            current = self._current = self._encode_again(current)
        return current

    def on_response(self, code: int, content_format: int | None, payload: bytes) -> None:
        """The device answered the current request."""
        current = self._current
        if not isinstance(current, Request) or self.done:
            return
        cls = code >> 5
        if cls == 5:
            self._retry_or_fail(current, code_text(code), "server error at the device")
            return
        handler = {
            StepKind.DISCOVER: self._after_discover,
            StepKind.READ: self._after_read,
            StepKind.DELETE: self._after_delete,
            StepKind.WRITE: self._after_write,
            StepKind.FINISH: self._after_finish,
        }[current.kind]
        handler(current, code, content_format, bytes(payload))

    def on_failure(self, reason: str) -> None:
        """No answer to the current request (timeout, reset, session gone)."""
        current = self._current
        if not isinstance(current, Request) or self.done:
            return
        self._retry_or_fail(current, None, reason)

    def on_committed(self) -> None:
        if isinstance(self._current, Commit):
            self.committed = True
            self.log.append(StepRecord("commit", None, "DM credentials valid in the DM store"))
            self._advance()

    def on_commit_failed(self, reason: str) -> None:
        if isinstance(self._current, Commit):
            self.log.append(StepRecord("commit", None, reason))
            self._fail(f"could not store the DM credentials: {reason}")

    # -- steps ------------------------------------------------------------------------------------
    def _advance(self) -> None:
        self._current = None

    def _fail(self, reason: str) -> None:
        self.state = SessionState.FAILED
        self.error = reason

    def _retry_or_fail(self, request: Request, code: str | None, reason: str) -> None:
        self.log.append(StepRecord(request.describe(), code, reason))
        if self._attempts > self.retries:
            shown = code or reason
            self._fail(f"{request.describe()} failed after {self._attempts} attempts: {shown}")
        # else: next_action() hands out the same request again

    def _after_discover(self, request: Request, code: int, cf: int | None, payload: bytes) -> None:
        if code == Code.CONTENT:
            try:
                self.info = parse_discover(payload)
                self.device_report.append(f"discover: {self.info.raw}")
                note = f"lwm2m={self.info.lwm2m_version or '?'}"
            except BootstrapError as exc:
                note = f"unparsable, continuing without it ({exc})"
        else:
            note = "refused; continuing without it"
        self.log.append(StepRecord(request.describe(), code_text(code), note))
        if self.info is not None and self.info.lwm2m_version:
            self.lwm2m_version = self.info.lwm2m_version
        self.content_format = self._choose_format(self.lwm2m_version)
        if version_key(self.lwm2m_version) >= (1, 1):
            self._queue.append(
                Request(StepKind.READ, Path.of(1), Code.GET, accept=self._read_format())
            )
            self._advance()
        else:
            self._advance()
            self._make_plan()

    def _read_format(self) -> int:
        cf = self.content_format
        return cf if cf != ContentFormat.LWM2M_JSON else ContentFormat.TLV

    def _after_read(self, request: Request, code: int, cf: int | None, payload: bytes) -> None:
        note = "refused"
        if code == Code.CONTENT:
            if not payload:
                note = "no Server instance"
                self.device_report.append("read /1: (empty)")
            else:
                try:
                    node = decode(
                        canonical(cf if cf is not None else ContentFormat.TLV),
                        payload,
                        Path.of(1),
                        BUILTIN_MODEL,
                    )
                    self.device_report.append(f"read /1: {node}")
                    note = "server accounts recorded"
                except CodecError as exc:
                    self.device_report.append(f"read /1: {payload.hex()}")
                    note = f"undecodable ({exc})"
        self.log.append(StepRecord(request.describe(), code_text(code), note))
        self._advance()
        self._make_plan()

    def _make_plan(self) -> None:
        try:
            plan = self._planner(self.info, self.lwm2m_version)
        except NotProvisionable as exc:
            self.log.append(StepRecord("plan", None, str(exc)))
            self._fail(str(exc))
            return
        self.plan = plan
        for note in plan.notes:
            self.log.append(StepRecord("plan", None, note))
        for target in plan.deletes:
            self._queue.append(Request(StepKind.DELETE, target, Code.DELETE))
        for write in plan.writes:
            self._queue.append(self._write_request(write))
        self._queue.append(Commit(plan))
        self._queue.append(Request(StepKind.FINISH, Path(()), Code.POST))

    def _write_request(self, write: Write) -> Request:
        return Request(
            StepKind.WRITE,
            write.path,
            Code.PUT,
            content_format=self.content_format,
            payload=write.payload(self.content_format),
        )

    def _encode_again(self, request: Request) -> Request:
        """A write queued before a format fallback is re-encoded in the current format."""
        if request.content_format == self.content_format:
            return request
        write = self._write_of(request.path)
        return self._write_request(write)

    def _write_of(self, path: Path) -> Write:
        assert self.plan is not None
        return next(w for w in self.plan.writes if w.path == path)

    def _after_delete(self, request: Request, code: int, cf: int | None, payload: bytes) -> None:
        if code in (Code.DELETED, Code.NOT_FOUND):
            note = "nothing there" if code == Code.NOT_FOUND else ""
        else:
            note = "refused; the writes that follow replace what is there"
        self.log.append(StepRecord(request.describe(), code_text(code), note))
        self._advance()

    def _after_write(self, request: Request, code: int, cf: int | None, payload: bytes) -> None:
        if code == Code.CHANGED:
            self.log.append(StepRecord(request.describe(), code_text(code)))
            self._advance()
            return
        write = self._write_of(request.path)
        if (
            code in _FORMAT_FALLBACK_CODES
            and self.content_format != ContentFormat.TLV
            and not self._fell_back
        ):
            self._fell_back = True
            old = self.content_format
            self.content_format = ContentFormat.TLV
            self.log.append(
                StepRecord(
                    request.describe(), code_text(code), f"format {old} refused; retrying in TLV"
                )
            )
            self._current = self._write_request(write)
            self._attempts = 0
            return
        if code == Code.NOT_FOUND and write.optional:
            self.log.append(
                StepRecord(request.describe(), code_text(code), "object absent; skipped")
            )
            self._advance()
            return
        self.log.append(StepRecord(request.describe(), code_text(code), "refused"))
        self._fail(f"{request.describe()} refused with {code_text(code)}")

    def _after_finish(self, request: Request, code: int, cf: int | None, payload: bytes) -> None:
        self.log.append(StepRecord(request.describe(), code_text(code)))
        if code == Code.CHANGED:
            self.state = SessionState.FINISHED
            self._advance()
        elif code == Code.NOT_ACCEPTABLE:
            self._fail(
                "Bootstrap-Finish refused (4.06): the device found the configuration inconsistent"
            )
        else:
            self._fail(f"Bootstrap-Finish refused with {code_text(code)}")


__all__ = [
    "Action",
    "BootstrapSession",
    "Commit",
    "Planner",
    "Request",
    "SessionState",
    "StepKind",
    "StepRecord",
    "code_text",
]

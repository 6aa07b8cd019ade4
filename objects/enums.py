"""Typed codes of the resources the server acts on.

Devices report these as bare integers or letters; the server's decisions (is the firmware
ready to install? did it fail, and may a retry help? can this device be reached in queue mode?)
are easier to read and harder to get wrong against named members. Each enum says which
resource it decodes. Integers the specification reserves for the future are not members: use
``Enum(value)`` inside ``try`` or the ``parse``/``describe`` helpers, which tolerate them.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum, IntFlag, StrEnum

from objects.builtin.fleet_config import FleetConfigResult
from objects.errors import InvalidBinding

# -- Firmware Update (object 5) -------------------------------------------------------------


class FirmwareUpdateState(IntEnum):
    """/5/0/3 State."""

    IDLE = 0
    """Nothing downloaded (or the last update finished or was cancelled)."""
    DOWNLOADING = 1
    DOWNLOADED = 2
    """Image complete and verified; executing Update installs it."""
    UPDATING = 3


class FirmwareUpdateResult(IntEnum):
    """/5/0/5 Update Result (object 5 version 1.2, 0..11)."""

    INITIAL = 0
    """Reset when a download or update starts; also the value while one is in progress."""
    SUCCESS = 1
    NOT_ENOUGH_FLASH = 2
    OUT_OF_RAM = 3
    CONNECTION_LOST = 4
    INTEGRITY_CHECK_FAILURE = 5
    UNSUPPORTED_PACKAGE_TYPE = 6
    INVALID_URI = 7
    UPDATE_FAILED = 8
    UNSUPPORTED_PROTOCOL = 9
    """The Package URI's scheme is not one the client supports (see /5/0/8)."""
    CANCELLED = 10
    """A Cancel (/5/0/10) succeeded."""
    DEFERRED = 11
    """The user deferred the update; State stays Downloaded."""

    @property
    def is_failure(self) -> bool:
        """True for the codes 2..9: the download or update did not happen."""
        return 2 <= self <= 9

    @property
    def is_retryable(self) -> bool:
        """True if retrying the same package and URI may succeed (transient conditions).

        A campaign retries these with back-off; the other failures need a different package,
        URI or protocol, so retrying as is would only burn the device's battery and data.
        """
        return self in (FirmwareUpdateResult.OUT_OF_RAM, FirmwareUpdateResult.CONNECTION_LOST)


class FirmwareProtocol(IntEnum):
    """/5/0/8 Firmware Update Protocol Support (one per resource instance)."""

    COAP = 0
    COAPS = 1
    HTTP = 2
    """HTTP/1.1."""
    HTTPS = 3
    """HTTPS/1.1."""
    COAP_TCP = 4
    """CoAP over TCP (RFC 8323)."""
    COAP_TLS = 5
    """CoAP over TLS (RFC 8323)."""

    @property
    def uri_scheme(self) -> str:
        """The Package URI scheme this protocol downloads from."""
        return _SCHEMES[self]

    @classmethod
    def for_uri(cls, uri: str) -> FirmwareProtocol | None:
        """The protocol a Package URI needs, or None for a scheme object 5 does not define.

        The server must not send a URI whose protocol the client did not list in /5/0/8.
        """
        scheme, sep, _ = uri.partition("://")
        if not sep:
            return None
        for proto, name in _SCHEMES.items():
            if name == scheme.lower():
                return proto
        return None


_SCHEMES: dict[FirmwareProtocol, str] = {
    FirmwareProtocol.COAP: "coap",
    FirmwareProtocol.COAPS: "coaps",
    FirmwareProtocol.HTTP: "http",
    FirmwareProtocol.HTTPS: "https",
    FirmwareProtocol.COAP_TCP: "coap+tcp",
    FirmwareProtocol.COAP_TLS: "coaps+tcp",
}


class FirmwareDeliveryMethod(IntEnum):
    """/5/0/9 Firmware Update Delivery Method."""

    PULL = 0
    """Only via Package URI: the client downloads."""
    PUSH = 1
    """Only via Package: the server writes the image (block-wise)."""
    BOTH = 2

    @property
    def supports_pull(self) -> bool:
        return self is not FirmwareDeliveryMethod.PUSH

    @property
    def supports_push(self) -> bool:
        return self is not FirmwareDeliveryMethod.PULL


class FirmwareSeverity(IntEnum):
    """/5/0/11 Severity: how urgently a deferrable update must be installed (default 1)."""

    CRITICAL = 0
    MANDATORY = 1
    OPTIONAL = 2


# -- Security (object 0) --------------------------------------------------------------------


class SecurityMode(IntEnum):
    """/0/x/2 Security Mode: how the client authenticates to the server."""

    PSK = 0
    """Pre-shared key (DTLS/TLS PSK cipher suites)."""
    RPK = 1
    """Raw public key."""
    CERTIFICATE = 2
    """X.509 certificate."""
    NO_SEC = 3
    """No security; fleetloop only allows it on test servers."""
    CERTIFICATE_EST = 4
    """Certificate, enrolled and renewed over EST (RFC 7030 over CoAP)."""

    @property
    def is_secure(self) -> bool:
        return self is not SecurityMode.NO_SEC

    @property
    def uses_certificates(self) -> bool:
        return self in (SecurityMode.CERTIFICATE, SecurityMode.CERTIFICATE_EST)


# -- Binding (Server /1/x/7, Device /3/0/16, Register b=) -----------------------------------


class BindingMode(StrEnum):
    """One letter of a binding string."""

    UDP = "U"
    TCP = "T"
    """Since LwM2M 1.1."""
    SMS = "S"
    NON_IP = "N"
    """Since LwM2M 1.1."""
    MQTT = "M"
    """Since LwM2M 1.2."""
    HTTP = "H"
    """Since LwM2M 1.2."""
    QUEUE = "Q"
    """LwM2M 1.0 only: queue mode for the transport before it. 1.1 has the Register ``Q``
    parameter instead."""


_LWM2M10_BINDINGS = frozenset({"U", "UQ", "S", "SQ", "US", "UQS"})
_LETTERS_SINCE: dict[BindingMode, tuple[int, int]] = {
    BindingMode.UDP: (1, 0),
    BindingMode.SMS: (1, 0),
    BindingMode.TCP: (1, 1),
    BindingMode.NON_IP: (1, 1),
    BindingMode.MQTT: (1, 2),
    BindingMode.HTTP: (1, 2),
}


def _version(text: str) -> tuple[int, int]:
    major, sep, minor = text.strip().partition(".")
    if not sep or not major.isdigit() or not minor.isdigit():
        raise InvalidBinding(f"LwM2M version {text!r} is not 'major.minor'")
    return int(major), int(minor)


@dataclass(frozen=True, slots=True)
class Binding:
    """A parsed binding string: the transports, in the order given, and which are queued.

    ``queued`` is only ever non-empty for 1.0 strings (``UQ``, ``SQ``, ``UQS``); from 1.1 on,
    queue mode is the Register ``Q`` parameter and the binding names transports only.
    """

    transports: tuple[BindingMode, ...]
    queued: frozenset[BindingMode] = frozenset()

    @classmethod
    def parse(cls, text: str, lwm2m_version: str | None = None) -> Binding:
        """Parse ``text``; with ``lwm2m_version``, also enforce what that version allows.

        Without a version the parser is lenient in the one way real clients need: it accepts
        1.0 queue letters and 1.1/1.2 transports together (1.1 clients commonly send ``UQ``).
        Unknown letters, repeated transports, a ``Q`` with no transport before it and the empty
        string are always rejected.
        """
        stripped = text.strip()
        if not stripped:
            raise InvalidBinding("empty binding")
        transports: list[BindingMode] = []
        queued: set[BindingMode] = set()
        for char in stripped:
            try:
                mode = BindingMode(char)
            except ValueError:
                raise InvalidBinding(f"unknown binding letter {char!r} in {text!r}") from None
            if mode is BindingMode.QUEUE:
                if not transports or transports[-1] in queued:
                    raise InvalidBinding(f"'Q' must follow a transport letter in {text!r}")
                queued.add(transports[-1])
            elif mode in transports:
                raise InvalidBinding(f"transport {char!r} repeated in {text!r}")
            else:
                transports.append(mode)
        binding = cls(tuple(transports), frozenset(queued))
        if lwm2m_version is not None:
            binding.check_version(lwm2m_version)
        return binding

    def check_version(self, lwm2m_version: str) -> None:
        """Raise :class:`InvalidBinding` unless this binding is valid in ``lwm2m_version``."""
        version = _version(lwm2m_version)
        if version <= (1, 0):
            if str(self) not in _LWM2M10_BINDINGS:
                allowed = ", ".join(sorted(_LWM2M10_BINDINGS))
                raise InvalidBinding(f"LwM2M 1.0 allows only {allowed}; got {self}")
            return
        if self.queued:
            raise InvalidBinding(
                f"'Q' in a binding is LwM2M 1.0 only; {lwm2m_version} signals queue mode with "
                f"the Register 'Q' parameter (got {self})"
            )
        for mode in self.transports:
            if _LETTERS_SINCE[mode] > version:
                since = ".".join(map(str, _LETTERS_SINCE[mode]))
                raise InvalidBinding(f"'{mode}' needs LwM2M {since}, got {lwm2m_version}")

    @property
    def queue_mode(self) -> bool:
        """True if a 1.0 binding puts any transport in queue mode."""
        return bool(self.queued)

    def supports(self, mode: BindingMode) -> bool:
        return mode in self.transports

    def __str__(self) -> str:
        return "".join(f"{m}Q" if m in self.queued else str(m) for m in self.transports)


def parse_binding(text: str, lwm2m_version: str | None = None) -> Binding:
    """Shortcut for :meth:`Binding.parse`."""
    return Binding.parse(text, lwm2m_version)


# -- Device (object 3) ----------------------------------------------------------------------


class PowerSource(IntEnum):
    """/3/0/6 Available Power Sources (one per resource instance)."""

    DC = 0
    INTERNAL_BATTERY = 1
    EXTERNAL_BATTERY = 2
    FUEL_CELL = 3
    POWER_OVER_ETHERNET = 4
    USB = 5
    AC_MAINS = 6
    SOLAR = 7


class BatteryStatus(IntEnum):
    """/3/0/20 Battery Status of the internal battery."""

    NORMAL = 0
    CHARGING = 1
    CHARGE_COMPLETE = 2
    DAMAGED = 3
    LOW_BATTERY = 4
    NOT_INSTALLED = 5
    UNKNOWN = 6


class DeviceErrorCode(IntEnum):
    """/3/0/11 Error Code; 9..15 are reserved and 16..32 device-specific (not members)."""

    NO_ERROR = 0
    LOW_BATTERY = 1
    EXTERNAL_POWER_OFF = 2
    GPS_FAILURE = 3
    LOW_SIGNAL = 4
    OUT_OF_MEMORY = 5
    SMS_FAILURE = 6
    IP_CONNECTIVITY_FAILURE = 7
    PERIPHERAL_MALFUNCTION = 8

    @staticmethod
    def describe(code: int) -> str:
        """A label for any reported code, including the reserved and device-specific ones."""
        try:
            return DeviceErrorCode(code).name.lower().replace("_", " ")
        except ValueError:
            pass
        if 9 <= code <= 15:
            return f"reserved error code {code}"
        if 16 <= code <= 32:
            return f"device-specific error {code}"
        return f"invalid error code {code}"


# -- Connectivity Monitoring (object 4) -----------------------------------------------------


class BearerCategory(StrEnum):
    """The three bands the Network Bearer codes are split into."""

    CELLULAR = "cellular"
    """0..20."""
    WIRELESS = "wireless"
    """21..40."""
    WIRELINE = "wireline"
    """41..50."""

    @classmethod
    def of(cls, code: int) -> BearerCategory | None:
        """Category of any bearer code, reserved ones included; None outside 0..50."""
        if 0 <= code <= 20:
            return cls.CELLULAR
        if 21 <= code <= 40:
            return cls.WIRELESS
        if 41 <= code <= 50:
            return cls.WIRELINE
        return None


class SignalMeasure(StrEnum):
    """What /4/0/2 Radio Signal Strength measures, which depends on the bearer."""

    RSSI = "RSSI"
    RSCP = "RSCP"
    RSRP = "RSRP"
    NRSRP = "NRSRP"


class NetworkBearer(IntEnum):
    """/4/0/0 Network Bearer and /4/0/1 Available Network Bearer."""

    GSM = 0
    TD_SCDMA = 1
    WCDMA = 2
    CDMA2000 = 3
    WIMAX = 4
    LTE_TDD = 5
    LTE_FDD = 6
    NB_IOT = 7
    NR_TDD = 8
    """5G NR, TDD."""
    NR_FDD = 9
    """5G NR, FDD."""
    WLAN = 21
    BLUETOOTH = 22
    IEEE_802_15_4 = 23
    ETHERNET = 41
    DSL = 42
    PLC = 43

    @property
    def category(self) -> BearerCategory:
        category = BearerCategory.of(self)
        assert category is not None
        return category

    @property
    def signal_measure(self) -> SignalMeasure | None:
        """The quantity /4/0/2 reports on this bearer, where object 4 names one.

        Signal thresholds differ per quantity (an RSRP of -110 dBm is weak LTE; an NRSRP of
        -110 dBm is fine NB-IoT coverage), so diagnostics must not compare across bearers.
        """
        return _SIGNAL_MEASURES.get(self)


_SIGNAL_MEASURES: dict[NetworkBearer, SignalMeasure] = {
    NetworkBearer.GSM: SignalMeasure.RSSI,
    NetworkBearer.TD_SCDMA: SignalMeasure.RSCP,
    NetworkBearer.WCDMA: SignalMeasure.RSCP,
    NetworkBearer.LTE_TDD: SignalMeasure.RSRP,
    NetworkBearer.LTE_FDD: SignalMeasure.RSRP,
    NetworkBearer.NB_IOT: SignalMeasure.NRSRP,
}


class CoverageEnhancementLevel(IntEnum):
    """/4/0/13 Coverage Enhancement Level (3GPP CE levels; higher means worse coverage)."""

    NONE = 0
    LEVEL_0 = 1
    LEVEL_1 = 2
    LEVEL_2 = 3
    LEVEL_3 = 4


# -- Cellular Connectivity (10) and APN Connection Profile (11) -----------------------------


class PowerSavingMode(IntFlag):
    """/10/0/12 Supported and /10/0/13 Active Power Saving Modes (bit mask)."""

    PSM = 1
    EDRX = 2


class ApnAuthenticationType(IntEnum):
    """/11/x/4 Authentication Type."""

    PAP = 0
    CHAP = 1
    PAP_OR_CHAP = 2
    NONE = 3


class PdnType(IntEnum):
    """/11/x/24 PDN Type."""

    NON_IP = 0
    IPV4 = 1
    IPV6 = 2
    IPV4V6 = 3


# -- eSIM IoT (3443) ------------------------------------------------------------------------


class ESimIoTState(IntEnum):
    """/3443/0/0 State: may the eIM write the next message to /3443/0/2?"""

    READY = 0
    """Ready to receive an eIM message."""
    BUSY = 1
    """Not able to receive one; a Write to resource 2 is refused until State is 0 again."""

    @staticmethod
    def accepts_messages(state: int) -> bool:
        """Whether the eIM may write /3443/0/2 now; any state above 0 means "not able"."""
        return state == ESimIoTState.READY


__all__ = [
    "ApnAuthenticationType",
    "BatteryStatus",
    "BearerCategory",
    "Binding",
    "BindingMode",
    "CoverageEnhancementLevel",
    "DeviceErrorCode",
    "ESimIoTState",
    "FirmwareDeliveryMethod",
    "FirmwareProtocol",
    "FirmwareSeverity",
    "FirmwareUpdateResult",
    "FirmwareUpdateState",
    "FleetConfigResult",
    "NetworkBearer",
    "PdnType",
    "PowerSavingMode",
    "PowerSource",
    "SecurityMode",
    "SignalMeasure",
    "parse_binding",
]

"""Registration interface pieces that are pure functions of the device's state (TS Core 1.1
§6.2): the server account as the store describes it, the Register/Update query and payload, when
the next Update is due, and the retry schedule after failures.

Queue mode (§6.5) is signalled differently per version: LwM2M 1.0 appends ``Q`` to the binding
(``b=UQ``), 1.1 and later send a separate, valueless ``Q`` query parameter and keep the binding
to transports (``b=U&Q``), as wakaama does.
"""

from __future__ import annotations

from dataclasses import dataclass

from lwm2m.codec.link import Link, format_links
from objects.enums import parse_binding
from objects.errors import InvalidBinding
from simulators.device.content import PROTECTED
from simulators.device.formats import FormatProfile
from simulators.device.objects import ObjectStore
from simulators.device.template import Dynamic

SERVER_OBJECT = 1
LIFETIME, DEFAULT_PMIN, DEFAULT_PMAX, BINDING, UPDATE_TRIGGER = 1, 2, 3, 7, 8
RETRY_COUNT, RETRY_TIMER, SEQUENCE_DELAY, SEQUENCE_RETRY_COUNT, MUTE_SEND = 17, 18, 19, 20, 23

#: TS Core 1.1 defaults of the Communication Retry resources /1/x/17..20.
DEFAULT_RETRY_COUNT, DEFAULT_RETRY_TIMER = 5, 60
DEFAULT_SEQUENCE_DELAY, DEFAULT_SEQUENCE_RETRY_COUNT = 86_400, 1


@dataclass(frozen=True, slots=True)
class ServerAccount:
    """What the first Server object instance says about registering."""

    iid: int
    lifetime: int
    binding: str
    retry_count: int = DEFAULT_RETRY_COUNT
    retry_timer: float = DEFAULT_RETRY_TIMER
    sequence_delay: float = DEFAULT_SEQUENCE_DELAY
    sequence_retry_count: int = DEFAULT_SEQUENCE_RETRY_COUNT
    mute_send: bool = False
    default_pmin: float = 0.0
    default_pmax: float | None = None


def _int(store: ObjectStore, iid: int, rid: int, default: int) -> int:
    if not store.has_resource(SERVER_OBJECT, iid, rid):
        return default
    value = store.stored((SERVER_OBJECT, iid, rid), 0.0)
    return int(value) if isinstance(value, int) else default


def server_account(store: ObjectStore) -> ServerAccount:
    """The account of the first Server instance (4.04-free: missing resources use defaults).

    Shared through the template's memo while the device's Server object is the template's
    and has no dynamic default (then every device of the template has the same account)."""
    if not store.object_is_template(SERVER_OBJECT):
        return _server_account(store)
    memo = store.template.memo
    account = memo.get(_ACCOUNT_MEMO)
    if account is None:
        account = _server_account(store)
        memo[_ACCOUNT_MEMO] = account if not _has_dynamic(store, SERVER_OBJECT) else False
    elif account is False:
        return _server_account(store)
    assert isinstance(account, ServerAccount)
    return account


_ACCOUNT_MEMO = "registration.server_account"


def _has_dynamic(store: ObjectStore, oid: int) -> bool:
    """Whether a default of object ``oid`` is computed per device (serial number, clock)."""
    obj = store.template.objects.get(oid)
    if obj is None:
        return False
    return any(
        isinstance(default, Dynamic)
        for instance in obj.instances.values()
        for default in instance.resources.values()
    )


def _server_account(store: ObjectStore) -> ServerAccount:
    iids = store.instance_ids(SERVER_OBJECT)
    if not iids:
        raise LookupError("the device has no LwM2M Server instance to register with")
    iid = iids[0]
    binding = store.stored((SERVER_OBJECT, iid, BINDING), 0.0)
    mute = store.has_resource(SERVER_OBJECT, iid, MUTE_SEND) and bool(
        store.stored((SERVER_OBJECT, iid, MUTE_SEND), 0.0)
    )
    pmax = _int(store, iid, DEFAULT_PMAX, 0)
    return ServerAccount(
        iid=iid,
        lifetime=_int(store, iid, LIFETIME, 86_400),
        binding=binding if isinstance(binding, str) else "U",
        retry_count=max(1, _int(store, iid, RETRY_COUNT, DEFAULT_RETRY_COUNT)),
        retry_timer=_int(store, iid, RETRY_TIMER, DEFAULT_RETRY_TIMER),
        sequence_delay=_int(store, iid, SEQUENCE_DELAY, DEFAULT_SEQUENCE_DELAY),
        sequence_retry_count=max(
            1, _int(store, iid, SEQUENCE_RETRY_COUNT, DEFAULT_SEQUENCE_RETRY_COUNT)
        ),
        mute_send=mute,
        default_pmin=float(_int(store, iid, DEFAULT_PMIN, 0)),
        default_pmax=float(pmax) if pmax > 0 else None,
    )


def transports(binding: str) -> str:
    """The transport letters of a binding string (``UQ`` → ``U``)."""
    try:
        return "".join(str(m) for m in parse_binding(binding).transports)
    except InvalidBinding:
        return binding.replace("Q", "") or "U"


def binding_param(binding: str, version: str, queue_mode: bool) -> str:
    """The ``b=`` value: transports, plus ``Q`` after them in LwM2M 1.0 queue mode."""
    letters = transports(binding)
    return letters + "Q" if queue_mode and version == "1.0" else letters


def register_query(
    endpoint: str,
    lifetime: int,
    version: str,
    binding: str,
    queue_mode: bool,
    profile: FormatProfile,
) -> tuple[str, ...]:
    """Uri-Query options of a Register: ``ep``, ``lt``, ``lwm2m``, ``b``, and ``Q``."""
    query = [f"ep={endpoint}", f"lt={lifetime}", f"lwm2m={version}"]
    if profile.binding_in_query or (queue_mode and version == "1.0"):
        query.append(f"b={binding_param(binding, version, queue_mode)}")
    if queue_mode and version != "1.0":
        query.append("Q")
    return tuple(query)


def object_links(store: ObjectStore, profile: FormatProfile) -> str:
    """The Register/Update payload: root link, then objects (with ``ver`` when not 1.0, or
    when they have no instance) and their instances. Security and OSCORE are never listed.

    It depends on the structure only, so a device with the template's instances gets the
    template's payload, built once (``DeviceTemplate.memo``)."""
    if not store.structure_is_template():
        return _object_links(store, profile)
    key = ("registration.object_links", profile.root_link, tuple(profile.register_formats))
    memo = store.template.memo
    links = memo.get(key)
    if links is None:
        links = memo[key] = _object_links(store, profile)
    assert isinstance(links, str)
    return links


def _object_links(store: ObjectStore, profile: FormatProfile) -> str:
    links: list[Link] = []
    if profile.root_link:
        params: list[tuple[str, str | None]] = [("rt", "oma.lwm2m")]
        if profile.register_formats:
            params.append(("ct", " ".join(str(f) for f in profile.register_formats)))
        links.append(Link("/", tuple(params)))
    for oid in store.object_ids():
        if oid in PROTECTED:
            continue
        version = store.object_template(oid).version
        iids = store.instance_ids(oid)
        if version != "1.0":
            links.append(Link(f"/{oid}", (("ver", version),)))
        elif not iids:
            links.append(Link(f"/{oid}"))
        links.extend(Link(f"/{oid}/{iid}") for iid in iids)
    return format_links(links)


def update_margin(lifetime: int, max_transmit_wait: float) -> float:
    """How long before the lifetime expires the Update goes out: a tenth of the lifetime, but
    at least MAX_TRANSMIT_WAIT (so that all retransmissions fit) unless that is more than half
    the lifetime. 300 s → 93 s early; 86 400 s → 8 640 s early; 60 s → 30 s early."""
    return max(lifetime / 10, min(max_transmit_wait, lifetime / 2))


def version_key(version: str) -> tuple[int, ...]:
    return tuple(int(p) for p in version.split("."))


def fallback_version(current: str, candidates: tuple[str, ...]) -> str | None:
    """The highest candidate below ``current`` (after a 4.12), or None."""
    lower = [v for v in candidates if version_key(v) < version_key(current)]
    return max(lower, key=version_key) if lower else None


__all__ = [
    "BINDING",
    "LIFETIME",
    "SERVER_OBJECT",
    "UPDATE_TRIGGER",
    "ServerAccount",
    "binding_param",
    "fallback_version",
    "object_links",
    "register_query",
    "server_account",
    "transports",
    "update_margin",
    "version_key",
]

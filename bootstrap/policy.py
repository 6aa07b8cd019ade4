"""Bootstrap policies: what a device gets, and which policy applies to which device.

A :class:`Policy` names the DM server account(s) a device is sent to (URI, Short Server ID,
which credentials to provision, lifetime, binding, queue mode), the APN connection profiles
(object 11) of its region's carrier, and initial values of the Fleetloop Config object
(32001). It *matches* devices by tenant, region, SKU and policy group; every criterion left
out matches anything.

Selection is total and explainable (:func:`select_policy`): among the policies whose criteria
all match, the one with the most criteria wins; between equally many, the one whose criteria
are more specific (policy group > SKU > region > tenant, compared as a bit mask). Two policies
with *identical* criteria are refused when the second is added (:func:`check_no_conflict`), so
there is never a tie. When nothing matches, the built-in default policy
(:func:`default_policy`) sends the device to the DM server of the same ``fleetloop serve``.

Policies are data: parsed from and rendered to JSON (:meth:`Policy.from_document`,
:meth:`Policy.document`), validated here, versioned and audited by the repository. Pure module:
no I/O.
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any
from urllib.parse import urlsplit

from bootstrap.errors import InvalidPolicy, PolicyConflict
from bootstrap.identities import FactoryIdentity, SecurityMode, check_label
from lwm2m.model import DataType, InvalidValue, Value
from objects import builtin_definition
from objects.enums import ApnAuthenticationType, PdnType, parse_binding
from objects.errors import InvalidBinding

CRITERIA: tuple[str, ...] = ("policy_group", "sku", "region", "tenant")
"""Selection criteria, most specific first (their weights are 8, 4, 2, 1)."""
_WEIGHT = {"policy_group": 8, "sku": 4, "region": 2, "tenant": 1}

BUILTIN_NAME = "builtin-default"
REDACTED = "***"
CONFIG_OBJECT = 32001
_DEFAULT_PORTS = {"coap": 5683, "coaps": 5684}


class CredentialKind(StrEnum):
    """Which DM credentials a policy provisions for a server account.

    ``match-identity``: the same kind as the device's bootstrap credential (a NoSec device gets
    NoSec, a PSK device a fresh PSK, a certificate device a fresh certificate).
    """

    NOSEC = "nosec"
    PSK = "psk"
    X509 = "x509"
    MATCH_IDENTITY = "match-identity"


class FormatPreference(StrEnum):
    """Content format of the Bootstrap-Writes: ``auto`` follows ``pct`` and the version."""

    AUTO = "auto"
    TLV = "tlv"
    SENML_CBOR = "senml-cbor"
    SENML_JSON = "senml-json"


def _check_uri(uri: str, what: str) -> str:
    parts = urlsplit(uri)
    if parts.scheme not in _DEFAULT_PORTS or not parts.hostname:
        raise InvalidPolicy(f"{what}: {uri!r} is not coap://host[:port] or coaps://host[:port]")
    try:
        parts.port  # noqa: B018 - raises on a bad port
    except ValueError as exc:
        raise InvalidPolicy(f"{what}: bad port in {uri!r}") from exc
    return uri


@dataclass(frozen=True, slots=True)
class PolicyMatch:
    """Selection criteria; ``None`` matches anything."""

    tenant: str | None = None
    region: str | None = None
    sku: str | None = None
    policy_group: str | None = None

    def __post_init__(self) -> None:
        for name in CRITERIA:
            try:
                check_label(name, getattr(self, name))
            except ValueError as exc:
                raise InvalidPolicy(f"match.{exc}") from None

    @property
    def criteria(self) -> dict[str, str]:
        return {n: v for n in CRITERIA if (v := getattr(self, n)) is not None}

    @property
    def rank(self) -> tuple[int, int]:
        """(number of criteria, weight mask): larger is more specific."""
        given = self.criteria
        return len(given), sum(_WEIGHT[n] for n in given)

    def evaluate(self, identity: FactoryIdentity) -> tuple[bool, tuple[str, ...]]:
        """Whether ``identity`` matches, with one reason per criterion."""
        ok = True
        reasons: list[str] = []
        for name, wanted in self.criteria.items():
            have = getattr(identity, name)
            if have == wanted:
                reasons.append(f"{name}={wanted} matches")
            else:
                ok = False
                shown = "unset" if have is None else repr(have)
                reasons.append(f"{name}={wanted} does not match (identity has {shown})")
        if not reasons:
            reasons.append("no criteria: matches every device")
        return ok, tuple(reasons)


@dataclass(frozen=True, slots=True)
class ApnProfile:
    """One APN Connection Profile (object 11) instance to write."""

    name: str
    apn: str
    auth_type: ApnAuthenticationType = ApnAuthenticationType.NONE
    user: str | None = None
    secret: str | None = field(default=None, repr=False)
    pdn_type: PdnType | None = None
    validity: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not self.name or not self.apn:
            raise InvalidPolicy("apn_profiles: every profile needs a name and an apn")
        if len(self.apn) > 100 or any(c.isspace() for c in self.apn):
            raise InvalidPolicy(f"apn_profiles.{self.name}: {self.apn!r} is not an APN")
        for item in self.validity:
            mcc, sep, mnc = item.partition("-")
            if not (
                sep and len(mcc) == 3 and mcc.isdigit() and 2 <= len(mnc) <= 3 and mnc.isdigit()
            ):
                raise InvalidPolicy(
                    f"apn_profiles.{self.name}: validity {item!r} is not MCC-MNC (e.g. 262-01)"
                )

    def document(self, *, redact: bool = False) -> dict[str, Any]:
        doc: dict[str, Any] = {"name": self.name, "apn": self.apn}
        if self.auth_type is not ApnAuthenticationType.NONE:
            doc["auth_type"] = self.auth_type.name.lower()
        if self.user is not None:
            doc["user"] = self.user
        if self.secret is not None:
            doc["secret"] = REDACTED if redact else self.secret
        if self.pdn_type is not None:
            doc["pdn_type"] = self.pdn_type.name.lower()
        if self.validity:
            doc["validity"] = list(self.validity)
        return doc

    @classmethod
    def from_document(cls, doc: Mapping[str, Any]) -> ApnProfile:
        _only(doc, {"name", "apn", "auth_type", "user", "secret", "pdn_type", "validity"}, "apn")
        try:
            auth = ApnAuthenticationType[str(doc.get("auth_type", "none")).upper()]
            pdn = None if doc.get("pdn_type") is None else PdnType[str(doc["pdn_type"]).upper()]
        except KeyError as exc:
            raise InvalidPolicy(f"apn_profiles: unknown value {exc}") from None
        return cls(
            name=_str(doc, "name"),
            apn=_str(doc, "apn"),
            auth_type=auth,
            user=_opt_str(doc, "user"),
            secret=_opt_str(doc, "secret"),
            pdn_type=pdn,
            validity=tuple(str(v) for v in doc.get("validity", ())),
        )


@dataclass(frozen=True, slots=True)
class ServerAccount:
    """One DM server account the device gets (a Security + a Server instance)."""

    uri: str
    short_server_id: int = 1
    credentials: CredentialKind = CredentialKind.MATCH_IDENTITY
    nosec_uri: str | None = None
    lifetime: int = 86_400
    binding: str = "U"
    queue_mode: bool = False
    default_pmin: int | None = None
    default_pmax: int | None = None
    notification_storing: bool = True
    apn: str | None = None
    oscore: bool = False
    retry: tuple[int, int, int, int] | None = None
    """Communication Retry Count / Timer / Sequence Delay / Sequence Retry Count (1.1+)."""

    def __post_init__(self) -> None:
        _check_uri(self.uri, "servers.uri")
        scheme = urlsplit(self.uri).scheme
        if self.nosec_uri is not None:
            _check_uri(self.nosec_uri, "servers.nosec_uri")
            if urlsplit(self.nosec_uri).scheme != "coap":
                raise InvalidPolicy("servers.nosec_uri must be a coap:// URI")
        if self.credentials is CredentialKind.NOSEC and scheme != "coap":
            raise InvalidPolicy(f"servers: nosec credentials need a coap:// URI, not {self.uri}")
        if self.credentials in (CredentialKind.PSK, CredentialKind.X509) and scheme != "coaps":
            raise InvalidPolicy(
                f"servers: {self.credentials} credentials need a coaps:// URI, not {self.uri}"
            )
        if self.credentials is CredentialKind.MATCH_IDENTITY and scheme != "coaps":
            raise InvalidPolicy(
                "servers: match-identity needs a coaps:// uri (and a coap:// nosec_uri for "
                "NoSec devices)"
            )
        if not 1 <= self.short_server_id <= 65534:
            raise InvalidPolicy("servers.short_server_id must be 1..65534")
        if not 1 <= self.lifetime <= 2**31 - 1:
            raise InvalidPolicy("servers.lifetime must be a positive number of seconds")
        try:
            binding = parse_binding(self.binding)
        except InvalidBinding as exc:
            raise InvalidPolicy(f"servers.binding: {exc}") from None
        if binding.queue_mode:
            raise InvalidPolicy("servers.binding: give transports only; set queue_mode instead")
        for name in ("default_pmin", "default_pmax"):
            value = getattr(self, name)
            if value is not None and value < 0:
                raise InvalidPolicy(f"servers.{name} must not be negative")
        if self.retry is not None and (len(self.retry) != 4 or min(self.retry) < 0):
            raise InvalidPolicy("servers.retry is [count, timer, sequence_delay, sequence_count]")
        if self.oscore and self.credentials is not CredentialKind.NOSEC:
            raise InvalidPolicy("servers.oscore protects a coap:// account: use nosec credentials")

    def document(self) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "uri": self.uri,
            "short_server_id": self.short_server_id,
            "credentials": str(self.credentials),
            "lifetime": self.lifetime,
            "binding": self.binding,
            "queue_mode": self.queue_mode,
            "notification_storing": self.notification_storing,
        }
        for name in ("nosec_uri", "default_pmin", "default_pmax", "apn"):
            if (value := getattr(self, name)) is not None:
                doc[name] = value
        if self.oscore:
            doc["oscore"] = True
        if self.retry is not None:
            doc["retry"] = list(self.retry)
        return doc

    @classmethod
    def from_document(cls, doc: Mapping[str, Any]) -> ServerAccount:
        allowed = {
            "uri",
            "short_server_id",
            "credentials",
            "nosec_uri",
            "lifetime",
            "binding",
            "queue_mode",
            "default_pmin",
            "default_pmax",
            "notification_storing",
            "apn",
            "oscore",
            "retry",
        }
        _only(doc, allowed, "servers")
        try:
            credentials = CredentialKind(doc.get("credentials", "match-identity"))
        except ValueError:
            kinds = ", ".join(k.value for k in CredentialKind)
            raise InvalidPolicy(f"servers.credentials must be one of {kinds}") from None
        retry = doc.get("retry")
        return cls(
            uri=_str(doc, "uri"),
            short_server_id=_int(doc, "short_server_id", 1),
            credentials=credentials,
            nosec_uri=_opt_str(doc, "nosec_uri"),
            lifetime=_int(doc, "lifetime", 86_400),
            binding=str(doc.get("binding", "U")),
            queue_mode=_bool(doc, "queue_mode", False),
            default_pmin=_opt_int(doc, "default_pmin"),
            default_pmax=_opt_int(doc, "default_pmax"),
            notification_storing=_bool(doc, "notification_storing", True),
            apn=_opt_str(doc, "apn"),
            oscore=_bool(doc, "oscore", False),
            retry=None if retry is None else tuple(int(x) for x in retry),  # type: ignore[arg-type]
        )

    def credentials_for(self, mode: SecurityMode) -> CredentialKind:
        """The concrete kind (never ``match-identity``) for a device of bootstrap ``mode``."""
        if self.credentials is not CredentialKind.MATCH_IDENTITY:
            return self.credentials
        return CredentialKind(str(mode))

    def uri_for(self, kind: CredentialKind) -> str | None:
        """The URI the device gets for credentials ``kind`` (None: this account has none)."""
        if kind is CredentialKind.NOSEC:
            if urlsplit(self.uri).scheme == "coap":
                return self.uri
            return self.nosec_uri
        return self.uri


ConfigValue = str | int | float | bool | bytes | tuple[str, ...]


def _config_values(raw: Mapping[str, Any]) -> tuple[tuple[int, ConfigValue], ...]:
    """Validate initial config-object values against the 32001 definition."""
    definition = builtin_definition(CONFIG_OBJECT)
    out: list[tuple[int, ConfigValue]] = []
    for key, value in raw.items():
        try:
            rid = int(key)
        except ValueError:
            raise InvalidPolicy(f"config: {key!r} is not a resource id of object 32001") from None
        resource = definition.resource(rid)
        if resource is None:
            raise InvalidPolicy(f"config: object 32001 has no resource {rid}")
        if not resource.operations.writable or resource.type is DataType.NONE:
            raise InvalidPolicy(f"config: /32001/0/{rid} ({resource.name}) is not writable")
        try:
            if resource.multiple:
                if not isinstance(value, list | tuple):
                    raise InvalidPolicy(f"config: /32001/0/{rid} takes a list")
                items = tuple(str(Value(resource.type, v).value) for v in value)
                out.append((rid, items))
            else:
                if resource.type is DataType.OPAQUE and isinstance(value, str):
                    value = bytes.fromhex(value)
                checked = Value(resource.type, value).value
                assert isinstance(checked, str | int | float | bool | bytes)
                out.append((rid, checked))
        except (InvalidValue, ValueError) as exc:
            raise InvalidPolicy(f"config: /32001/0/{rid} ({resource.name}): {exc}") from None
    return tuple(sorted(out))


@dataclass(frozen=True, slots=True)
class Policy:
    """A versioned bootstrap policy (see the module docstring)."""

    name: str
    servers: tuple[ServerAccount, ...]
    match: PolicyMatch = PolicyMatch()
    apn_profiles: tuple[ApnProfile, ...] = ()
    config: tuple[tuple[int, ConfigValue], ...] = ()
    content_format: FormatPreference = FormatPreference.AUTO
    delete: tuple[str, ...] = ()
    """Bootstrap-Delete targets; empty means the default (``/0``, ``/1`` and the objects the
    policy writes instances of)."""
    description: str = ""
    version: int = 0
    created_at: float = 0.0
    author: str = ""
    comment: str = ""
    builtin: bool = False

    def __post_init__(self) -> None:
        if check_label("name", self.name) is None:
            raise InvalidPolicy("a policy needs a name")
        if not self.servers:
            raise InvalidPolicy(f"policy {self.name}: at least one server account is needed")
        ids = [s.short_server_id for s in self.servers]
        if len(set(ids)) != len(ids):
            raise InvalidPolicy(f"policy {self.name}: short_server_id values must be distinct")
        names = [p.name for p in self.apn_profiles]
        if len(set(names)) != len(names):
            raise InvalidPolicy(f"policy {self.name}: APN profile names must be distinct")
        for server in self.servers:
            if server.apn is not None and server.apn not in names:
                raise InvalidPolicy(
                    f"policy {self.name}: server {server.uri} links APN {server.apn!r}, "
                    "which apn_profiles does not define"
                )
        for target in self.delete:
            if target != "/" and not (
                target.startswith("/") and all(p.isdigit() for p in target[1:].split("/"))
            ):
                raise InvalidPolicy(f"policy {self.name}: delete target {target!r} is not a path")

    # -- documents ------------------------------------------------------------------------------
    def document(self, *, redact: bool = False) -> dict[str, Any]:
        """The policy as the JSON document an operator writes (without version metadata);
        ``redact`` replaces APN passwords by ``***`` (for the audit trail and listings)."""
        doc: dict[str, Any] = {
            "name": self.name,
            "match": self.match.criteria,
            "servers": [s.document() for s in self.servers],
        }
        if self.apn_profiles:
            doc["apn_profiles"] = [p.document(redact=redact) for p in self.apn_profiles]
        if self.config:
            doc["config"] = {
                str(rid): list(v)
                if isinstance(v, tuple)
                else (v.hex() if isinstance(v, bytes) else v)
                for rid, v in self.config
            }
        if self.content_format is not FormatPreference.AUTO:
            doc["content_format"] = str(self.content_format)
        if self.delete:
            doc["delete"] = list(self.delete)
        if self.description:
            doc["description"] = self.description
        return doc

    def canonical(self) -> str:
        """Canonical JSON of :meth:`document` (what versions are compared and hashed by)."""
        return json.dumps(self.document(), sort_keys=True, separators=(",", ":"))

    def pretty(self, *, redact: bool = False) -> str:
        return json.dumps(self.document(redact=redact), sort_keys=True, indent=2) + "\n"

    @classmethod
    def from_document(cls, doc: Mapping[str, Any], *, name: str | None = None) -> Policy:
        """Parse and validate an operator's policy document (``name`` overrides its name)."""
        if not isinstance(doc, Mapping):
            raise InvalidPolicy("a policy document is a JSON object")
        allowed = {
            "name",
            "match",
            "servers",
            "apn_profiles",
            "config",
            "content_format",
            "delete",
            "description",
        }
        _only(doc, allowed, "policy")
        match = doc.get("match") or {}
        if not isinstance(match, Mapping):
            raise InvalidPolicy("match is an object of criteria")
        _only(match, set(CRITERIA), "match")
        servers = doc.get("servers")
        if not isinstance(servers, list) or not all(isinstance(s, Mapping) for s in servers):
            raise InvalidPolicy("servers is a list of server accounts")
        apns = doc.get("apn_profiles") or []
        if not isinstance(apns, list) or not all(isinstance(a, Mapping) for a in apns):
            raise InvalidPolicy("apn_profiles is a list of profiles")
        config = doc.get("config") or {}
        if not isinstance(config, Mapping):
            raise InvalidPolicy("config maps resource ids of object 32001 to values")
        try:
            preference = FormatPreference(doc.get("content_format", "auto"))
        except ValueError:
            choices = ", ".join(p.value for p in FormatPreference)
            raise InvalidPolicy(f"content_format must be one of {choices}") from None
        delete = doc.get("delete") or []
        if not isinstance(delete, list):
            raise InvalidPolicy("delete is a list of paths")
        return cls(
            name=name or _str(doc, "name"),
            match=PolicyMatch(**{k: (None if v is None else str(v)) for k, v in match.items()}),
            servers=tuple(ServerAccount.from_document(s) for s in servers),
            apn_profiles=tuple(ApnProfile.from_document(a) for a in apns),
            config=_config_values(config),
            content_format=preference,
            delete=tuple(str(d) for d in delete),
            description=str(doc.get("description", "")),
        )

    @classmethod
    def from_json(cls, text: str | bytes, *, name: str | None = None) -> Policy:
        try:
            doc = json.loads(text)
        except json.JSONDecodeError as exc:
            raise InvalidPolicy(f"not JSON: {exc}") from None
        return cls.from_document(doc, name=name)

    def with_version(
        self, version: int, created_at: float, author: str, comment: str = ""
    ) -> Policy:
        return replace(self, version=version, created_at=created_at, author=author, comment=comment)

    @property
    def label(self) -> str:
        return self.name if self.builtin else f"{self.name} v{self.version}"


# -- document helpers ---------------------------------------------------------------------------


def _only(doc: Mapping[str, Any], allowed: set[str], where: str) -> None:
    unknown = sorted(set(doc) - allowed)
    if unknown:
        raise InvalidPolicy(
            f"{where}: unknown field(s) {', '.join(unknown)} "
            f"(allowed: {', '.join(sorted(allowed))})"
        )


def _str(doc: Mapping[str, Any], key: str) -> str:
    value = doc.get(key)
    if not isinstance(value, str) or not value:
        raise InvalidPolicy(f"{key} is required text")
    return value


def _opt_str(doc: Mapping[str, Any], key: str) -> str | None:
    value = doc.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidPolicy(f"{key} must be text")
    return value


def _int(doc: Mapping[str, Any], key: str, default: int) -> int:
    value = doc.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidPolicy(f"{key} must be an integer")
    return value


def _opt_int(doc: Mapping[str, Any], key: str) -> int | None:
    return None if doc.get(key) is None else _int(doc, key, 0)


def _bool(doc: Mapping[str, Any], key: str, default: bool) -> bool:
    value = doc.get(key, default)
    if not isinstance(value, bool):
        raise InvalidPolicy(f"{key} must be true or false")
    return value


# -- the built-in default -----------------------------------------------------------------------


def default_policy(coap_uri: str | None, coaps_uri: str | None) -> Policy | None:
    """The policy used when no stored one matches: the DM server of this ``fleetloop serve``.

    NoSec identities get ``coap_uri`` without security, PSK identities a fresh PSK on
    ``coaps_uri``, certificate identities a fresh certificate on ``coaps_uri``. ``None`` when
    no DM URI is known (a standalone bootstrap server without ``--dm-uri``).
    """
    if coaps_uri is None and coap_uri is None:
        return None
    if coaps_uri is not None:
        account = ServerAccount(
            uri=coaps_uri, credentials=CredentialKind.MATCH_IDENTITY, nosec_uri=coap_uri
        )
    else:
        assert coap_uri is not None
        account = ServerAccount(uri=coap_uri, credentials=CredentialKind.NOSEC)
    return Policy(
        name=BUILTIN_NAME,
        servers=(account,),
        description="built in: the DM server of the same fleetloop serve",
        builtin=True,
    )


# -- selection ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Candidate:
    """One policy as :func:`select_policy` saw it for an identity."""

    name: str
    version: int
    criteria: Mapping[str, str]
    matched: bool
    rank: tuple[int, int]
    reasons: tuple[str, ...]

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.version,
            "criteria": dict(self.criteria),
            "matched": self.matched,
            "rank": list(self.rank),
            "reasons": list(self.reasons),
        }


@dataclass(frozen=True, slots=True)
class Selection:
    """Which policy applies to an identity, and why (``bootstrap explain``)."""

    endpoint: str
    policy: Policy | None
    candidates: tuple[Candidate, ...]
    why: str

    def as_dict(self) -> dict[str, Any]:
        return {
            "endpoint": self.endpoint,
            "policy": None
            if self.policy is None
            else {
                "name": self.policy.name,
                "version": self.policy.version,
                "builtin": self.policy.builtin,
            },
            "why": self.why,
            "candidates": [c.as_dict() for c in self.candidates],
        }


def _describe(criteria: Mapping[str, str]) -> str:
    return " + ".join(f"{k}={v}" for k, v in criteria.items()) or "no criteria"


def select_policy(
    identity: FactoryIdentity, policies: Iterable[Policy], default: Policy | None
) -> Selection:
    """The most specific matching policy for ``identity`` (see the module docstring)."""
    candidates: list[Candidate] = []
    winner: Policy | None = None
    best: tuple[int, int] | None = None
    for policy in sorted(policies, key=lambda p: p.name):
        matched, reasons = policy.match.evaluate(identity)
        rank = policy.match.rank
        candidates.append(
            Candidate(policy.name, policy.version, policy.match.criteria, matched, rank, reasons)
        )
        if matched and (best is None or rank > best):
            winner, best = policy, rank
    candidates.sort(key=lambda c: (not c.matched, tuple(-x for x in c.rank), c.name))
    if winner is not None:
        runners = [c for c in candidates if c.matched and c.name != winner.name]
        why = f"{winner.label} is the most specific match ({_describe(winner.match.criteria)})"
        if runners:
            others = ", ".join(f"{c.name} ({_describe(c.criteria)})" for c in runners)
            why += f"; it outranks {others}"
        return Selection(identity.endpoint, winner, tuple(candidates), why)
    if default is not None:
        why = (
            "no stored policy matches; the built-in default sends the device to this "
            "server's own DM server"
            if candidates
            else "no policies are configured; the built-in default sends the device to this "
            "server's own DM server"
        )
        return Selection(identity.endpoint, default, tuple(candidates), why)
    return Selection(
        identity.endpoint,
        None,
        tuple(candidates),
        "no policy matches and no default DM server is configured: the device cannot be "
        "bootstrapped (add a policy, or start the bootstrap server with a DM URI)",
    )


def check_no_conflict(new: Policy, existing: Sequence[Policy]) -> None:
    """Refuse a policy whose criteria equal another (differently named) policy's."""
    for other in existing:
        if other.name != new.name and other.match == new.match:
            raise PolicyConflict(
                f"policy {new.name} has the same match criteria as {other.name} "
                f"({_describe(new.match.criteria)}); selection would be ambiguous -- change the "
                f"criteria or update {other.name} instead"
            )


def diff_policies(old: Policy, new: Policy, *, redact: bool = False) -> str:
    """A unified diff of two policy versions' documents (``redact``: APN passwords hidden)."""
    return "".join(
        difflib.unified_diff(
            old.pretty(redact=redact).splitlines(keepends=True),
            new.pretty(redact=redact).splitlines(keepends=True),
            fromfile=old.label,
            tofile=new.label,
        )
    )


__all__ = [
    "BUILTIN_NAME",
    "CRITERIA",
    "ApnProfile",
    "Candidate",
    "ConfigValue",
    "CredentialKind",
    "FormatPreference",
    "Policy",
    "PolicyMatch",
    "Selection",
    "ServerAccount",
    "check_no_conflict",
    "default_policy",
    "diff_policies",
    "select_policy",
]

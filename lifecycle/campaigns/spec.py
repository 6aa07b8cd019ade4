"""A campaign spec from a YAML/JSON-loaded mapping, and back (sans-IO).

:func:`parse_spec` is the one place a campaign's settings are validated: the CLI (a YAML/JSON
file), the API (a JSON body) and the engine (a persisted spec) all come through it, so an
operator gets the same error everywhere -- :class:`~lifecycle.campaigns.model.CampaignError`
with the field's path (``waves[2].percent``) and what to write instead. It raises nothing
else on any JSON-like input (a hypothesis test holds it to that), because a spec is operator
input and a stray ``TypeError`` would be a 500 instead of a 422.

:func:`spec_to_dict` is the exact inverse: a JSON-safe dict with every setting spelled out
(components in their resolved form), so ``parse_spec(spec_to_dict(s)) == s`` and a persisted
campaign reloads to the spec it was created from even if the defaults change later.

Durations are seconds: a number, or text ``"30s"``, ``"5m"``, ``"2h"``, ``"1d"``,
``"250ms"``.

**The esim kind.** An eSIM switch with an activation code is two gated phases
(docs/CAMPAIGNS.md, "Phases"): ``{esim: {iccid, activation_code}}`` in ``change`` becomes two
components -- ``esim_download`` (the profile present on the eUICC, disabled) and ``esim`` (the
enable with rollbackFlag) -- and must come first; the components after it (an APN, a config
that must move with the new carrier) follow the enable. ``kind: esim`` with ``esim: {iccid,
activation_code}`` builds the same change (``change`` then lists only what moves with it).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from typing import Any

from lifecycle.campaigns.model import (
    CampaignError,
    CampaignSpec,
    CanarySpec,
    Component,
    Deadlines,
    GateSpec,
    Membership,
    OnFailure,
    Pacing,
    RetrySpec,
    Scope,
    WaveSpec,
    Window,
)
from lifecycle.selector import SelectorError, parse_selector
from lifecycle.state.dimensions import Dimension, StateError, parse_desired

Resolver = Callable[[Dimension, Any], Component]
"""Turns an operator's value for a dimension (a bundle name, a firmware image id, an APN
profile name) into a resolved :class:`Component`; the API supplies one backed by its
repositories. It may raise :class:`CampaignError`, ``StateError``, ``LookupError`` or
``ValueError`` for a value it cannot resolve."""

MAX_NAME = 128
MAX_DESCRIPTION = 4096
MAX_COMPONENTS = 16
MAX_WAVES = 100
MAX_WINDOWS = 32
DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_DURATION = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*(ms|s|m|h|d)?\s*$")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}
_CLOCK = re.compile(r"^([0-9]{1,2}):([0-9]{2})$")
_OVERLAY = re.compile(r"(region|policy_group|carrier|country)=.+", re.DOTALL)
_RESOLVED_KEYS = frozenset({"artifact", "size", "overlays"})

TOP_KEYS = (
    "name",
    "description",
    "selector",
    "tenant",
    "change",
    "membership",
    "canary",
    "waves",
    "pacing",
    "windows",
    "deadlines",
    "retry",
    "gates",
    "on_failure",
    "revert_scope",
    "kind",
    "esim",
)
KINDS = ("change", "esim")


# -- small typed readers -------------------------------------------------------------------------


def _keys(raw: Any, path: str, allowed: tuple[str, ...] | frozenset[str]) -> Mapping[str, Any]:
    """``raw`` as a mapping with only ``allowed`` keys (a typo is an error, not a default)."""
    if not isinstance(raw, Mapping):
        raise CampaignError(path or "spec", f"expected a mapping, got {_kind(raw)}")
    for key in raw:
        if not isinstance(key, str) or key not in allowed:
            where = f"{path}.{key}" if path else str(key)
            raise CampaignError(
                where, f"unknown key {key!r}; use one of {', '.join(sorted(allowed))}"
            )
    return raw


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, list | tuple):
        return "a list"
    return f"{type(value).__name__} {_short(value)}"


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _int(value: Any, path: str, *, minimum: int, maximum: int = 2**31 - 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        if isinstance(value, float) and value.is_integer() and minimum <= value <= maximum:
            return int(value)
        raise CampaignError(path, f"expected a whole number, got {_kind(value)}")
    if not minimum <= value <= maximum:
        raise CampaignError(path, f"{value} is out of range; give {minimum}..{maximum}")
    return value


def _number(value: Any, path: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise CampaignError(path, f"expected a number, got {_kind(value)}")
    number = float(value)
    if not math.isfinite(number):
        raise CampaignError(path, "expected a finite number")
    return number


def _positive(value: Any, path: str) -> float:
    number = _number(value, path)
    if number <= 0:
        raise CampaignError(path, f"{_short(value)} must be greater than 0")
    return number


def _percent(value: Any, path: str, *, zero: bool = True) -> float:
    number = _number(value, path)
    if not (0 <= number <= 100) or (not zero and number == 0):
        low = "0" if zero else "more than 0"
        raise CampaignError(path, f"{_short(value)} is not a percentage; give {low} up to 100")
    return number


def _bool(value: Any, path: str) -> bool:
    if not isinstance(value, bool):
        raise CampaignError(path, f"expected true or false, got {_kind(value)}")
    return value


def _text(value: Any, path: str, *, maximum: int, empty: bool = False) -> str:
    if not isinstance(value, str):
        raise CampaignError(path, f"expected text, got {_kind(value)}")
    if not empty and not value.strip():
        raise CampaignError(path, "must not be empty")
    if len(value) > maximum:
        raise CampaignError(path, f"longer than {maximum} characters; shorten it")
    if any(ord(c) < 32 and c not in "\t\n" for c in value):
        raise CampaignError(path, "contains control characters; remove them")
    return value


def _enum(value: Any, path: str, kind: type[Membership] | type[OnFailure] | type[Scope]) -> Any:
    choices = ", ".join(m.value for m in kind)
    if not isinstance(value, str):
        raise CampaignError(path, f"expected one of {choices}, got {_kind(value)}")
    try:
        return kind(value.strip().lower())
    except ValueError:
        raise CampaignError(path, f"{_short(value)} is not one of {choices}") from None


def parse_duration(value: Any, path: str, *, zero: bool = False) -> float:
    """Seconds from a number or ``"30s"``/``"5m"``/``"2h"``/``"1d"``/``"250ms"``; zero only
    where ``zero`` allows it (a bake of 0 makes sense, a deadline of 0 does not)."""
    if isinstance(value, str):
        match = _DURATION.match(value)
        if match is None:
            raise CampaignError(
                path, f"{_short(value)} is not a duration; write seconds or 30s, 5m, 2h, 1d"
            )
        seconds = float(match.group(1)) * _UNITS[match.group(2)]
    else:
        seconds = _number(value, path)
    if not math.isfinite(seconds) or seconds < 0 or (seconds == 0 and not zero):
        need = "0 or more" if zero else "more than 0"
        raise CampaignError(path, f"{_short(value)}: the duration must be {need} seconds")
    if seconds > 366 * 86400:
        raise CampaignError(path, f"{_short(value)} is more than a year; give less")
    return seconds


# -- sections ------------------------------------------------------------------------------------


def _component(raw: Any, path: str, resolve: Resolver | None, seen: set[Dimension]) -> Component:
    if not isinstance(raw, Mapping) or not raw:
        raise CampaignError(
            path, 'give {firmware: "2.4.1"} or {dimension: firmware, value: "2.4.1"}'
        )
    resolved = False
    if "dimension" in raw:
        entry = _keys(raw, path, frozenset({"dimension", "value"}) | _RESOLVED_KEYS)
        name, value = entry["dimension"], entry.get("value")
        resolved = bool(_RESOLVED_KEYS & set(entry))
        if "value" not in entry:
            raise CampaignError(f"{path}.value", "missing; give the dimension's desired value")
    elif len(raw) == 1:
        ((name, value),) = raw.items()
    else:
        raise CampaignError(
            path, "one component per entry: {firmware: ...}; list several entries for several"
        )
    if not isinstance(name, str):
        raise CampaignError(path, f"a dimension is text, got {_kind(name)}")
    try:
        dimension = Dimension.parse(name)
    except StateError as exc:
        raise CampaignError(f"{path}.dimension", exc.message) from None
    where = f"{path}.{dimension.value}"
    if dimension in seen:
        raise CampaignError(
            where, "a change holds one component per dimension; merge or remove the other one"
        )
    seen.add(dimension)
    try:
        if resolved:
            return _resolved(entry, dimension, where)
        if resolve is not None:
            component = resolve(dimension, value)
            if not isinstance(component, Component) or component.dimension is not dimension:
                raise CampaignError(where, f"could not resolve {_short(value)}")
            return component
        return Component(dimension, parse_desired(dimension, value))
    except CampaignError as exc:
        if exc.field.startswith(path):
            raise
        raise CampaignError(where, exc.message) from None
    except StateError as exc:
        raise CampaignError(where, exc.message) from None
    except (LookupError, ValueError, TypeError) as exc:
        raise CampaignError(where, f"cannot resolve {_short(value)}: {exc}") from None


def _resolved(entry: Mapping[str, Any], dimension: Dimension, where: str) -> Component:
    """A component in :func:`spec_to_dict`'s form: value already resolved (re-validated)."""
    artifact = _text(entry.get("artifact", ""), f"{where}.artifact", maximum=256, empty=True)
    size = _int(entry.get("size", 0), f"{where}.size", minimum=0, maximum=2**53)
    overlays_raw = entry.get("overlays", {})
    if not isinstance(overlays_raw, Mapping):
        raise CampaignError(f"{where}.overlays", f"expected a mapping, got {_kind(overlays_raw)}")
    overlays: dict[str, Mapping[str, Any]] = {}
    for key, value in overlays_raw.items():
        if not isinstance(key, str) or not _OVERLAY.fullmatch(key):
            raise CampaignError(
                f"{where}.overlays",
                f"key {_short(key)} must be region=, policy_group=, carrier= or country=NAME",
            )
        overlays[key] = parse_desired(dimension, value)
    value = parse_desired(dimension, entry["value"])
    return Component(dimension, value, artifact, size, overlays)


def _change(raw: Any, resolve: Resolver | None) -> tuple[Component, ...]:
    if not isinstance(raw, list | tuple) or not raw:
        raise CampaignError(
            "change", 'give a list of components, e.g. [{config: {...}}, {firmware: "2.4.1"}]'
        )
    if len(raw) > MAX_COMPONENTS:
        raise CampaignError("change", f"at most {MAX_COMPONENTS} components")
    seen: set[Dimension] = set()
    out: list[Component] = []
    for i, entry in enumerate(raw):
        component = _component(entry, f"change[{i}]", resolve, seen)
        resolved = isinstance(entry, Mapping) and bool(_RESOLVED_KEYS & set(entry))
        if (
            component.dimension is Dimension.ESIM
            and "activation_code" in component.value
            and not resolved  # a persisted spec is taken as it is (already expanded)
        ):
            if Dimension.ESIM_DOWNLOAD in seen:
                raise CampaignError(
                    f"change[{i}].esim", "the change already has an esim_download component"
                )
            seen.add(Dimension.ESIM_DOWNLOAD)
            out.extend(esim_switch(component))
        else:
            out.append(component)
    check_phases(tuple(out))
    return tuple(out)


def esim_switch(component: Component) -> tuple[Component, Component]:
    """The two phases of an eSIM switch from ``{iccid, activation_code}``: the download (the
    profile present on the eUICC, disabled) and the enable (with rollbackFlag)."""
    iccid = str(component.value["iccid"])
    code = str(component.value["activation_code"])
    artifact = component.artifact or f"esim-profile:{iccid}"
    download = Component(
        Dimension.ESIM_DOWNLOAD, {"iccid": iccid, "activation_code": code}, artifact
    )
    enable: dict[str, Any] = {"iccid": iccid}
    if component.value.get("plmns"):  # the carrier check's expected networks (lifecycle.esim)
        enable["plmns"] = component.value["plmns"]
    return download, Component(Dimension.ESIM, enable, artifact)


def check_phases(components: tuple[Component, ...]) -> None:
    """An ``esim_download`` component is the download phase of an eSIM switch: it comes
    first, directly followed by the ``esim`` component that enables the same ICCID."""
    for i, c in enumerate(components):
        if c.dimension is not Dimension.ESIM_DOWNLOAD:
            continue
        nxt = components[i + 1] if i + 1 < len(components) else None
        if (
            i != 0
            or nxt is None
            or nxt.dimension is not Dimension.ESIM
            or nxt.value.get("iccid") != c.value.get("iccid")
            or c.overlays
            or nxt.overlays
        ):
            raise CampaignError(
                f"change[{i}].esim_download",
                "the download phase comes first, directly followed by the esim component "
                "enabling the same ICCID (no overlays); write {esim: {iccid: ..., "
                "activation_code: ...}} first in change, which builds both",
            )


def _esim_kind(m: Mapping[str, Any]) -> list[Any]:
    """``kind: esim``: the change built from ``esim: {iccid, activation_code}`` and the
    components that move with it (``change``, optional)."""
    raw = m.get("esim")
    if not isinstance(raw, Mapping) or set(raw) - {"plmns"} != {"iccid", "activation_code"}:
        raise CampaignError(
            "esim",
            "kind esim needs esim: {iccid: ICCID, activation_code: '1$SM-DP+$ID'} "
            "(optional plmns: [MCC-MNC, ...])",
        )
    extra = m.get("change", [])
    if not isinstance(extra, list | tuple):
        raise CampaignError("change", "list the components that move with the switch")
    return [{"esim": dict(raw)}, *extra]


def _canary(raw: Any) -> CanarySpec:
    m = _keys(raw, "canary", ("per_stratum", "max_devices", "bake", "approval"))
    d = CanarySpec()
    return CanarySpec(
        per_stratum=_int(m.get("per_stratum", d.per_stratum), "canary.per_stratum", minimum=1),
        max_devices=_int(m.get("max_devices", d.max_devices), "canary.max_devices", minimum=1),
        bake_s=parse_duration(m.get("bake", d.bake_s), "canary.bake", zero=True),
        approval=_bool(m.get("approval", d.approval), "canary.approval"),
    )


def _waves(raw: Any) -> tuple[WaveSpec, ...]:
    if not isinstance(raw, list | tuple) or not raw:
        raise CampaignError("waves", "give a list of waves, e.g. [{percent: 10}, {percent: 90}]")
    if len(raw) > MAX_WAVES:
        raise CampaignError("waves", f"at most {MAX_WAVES} waves")
    waves = []
    total = 0.0
    for i, item in enumerate(raw):
        path = f"waves[{i}]"
        m = _keys(item, path, ("count", "percent", "bake"))
        if ("count" in m) == ("percent" in m):
            raise CampaignError(path, "give exactly one of count or percent")
        bake = parse_duration(m.get("bake", 60.0), f"{path}.bake", zero=True)
        if "count" in m:
            count = _int(m["count"], f"{path}.count", minimum=1, maximum=10**9)
            waves.append(WaveSpec(count=count, bake_s=bake))
            continue
        percent = _percent(m["percent"], f"{path}.percent", zero=False)
        total += percent
        if total > 100 + 1e-9:
            raise CampaignError(
                f"{path}.percent",
                f"the waves' percentages add up to {total:g} > 100; lower them "
                "(the last wave takes whatever remains anyway)",
            )
        waves.append(WaveSpec(percent=percent, bake_s=bake))
    return tuple(waves)


def _pacing(raw: Any) -> Pacing:
    keys = ("rate", "growth_factor", "growth_every", "max_rate", "concurrency", "per_carrier")
    m = _keys(raw, "pacing", keys)
    d = Pacing()
    rate = _positive(m.get("rate", d.rate), "pacing.rate")
    growth = _number(m.get("growth_factor", d.growth_factor), "pacing.growth_factor")
    if not 1.0 <= growth <= 100.0:
        raise CampaignError("pacing.growth_factor", f"{growth:g}: give 1 (no growth) up to 100")
    every = _int(m.get("growth_every", d.growth_every), "pacing.growth_every", minimum=1)
    max_rate = _positive(m.get("max_rate", max(d.max_rate, rate)), "pacing.max_rate")
    if max_rate < rate:
        raise CampaignError(
            "pacing.max_rate", f"{max_rate:g} is below rate {rate:g}; raise it or lower rate"
        )
    concurrency = _int(m.get("concurrency", d.concurrency), "pacing.concurrency", minimum=1)
    per_raw = m.get("per_carrier", {})
    if not isinstance(per_raw, Mapping):
        raise CampaignError("pacing.per_carrier", f"expected a mapping, got {_kind(per_raw)}")
    per_carrier: dict[str, int] = {}
    for carrier, cap in per_raw.items():
        path = f"pacing.per_carrier.{carrier}"
        if not isinstance(carrier, str) or not carrier:
            raise CampaignError("pacing.per_carrier", "keys are carrier names")
        per_carrier[carrier] = _int(cap, path, minimum=1)
    return Pacing(rate, growth, every, max_rate, concurrency, per_carrier)


def _days(raw: Any, path: str) -> frozenset[int]:
    if isinstance(raw, str):
        text = raw.strip().lower()
        if text in ("daily", "all", "*"):
            return frozenset(range(7))
        parts: list[Any] = [p.strip() for p in text.split(",")]
    elif isinstance(raw, list | tuple) and raw:
        parts = list(raw)
    else:
        raise CampaignError(path, 'give "mon-fri", "sat,sun", "daily" or a list of days')
    days: set[int] = set()
    for part in parts:
        if isinstance(part, int) and not isinstance(part, bool) and 0 <= part <= 6:
            days.add(part)
            continue
        if not isinstance(part, str):
            raise CampaignError(path, f"{_short(part)} is not a day (mon..sun or 0..6)")
        first, dash, last = part.strip().lower().partition("-")
        if first not in DAYS or (dash and last not in DAYS):
            raise CampaignError(path, f"{_short(part)} is not a day or range (mon..sun, mon-fri)")
        start = DAYS.index(first)
        end = DAYS.index(last) if dash else start
        day = start
        days.add(day)
        while day != end:  # a range may wrap: fri-mon
            day = (day + 1) % 7
            days.add(day)
    return frozenset(days)


def _clock(raw: Any, path: str) -> int:
    match = _CLOCK.match(raw) if isinstance(raw, str) else None
    if match is None:
        raise CampaignError(path, f"{_short(raw)} is not a time of day; write HH:MM, e.g. 02:00")
    hours, minutes = int(match.group(1)), int(match.group(2))
    if minutes > 59 or hours > 24 or (hours == 24 and minutes):
        raise CampaignError(path, f"{raw} is not a time of day (00:00..24:00)")
    return hours * 60 + minutes


def _windows(raw: Any) -> tuple[Window, ...]:
    if not isinstance(raw, list | tuple):
        raise CampaignError("windows", f"expected a list of windows, got {_kind(raw)}")
    if len(raw) > MAX_WINDOWS:
        raise CampaignError("windows", f"at most {MAX_WINDOWS} windows")
    windows = []
    for i, item in enumerate(raw):
        path = f"windows[{i}]"
        m = _keys(item, path, ("days", "start", "end"))
        for key in ("start", "end"):
            if key not in m:
                raise CampaignError(f"{path}.{key}", "missing; write HH:MM in the device's time")
        start = _clock(m["start"], f"{path}.start")
        end = _clock(m["end"], f"{path}.end")
        if start == 1440:
            raise CampaignError(f"{path}.start", "24:00 is the end of a day; write 00:00")
        if start == end or (start == 0 and end == 0):
            raise CampaignError(f"{path}.end", "equals start; for all day write 00:00 .. 24:00")
        windows.append(Window(_days(m.get("days", "daily"), f"{path}.days"), start, end))
    return tuple(windows)


def _deadlines(raw: Any) -> Deadlines:
    m = _keys(raw, "deadlines", ("delivered", "applied", "registered", "verified"))
    d = Deadlines()
    return Deadlines(
        *(
            parse_duration(m.get(key, getattr(d, f"{key}_s")), f"deadlines.{key}")
            for key in ("delivered", "applied", "registered", "verified")
        )
    )


def _retry(raw: Any) -> RetrySpec:
    m = _keys(raw, "retry", ("max_attempts", "backoff", "backoff_cap"))
    d = RetrySpec()
    attempts = _int(m.get("max_attempts", d.max_attempts), "retry.max_attempts", minimum=1)
    backoff = parse_duration(m.get("backoff", d.backoff_s), "retry.backoff")
    cap = parse_duration(m.get("backoff_cap", max(d.backoff_cap_s, backoff)), "retry.backoff_cap")
    if cap < backoff:
        raise CampaignError(
            "retry.backoff_cap", f"{cap:g}s is below backoff {backoff:g}s; raise it"
        )
    return RetrySpec(attempts, backoff, cap)


_GATE_PCTS = (
    "max_failure_pct",
    "max_timeout_pct",
    "min_ack_pct",
    "min_verified_pct",
    "max_deregistration_excess_pct",
    "max_missed_update_excess_pct",
    "max_error_excess_pct",
)
_GATE_COUNTS = ("max_failures", "max_timeouts")


def _gates(raw: Any) -> GateSpec:
    m = _keys(raw, "gates", ("min_sample", *_GATE_COUNTS, *_GATE_PCTS, "cohort_by"))
    d = GateSpec()
    values: dict[str, Any] = {
        "min_sample": _int(m.get("min_sample", d.min_sample), "gates.min_sample", minimum=1)
    }
    for key in _GATE_COUNTS:
        value = m.get(key, getattr(d, key))
        values[key] = None if value is None else _int(value, f"gates.{key}", minimum=0)
    for key in _GATE_PCTS:
        value = m.get(key, getattr(d, key))
        values[key] = None if value is None else _percent(value, f"gates.{key}")
    cohort_raw = m.get("cohort_by", [s.value for s in d.cohort_by])
    if not isinstance(cohort_raw, list | tuple):
        raise CampaignError("gates.cohort_by", "give a list, e.g. [region, carrier]")
    scopes: list[Scope] = []
    for i, item in enumerate(cohort_raw):
        scope = _enum(item, f"gates.cohort_by[{i}]", Scope)
        if scope is Scope.BATCH:
            raise CampaignError(
                f"gates.cohort_by[{i}]",
                "the batch is always judged; list region/carrier/policy_group",
            )
        if scope in scopes:
            raise CampaignError(f"gates.cohort_by[{i}]", f"{scope.value} is listed twice")
        scopes.append(scope)
    values["cohort_by"] = tuple(scopes)
    return GateSpec(**values)


# -- the spec ------------------------------------------------------------------------------------


def parse_spec(raw: Mapping[str, Any], *, resolve: Resolver | None = None) -> CampaignSpec:
    """The :class:`CampaignSpec` from a YAML/JSON-loaded mapping (keys: module docstring and
    docs/CAMPAIGNS.md); raise :class:`CampaignError` (and nothing else) when it is wrong.

    ``resolve`` turns each ``change`` entry's value into a :class:`Component` (the API
    resolves bundle names, firmware image ids and APN profile names); without it the value
    is normalised by :func:`lifecycle.state.dimensions.parse_desired`. Entries in the resolved
    form ``{dimension, value, artifact, size, overlays}`` (what :func:`spec_to_dict` writes)
    are taken as they are, without calling ``resolve``.
    """
    m = _keys(raw, "", TOP_KEYS)
    kind = m.get("kind", "change")
    if kind not in KINDS:
        raise CampaignError("kind", f"{_short(kind)} is not one of {', '.join(KINDS)}")
    if kind == "esim":
        m = {**m, "change": _esim_kind(m)}
    elif "esim" in m:
        raise CampaignError("esim", "esim: {...} goes with kind: esim (or put it in change)")
    for key in ("name", "selector", "change"):
        if key not in m:
            raise CampaignError(key, "missing; every campaign needs name, selector and change")
    name = _text(m["name"], "name", maximum=MAX_NAME)
    selector = _text(m["selector"], "selector", maximum=4096, empty=True)
    try:
        parse_selector(selector)
    except SelectorError as exc:
        raise CampaignError("selector", str(exc)) from None
    tenant_raw = m.get("tenant")
    tenant = None if tenant_raw is None else _text(tenant_raw, "tenant", maximum=128)
    d = CampaignSpec(name, selector, ())
    return CampaignSpec(
        name=name,
        selector=selector,
        components=_change(m["change"], resolve),
        tenant=tenant,
        membership=_enum(m.get("membership", d.membership.value), "membership", Membership),
        canary=_canary(m.get("canary", {})),
        waves=_waves(m["waves"]) if "waves" in m else d.waves,
        pacing=_pacing(m.get("pacing", {})),
        windows=_windows(m.get("windows", [])),
        deadlines=_deadlines(m.get("deadlines", {})),
        retry=_retry(m.get("retry", {})),
        gates=_gates(m.get("gates", {})),
        on_failure=_enum(m.get("on_failure", d.on_failure.value), "on_failure", OnFailure),
        revert_scope=_enum(m.get("revert_scope", d.revert_scope.value), "revert_scope", Scope),
        description=_text(
            m.get("description", ""), "description", maximum=MAX_DESCRIPTION, empty=True
        ),
    )


def _clock_text(minute: int) -> str:
    return f"{minute // 60:02d}:{minute % 60:02d}"


def spec_to_dict(spec: CampaignSpec) -> dict[str, Any]:
    """The JSON-safe form of ``spec`` with every setting explicit: the inverse of
    :func:`parse_spec` (``parse_spec(spec_to_dict(s)) == s``)."""
    return {
        "name": spec.name,
        "description": spec.description,
        "selector": spec.selector,
        "tenant": spec.tenant,
        "change": [
            {
                "dimension": c.dimension.value,
                "value": dict(c.value),
                "artifact": c.artifact,
                "size": c.size,
                "overlays": {k: dict(v) for k, v in c.overlays.items()},
            }
            for c in spec.components
        ],
        "membership": spec.membership.value,
        "canary": {
            "per_stratum": spec.canary.per_stratum,
            "max_devices": spec.canary.max_devices,
            "bake": spec.canary.bake_s,
            "approval": spec.canary.approval,
        },
        "waves": [
            {"count": w.count, "bake": w.bake_s}
            if w.count is not None
            else {"percent": w.percent, "bake": w.bake_s}
            for w in spec.waves
        ],
        "pacing": {
            "rate": spec.pacing.rate,
            "growth_factor": spec.pacing.growth_factor,
            "growth_every": spec.pacing.growth_every,
            "max_rate": spec.pacing.max_rate,
            "concurrency": spec.pacing.concurrency,
            "per_carrier": dict(spec.pacing.per_carrier),
        },
        "windows": [
            {
                "days": [DAYS[d] for d in sorted(w.days)],
                "start": _clock_text(w.start_minute),
                "end": _clock_text(w.end_minute),
            }
            for w in spec.windows
        ],
        "deadlines": {
            "delivered": spec.deadlines.delivered_s,
            "applied": spec.deadlines.applied_s,
            "registered": spec.deadlines.registered_s,
            "verified": spec.deadlines.verified_s,
        },
        "retry": {
            "max_attempts": spec.retry.max_attempts,
            "backoff": spec.retry.backoff_s,
            "backoff_cap": spec.retry.backoff_cap_s,
        },
        "gates": {
            "min_sample": spec.gates.min_sample,
            **{key: getattr(spec.gates, key) for key in (*_GATE_COUNTS, *_GATE_PCTS)},
            "cohort_by": [s.value for s in spec.gates.cohort_by],
        },
        "on_failure": spec.on_failure.value,
        "revert_scope": spec.revert_scope.value,
    }


__all__ = [
    "DAYS",
    "KINDS",
    "Resolver",
    "check_phases",
    "esim_switch",
    "parse_duration",
    "parse_spec",
    "spec_to_dict",
]

"""Settings of ``fleetloop serve``: flag > environment (``FLEETLOOP_*``) > TOML file > default.

Every setting is declared once in :data:`SETTINGS` with its flag, environment variable, TOML
key, default and parser; ``docs/CONFIG.md`` is the table of the same. Resolution is a pure
function of three mappings (:func:`resolve`), so the precedence is tested without a process.

Click's own ``envvar`` is not used on purpose: it ranks the environment above the default but
knows nothing of the TOML file, which must sit between the two.

Every error is a :class:`SettingsError` naming where the bad value came from (the flag, the
variable, or ``file:key``) and what a good one looks like.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

ENV_PREFIX = "FLEETLOOP_"
LOG_FORMATS = ("kv", "json")
LOG_LEVELS = ("debug", "info", "warning", "error")


class SettingsError(ValueError):
    """A setting has an invalid value, or the config file cannot be read."""


@dataclass(frozen=True, slots=True)
class Listen:
    """A socket address to bind: ``host`` ``None`` means the component's default interface."""

    host: str | None
    port: int

    def __str__(self) -> str:
        host = self.host or "*"
        return f"[{host}]:{self.port}" if ":" in host else f"{host}:{self.port}"


@dataclass(frozen=True, slots=True)
class ServeSettings:
    """Everything ``fleetloop serve`` needs, resolved and validated."""

    data_dir: Path
    coap: Listen = Listen(None, 5683)
    coaps: Listen | None = Listen(None, 5684)
    bs_coap: Listen | None = Listen(None, 5783)
    bs_coaps: Listen | None = Listen(None, 5784)
    api: Listen = Listen("127.0.0.1", 8080)
    database_url: str | None = None
    secure_only: bool = False
    objects: tuple[Path, ...] = ()
    x509_cert: Path | None = None
    x509_key: Path | None = None
    x509_ca: Path | None = None
    log_format: Literal["kv", "json"] = "kv"
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    esipa_https: Listen | None = None
    eim_id: str = "eim.fleetloop.local"
    eim_ci: Path | None = None
    eim_identities: Path | None = None
    telemetry_max_age: float | None = 30 * 86400.0
    telemetry_max_rows: int | None = 100_000
    telemetry_retention_interval: float = 60.0
    ephemeral_ports: bool = False
    config_file: Path | None = None
    sources: Mapping[str, str] = field(default_factory=dict)
    """For each setting, where its value came from: ``flag``, ``env``, ``file`` or ``default``."""


def default_data_dir(env: Mapping[str, str] | None = None) -> Path:
    """``FLEETLOOP_DATA_DIR``, else ``$XDG_DATA_HOME/fleetloop``, else ``~/.local/share/fleetloop``.

    Per user and not the working directory, so that ``serve`` and the CLI commands find the same
    directory from wherever they are run.
    """
    env = os.environ if env is None else env
    explicit = env.get(ENV_PREFIX + "DATA_DIR")
    if explicit:
        return Path(explicit).expanduser()
    xdg = env.get("XDG_DATA_HOME")
    if xdg and Path(xdg).is_absolute():
        return Path(xdg) / "fleetloop"
    return Path.home() / ".local" / "share" / "fleetloop"


# -- parsers: (raw value, where it came from) -> typed value ------------------------------------


def _port(text: str, where: str) -> int:
    if not text.isascii() or not text.isdigit() or not 0 <= int(text) <= 65535:
        raise SettingsError(f"{where}: {text!r} is not a port; give a number 0-65535")
    return int(text)


def parse_listen(raw: object, where: str, *, default_host: str | None = None) -> Listen:
    """``PORT``, ``HOST:PORT`` or ``[IPv6]:PORT``; port 0 binds an ephemeral port."""
    if isinstance(raw, bool):
        raise SettingsError(f"{where}: expected a port or HOST:PORT, got {raw!r}")
    if isinstance(raw, int):
        return Listen(default_host, _port(str(raw), where))
    if not isinstance(raw, str) or not raw.strip():
        raise SettingsError(f"{where}: expected a port or HOST:PORT, got {raw!r}")
    text = raw.strip()
    if text.startswith("["):
        host, sep, port = text[1:].partition("]:")
        if not sep or not host:
            raise SettingsError(f"{where}: {text!r} is not [IPv6]:PORT (e.g. [::1]:5683)")
        return Listen(host, _port(port, where))
    if text.count(":") == 1:
        host, _, port = text.partition(":")
        return Listen(host or default_host, _port(port, where))
    if ":" in text:
        raise SettingsError(f"{where}: write an IPv6 address in brackets: [{text}]:PORT")
    return Listen(default_host, _port(text, where))


_OFF = {"off", "none", "disabled", "false", "no"}


def _optional_listen(raw: object, where: str) -> Listen | None:
    if raw is False or (isinstance(raw, str) and raw.strip().lower() in _OFF):
        return None
    return parse_listen(raw, where)


def _api(raw: object, where: str) -> Listen:
    listen = parse_listen(raw, where, default_host="127.0.0.1")
    return listen


def _bool(raw: object, where: str) -> bool:
    if isinstance(raw, bool):
        return raw
    if isinstance(raw, str):
        lowered = raw.strip().lower()
        if lowered in ("1", "true", "yes", "on"):
            return True
        if lowered in ("0", "false", "no", "off", ""):
            return False
    raise SettingsError(f"{where}: {raw!r} is not a boolean; use true or false")


def _choice(options: tuple[str, ...]) -> Callable[[object, str], str]:
    def parse(raw: object, where: str) -> str:
        if isinstance(raw, str) and raw.strip().lower() in options:
            return raw.strip().lower()
        raise SettingsError(f"{where}: {raw!r} is not one of {', '.join(options)}")

    return parse


def _text(raw: object, where: str) -> str:
    if not isinstance(raw, str) or not raw.strip():
        raise SettingsError(f"{where}: expected non-empty text, got {raw!r}")
    return raw.strip()


def _path(raw: object, where: str) -> Path:
    if isinstance(raw, os.PathLike):
        raw = os.fspath(raw)
    return Path(_text(raw, where)).expanduser()


def _paths(raw: object, where: str) -> tuple[Path, ...]:
    if isinstance(raw, str):
        items: list[object] = [p for p in raw.split(os.pathsep) if p]
    elif isinstance(raw, list | tuple):
        items = list(raw)
    else:
        raise SettingsError(f"{where}: expected a list of directories, got {raw!r}")
    return tuple(_path(item, where) for item in items)


_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}


def _duration(raw: object, where: str) -> float:
    """Seconds from ``3600``, ``90s``, ``15m``, ``12h``, ``30d`` or ``2w``."""
    if isinstance(raw, int | float) and not isinstance(raw, bool):
        text = str(raw)
    elif isinstance(raw, str):
        text = raw.strip().lower()
    else:
        raise SettingsError(f"{where}: expected a duration such as 30d or 3600, got {raw!r}")
    unit = _UNITS.get(text[-1:])
    number = text[:-1] if unit is not None else text
    try:
        seconds = float(number) * (unit or 1.0)
    except ValueError:
        raise SettingsError(
            f"{where}: {raw!r} is not a duration; use seconds or a number with s, m, h, d or w "
            "(e.g. 30d)"
        ) from None
    if not seconds > 0 or seconds != seconds or seconds == float("inf"):
        raise SettingsError(f"{where}: {raw!r} must be a positive duration")
    return seconds


def _duration_or_off(raw: object, where: str) -> float | None:
    if raw is False or (isinstance(raw, str) and raw.strip().lower() in _OFF):
        return None
    return _duration(raw, where)


def _count_or_off(raw: object, where: str) -> int | None:
    if raw is False or (isinstance(raw, str) and raw.strip().lower() in _OFF):
        return None
    text = str(raw).strip().replace("_", "") if isinstance(raw, int | str) else ""
    if isinstance(raw, bool) or not text.isascii() or not text.isdigit() or int(text) < 1:
        raise SettingsError(f"{where}: {raw!r} is not a positive whole number (or off)")
    return int(text)


@dataclass(frozen=True, slots=True)
class Setting:
    """One setting: its names in the three sources, its default and its parser."""

    name: str
    flag: str
    parse: Callable[[object, str], Any]
    default: Any
    help: str

    @property
    def env(self) -> str:
        return ENV_PREFIX + self.name.upper()


SETTINGS: tuple[Setting, ...] = (
    Setting("data_dir", "--data-dir", _path, None, "data directory (database, token, api.json)"),
    Setting("coap", "--coap", parse_listen, Listen(None, 5683), "DM server CoAP (UDP) port"),
    Setting("coaps", "--coaps", _optional_listen, Listen(None, 5684), "DM server CoAPs port"),
    Setting("bs_coap", "--bs-coap", _optional_listen, Listen(None, 5783), "bootstrap CoAP"),
    Setting("bs_coaps", "--bs-coaps", _optional_listen, Listen(None, 5784), "bootstrap CoAPs"),
    Setting("api", "--api", _api, Listen("127.0.0.1", 8080), "management API HOST:PORT"),
    Setting("database_url", "--database-url", _text, None, "PostgreSQL URL (default: SQLite)"),
    Setting("secure_only", "--secure-only", _bool, False, "refuse NoSec without a grant"),
    Setting("objects", "--objects", _paths, (), "extra OMA DDF XML folders"),
    Setting("x509_cert", "--x509-cert", _path, None, "server certificate chain (PEM) for CoAPs"),
    Setting("x509_key", "--x509-key", _path, None, "server private key (PEM, EC P-256)"),
    Setting("x509_ca", "--x509-ca", _path, None, "CA certificate(s) device certificates chain to"),
    Setting(
        "telemetry_max_age",
        "--telemetry-max-age",
        _duration_or_off,
        30 * 86400.0,
        "telemetry history kept (e.g. 30d; off: no age bound)",
    ),
    Setting(
        "telemetry_max_rows",
        "--telemetry-max-rows",
        _count_or_off,
        100_000,
        "telemetry history rows kept per device (off: no bound)",
    ),
    Setting(
        "telemetry_retention_interval",
        "--telemetry-retention-interval",
        _duration,
        60.0,
        "how often retention runs",
    ),
    Setting("log_format", "--log-format", _choice(LOG_FORMATS), "kv", "kv or json"),
    Setting("log_level", "--log-level", _choice(LOG_LEVELS), "info", "log level"),
    Setting("esipa_https", "--esipa-https", _optional_listen, None, "eIM ESipa HTTPS listener"),
    Setting("eim_id", "--eim-id", _text, "eim.fleetloop.local", "the eIM's eimId"),
    Setting("eim_ci", "--eim-ci", _path, None, "CI certificates (PEM) eUICC chains lead to"),
    Setting("eim_identities", "--eim-identities", _path, None, "more eIM identities (JSON)"),
    Setting(
        "ephemeral_ports",
        "--ephemeral-ports",
        _bool,
        False,
        "every listener on a free port (port 0): CoAP, CoAPs, bootstrap, API, eIM",
    ),
)
LISTENERS = ("coap", "coaps", "bs_coap", "bs_coaps", "api", "esipa_https")
"""The settings that open a socket: ``--ephemeral-ports`` sets each one's port to 0."""
BY_NAME = {s.name: s for s in SETTINGS}
CONFIG_ENV = ENV_PREFIX + "CONFIG"


def load_toml(path: Path) -> dict[str, Any]:
    """The settings table of a TOML file: top-level keys, or a ``[serve]`` table.

    Unknown keys are an error rather than ignored: a misspelt ``secure_onyl = true`` silently
    ignored would leave a server open that its operator believes closed.
    """
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise SettingsError(f"config file {path} does not exist; check --config") from None
    except OSError as err:
        raise SettingsError(f"config file {path} cannot be read: {err.strerror}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as err:
        raise SettingsError(f"config file {path} is not valid TOML: {err}") from None
    table = data.get("serve", data) if isinstance(data.get("serve"), dict) else data
    unknown = sorted(set(table) - set(BY_NAME) - {"serve"})
    if unknown:
        known = ", ".join(BY_NAME)
        raise SettingsError(f"{path}: unknown key(s) {', '.join(unknown)}; known keys: {known}")
    return dict(table)


def resolve(
    flags: Mapping[str, object | None],
    env: Mapping[str, str],
    toml: Mapping[str, object] | None = None,
    *,
    config_file: Path | None = None,
) -> ServeSettings:
    """Merge the three sources (flag > env > TOML > default) and validate every value."""
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    toml = toml or {}
    label = str(config_file) if config_file is not None else "config"
    for setting in SETTINGS:
        flag_value = flags.get(setting.name)
        if flag_value is not None and flag_value != ():
            values[setting.name] = setting.parse(flag_value, setting.flag)
            sources[setting.name] = "flag"
        elif env.get(setting.env, "") != "":
            values[setting.name] = setting.parse(env[setting.env], setting.env)
            sources[setting.name] = "env"
        elif setting.name in toml:
            values[setting.name] = setting.parse(toml[setting.name], f"{label}:{setting.name}")
            sources[setting.name] = "file"
        else:
            values[setting.name] = setting.default
            sources[setting.name] = "default"
    x509 = [values[k] is not None for k in ("x509_cert", "x509_key", "x509_ca")]
    if any(x509) and not all(x509):
        raise SettingsError(
            "certificate mode needs all three of --x509-cert, --x509-key and --x509-ca "
            "(server chain, its key, the CA that signs device certificates)"
        )
    if values["data_dir"] is None:
        values["data_dir"] = default_data_dir(env)
    if values["ephemeral_ports"]:
        # every listener that is on keeps its host and takes a free port; off stays off
        for name in LISTENERS:
            listen = values[name]
            if listen is not None:
                values[name] = Listen(listen.host, 0)
    _check_ports(values)
    return ServeSettings(**values, config_file=config_file, sources=sources)


def _check_ports(values: Mapping[str, Any]) -> None:
    """Two sockets of this process on one fixed UDP port would fail late and obscurely."""
    seen: dict[int, str] = {}
    for name in ("coap", "coaps", "bs_coap", "bs_coaps"):
        listen: Listen | None = values[name]
        if listen is None or listen.port == 0:
            continue
        if listen.port in seen:
            raise SettingsError(
                f"{name} and {seen[listen.port]} both use UDP port {listen.port}; give each its "
                "own port (or 0 for an ephemeral one)"
            )
        seen[listen.port] = name


def load(
    flags: Mapping[str, object | None],
    env: Mapping[str, str] | None = None,
    config_file: Path | str | None = None,
) -> ServeSettings:
    """Resolve from the flags, the process environment and ``--config``/``FLEETLOOP_CONFIG``."""
    env = os.environ if env is None else env
    chosen = config_file or env.get(CONFIG_ENV) or None
    path = Path(chosen).expanduser() if chosen else None
    toml = load_toml(path) if path is not None else None
    return resolve(flags, env, toml, config_file=path)

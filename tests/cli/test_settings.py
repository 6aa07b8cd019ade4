"""``fleetloop serve`` settings: flag > environment > TOML > default, and errors that say where."""

from __future__ import annotations

from pathlib import Path

import pytest

from cli.settings import (
    SETTINGS,
    Listen,
    SettingsError,
    default_data_dir,
    load,
    load_toml,
    parse_listen,
    resolve,
)

HOME_ENV = {"HOME": "/home/op"}


def test_defaults_are_the_documented_ports() -> None:
    settings = resolve({}, {"XDG_DATA_HOME": "/xdg"})
    assert settings.coap == Listen(None, 5683)
    assert settings.coaps == Listen(None, 5684)
    assert settings.bs_coap == Listen(None, 5783)
    assert settings.bs_coaps == Listen(None, 5784)
    assert settings.api == Listen("127.0.0.1", 8080)
    assert settings.data_dir == Path("/xdg/fleetloop")
    assert settings.secure_only is False
    assert settings.database_url is None
    assert set(settings.sources.values()) == {"default"}


def test_flag_beats_env_beats_toml_beats_default() -> None:
    toml = {"coap": 1001, "coaps": 1002, "bs_coap": 1003, "api": "127.0.0.1:1004"}
    env = {"FLEETLOOP_COAP": "2001", "FLEETLOOP_COAPS": "2002"}
    flags = {"coap": "3001"}
    settings = resolve(flags, env, toml)
    assert settings.coap.port == 3001
    assert settings.coaps is not None and settings.coaps.port == 2002
    assert settings.bs_coap is not None and settings.bs_coap.port == 1003
    assert settings.api == Listen("127.0.0.1", 1004)
    assert settings.bs_coaps == Listen(None, 5784)
    assert settings.sources["coap"] == "flag"
    assert settings.sources["coaps"] == "env"
    assert settings.sources["bs_coap"] == "file"
    assert settings.sources["bs_coaps"] == "default"


def test_every_setting_has_an_env_variable_and_a_toml_key(tmp_path: Path) -> None:
    config = tmp_path / "fleetloop.toml"
    config.write_text(
        'data_dir = "/srv/fl"\ncoap = "0.0.0.0:6000"\ncoaps = "off"\nbs_coap = 0\n'
        'bs_coaps = "off"\napi = "[::1]:9000"\n'
        'database_url = "postgresql+psycopg://u@db/fl"\nsecure_only = true\n'
        'objects = ["/opt/ddf"]\nlog_format = "json"\nlog_level = "debug"\n'
    )
    settings = load({}, env={}, config_file=config)
    assert settings.data_dir == Path("/srv/fl")
    assert settings.coap == Listen("0.0.0.0", 6000)
    assert settings.coaps is None
    assert settings.bs_coap == Listen(None, 0)
    assert settings.api == Listen("::1", 9000)
    assert settings.database_url == "postgresql+psycopg://u@db/fl"
    assert settings.secure_only is True
    assert settings.objects == (Path("/opt/ddf"),)
    assert settings.log_format == "json"
    assert settings.log_level == "debug"
    assert {s.env for s in SETTINGS} >= {
        "FLEETLOOP_DATA_DIR",
        "FLEETLOOP_COAP",
        "FLEETLOOP_COAPS",
        "FLEETLOOP_BS_COAP",
        "FLEETLOOP_BS_COAPS",
        "FLEETLOOP_API",
        "FLEETLOOP_DATABASE_URL",
        "FLEETLOOP_SECURE_ONLY",
    }


def test_the_config_file_may_come_from_the_environment_and_use_a_serve_table(
    tmp_path: Path,
) -> None:
    config = tmp_path / "c.toml"
    config.write_text("[serve]\nsecure_only = true\n")
    settings = load({}, env={"FLEETLOOP_CONFIG": str(config), "FLEETLOOP_SECURE_ONLY": ""})
    assert settings.secure_only is True
    assert settings.config_file == config
    overridden = load({"secure_only": False}, env={"FLEETLOOP_CONFIG": str(config)})
    assert overridden.secure_only is False


def test_the_data_dir_defaults_per_user() -> None:
    assert default_data_dir({"FLEETLOOP_DATA_DIR": "/d"}) == Path("/d")
    assert default_data_dir({"XDG_DATA_HOME": "/x"}) == Path("/x/fleetloop")
    assert default_data_dir({}) == Path.home() / ".local" / "share" / "fleetloop"
    assert resolve({}, {"FLEETLOOP_DATA_DIR": "/e"}).data_dir == Path("/e")


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("5683", Listen(None, 5683)),
        (0, Listen(None, 0)),
        ("127.0.0.1:0", Listen("127.0.0.1", 0)),
        ("[::1]:5683", Listen("::1", 5683)),
        (":7000", Listen(None, 7000)),
    ],
)
def test_listen_addresses(raw: object, expected: Listen) -> None:
    assert parse_listen(raw, "--coap") == expected


@pytest.mark.parametrize(
    ("flags", "env", "fragment"),
    [
        ({"coap": "http"}, {}, "--coap: 'http' is not a port"),
        ({}, {"FLEETLOOP_COAPS": "70000"}, "FLEETLOOP_COAPS: '70000' is not a port"),
        ({"api": "::1:80"}, {}, "[::1:80]:PORT"),
        ({}, {"FLEETLOOP_SECURE_ONLY": "perhaps"}, "FLEETLOOP_SECURE_ONLY: 'perhaps'"),
        ({"log_format": "xml"}, {}, "kv, json"),
        ({"coap": "5683", "coaps": "5683"}, {}, "both use UDP port 5683"),
        ({"x509_cert": "/c.pem"}, {}, "--x509-key"),
    ],
)
def test_bad_values_say_where_they_came_from(
    flags: dict[str, object], env: dict[str, str], fragment: str
) -> None:
    with pytest.raises(SettingsError) as caught:
        resolve(flags, env)
    assert fragment in str(caught.value)


def test_toml_errors_name_the_file_and_the_key(tmp_path: Path) -> None:
    config = tmp_path / "bad.toml"
    config.write_text("secure_onyl = true\n")
    with pytest.raises(SettingsError, match="unknown key\\(s\\) secure_onyl; known keys: data_dir"):
        load_toml(config)
    config.write_text("coap = [1\n")
    with pytest.raises(SettingsError, match="not valid TOML"):
        load_toml(config)
    with pytest.raises(SettingsError, match="does not exist"):
        load_toml(tmp_path / "missing.toml")
    config.write_text('coap = "x"\n')
    with pytest.raises(SettingsError, match=f"{config}:coap"):
        load({}, env={}, config_file=config)


def test_flags_may_be_paths_as_click_passes_them() -> None:
    settings = resolve(
        {"data_dir": Path("/srv/x"), "objects": (Path("/a"), Path("/b")), "x509_cert": None},
        {},
    )
    assert settings.data_dir == Path("/srv/x")
    assert settings.objects == (Path("/a"), Path("/b"))
    assert settings.sources["data_dir"] == "flag"

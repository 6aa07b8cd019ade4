"""The data directory: a private token made once, api.json for the CLI, one server per dir."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from cli.client import CliFailure, find_server, parse_sse
from cli.datadir import (
    ApiInfo,
    DataDirError,
    ServeLock,
    ensure_token,
    prepare,
    read_api_info,
    remove_api_info,
    write_api_info,
)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_the_token_is_generated_once_and_private(tmp_path: Path) -> None:
    data_dir = prepare(tmp_path / "data")
    assert mode(data_dir) == 0o700
    token, created = ensure_token(data_dir)
    assert created and len(token) >= 40
    assert mode(data_dir / "api-token") == 0o600
    again, created_again = ensure_token(data_dir)
    assert (again, created_again) == (token, False)


def test_a_token_file_readable_by_others_is_tightened(tmp_path: Path) -> None:
    ensure_token(tmp_path)
    os.chmod(tmp_path / "api-token", 0o644)
    ensure_token(tmp_path)
    assert mode(tmp_path / "api-token") == 0o600


def test_api_json_round_trips_and_is_private(tmp_path: Path) -> None:
    info = ApiInfo(url="http://127.0.0.1:1", token="t" * 20, pid=os.getpid(), api={"port": 1})
    path = write_api_info(tmp_path, info)
    assert mode(path) == 0o600
    assert read_api_info(tmp_path) == info
    remove_api_info(tmp_path, pid=os.getpid() + 1)  # someone else's: kept
    assert path.exists()
    remove_api_info(tmp_path, pid=os.getpid())
    assert read_api_info(tmp_path) is None


def test_a_second_server_on_the_same_data_dir_is_refused(tmp_path: Path) -> None:
    first = ServeLock(tmp_path)
    first.acquire()
    try:
        with pytest.raises(DataDirError, match=f"pid {os.getpid()}"):
            ServeLock(tmp_path).acquire()
    finally:
        first.release()
    again = ServeLock(tmp_path)
    again.acquire()
    again.release()


def test_the_cli_finds_the_server_from_the_environment_first(tmp_path: Path) -> None:
    write_api_info(
        tmp_path, ApiInfo(url="http://127.0.0.1:9/", token="file" * 5, pid=os.getpid(), api={})
    )
    from_dir = find_server({"FLEETLOOP_DATA_DIR": str(tmp_path)})
    assert (from_dir.url, from_dir.token) == ("http://127.0.0.1:9", "file" * 5)
    from_env = find_server(
        {"FLEETLOOP_DATA_DIR": str(tmp_path), "FLEETLOOP_URL": "http://h:1", "FLEETLOOP_TOKEN": "e"}
    )
    assert (from_env.url, from_env.token, from_env.source) == ("http://h:1", "e", "FLEETLOOP_URL")


def test_no_server_and_a_dead_server_are_reported_with_the_fix(tmp_path: Path) -> None:
    with pytest.raises(CliFailure) as caught:
        find_server({"FLEETLOOP_DATA_DIR": str(tmp_path)})
    assert caught.value.exit_code == 3
    assert "`fleetloop serve`" in caught.value.message
    write_api_info(tmp_path, ApiInfo(url="http://x", token="t" * 20, pid=2**22 + 7, api={}))
    with pytest.raises(CliFailure, match="is not running"):
        find_server({"FLEETLOOP_DATA_DIR": str(tmp_path)})
    with pytest.raises(CliFailure, match="FLEETLOOP_TOKEN is not"):
        find_server({"FLEETLOOP_DATA_DIR": str(tmp_path / "none"), "FLEETLOOP_URL": "http://x"})


def test_server_sent_events_are_decoded() -> None:
    lines = [
        ": keepalive",
        "",
        "event: ready",
        'data: {"type": "ready"}',
        "",
        "id: 1",
        "event: notification",
        'data: {"a":',
        "data: 1}",
        "",
        "data: plain",
        "",
    ]
    assert list(parse_sse(iter(lines))) == [
        ("ready", {"type": "ready"}),
        ("notification", {"a": 1}),
        ("message", "plain"),
    ]

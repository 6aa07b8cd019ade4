"""Issue 14 item 10: the data directory and every file ``serve`` keeps in it are private.

Against the real ``fleetloop serve`` process, started with the permissive umask (022) most
shells have: before the fix an operator-made 0755 directory was used as is and the SQLite
database and its WAL were created 0644 (every local user could read the PSKs)."""

from __future__ import annotations

import os
import sqlite3
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.hardening.serve_proc import ServeProcess, run_serve_once


@contextmanager
def permissive_umask() -> Iterator[None]:
    previous = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(previous)


def modes(data_dir: Path) -> dict[str, int]:
    found = {}
    for root, dirs, files in os.walk(data_dir):
        for name in [*dirs, *files]:
            path = Path(root) / name
            found[str(path.relative_to(data_dir))] = stat.S_IMODE(path.lstat().st_mode)
    return found


def test_serve_refuses_a_group_or_world_readable_data_directory_naming_the_chmod(
    tmp_path: Path,
) -> None:
    data_dir = tmp_path / "data"
    data_dir.mkdir(mode=0o755)
    os.chmod(data_dir, 0o755)
    with permissive_umask():
        code, stderr = run_serve_once(data_dir)
    assert code == 1
    assert f"chmod 700 {data_dir.resolve()}" in stderr
    assert "Traceback" not in stderr
    assert not (data_dir / "fleetloop.db").exists()  # nothing written before the refusal


def test_every_file_serve_creates_or_finds_in_its_data_directory_is_owner_only(
    tmp_path: Path,
) -> None:
    data_dir = tmp_path / "data"
    data_dir.mkdir(mode=0o700)
    # an older run left the database and a stray key readable by everyone
    sqlite3.connect(data_dir / "fleetloop.db").close()
    os.chmod(data_dir / "fleetloop.db", 0o644)
    (data_dir / "ca").mkdir(mode=0o755)
    os.chmod(data_dir / "ca", 0o755)
    server = ServeProcess(data_dir)
    with permissive_umask():
        server.start()
    try:
        with server.api() as api:  # a write, so the WAL and SHM exist
            assert api.put("/security/perm-dev", json={"allow_nosec": True}).status_code < 300
        found = modes(data_dir)
        assert "fleetloop.db-wal" in found and "fleetloop.db-shm" in found
        loose = {name: oct(mode) for name, mode in found.items() if mode & 0o077}
        assert loose == {}
    finally:
        assert server.stop() == 0


def test_a_fresh_data_directory_is_created_0700_with_a_0600_database(tmp_path: Path) -> None:
    data_dir = tmp_path / "fresh" / "data"
    server = ServeProcess(data_dir, log_path=tmp_path / "serve.log")
    with permissive_umask():
        server.start()
    try:
        assert stat.S_IMODE(data_dir.stat().st_mode) == 0o700
        assert stat.S_IMODE((data_dir / "fleetloop.db").stat().st_mode) == 0o600
    finally:
        assert server.stop() == 0

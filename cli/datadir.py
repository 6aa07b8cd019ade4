"""The data directory: where ``serve`` keeps its token and tells the CLI where it listens.

Layout (the directory is created 0700; every file ``serve`` keeps in it is 0600)::

    DATA_DIR/
      fleetloop.db    the SQLite store (unless --database-url points elsewhere)
      api-token       the management API's bearer token; generated once, kept across restarts
      api.json        written by a running server: API URL, token, bound ports, pid
      serve.lock      held (flock) by the running server: one server per data directory
      secrets.key     the key that encrypts PSKs and the CA key at rest (``docs/SECURITY.md``)

Permissions are enforced, not hoped for (issue 14 item 10): an existing directory that other
users can enter or list is refused with the ``chmod 700`` that fixes it (its files may already
have leaked, so the operator should know rather than have it silently tightened), and
:func:`lock_down` tightens what a start-up creates (umask 077, the SQLite file created 0600
before SQLite opens it -- SQLite gives its ``-wal`` and ``-shm`` files the database file's
mode) and every file an older run left group/world-readable.

``api.json`` records the ports actually bound, so ``--coap 0 --api 127.0.0.1:0`` (ephemeral
ports, as the tests use) can be discovered. It is removed on a clean shutdown; a stale one left
by a crash is recognised by its pid and reported as "not running".
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import secrets
import stat
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any

TOKEN_FILE = "api-token"
API_FILE = "api.json"
LOCK_FILE = "serve.lock"


class DataDirError(RuntimeError):
    """The data directory cannot be prepared or read; the message says what to do."""


PRIVATE_UMASK = 0o077
DATABASE_FILE = "fleetloop.db"


def prepare(data_dir: Path) -> Path:
    """Create the directory (0700) if needed; refuse a path that is not a directory, and an
    existing directory that other users can read, write or enter (the fix is in the message)."""
    try:
        data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    except FileExistsError:
        raise DataDirError(f"data directory {data_dir} exists and is not a directory") from None
    except OSError as err:
        raise DataDirError(f"cannot create data directory {data_dir}: {err.strerror}") from None
    if not data_dir.is_dir():
        raise DataDirError(f"data directory {data_dir} exists and is not a directory")
    mode = stat.S_IMODE(data_dir.stat().st_mode)
    if mode & 0o077:
        resolved = data_dir.resolve()
        raise DataDirError(
            f"data directory {resolved} is accessible by other users (mode {mode:04o}); it "
            f"holds the database, keys and the API token: run `chmod 700 {resolved}` (and "
            "check who could read it) and start again"
        )
    return data_dir.resolve()


def lock_down(data_dir: Path, *, sqlite_database: bool = True) -> list[Path]:
    """Keep everything ``serve`` writes under ``data_dir`` readable by its owner only.

    Sets the process umask to 077 (this is the server process: every file it creates from
    now on is private), creates the SQLite database file 0600 if it does not exist yet (so
    its WAL and SHM, which SQLite creates with the database file's mode, are 0600 too) and
    tightens every existing file (0600) and sub-directory (0700) that is group/world
    accessible (``sqlite_database`` False: the store is PostgreSQL, no file to create).
    Returns the paths it tightened, for the log.
    """
    os.umask(PRIVATE_UMASK)
    if sqlite_database:
        with contextlib.suppress(FileExistsError):
            os.close(os.open(data_dir / DATABASE_FILE, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    tightened: list[Path] = []
    for root, dirs, files in os.walk(data_dir):
        base = Path(root)
        for name in dirs:
            tightened += _tighten(base / name, 0o700)
        for name in files:
            tightened += _tighten(base / name, 0o600)
    return tightened


def _tighten(path: Path, private_mode: int) -> list[Path]:
    try:
        info = path.lstat()
    except FileNotFoundError:
        return []
    if stat.S_ISLNK(info.st_mode) or info.st_uid != os.getuid():
        return []
    mode = stat.S_IMODE(info.st_mode)
    if not mode & 0o077:
        return []
    os.chmod(path, mode & private_mode)
    return [path]


def _write_private(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically, readable by the owner only (0600)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def ensure_token(data_dir: Path) -> tuple[str, bool]:
    """The API token, generated (``secrets.token_urlsafe(32)``) on first start.

    Returns ``(token, created)``. A token file readable by others is tightened to 0600 rather
    than refused: it was ours to begin with, and refusing would only stop the server.
    """
    path = data_dir / TOKEN_FILE
    if path.exists():
        token = path.read_text(encoding="utf-8").strip()
        if len(token) < 16:
            raise DataDirError(
                f"{path} holds no usable token (shorter than 16 characters); delete it and "
                "restart `fleetloop serve` to generate a new one"
            )
        if path.stat().st_mode & 0o077:
            os.chmod(path, 0o600)
        return token, False
    token = secrets.token_urlsafe(32)
    _write_private(path, token + "\n")
    return token, True


def read_token(data_dir: Path) -> str | None:
    """The token file's content, or ``None`` when there is none (or it is not readable)."""
    try:
        return (data_dir / TOKEN_FILE).read_text(encoding="utf-8").strip() or None
    except OSError:
        return None


@dataclass(frozen=True, slots=True)
class ApiInfo:
    """What a running server tells its CLI (``api.json``)."""

    url: str
    token: str
    pid: int
    api: dict[str, Any]
    coap: dict[str, Any] | None = None
    coaps: dict[str, Any] | None = None
    database: str = ""
    version: str = ""
    started_at: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2) + "\n"


def write_api_info(data_dir: Path, info: ApiInfo) -> Path:
    path = data_dir / API_FILE
    _write_private(path, info.to_json())
    return path


def read_api_info(data_dir: Path) -> ApiInfo | None:
    """The running server's ``api.json``, or ``None`` when absent.

    Raises :class:`DataDirError` for a file that exists but cannot be used.
    """
    path = data_dir / API_FILE
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except PermissionError:
        raise DataDirError(
            f"{path} is not readable by this user; run the CLI as the user running `serve`, or "
            "set FLEETLOOP_URL and FLEETLOOP_TOKEN"
        ) from None
    except (OSError, ValueError) as err:
        raise DataDirError(f"{path} is unreadable ({err}); restart `fleetloop serve`") from None
    try:
        return ApiInfo(**raw)
    except TypeError as err:
        raise DataDirError(
            f"{path} was not written by this fleetloop ({err}); restart `fleetloop serve`"
        ) from None


def remove_api_info(data_dir: Path, pid: int | None = None) -> None:
    """Remove ``api.json`` (only if it is ``pid``'s, when given)."""
    path = data_dir / API_FILE
    with contextlib.suppress(FileNotFoundError, DataDirError):
        if pid is not None:
            info = read_api_info(data_dir)
            if info is not None and info.pid != pid:
                return
        path.unlink()


def pid_alive(pid: int) -> bool:
    """True when a process with ``pid`` exists (it may belong to another user)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class ServeLock:
    """An exclusive ``flock`` on ``serve.lock``: a second server on the same data directory
    would share its SQLite file, token and ``api.json``, and the CLI would talk to either."""

    def __init__(self, data_dir: Path) -> None:
        self.path = data_dir / LOCK_FILE
        self._handle: IO[str] | None = None

    def acquire(self) -> None:
        handle = open(self.path, "a+", encoding="utf-8")  # noqa: SIM115 (held until release)
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            handle.close()
            raise DataDirError(
                f"another `fleetloop serve` (pid {holder}) is using {self.path.parent}; stop it "
                "or give this one its own --data-dir"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        self._handle = handle

    def release(self) -> None:
        if self._handle is not None:
            with contextlib.suppress(OSError):
                fcntl.flock(self._handle.fileno(), fcntl.LOCK_UN)
            self._handle.close()
            self._handle = None

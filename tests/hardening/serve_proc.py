"""A real ``fleetloop serve`` subprocess on ephemeral ports, for the hardening tests.

The attack and fault tests of issue 14 run against the process an operator runs (console
script, own interpreter, real sockets), so a crash, a traceback in its log or a leaked file
mode is what the test sees -- not an in-process shortcut.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from lifecycle.api import app as _app_module

API_PREFIX: str = getattr(_app_module, "API_PREFIX", "")
"""Where the routes live (``/v1`` once the API is versioned); ``/health`` is outside it."""


def fleetloop() -> list[str]:
    """The console script next to this interpreter (the venv's), else ``python -m cli.main``."""
    script = Path(sys.executable).parent / "fleetloop"
    if script.exists():
        return [str(script)]
    found = shutil.which("fleetloop")
    return [found] if found else [sys.executable, "-m", "cli.main"]


def clean_env(data_dir: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLEETLOOP_")}
    env.update(FLEETLOOP_DATA_DIR=str(data_dir), **extra)
    return env


class ServeProcess:
    """One ``fleetloop serve`` run; :meth:`start` again after :meth:`stop` restarts it on the
    same data directory (and, with ``fixed_ports``, on the ports of the first run)."""

    def __init__(
        self,
        data_dir: Path,
        *,
        database_url: str | None = None,
        extra_args: tuple[str, ...] = (),
        env: dict[str, str] | None = None,
        log_path: Path | None = None,
    ) -> None:
        self.data_dir = data_dir
        self.database_url = database_url
        self.extra_args = extra_args
        self.env = env or {}
        self.log_path = log_path or data_dir.parent / f"{data_dir.name}-serve.log"
        self.process: subprocess.Popen[bytes] | None = None
        self.info: dict[str, Any] = {}

    def command(self, coap: int = 0, coaps: int = 0) -> list[str]:
        command = [
            *fleetloop(),
            "serve",
            "--data-dir",
            str(self.data_dir),
            "--coap",
            f"127.0.0.1:{coap}",
            "--coaps",
            f"127.0.0.1:{coaps}",
            "--bs-coap",
            "off",
            "--bs-coaps",
            "off",
            "--api",
            "127.0.0.1:0",
            "--log-format",
            "json",
            *self.extra_args,
        ]
        if self.database_url is not None:
            command += ["--database-url", self.database_url]
        return command

    def start(self, *, coap: int = 0, coaps: int = 0, timeout: float = 30.0) -> dict[str, Any]:
        api_file = self.data_dir / "api.json"
        if api_file.exists():
            api_file.unlink()
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            self.command(coap, coaps),
            env=clean_env(self.data_dir, **self.env),
            stdout=log,
            stderr=log,
        )
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(
                    f"serve exited early ({self.process.returncode}): {self.log()}"
                )
            if api_file.exists():
                try:
                    self.info = dict(json.loads(api_file.read_text()))
                except ValueError:
                    time.sleep(0.05)
                    continue
                return self.info
            time.sleep(0.05)
        raise AssertionError(f"serve did not write api.json in {timeout} s: {self.log()}")

    @property
    def coap_port(self) -> int:
        return int(self.info["coap"]["port"])

    @property
    def coaps_port(self) -> int:
        return int(self.info["coaps"]["port"])

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def api(self, prefix: str = API_PREFIX) -> httpx.Client:
        """An authenticated client on the versioned routes (``prefix=""``: the bare root)."""
        return httpx.Client(
            base_url=self.info["url"] + prefix,
            headers={"Authorization": f"Bearer {self.info['token']}"},
            timeout=10.0,
        )

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def stop(self, timeout: float = 20.0) -> int:
        """SIGTERM and wait; returns the exit code (SIGKILL after ``timeout``)."""
        if self.process is None:
            return 0
        process, self.process = self.process, None
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(5)
        return process.returncode

    def kill(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait(5)
            self.process = None


def run_serve_once(data_dir: Path, timeout: float = 30.0, **kwargs: Any) -> tuple[int, str]:
    """Run serve expecting it to refuse to start: ``(exit code, stderr)``."""
    server = ServeProcess(data_dir, **kwargs)
    done = subprocess.run(
        server.command(),
        env=clean_env(data_dir, **server.env),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    return done.returncode, done.stderr


def forget_dtls_sessions(data_dir: Path) -> int:
    """Delete the DTLS sessions a stopped (or killed) serve stored in its SQLite database, so
    that the next serve has lost them -- the recovery path of devices whose session the server
    no longer has (since issue 13 sessions otherwise survive a restart). Returns rows deleted."""
    import sqlite3

    with sqlite3.connect(data_dir / "fleetloop.db") as db:
        return db.execute("DELETE FROM dtls_session").rowcount

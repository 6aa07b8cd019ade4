"""The CLI's client of the management API: find the server, call it, turn failures into one line.

Where the server is: ``FLEETLOOP_URL`` + ``FLEETLOOP_TOKEN`` when set, else the ``api.json``
that ``fleetloop serve`` wrote into the data directory (``FLEETLOOP_DATA_DIR`` or the per-user
default). ``FLEETLOOP_URL`` without ``FLEETLOOP_TOKEN`` takes the token from the data
directory's ``api-token`` file (a server on this machine, reached by another address).

Every failure becomes a :class:`CliFailure` whose message is one line naming the device and the
fix, and whose exit code tells scripts what kind of failure it was:

====  ====================================================================================
1     the request failed: the device answered with an error, timed out, is not registered,
      or the input was refused (the message says which)
2     usage error (click's own code)
3     no server: not found, not reachable, or the token was refused
====  ====================================================================================
"""

from __future__ import annotations

import json
import os
from collections.abc import Generator, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from cli.datadir import DataDirError, pid_alive, read_api_info, read_token
from cli.settings import default_data_dir

EXIT_FAILED = 1
EXIT_NO_SERVER = 3
API_PREFIX = "/v1"
"""The API version the CLI speaks; command paths (``/devices``) are relative to it."""


class CliFailure(Exception):
    """A failure to print as one line (no traceback) with an exit code."""

    def __init__(self, message: str, exit_code: int = EXIT_FAILED) -> None:
        super().__init__(message)
        self.message = message
        self.exit_code = exit_code


@dataclass(frozen=True, slots=True)
class Target:
    """A server to talk to and where we learnt about it (for error messages)."""

    url: str
    token: str
    source: str


def find_server(env: Mapping[str, str] | None = None) -> Target:
    """The API URL and token, from the environment or the data directory (module docstring)."""
    env = os.environ if env is None else env
    data_dir = default_data_dir(env)
    url = env.get("FLEETLOOP_URL", "").strip()
    token = env.get("FLEETLOOP_TOKEN", "").strip()
    if url:
        if not token:
            token = read_token(data_dir) or ""
        if not token:
            raise CliFailure(
                "FLEETLOOP_URL is set but FLEETLOOP_TOKEN is not; set it to the server's token "
                "(the file api-token in the server's data directory)",
                EXIT_NO_SERVER,
            )
        return Target(url.rstrip("/"), token, "FLEETLOOP_URL")
    try:
        info = read_api_info(data_dir)
    except DataDirError as err:
        raise CliFailure(str(err), EXIT_NO_SERVER) from None
    if info is None:
        raise CliFailure(
            f"no running fleetloop server found in {data_dir} (no api.json); start one with "
            "`fleetloop serve`, or set FLEETLOOP_DATA_DIR (or FLEETLOOP_URL and FLEETLOOP_TOKEN)",
            EXIT_NO_SERVER,
        )
    if not pid_alive(info.pid):
        raise CliFailure(
            f"the fleetloop server recorded in {data_dir / 'api.json'} (pid {info.pid}) is not "
            "running; start it with `fleetloop serve`",
            EXIT_NO_SERVER,
        )
    return Target(info.url.rstrip("/"), token or info.token, str(data_dir / "api.json"))


def _body(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return None


def failure_message(response: httpx.Response, target: Target) -> CliFailure:
    """One line for an error response, phrased for the command line."""
    body = _body(response)
    detail: Mapping[str, Any] = body if isinstance(body, Mapping) else {}
    status = detail.get("status")
    endpoint = detail.get("endpoint")
    message = str(detail.get("message") or response.reason_phrase or response.status_code)
    if response.status_code == 401:
        return CliFailure(
            f"the API at {target.url} refused the token (from {target.source}); use the token "
            "in the server's data directory (api-token) or set FLEETLOOP_TOKEN",
            EXIT_NO_SERVER,
        )
    if status == "unknown_endpoint" and endpoint:
        return CliFailure(f"device {endpoint!r} is not registered; see `fleetloop devices list`")
    if status == "device_error":
        return CliFailure(message)
    if status == "timeout":
        return CliFailure(message)
    if status == "invalid_input":
        field = detail.get("field")
        return CliFailure(f"{field}: {message}" if field and field not in message else message)
    return CliFailure(message)


class ApiClient:
    """A thin synchronous httpx client with the bearer token and the error mapping."""

    def __init__(self, target: Target, *, timeout: float = 60.0) -> None:
        self.target = target
        self._client = httpx.Client(
            base_url=target.url + API_PREFIX,
            headers={"Authorization": f"Bearer {target.token}"},
            timeout=httpx.Timeout(timeout, connect=5.0),
        )

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> ApiClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _unreachable(self, err: httpx.TransportError) -> CliFailure:
        reason = str(err) or type(err).__name__
        return CliFailure(
            f"cannot reach the fleetloop API at {self.target.url} (from {self.target.source}): "
            f"{reason}; is `fleetloop serve` running?",
            EXIT_NO_SERVER,
        )

    def request(
        self,
        method: str,
        path: str,
        *,
        json_body: Any = None,
        params: Mapping[str, Any] | None = None,
        timeout: float | None = None,
    ) -> Any:
        """Call the API; the decoded JSON body on success, :class:`CliFailure` otherwise."""
        try:
            response = self._client.request(
                method,
                path,
                json=json_body,
                params={k: v for k, v in (params or {}).items() if v is not None},
                timeout=timeout if timeout is not None else httpx.USE_CLIENT_DEFAULT,
            )
        except httpx.TimeoutException:
            raise CliFailure(
                f"the fleetloop API at {self.target.url} did not answer {method} {path} in time; "
                "the device may be asleep or slow: retry, or check `fleetloop devices show`"
            ) from None
        except httpx.TransportError as err:
            raise self._unreachable(err) from None
        if response.status_code >= 400:
            raise failure_message(response, self.target)
        if response.status_code == 204 or not response.content:
            return None
        return _body(response)

    def events(
        self, params: Mapping[str, Any] | None = None
    ) -> Generator[tuple[str, Any], None, None]:
        """Server-sent events from ``/events`` as ``(event, data)``; ends when the server does."""
        query = {k: v for k, v in (params or {}).items() if v is not None}
        try:
            with self._client.stream(
                "GET",
                "/events",
                params=query,
                timeout=httpx.Timeout(None, connect=5.0),
                headers={"Accept": "text/event-stream"},
            ) as response:
                if response.status_code >= 400:
                    response.read()
                    raise failure_message(response, self.target)
                yield from parse_sse(response.iter_lines())
        except httpx.TransportError as err:
            raise self._unreachable(err) from None


def parse_sse(lines: Iterator[str]) -> Iterator[tuple[str, Any]]:
    """Decode a ``text/event-stream`` (WHATWG): ``event:``/``data:`` fields, blank line ends."""
    event = "message"
    data: list[str] = []
    for raw in lines:
        line = raw.rstrip("\r")
        if not line:
            if data:
                text = "\n".join(data)
                try:
                    yield event, json.loads(text)
                except ValueError:
                    yield event, text
            event, data = "message", []
            continue
        if line.startswith(":"):
            continue
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "event":
            event = value
        elif name == "data":
            data.append(value)


def data_dir_hint(env: Mapping[str, str] | None = None) -> Path:
    """The data directory the CLI looks in (for messages and ``--help``)."""
    return default_data_dir(os.environ if env is None else env)

"""The CLI's client of the management API: find the server, call it, turn failures into one line.

Where the server is: ``FLEETLOOP_URL`` + ``FLEETLOOP_TOKEN`` when set, else the context chosen
with ``--context`` / ``FLEETLOOP_CONTEXT`` or the current one (:mod:`cli.contexts`), else the
``api.json``
that ``fleetloop serve`` wrote into the data directory (``FLEETLOOP_DATA_DIR`` or the per-user
default). ``FLEETLOOP_URL`` without ``FLEETLOOP_TOKEN`` takes the token from the data
directory's ``api-token`` file (a server on this machine, reached by another address).

Every failure becomes a :class:`CliFailure` whose message is one line naming the device and the
fix, and whose exit code tells scripts what kind of failure it was:

====  ====================================================================================
1     the request failed: the device answered with an error, timed out, is not registered,
      the input or the token was refused (the message says which)
2     usage error: a mistake the CLI itself can see (bad option value, path, hex key, ...)
3     no server: none found, or nothing answered at its address
====  ====================================================================================
"""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Generator, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

from cli.checks import api_paths_to_commands, cli_words
from cli.contexts import ContextError, selected
from cli.datadir import DataDirError, pid_alive, read_api_info, read_token
from cli.settings import default_data_dir
from cli.wire import Answer, WireError, connect, exchange

EXIT_FAILED = 1
EXIT_USAGE = 2
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
        chosen = selected(env)
    except ContextError as err:
        raise CliFailure(str(err), EXIT_USAGE) from None
    if chosen is not None:
        name, entry = chosen
        if entry.get("url"):
            return Target(str(entry["url"]).rstrip("/"), str(entry["token"]), f"context {name}")
        data_dir = Path(str(entry["data_dir"]))
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


@dataclass(frozen=True, slots=True)
class Response:
    """What the CLI keeps of an HTTP answer (status line and body)."""

    status_code: int
    reason_phrase: str
    content: bytes

    def json(self) -> Any:
        return json.loads(self.content)


def _body(response: Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return None


def failure_message(response: Response, target: Target) -> CliFailure:
    """One line for an error response, phrased for the command line."""
    body = _body(response)
    detail: Mapping[str, Any] = body if isinstance(body, Mapping) else {}
    status = detail.get("status")
    endpoint = detail.get("endpoint")
    message = api_paths_to_commands(
        str(detail.get("message") or response.reason_phrase or response.status_code)
    )
    if response.status_code == 401:
        # the server answered: a request failure (1), not "no server" (3)
        return CliFailure(
            f"the API at {target.url} refused the token (from {target.source}); use the token "
            "in the server's data directory (api-token) or set FLEETLOOP_TOKEN"
        )
    if status == "unknown_endpoint" and endpoint:
        return CliFailure(f"device {endpoint!r} is not registered; see `fleetloop devices list`")
    if status == "device_error":
        return CliFailure(message)
    if status == "timeout":
        return CliFailure(message)
    if status == "invalid_input":
        # the server refused what the command line said: a usage error, in CLI words
        field = detail.get("field")
        return CliFailure(cli_words(message, field if isinstance(field, str) else None), 2)
    return CliFailure(message)


CONNECT_TIMEOUT = 5.0


def query_string(params: Mapping[str, Any] | None) -> str:
    """``?a=1&b=x&b=y`` from a mapping: ``None`` dropped, lists repeated, booleans lower-case
    (what FastAPI parses as ``bool``)."""
    pairs: list[tuple[str, str]] = []
    for key, value in (params or {}).items():
        values = value if isinstance(value, list | tuple) else [value]
        for item in values:
            if item is None:
                continue
            pairs.append(
                (key, ("true" if item else "false") if isinstance(item, bool) else str(item))
            )
    return f"?{urlencode(pairs)}" if pairs else ""


class ApiClient:
    """A small synchronous HTTP/1.1 client with the bearer token and the error mapping.

    It speaks HTTP through :mod:`cli.wire` rather than httpx on purpose: importing httpx costs
    the CLI more time than the whole request (``benchmarks/bench_cli.py``). One connection
    per request keeps it simple; on loopback a TCP connect costs a fraction of a millisecond.
    """

    def __init__(self, target: Target, *, timeout: float = 60.0) -> None:
        self.target = target
        self.timeout = timeout
        parts = urlsplit(target.url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise CliFailure(
                f"{target.url!r} (from {target.source}) is not an http:// or https:// URL",
                EXIT_NO_SERVER,
            )
        self._tls = parts.scheme == "https"
        self._host = parts.hostname
        self._port = parts.port or (443 if self._tls else 80)
        self._host_header = parts.netloc.rpartition("@")[2]
        self._base = parts.path.rstrip("/") + API_PREFIX
        self._headers = {
            "Authorization": f"Bearer {target.token}",
            "Accept": "application/json",
            "User-Agent": "fleetloop-cli",
        }

    def close(self) -> None:
        """Nothing to release: every request opens and closes its own connection."""

    def __enter__(self) -> ApiClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _unreachable(self, err: OSError | WireError) -> CliFailure:
        reason = str(err) or type(err).__name__
        return CliFailure(
            f"cannot reach the fleetloop API at {self.target.url} (from {self.target.source}): "
            f"{reason}; is `fleetloop serve` running?",
            EXIT_NO_SERVER,
        )

    def _slow(self, method: str, path: str) -> CliFailure:
        return CliFailure(
            f"the fleetloop API at {self.target.url} did not answer {method} {path} in time; "
            "the device may be asleep or slow: retry, or check `fleetloop devices show`"
        )

    def _open(
        self,
        method: str,
        path: str,
        params: Mapping[str, Any] | None,
        body: bytes | None,
        headers: Mapping[str, str],
        read_timeout: float | None,
    ) -> tuple[socket.socket, Answer]:
        """Connect (exit 3 when nothing answers) and send; the answer's head."""
        try:
            sock = connect(self._host, self._port, tls=self._tls, timeout=CONNECT_TIMEOUT)
        except OSError as err:
            raise self._unreachable(err) from None
        try:
            sock.settimeout(read_timeout)
            answer = exchange(
                sock,
                method,
                self._base + path + query_string(params),
                host=self._host_header,
                headers={**self._headers, **headers},
                body=body,
            )
        except TimeoutError:
            sock.close()
            raise self._slow(method, path) from None
        except (OSError, WireError) as err:
            sock.close()
            raise self._unreachable(err) from None
        return sock, answer

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
        body = None if json_body is None else json.dumps(json_body).encode()
        headers = {} if body is None else {"Content-Type": "application/json"}
        read_timeout = timeout if timeout is not None else self.timeout
        sock, answer = self._open(method, path, params, body, headers, read_timeout)
        try:
            response = Response(answer.status, answer.reason, answer.body())
        except TimeoutError:
            raise self._slow(method, path) from None
        except (OSError, WireError) as err:
            raise CliFailure(
                f"the fleetloop API at {self.target.url} broke off its answer to {method} "
                f"{path}: {err}; retry"
            ) from None
        finally:
            sock.close()
        if response.status_code >= 400:
            raise failure_message(response, self.target)
        if response.status_code == 204 or not response.content:
            return None
        return _body(response)

    def events(
        self, params: Mapping[str, Any] | None = None
    ) -> Generator[tuple[str, Any], None, None]:
        """Server-sent events from ``/events`` as ``(event, data)``; ends when the server does."""
        sock, answer = self._open(
            "GET", "/events", params, None, {"Accept": "text/event-stream"}, None
        )
        try:
            if answer.status >= 400:
                response = Response(answer.status, answer.reason, answer.body())
                raise failure_message(response, self.target)
            try:
                yield from parse_sse(answer.lines())
            except (OSError, WireError) as err:
                raise self._unreachable(err) from None
        finally:
            sock.close()


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

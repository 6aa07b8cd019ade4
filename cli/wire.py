"""Just enough HTTP/1.1 for the CLI: one request per connection, Content-Length or chunked.

Why not httpx or :mod:`http.client`: the CLI starts a fresh Python for every command, and
importing httpx (≈ 0.1 s) or even http.client (it pulls in :mod:`email` and :mod:`ssl`)
costs more than the request itself. What the CLI needs is small -- a request with a JSON
body, an answer's status and body, and a server-sent event stream read line by line -- so it
is written here on a plain socket (``ssl`` is imported only for ``https://``).
"""

from __future__ import annotations

import socket
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from io import BufferedReader

MAX_HEAD = 64 * 1024


class WireError(Exception):
    """The server's answer is not HTTP/1.1 as expected, or the connection broke mid-answer."""


@dataclass(slots=True)
class Answer:
    """Status line and headers (lower-case names) of an answer; the body is read from ``fp``."""

    status: int
    reason: str
    headers: dict[str, str]
    fp: BufferedReader

    def body(self) -> bytes:
        return b"".join(self.pieces())

    def pieces(self) -> Iterator[bytes]:
        """The body as it arrives: chunk by chunk, or in reads of up to 64 KiB."""
        if "chunked" in self.headers.get("transfer-encoding", "").lower():
            yield from _chunks(self.fp)
            return
        length = self.headers.get("content-length")
        if length is not None:
            remaining = int(length)
            while remaining > 0:
                data = self.fp.read(min(remaining, 65536))
                if not data:
                    raise WireError(f"connection closed with {remaining} bytes of the body unread")
                remaining -= len(data)
                yield data
            return
        while data := self.fp.read1(65536):
            yield data

    def lines(self) -> Iterator[str]:
        """The body as text lines (without the line end), for ``text/event-stream``."""
        pending = b""
        for piece in self.pieces():
            pending += piece
            *complete, pending = pending.split(b"\n")
            for line in complete:
                yield line.rstrip(b"\r").decode("utf-8", "replace")
        if pending:
            yield pending.decode("utf-8", "replace")


def _chunks(fp: BufferedReader) -> Iterator[bytes]:
    while True:
        size_line = fp.readline(MAX_HEAD)
        if not size_line:
            raise WireError("connection closed inside a chunked body")
        try:
            size = int(size_line.split(b";", 1)[0].strip(), 16)
        except ValueError:
            raise WireError(f"bad chunk size line {size_line[:40]!r}") from None
        if size == 0:
            while fp.readline(MAX_HEAD) not in (b"\r\n", b"\n", b""):
                pass  # trailers
            return
        data = fp.read(size)
        if len(data) < size:
            raise WireError("connection closed inside a chunk")
        fp.readline(MAX_HEAD)  # the CRLF after the chunk
        yield data


def connect(host: str, port: int, *, tls: bool, timeout: float) -> socket.socket:
    """A connected socket (TLS-wrapped for https, certificate checked), or ``OSError``."""
    sock = socket.create_connection((host, port), timeout=timeout)
    if tls:
        import ssl  # only https pays for it

        context = ssl.create_default_context()
        try:
            sock = context.wrap_socket(sock, server_hostname=host)
        except OSError:
            sock.close()
            raise
    return sock


def exchange(
    sock: socket.socket,
    method: str,
    target: str,
    *,
    host: str,
    headers: Mapping[str, str],
    body: bytes | None = None,
) -> Answer:
    """Send one request (``Connection: close``) and read the answer's head."""
    lines = [f"{method} {target} HTTP/1.1", f"Host: {host}", "Connection: close"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    if body is not None:
        lines.append(f"Content-Length: {len(body)}")
    sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + (body or b""))
    fp = sock.makefile("rb")
    status_line = fp.readline(MAX_HEAD)
    if not status_line:
        raise WireError("the server closed the connection without answering")
    version, _, rest = status_line.decode("latin-1").rstrip("\r\n").partition(" ")
    code, _, reason = rest.partition(" ")
    if not version.startswith("HTTP/") or not code.isdigit():
        raise WireError(f"not an HTTP answer: {status_line[:60]!r}")
    found: dict[str, str] = {}
    while True:
        line = fp.readline(MAX_HEAD)
        if line in (b"\r\n", b"\n"):
            break
        if not line:
            raise WireError("connection closed inside the answer's headers")
        name, _, value = line.decode("latin-1").partition(":")
        found[name.strip().lower()] = value.strip()
    return Answer(int(code), reason, found, fp)

"""The web console: a static single-page client of the public API, served at ``/console/``.

Why static files and no build step: the console must ship inside the package and run wherever
``fleetloop serve`` runs, with no Node toolchain at build or run time. It is plain HTML, CSS and
JavaScript modules (``static/``) that call only the documented ``/v1`` API with the operator's
token, exactly as the CLI does, so the console can do nothing the API would not let that token
do. The one thing served besides the files is ``enums.json`` (:mod:`lifecycle.console.enums`):
names for enumerated resource values, which the API leaves as numbers.

:func:`mount_console` is the single hook ``create_app`` calls. Nothing here enters the OpenAPI
document (a mount and a hidden redirect), so the API's route enumeration is unchanged.

Every console response carries a Content-Security-Policy that allows only this origin's own
scripts, styles and API: an injected value cannot load or run anything (the scripts also
never insert API data as HTML). The page holds no secret; the token lives in the browser's
``sessionStorage`` for the tab's lifetime.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from lifecycle.console.enums import enum_table

CONSOLE_PATH = "/console"
STATIC_DIR = Path(__file__).parent / "static"

SECURITY_HEADERS = {
    "content-security-policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    # Revalidate every time: after an upgrade the browser must not mix old and new modules.
    "cache-control": "no-cache",
}


class _SecurityHeaders:
    """ASGI wrapper adding :data:`SECURITY_HEADERS` to every response of the wrapped app."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                present = {name.lower() for name, _ in headers}
                for name, value in SECURITY_HEADERS.items():
                    if name.encode() not in present:
                        headers.append((name.encode(), value.encode()))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_headers)


def console_app() -> ASGIApp:
    """The console as its own small ASGI app: ``enums.json`` and the static files."""
    table = enum_table()

    async def enums(_: Request) -> Response:
        return JSONResponse(table)

    app = Starlette(
        routes=[
            Route("/enums.json", enums),
            Mount("/", StaticFiles(directory=STATIC_DIR, html=True)),
        ]
    )
    return _SecurityHeaders(app)


def mount_console(app: FastAPI) -> None:
    """Serve the console at ``/console/`` and send a browser opening ``/`` there."""

    async def to_console(_: Request) -> Response:
        return RedirectResponse(f"{CONSOLE_PATH}/", status_code=307)

    app.add_route("/", to_console, include_in_schema=False)
    app.add_route(CONSOLE_PATH, to_console, include_in_schema=False)
    app.mount(CONSOLE_PATH, console_app(), name="console")


__all__ = ["CONSOLE_PATH", "mount_console"]

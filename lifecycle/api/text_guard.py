"""Text the API refuses at its edge, before any route runs: NUL anywhere, and an endpoint
name in a path that breaks the system's one endpoint-name rule (``lwm2m.naming``).

Why (issue 14 item 6): PostgreSQL ``text`` cannot hold NUL, SQLite can. A path, query or JSON
string with ``%00`` / ``\\u0000`` therefore reached the store and came back as HTTP 500 "store
error" on PostgreSQL only (41 such requests in the hardening probe), while the same request
succeeded on SQLite. No endpoint name, identity, selector or LwM2M string an operator types
needs NUL, so the one rule is: refuse it before any route runs, with 422 naming where it was.

Endpoint names (issue 14 item 8): the DM server, bootstrap and the identities import refuse a
name that breaks :data:`lwm2m.naming.ENDPOINT_NAME_RULE`; an API path naming one (``/devices/a b``,
a Cyrillic look-alike) gets 422 with the same message rather than a 404 that suggests the name
could exist.
"""

from __future__ import annotations

import re

from fastapi import Request

from lifecycle.api.parse import InputError
from lwm2m.naming import endpoint_name_problem

#: ``\u0000`` in JSON text that is not itself an escaped backslash followed by ``u0000``.
_JSON_NUL = re.compile(rb"(?<!\\)(?:\\\\)*\\u0000", re.IGNORECASE)

_WHY = "holds a NUL character (U+0000), which no fleetloop value may contain; remove it"


async def refuse_nul(request: Request) -> None:
    """FastAPI dependency: :class:`InputError` (422) for NUL in the path, a query parameter
    or a JSON body, and for an ``{endpoint}`` path parameter that breaks the name rule."""
    if "\x00" in request.url.path or "\x00" in request.scope.get("path", ""):
        raise InputError("path", f"the request path {_WHY}")
    endpoint = request.path_params.get("endpoint")
    if isinstance(endpoint, str):
        problem = endpoint_name_problem(endpoint)
        if problem is not None:
            raise InputError("path.endpoint", problem)
    for name, value in request.query_params.multi_items():
        if "\x00" in name or "\x00" in value:
            raise InputError(f"query.{name.replace(chr(0), '?')[:40]}", f"the value {_WHY}")
    if "json" in request.headers.get("content-type", ""):
        body = await request.body()
        if b"\x00" in body or _JSON_NUL.search(body):
            raise InputError("body", f"a string of the JSON body {_WHY}")

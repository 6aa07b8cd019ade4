"""The northbound HTTP management API (FastAPI) that the ``fleetloop`` CLI talks to.

``create_app(ApiContext(server, store, model, token))`` builds the ASGI application;
``fleetloop serve`` runs it with uvicorn in the LwM2M server's event loop. Routes, the JSON
shapes of nodes and records, authentication and the error mapping: ``docs/API.md``.
"""

from lifecycle.api.app import create_app
from lifecycle.api.context import ApiContext
from lifecycle.api.errors import ApiError

__all__ = ["ApiContext", "ApiError", "create_app"]

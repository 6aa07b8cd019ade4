"""The platform layer: inventory, groups, desired vs reported state, the reconciler, operators
and tenants, and the northbound HTTP API that composes everything below it.

It sits above :mod:`lwm2m`, :mod:`bootstrap` and :mod:`sgp32` and talks to devices only
through the DM server's operation API (``lwm2m.server.LwM2MServer``), never through CoAP.
"""

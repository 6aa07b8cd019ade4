"""The simulated device fleet: thousands of LwM2M devices in one process.

:mod:`simulators.fleet.engine` is the sans-IO engine (devices, shared CoAP endpoint, timer
heap, link emulation, behaviours); :mod:`simulators.fleet.runner` runs it on asyncio with one
UDP socket (or DTLS session) per device. Design, profiles and figures: ``docs/FLEET.md``.
"""

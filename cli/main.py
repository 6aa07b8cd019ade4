"""Entry point of the ``fleetloop`` console script.

Every operator command lives under this group; commands that act on a running server talk to
its HTTP management API (found from ``FLEETLOOP_URL``/``FLEETLOOP_TOKEN`` or the data dir).
"""

from __future__ import annotations

import click


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="fleetloop", prog_name="fleetloop")
def main() -> None:
    """fleetloop — LwM2M bootstrap + device management for cellular IoT fleets."""


if __name__ == "__main__":  # pragma: no cover
    main()

"""The ``fleetloop`` command line (click)."""

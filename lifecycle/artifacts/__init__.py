"""Artifacts a change delivers: config bundles, connectivity profiles, credentials, firmware."""

"""Desired vs reported state per device, per dimension, with generations; the reconciler."""

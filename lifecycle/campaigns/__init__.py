"""Campaigns: staged changes of a fleet's desired state with health gates and rollback."""

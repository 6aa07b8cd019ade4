"""Tables of desired and reported state. Placeholder until the state work fills it in."""

from __future__ import annotations

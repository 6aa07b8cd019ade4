"""Named device groups: dynamic (a selector; members come and go) or snapshot (fixed members).

Placeholder until the inventory work fills it in.
"""

from __future__ import annotations

"""Operators and their tokens: a role (viewer / operator / admin) and a tenant scope.

Placeholder until the operators work fills it in.
"""

from __future__ import annotations

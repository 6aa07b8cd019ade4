"""Execute arguments (LwM2M TS Core 1.1 §5.4.5): ``0='v1',1,2='x y'``.

The payload of an Execute is an optional text list of numbered arguments, each a single digit
with an optional single-quoted value. Anything else is 4.00 Bad Request: a device that guessed
at a malformed argument list could run an Apply with the wrong version.
"""

from __future__ import annotations

from dataclasses import dataclass

from simulators.device.errors import BadRequest


@dataclass(frozen=True, slots=True)
class Arguments:
    """Parsed arguments in payload order; ``raw`` is the payload text as received."""

    items: tuple[tuple[int, str | None], ...] = ()
    raw: str = ""

    def get(self, number: int) -> str | None:
        """The value of argument ``number`` (None when absent or given without a value)."""
        for key, value in self.items:
            if key == number:
                return value
        return None

    def has(self, number: int) -> bool:
        return any(key == number for key, _ in self.items)

    def __bool__(self) -> bool:
        return bool(self.items)


NO_ARGUMENTS = Arguments()


def parse_arguments(payload: bytes) -> Arguments:
    """Parse an Execute payload; an empty payload has no arguments."""
    if not payload:
        return NO_ARGUMENTS
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError:
        raise BadRequest("execute arguments are not UTF-8") from None
    items: list[tuple[int, str | None]] = []
    pos, end = 0, len(text)
    while True:
        if pos >= end or not ("0" <= text[pos] <= "9"):
            raise BadRequest(f"execute argument at offset {pos} does not start with a digit")
        number = int(text[pos])
        if any(key == number for key, _ in items):
            raise BadRequest(f"execute argument {number} given twice")
        pos += 1
        value: str | None = None
        if pos < end and text[pos] == "=":
            if pos + 1 >= end or text[pos + 1] != "'":
                raise BadRequest(f"execute argument {number}: value must be single-quoted")
            close = text.find("'", pos + 2)
            if close < 0:
                raise BadRequest(f"execute argument {number}: unterminated quote")
            value = text[pos + 2 : close]
            pos = close + 1
        items.append((number, value))
        if pos == end:
            return Arguments(tuple(items), text)
        if text[pos] != ",":
            raise BadRequest(f"expected ',' at offset {pos} of the execute arguments")
        pos += 1


def format_arguments(items: tuple[tuple[int, str | None], ...]) -> bytes:
    """The payload for ``items`` (the inverse of :func:`parse_arguments`), for tests."""
    parts = [str(k) if v is None else f"{k}='{v}'" for k, v in items]
    return ",".join(parts).encode()


__all__ = ["NO_ARGUMENTS", "Arguments", "format_arguments", "parse_arguments"]

"""Errors of the codec layer.

The server renders them as CoAP codes: :class:`UnsupportedContentFormat` as 4.15 for a request
payload or 4.06 for an Accept it cannot honour, :class:`DecodeError` as 4.00, and
:class:`EncodeError` (a node the chosen format cannot carry) as 4.06 when the format came from
the peer. Messages name the offset or the field so an operator can find the fault in a capture.
"""

from __future__ import annotations


class CodecError(Exception):
    """Base of every codec error."""

    def __init__(self, message: str, *, content_format: int | None = None) -> None:
        super().__init__(message)
        self.content_format = content_format


class UnsupportedContentFormat(CodecError):
    """No codec for this content format, or the format cannot carry this kind of content."""

    def __init__(self, content_format: int, detail: str = "") -> None:
        msg = f"unsupported content format {content_format}"
        if detail:
            msg += f": {detail}"
        super().__init__(msg, content_format=content_format)


class DecodeError(CodecError):
    """A payload is malformed; ``offset`` (bytes) or ``field`` says where."""

    def __init__(
        self,
        message: str,
        *,
        content_format: int | None = None,
        offset: int | None = None,
        field: str | None = None,
    ) -> None:
        where = []
        if offset is not None:
            where.append(f"at offset {offset}")
        if field is not None:
            where.append(f"in {field}")
        full = f"{message} ({', '.join(where)})" if where else message
        super().__init__(full, content_format=content_format)
        self.offset = offset
        self.field = field


class EncodeError(CodecError):
    """A node or value cannot be written in the chosen content format."""

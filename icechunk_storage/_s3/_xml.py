"""XML bodies from an S3-compatible server, which is not trusted: a document type
declaration is refused before parsing (so no entity can expand), and a body that is not
well-formed is a :class:`ResponseIntegrityError` (retried), never a raw ParseError."""

from __future__ import annotations

from xml.etree.ElementTree import Element, ParseError, fromstring

from .._errors import ResponseIntegrityError

__all__ = ["parse_untrusted_xml"]


def parse_untrusted_xml(data: bytes, what: str, kind: str) -> Element:
    """The root element of ``data``, ``kind`` naming the body in messages ("the listing")."""
    if b"<!DOCTYPE" in data or b"<!ENTITY" in data:
        raise ResponseIntegrityError(f"{what}: {kind} carries a document type declaration.")
    try:
        return fromstring(data)
    except ParseError as exc:
        raise ResponseIntegrityError(f"{what}: {kind} is not well-formed XML ({exc}).") from None

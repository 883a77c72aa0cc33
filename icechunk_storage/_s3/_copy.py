"""CopyObject's answer: S3 may report a failed copy as HTTP 200 with an ``<Error>`` body.

S3 may send a CopyObject's status line before the copy is done, so an error found during
the copy arrives in a 200 response's body. botocore turns such a body into a 500 with the
body's error code, and so do we: a PreconditionFailed body is the failed condition,
InternalError a server error (retried), NoSuchKey a missing source.

The server is not trusted: the body is bounded by the transport
(:data:`MAX_COPY_RESULT_BYTES`), a document type declaration is refused before parsing (no
entity can expand), and a 200 body that is neither an ``Error`` nor a ``CopyObjectResult``
with a plausible ETag is a :class:`~.._errors.ResponseIntegrityError` (retried, as botocore
retries a body it cannot parse: a copy is idempotent).
"""

from __future__ import annotations

import re
from typing import Final
from xml.etree.ElementTree import Element

from .._errors import ResponseIntegrityError
from ._errors import S3ErrorContext, error_for_status
from ._xml import parse_untrusted_xml

__all__ = ["MAX_COPY_RESULT_BYTES", "copy_result_etag"]

MAX_COPY_RESULT_BYTES: Final = 64 * 1024
"""A CopyObjectResult is a few hundred bytes; the rest leaves room for whitespace before it
(S3 may send some to keep a long request alive)."""

_ETAG = re.compile(r'(?:W/)?"?[!#-~]{1,1000}"?')  # visible ASCII: it goes back into headers


def _local(tag: str) -> str:
    """An element's name without its namespace (S3 namespaces the result, not the error)."""
    return tag.rsplit("}", 1)[-1]


def _child_text(root: Element, name: str) -> str | None:
    for child in root:
        if _local(child.tag) == name:
            return child.text
    return None


def copy_result_etag(body: bytes | bytearray | memoryview, context: S3ErrorContext) -> str:
    """The ETag of the new object from a CopyObject 200 body; an ``Error`` body is raised as
    the error it names (as a 500, like botocore), anything else as a ResponseIntegrityError."""
    what = context.describe()
    data = bytes(body).lstrip()  # whitespace may precede the XML declaration
    if not data:
        raise ResponseIntegrityError(f"{what}: expected a CopyObjectResult, got an empty body.")
    root = parse_untrusted_xml(data, what, "the response")
    name = _local(root.tag)
    if name == "Error":
        message = _child_text(root, "Message")
        note = "sent in a 200 response"
        detail = f"{message} ({note})" if message else note
        raise error_for_status(500, _child_text(root, "Code"), detail, context)
    if name != "CopyObjectResult":
        raise ResponseIntegrityError(f"{what}: expected a CopyObjectResult, got {name!r}.")
    etag = (_child_text(root, "ETag") or "").strip()
    if not _ETAG.fullmatch(etag):
        raise ResponseIntegrityError(
            f"{what}: the CopyObjectResult carries no usable ETag ({etag[:80]!r})."
        )
    return etag

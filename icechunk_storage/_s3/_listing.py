"""ListObjectsV2 and HeadObject responses, parsed with the standard library and checked.

A page is parsed by ``xml.etree.ElementTree`` (expat and the C tree builder: a few µs per
key, no Python frame per element). The body is bounded by the transport (``MAX_PAGE_BYTES``),
and a document type declaration is refused before parsing, so no entity can expand. The
server is not trusted: every key and common prefix must lie under the prefix asked for, a
truncated page must carry a token, sizes must be numbers. Keys come URL-encoded
(``encoding-type=url``, as botocore asks) and are decoded as botocore decodes them.
"""

from __future__ import annotations

import datetime as _dt
from email.utils import parsedate_to_datetime
from typing import Final
from urllib.parse import unquote_plus

from .._backend import ListPage
from .._errors import ResponseIntegrityError
from .._storage import ObjectInfo, VersionInfo
from ._xml import parse_untrusted_xml

__all__ = ["MAX_PAGE_BYTES", "head_info", "parse_list_page"]

MAX_PAGE_BYTES: Final = 32 * 1024 * 1024
"""1,000 keys of at most 1,024 bytes, URL-encoded (x3), with their fields: well under this."""

_NS = "{http://s3.amazonaws.com/doc/2006-03-01/}"
_CONTENTS = _NS + "Contents"
_COMMON = _NS + "CommonPrefixes"
_KEY = _NS + "Key"
_SIZE = _NS + "Size"
_ETAG = _NS + "ETag"
_MODIFIED = _NS + "LastModified"
_PREFIX = _NS + "Prefix"
_TRUNCATED = _NS + "IsTruncated"
_NEXT = _NS + "NextContinuationToken"
_UTC = _dt.UTC


def _decode(text: str) -> str:
    """botocore's decoding of ``encoding-type=url`` values (``unquote_plus``); a key whose
    only escapes are slashes (most keys) is decoded by one ``str.replace``."""
    if "+" not in text:
        fast = text.replace("%2F", "/")
        if "%" not in fast:
            return fast
    return unquote_plus(text)


def parse_list_page(
    body: bytes | bytearray | memoryview,
    path_prefix: str,
    delimiter: str | None,
    what: str,
    cut: int,
) -> ListPage:
    """One ListObjectsV2 page (``encoding-type=url``) as a :class:`ListPage` whose object
    keys have their first ``cut`` characters (the storage prefix) cut off, checked first."""
    root = parse_untrusted_xml(bytes(body), what, "the listing")
    if root.tag != _NS + "ListBucketResult":
        raise ResponseIntegrityError(f"{what}: expected a ListBucketResult, got {root.tag!r}.")
    objects: list[ObjectInfo] = []
    append = objects.append
    prefixes: list[str] = []
    parse_time = _dt.datetime.fromisoformat
    try:
        for entry in root:  # a C loop over the children; findtext is C too
            tag = entry.tag
            if tag == _CONTENTS:
                key = entry.findtext(_KEY)
                if key is None:
                    raise ValueError("an entry without a Key")
                if "%" in key or "+" in key:
                    key = _decode(key)
                if not key.startswith(path_prefix):
                    raise ValueError(f"key {key!r} is not under the prefix asked for")
                size = int(entry.findtext(_SIZE) or 0)
                if size < 0:
                    raise ValueError(f"negative size {size}")
                modified = entry.findtext(_MODIFIED)
                when = parse_time(modified) if modified else None
                if when is not None and when.tzinfo is None:
                    when = when.replace(tzinfo=_UTC)
                append(ObjectInfo(key[cut:], size, when, VersionInfo(entry.findtext(_ETAG))))
            elif tag == _COMMON:
                found = entry.findtext(_PREFIX)
                if found is None:
                    raise ValueError("a common prefix without a Prefix")
                prefix = _decode(found)
                if delimiter is None or not (
                    prefix.startswith(path_prefix) and prefix.endswith(delimiter)
                ):
                    raise ValueError(f"common prefix {prefix!r} was not asked for")
                prefixes.append(prefix)
    except ValueError as exc:
        raise ResponseIntegrityError(f"{what}: bad listing ({exc}).") from None
    truncated = (root.findtext(_TRUNCATED) or "").strip() == "true"
    token = root.findtext(_NEXT) or None
    if truncated and token is None:
        raise ResponseIntegrityError(f"{what}: a truncated listing without a continuation token.")
    next_token = token if truncated else None
    return ListPage(objects=objects, prefixes=prefixes, next_token=next_token, keys_relative=True)


def head_info(path: str, headers: dict[str, str], what: str) -> ObjectInfo:
    """The ObjectInfo of a HeadObject response (metadata from the ``x-amz-meta-`` headers)."""
    try:
        size = int(headers.get("content-length", "0"))
        if size < 0:
            raise ValueError(size)
        modified_text = headers.get("last-modified")
        modified = parsedate_to_datetime(modified_text) if modified_text else None
    except (ValueError, TypeError) as exc:
        raise ResponseIntegrityError(f"{what}: bad HEAD response headers ({exc}).") from None
    if modified is not None and modified.tzinfo is None:
        modified = modified.replace(tzinfo=_UTC)
    metadata = {
        name[11:]: value for name, value in headers.items() if name.startswith("x-amz-meta-")
    }
    return ObjectInfo(
        key=path,
        size=size,
        last_modified=modified,
        version=VersionInfo(etag=headers.get("etag")),
        content_type=headers.get("content-type"),
        metadata=metadata,
    )

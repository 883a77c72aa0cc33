"""Custom request headers: validation at construction, and the read/write/Tigris merge rules.

Icechunk's rules:

* effective read headers = ``headers`` then ``read_headers``; write headers = ``headers`` then
  ``write_headers`` (later wins). We merge names case-insensitively: ``X-A`` and ``x-a`` are
  one header, not two.
* a request is a read if its method is GET, HEAD, OPTIONS or TRACE; anything else is a write.
  So a listing (GET) gets read headers and a batch delete (POST) gets write headers.
* Tigris consistency headers, and ``x-amz-request-payer`` for requester-pays buckets,
  override user headers of the same name.

Headers are signed like every other header (they are added before signing). Names that
this package manages itself (Authorization, Host, Range, the conditional headers, the
SigV4 headers ...) are refused, since a user value would break signing or the protocol.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

import attrs

from .._errors import ConfigurationError

__all__ = [
    "READ_METHODS",
    "HeaderPairs",
    "RequestHeaders",
    "merge_headers",
    "resolve_request_headers",
    "tigris_consistency_headers",
    "validate_headers",
]

HeaderPairs = tuple[tuple[str, str], ...]

READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})

_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_VALUE = re.compile(r"[\t\x20-\x7e]*")

RESERVED = frozenset(
    {
        "authorization",
        "connection",
        "content-length",
        "expect",
        "host",
        "if-match",
        "if-modified-since",
        "if-none-match",
        "if-unmodified-since",
        "range",
        "transfer-encoding",
        "x-amz-content-sha256",
        "x-amz-date",
        "x-amz-security-token",
    }
)


def validate_headers(argument: str, headers: Mapping[str, str] | None) -> HeaderPairs:
    """Check names and values now, so a bad header fails at construction, not mid-write."""
    if headers is None:
        return ()
    if not isinstance(headers, Mapping):
        raise ConfigurationError(
            f"{argument} must be a mapping of header names to values, got {type(headers).__name__}."
        )
    pairs = []
    for name, value in headers.items():
        if not isinstance(name, str) or not _TOKEN.fullmatch(name):
            raise ConfigurationError(
                f"invalid HTTP header name {name!r} in {argument}: a name is one or more of "
                "the letters, digits and !#$%&'*+-.^_`|~ (no spaces, colons or control "
                "characters)."
            )
        if not isinstance(value, str) or not _VALUE.fullmatch(value):
            shown = repr(value) if isinstance(value, str) else type(value).__name__
            raise ConfigurationError(
                f"invalid HTTP header value for {name!r} in {argument} ({shown}): values must "
                "be str of printable ASCII (no line breaks or control characters)."
            )
        if name.lower() in RESERVED:
            raise ConfigurationError(
                f"HTTP header {name!r} in {argument} is managed by the storage itself "
                "(signing, ranges and conditional writes need it) and cannot be set."
            )
        pairs.append((name, value))
    return tuple(pairs)


def merge_headers(*layers: Iterable[tuple[str, str]]) -> HeaderPairs:
    """Merge header layers; a later layer wins over an earlier one, case-insensitively."""
    merged: dict[str, tuple[str, str]] = {}
    for layer in layers:
        for name, value in layer:
            merged[name.lower()] = (name, value)
    return tuple(merged.values())


def tigris_consistency_headers(region: str) -> tuple[HeaderPairs, HeaderPairs]:
    """``(read, write)`` headers that make Tigris strongly consistent in ``region``."""
    write = (("X-Tigris-Regions", region), ("X-Tigris-Consistent", "true"))
    return (*write, ("Cache-Control", "no-cache")), write


@attrs.frozen
class RequestHeaders:
    """The effective extra headers of reads and of writes, in sending order."""

    read: HeaderPairs = ()
    write: HeaderPairs = ()

    def for_method(self, method: str) -> HeaderPairs:
        return self.read if method.upper() in READ_METHODS else self.write

    @property
    def read_lower(self) -> dict[str, str]:
        """Read headers with lower-case names, as the SigV4 signer wants them."""
        return {name.lower(): value for name, value in self.read}


def resolve_request_headers(
    *,
    headers: HeaderPairs = (),
    read_headers: HeaderPairs = (),
    write_headers: HeaderPairs = (),
    forced_read: HeaderPairs = (),
    forced_write: HeaderPairs = (),
) -> RequestHeaders:
    """Apply the merge rules; ``forced_*`` (Tigris, requester pays) override user headers."""
    return RequestHeaders(
        read=merge_headers(headers, read_headers, forced_read),
        write=merge_headers(headers, write_headers, forced_write),
    )

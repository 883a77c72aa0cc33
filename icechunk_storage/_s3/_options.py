"""``S3Options`` and ``ChecksumAlgorithm`` (Icechunk's names), validated.

Everything here is a frozen value: it pickles, compares by value, and holds no secret.
"""

from __future__ import annotations

import enum
import ipaddress
from typing import Any
from urllib.parse import urlsplit

import attrs

from .._errors import ConfigurationError
from .._transport import DEFAULT_STREAM_TIMEOUT

__all__ = ["ChecksumAlgorithm", "S3Options", "check_endpoint_url", "is_tigris_endpoint"]

TIGRIS_ENDPOINT_MARKERS = ("fly.storage.tigris.dev", "t3.storage.dev")


class ChecksumAlgorithm(enum.Enum):
    """Checksum sent with PutObject, UploadPart and DeleteObjects (Icechunk's numbering)."""

    Crc32 = 0
    Crc32c = 1
    Crc64Nvme = 2
    Sha1 = 3
    Sha256 = 4

    @property
    def wire_name(self) -> str:
        """The S3 API name: ``CRC32``, ``CRC32C``, ``CRC64NVME``, ``SHA1``, ``SHA256``."""
        return self.name.upper()


def _to_checksum(value: ChecksumAlgorithm | str | None) -> ChecksumAlgorithm | None:
    if value is None or isinstance(value, ChecksumAlgorithm):
        return value
    if isinstance(value, str):
        for member in ChecksumAlgorithm:
            if value.replace("-", "").replace("_", "").upper() == member.wire_name:
                return member
    names = ", ".join(m.name for m in ChecksumAlgorithm)
    raise ConfigurationError(
        f"checksum_algorithm must be a ChecksumAlgorithm ({names}) or its name, got {value!r}."
    )


def is_tigris_endpoint(endpoint_url: str | None) -> bool:
    return endpoint_url is not None and any(m in endpoint_url for m in TIGRIS_ENDPOINT_MARKERS)


def check_endpoint_url(endpoint_url: str | None, allow_http: bool) -> None:
    """An absolute http(s) URL with a host; plain HTTP only with ``allow_http=True``."""
    if endpoint_url is None:
        return
    if not isinstance(endpoint_url, str):
        raise ConfigurationError(f"endpoint_url must be a str, got {type(endpoint_url).__name__}.")
    parts = urlsplit(endpoint_url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigurationError(
            f"endpoint_url {endpoint_url!r} is not an absolute http:// or https:// URL with "
            "a host, e.g. 'https://s3.example.com' or 'http://127.0.0.1:9000'."
        )
    if parts.query or parts.fragment or parts.username or parts.password:
        raise ConfigurationError(
            f"endpoint_url {endpoint_url!r} must not carry a query, fragment or user info."
        )
    try:
        _ = parts.port
    except ValueError as exc:
        raise ConfigurationError(f"endpoint_url {endpoint_url!r} has a bad port.") from exc
    if parts.scheme == "http" and not allow_http:
        raise ConfigurationError(
            f"endpoint_url {endpoint_url!r} uses plain HTTP, which sends data unencrypted; "
            "pass allow_http=True to allow it (for example for a local MinIO)."
        )


def _check_bool(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if not isinstance(value, bool):
        raise ConfigurationError(
            f"{attribute.name} must be True or False, got {type(value).__name__} {value!r}."
        )


def _check_optional_str(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if value is not None and (not isinstance(value, str) or not value.strip()):
        raise ConfigurationError(
            f"{attribute.name} must be a non-empty str or None, got {value!r}."
        )


def _check_timeout(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ConfigurationError(
            f"{attribute.name} must be an int >= 0 (0 disables it) or None, got {value!r}."
        )


@attrs.frozen(kw_only=True)
class S3Options:
    """Where and how to reach an S3(-compatible) store. Constructing it does no I/O.

    ``region``: the signing region; None means the AWS configuration chain (environment,
    profile), and ``us-east-1`` if that has none either. ``endpoint_url``: a custom endpoint
    (MinIO, R2 ...); plain ``http://`` needs ``allow_http=True``. ``anonymous``: unsigned
    requests (public buckets). ``force_path_style``: ``endpoint/bucket/key`` URLs instead of
    ``bucket.endpoint/key``. ``network_stream_timeout_seconds``: the window over which a
    response must keep up a minimum throughput, or fail as stalled (0 switches the check
    off, but every attempt keeps its deadline; None means 10 s). ``requester_pays``:
    send ``x-amz-request-payer: requester`` on every request. ``checksum_algorithm``:
    checksum uploads and batch deletes with it (None: no extra checksum, which is what most
    S3-compatible stores accept).
    """

    region: str | None = attrs.field(default=None, validator=_check_optional_str)
    endpoint_url: str | None = attrs.field(default=None)
    allow_http: bool = attrs.field(default=False, validator=_check_bool)
    anonymous: bool = attrs.field(default=False, validator=_check_bool)
    force_path_style: bool = attrs.field(default=False, validator=_check_bool)
    network_stream_timeout_seconds: int | None = attrs.field(default=None, validator=_check_timeout)
    requester_pays: bool = attrs.field(default=False, validator=_check_bool)
    checksum_algorithm: ChecksumAlgorithm | None = attrs.field(default=None, converter=_to_checksum)

    def __attrs_post_init__(self) -> None:
        check_endpoint_url(self.endpoint_url, self.allow_http)

    @property
    def stream_timeout(self) -> float | None:
        """The stall-check window in seconds (None: the check is off; the attempt deadline
        still holds). Floor, window default and deadline: ``_transport/_model.py``."""
        seconds = self.network_stream_timeout_seconds
        if seconds is None:
            return DEFAULT_STREAM_TIMEOUT
        return float(seconds) if seconds > 0 else None


def is_ip_host(host: str) -> bool:
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return host == "localhost"
    return True

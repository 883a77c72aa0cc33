"""Where a bucket's objects live: endpoint, addressing style, and the URL of each object.

Both request paths (aiobotocore and the data plane) use the one :class:`S3Location`, so they
can never disagree on where an object is: aiobotocore gets the endpoint and addressing style
from here explicitly instead of resolving its own.

Addressing: path style (``endpoint/bucket/key``) when forced, when the endpoint host is an IP
address or ``localhost`` (a bucket cannot be a sub-domain of those), or when the bucket name
is not a plain DNS label (dots break TLS certificates); otherwise virtual-hosted
(``bucket.endpoint/key``), as botocore does. Without an endpoint we use AWS's regional
endpoint ``https://s3.<region>.amazonaws.com`` (``.amazonaws.com.cn`` in China).
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit

import attrs

from ._options import is_ip_host
from ._sigv4 import encode_path

__all__ = ["S3Location", "aws_endpoint", "resolve_location"]

_DNS_LABEL_BUCKET = re.compile(r"[a-z0-9][a-z0-9-]{1,61}[a-z0-9]")


def aws_endpoint(region: str) -> str:
    suffix = "amazonaws.com.cn" if region.startswith("cn-") else "amazonaws.com"
    return f"https://s3.{region}.{suffix}"


def _host_header(scheme: str, hostname: str, port: int | None) -> str:
    """The Host value botocore signs: lower case, default port left out, IPv6 bracketed."""
    host = hostname.lower()
    if ":" in host:
        host = f"[{host}]"
    if port is not None and port != {"http": 80, "https": 443}[scheme]:
        host = f"{host}:{port}"
    return host


@attrs.frozen
class S3Location:
    """A bucket at an endpoint. ``uri(path)`` is the encoded path S3 signs and receives."""

    scheme: str
    host: str  # the Host header of object requests (includes the bucket if virtual-hosted)
    base_path: str  # the endpoint's own path, "" or "/something" without a trailing slash
    path_style: bool
    bucket: str
    endpoint_url: str  # what aiobotocore gets (without the bucket)

    @property
    def origin(self) -> str:
        return f"{self.scheme}://{self.host}"

    def uri(self, path: str) -> str:
        if self.path_style:
            return f"{self.base_path}/{self.bucket}/{encode_path(path)}"
        return f"{self.base_path}/{encode_path(path)}"

    def url(self, path: str) -> str:
        return self.origin + self.uri(path)

    def bucket_uri(self) -> str:
        """The path of bucket-level requests (ListObjectsV2, DeleteObjects), as botocore
        sends it: ``/bucket`` path-style, ``/`` virtual-hosted."""
        if self.path_style:
            return f"{self.base_path}/{self.bucket}"
        return f"{self.base_path}/"


def resolve_location(
    bucket: str, endpoint_url: str | None, region: str, force_path_style: bool
) -> S3Location:
    endpoint = endpoint_url or aws_endpoint(region)
    parts = urlsplit(endpoint)
    scheme = parts.scheme
    hostname = parts.hostname or ""
    host = _host_header(scheme, hostname, parts.port)
    base_path = parts.path.rstrip("/")
    path_style = force_path_style or is_ip_host(hostname) or not _DNS_LABEL_BUCKET.fullmatch(bucket)
    if not path_style:
        host = f"{bucket}.{host}"
    return S3Location(
        scheme=scheme,
        host=host,
        base_path=base_path,
        path_style=path_style,
        bucket=bucket,
        endpoint_url=endpoint.rstrip("/"),
    )

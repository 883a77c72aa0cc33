"""The requests of S3's lean data plane, built exactly as botocore builds them.

GetObject, PutObject, HeadObject, ListObjectsV2, DeleteObject and CopyObject go over the
shared transport, signed by :class:`~._sigv4.SigV4Signer`. Each builder here returns the
request target and the headers botocore would send for the same call (same path, query in
the same order, same signed headers, same payload hash; tests compare them byte for byte
with a fixed clock, and through the recording proxy), so a server cannot tell the two paths
apart. The unsigned headers both paths send are :data:`UNSIGNED_HEADERS` (the aiobotocore
client is brought to the same values by ``_client._normalise_unsigned``).

Payload hash: botocore signs the SHA-256 of a PutObject body over http and https alike
unless a checksum header is present on https (then it streams an ``aws-chunked`` trailer
instead). So the lean PUT signs the body's SHA-256, and a checksummed PUT over https is left
to aiobotocore (see :func:`checksum_headers`).
"""

from __future__ import annotations

import base64
import hashlib
import zlib
from collections.abc import Mapping
from urllib.parse import quote

from ._auth import FrozenCredentials
from ._location import S3Location
from ._options import ChecksumAlgorithm
from ._sigv4 import EMPTY_SHA256, SigV4Signer, canonical_query, encode_path

__all__ = [
    "NOT_SENT_WITH_PUT",
    "UNSIGNED_HEADERS",
    "USER_AGENT",
    "checksum_headers",
    "copy_headers",
    "list_query",
    "signed",
    "wire_query",
]

USER_AGENT = "icechunk-storage"
UNSIGNED_HEADERS = {"user-agent": USER_AGENT, "accept-encoding": "identity"}
"""Added to every request after signing, on both paths."""

NOT_SENT_WITH_PUT = ("expect",)
"""botocore sends ``Expect: 100-continue`` with every PutObject, and aiohttp then waits a
round trip for the interim 100 before sending the body. A chunk PUT gains nothing by it
(the body is small), servers answer it with one or two extra interim responses, so neither
path sends it (``_client._normalise_unsigned`` drops it from aiobotocore's PutObject;
UploadPart keeps it, where a refusal before 5+ MiB of body is worth a round trip)."""


def wire_query(pairs: list[tuple[str, str]]) -> str:
    """The query as botocore puts it on the wire: in the order given, ``-_.~`` left as is."""
    return "&".join(f"{quote(k, safe='-_.~')}={quote(v, safe='-_.~')}" for k, v in pairs)


def list_query(
    prefix: str, max_keys: int, token: str | None, delimiter: str | None
) -> list[tuple[str, str]]:
    """ListObjectsV2's query, in botocore's order (``encoding-type=url`` is what botocore
    adds by itself, so keys with any character survive the XML)."""
    pairs = [("list-type", "2"), ("prefix", prefix), ("max-keys", str(max_keys))]
    if token is not None:
        pairs.append(("continuation-token", token))
    if delimiter is not None:
        pairs.append(("delimiter", delimiter))
    pairs.append(("encoding-type", "url"))
    return pairs


def signed(
    location: S3Location,
    signer: SigV4Signer,
    method: str,
    uri: str,
    headers: dict[str, str],
    credentials: FrozenCredentials | None,
    *,
    query: list[tuple[str, str]] | None = None,
    payload_hash: str = EMPTY_SHA256,
    timestamp: str | None = None,
) -> tuple[str, dict[str, str]]:
    """``(target, headers)`` of one request; ``headers`` (lower-case names) are signed as
    given. No credentials: unsigned (anonymous), like botocore's ``UNSIGNED``."""
    target = f"{uri}?{wire_query(query)}" if query else uri
    if credentials is None:
        headers["host"] = location.host
    else:
        access_key, secret_key, token = credentials
        headers = signer.sign(
            method=method,
            host=location.host,
            canonical_uri=uri,
            query=canonical_query(query) if query else "",
            headers=headers,
            access_key=access_key,
            secret_key=secret_key,
            session_token=token,
            payload_hash=payload_hash,
            timestamp=timestamp,
        )
    headers.update(UNSIGNED_HEADERS)
    return target, headers


def put_headers(
    *,
    content_type: str | None,
    metadata: Mapping[str, str],
    storage_class: str | None,
    if_none_match: bool,
    if_match: str | None,
    extra: Mapping[str, str] | None,
    write_headers: Mapping[str, str],
) -> dict[str, str]:
    """PutObject's headers before signing. The user's write headers come last and win, as
    they do on the aiobotocore path (added before signing, replacing a header of that name)."""
    headers: dict[str, str] = {}
    if content_type is not None:
        headers["content-type"] = content_type
    for name, value in metadata.items():
        headers["x-amz-meta-" + name.lower()] = value
    if storage_class is not None:
        headers["x-amz-storage-class"] = storage_class
    if if_none_match:
        headers["if-none-match"] = "*"
    elif if_match is not None:
        headers["if-match"] = if_match
    if extra:
        headers.update(extra)
    if write_headers:
        headers.update(write_headers)
    return headers


def copy_headers(
    *,
    bucket: str,
    source: str,
    if_match: str | None,
    storage_class: str | None,
    write_headers: Mapping[str, str],
) -> dict[str, str]:
    """CopyObject's headers before signing (the request has no body).

    ``x-amz-copy-source`` is ``bucket/key`` encoded as botocore encodes a ``CopySource``
    dict: UTF-8, then everything but unreserved characters and ``/`` percent-encoded (the
    same rule as the request path, so ``encode_path``). No metadata: S3 copies the source's.
    The user's write headers come last and win, as on PutObject."""
    headers = {"x-amz-copy-source": encode_path(f"{bucket}/{source}")}
    if if_match is not None:
        headers["x-amz-copy-source-if-match"] = if_match
    if storage_class is not None:
        headers["x-amz-storage-class"] = storage_class
    if write_headers:
        headers.update(write_headers)
    return headers


def checksum_headers(
    algorithm: ChecksumAlgorithm, body: bytes | bytearray | memoryview, scheme: str
) -> dict[str, str] | None:
    """The checksum headers botocore sends with a PutObject over plain HTTP, or None when
    botocore would do something this path does not (an ``aws-chunked`` trailer over https;
    CRC32C and CRC64NVME, which need awscrt): such writes go through aiobotocore."""
    if scheme != "http":
        return None
    if algorithm is ChecksumAlgorithm.Crc32:
        digest = zlib.crc32(body).to_bytes(4, "big")
    elif algorithm is ChecksumAlgorithm.Sha1:
        digest = hashlib.sha1(body).digest()
    elif algorithm is ChecksumAlgorithm.Sha256:
        digest = hashlib.sha256(body).digest()
    else:
        return None
    name = algorithm.wire_name
    return {
        f"x-amz-checksum-{name.lower()}": base64.b64encode(digest).decode("ascii"),
        "x-amz-sdk-checksum-algorithm": name,
    }

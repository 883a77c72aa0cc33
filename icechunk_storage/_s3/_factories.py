"""The public constructors: ``s3_storage``, ``tigris_storage``, ``r2_storage`` (Icechunk's names
and parameters). They validate everything and do no I/O, except that
``scatter_initial_credentials=True`` calls ``get_credentials`` once, as asked."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Mapping
from datetime import datetime

from .._credentials import S3StaticCredentials, s3_credentials
from .._errors import ConfigurationError
from .._settings import StorageSettings
from ._headers import tigris_consistency_headers
from ._options import ChecksumAlgorithm, S3Options, is_tigris_endpoint
from ._storage import S3Storage

__all__ = ["TIGRIS_ENDPOINT", "r2_storage", "s3_storage", "tigris_storage"]

TIGRIS_ENDPOINT = "https://t3.storage.dev"
TIGRIS_SIGNING_REGION = "auto"
R2_REGION = "auto"
_ACCOUNT_ID = re.compile(r"[A-Za-z0-9-]+")

GetS3Credentials = Callable[[], S3StaticCredentials | Awaitable[S3StaticCredentials]]


def s3_storage(
    *,
    bucket: str,
    prefix: str | None,
    region: str | None = None,
    endpoint_url: str | None = None,
    allow_http: bool = False,
    access_key_id: str | None = None,
    secret_access_key: str | None = None,
    session_token: str | None = None,
    expires_after: datetime | None = None,
    anonymous: bool | None = None,
    from_env: bool | None = None,
    get_credentials: GetS3Credentials | None = None,
    scatter_initial_credentials: bool = False,
    force_path_style: bool = False,
    network_stream_timeout_seconds: int = 60,
    requester_pays: bool = False,
    checksum_algorithm: ChecksumAlgorithm | str | None = None,
    headers: Mapping[str, str] | None = None,
    read_headers: Mapping[str, str] | None = None,
    write_headers: Mapping[str, str] | None = None,
    settings: StorageSettings | None = None,
) -> S3Storage:
    """Storage in an S3 bucket, or on any S3-compatible server.

    Credentials: no credential argument means the AWS default chain (environment variables,
    shared config and credentials files with profiles, web identity, instance metadata);
    ``access_key_id`` + ``secret_access_key`` (+ ``session_token``, ``expires_after``) are
    static keys; ``anonymous=True`` sends unsigned requests (public buckets);
    ``get_credentials`` is called for fresh credentials before the current ones expire.

    MinIO and other S3-compatible servers::

        s3_storage(bucket="b", prefix="p", endpoint_url="http://localhost:9000",
                   allow_http=True, force_path_style=True, region="us-east-1", ...)

    Headers: ``headers`` go on every request, ``read_headers`` on GET/HEAD as well, and
    ``write_headers`` on every other request as well (the more specific wins). Tigris
    endpoints are refused here: use :func:`tigris_storage`.
    """
    if is_tigris_endpoint(endpoint_url):
        raise ConfigurationError(
            f"endpoint_url {endpoint_url!r} is a Tigris endpoint; use the Tigris specific "
            "constructor tigris_storage(...), which adds the consistency headers Tigris needs."
        )
    options = S3Options(
        region=region,
        endpoint_url=endpoint_url,
        allow_http=allow_http,
        anonymous=bool(anonymous),
        force_path_style=force_path_style,
        network_stream_timeout_seconds=network_stream_timeout_seconds,
        requester_pays=requester_pays,
        checksum_algorithm=checksum_algorithm,
    )
    return S3Storage(
        bucket=bucket,
        prefix=prefix,
        options=options,
        credentials=s3_credentials(
            access_key_id=access_key_id,
            secret_access_key=secret_access_key,
            session_token=session_token,
            expires_after=expires_after,
            anonymous=anonymous,
            from_env=from_env,
            get_credentials=get_credentials,
            scatter_initial_credentials=scatter_initial_credentials,
        ),
        headers=headers,
        read_headers=read_headers,
        write_headers=write_headers,
        settings=settings,
    )


def tigris_storage(
    *,
    bucket: str,
    prefix: str | None,
    region: str | None = None,
    endpoint_url: str | None = None,
    use_weak_consistency: bool = False,
    allow_http: bool = False,
    access_key_id: str | None = None,
    secret_access_key: str | None = None,
    session_token: str | None = None,
    expires_after: datetime | None = None,
    anonymous: bool | None = None,
    from_env: bool | None = None,
    get_credentials: GetS3Credentials | None = None,
    scatter_initial_credentials: bool = False,
    network_stream_timeout_seconds: int = 60,
    checksum_algorithm: ChecksumAlgorithm | str | None = None,
    headers: Mapping[str, str] | None = None,
    read_headers: Mapping[str, str] | None = None,
    write_headers: Mapping[str, str] | None = None,
    settings: StorageSettings | None = None,
) -> S3Storage:
    """Storage on Tigris (default endpoint ``https://t3.storage.dev``).

    Tigris replicates globally; to see your own writes the requests must name a region:
    ``region`` is required, and every request carries ``X-Tigris-Regions: <region>`` and
    ``X-Tigris-Consistent: true`` (reads also ``Cache-Control: no-cache``), overriding any
    custom header of the same name. ``use_weak_consistency=True`` drops those headers and
    reads from the nearest replica, which may lag behind: the storage is then read-only.
    """
    if not isinstance(use_weak_consistency, bool):
        raise ConfigurationError(
            f"use_weak_consistency must be True or False, got {use_weak_consistency!r}."
        )
    if region is None and not use_weak_consistency:
        raise ConfigurationError(
            "Tigris storage requires a region (the one whose reads must see your writes, "
            "e.g. region='iad'), or use_weak_consistency=True for read-only access to the "
            "nearest replica."
        )
    options = S3Options(
        region=region or TIGRIS_SIGNING_REGION,
        endpoint_url=endpoint_url or TIGRIS_ENDPOINT,
        allow_http=allow_http,
        anonymous=bool(anonymous),
        network_stream_timeout_seconds=network_stream_timeout_seconds,
        checksum_algorithm=checksum_algorithm,
    )
    forced = ((), ()) if use_weak_consistency else tigris_consistency_headers(str(region))
    return S3Storage(
        bucket=bucket,
        prefix=prefix,
        options=options,
        credentials=s3_credentials(
            access_key_id=access_key_id,
            secret_access_key=secret_access_key,
            session_token=session_token,
            expires_after=expires_after,
            anonymous=anonymous,
            from_env=from_env,
            get_credentials=get_credentials,
            scatter_initial_credentials=scatter_initial_credentials,
        ),
        headers=headers,
        read_headers=read_headers,
        write_headers=write_headers,
        settings=settings,
        read_only=use_weak_consistency,
        provider="tigris",
        forced_headers=forced,
    )


def _r2_bucket_and_prefix(bucket: str | None, prefix: str | None) -> tuple[str, str | None]:
    if bucket is not None:
        return bucket, prefix
    if prefix is None or not prefix.strip("/"):
        raise ConfigurationError(
            "r2_storage needs a bucket, or a prefix whose first segment is the bucket "
            "('bucket/path/inside'): either bucket or prefix must be provided."
        )
    first, _, rest = prefix.strip("/").partition("/")
    return first, rest or None


def r2_storage(
    *,
    bucket: str | None = None,
    prefix: str | None = None,
    account_id: str | None = None,
    endpoint_url: str | None = None,
    region: str | None = None,
    allow_http: bool = False,
    access_key_id: str | None = None,
    secret_access_key: str | None = None,
    session_token: str | None = None,
    expires_after: datetime | None = None,
    anonymous: bool | None = None,
    from_env: bool | None = None,
    get_credentials: GetS3Credentials | None = None,
    scatter_initial_credentials: bool = False,
    network_stream_timeout_seconds: int = 60,
    checksum_algorithm: ChecksumAlgorithm | str | None = None,
    headers: Mapping[str, str] | None = None,
    read_headers: Mapping[str, str] | None = None,
    write_headers: Mapping[str, str] | None = None,
    settings: StorageSettings | None = None,
) -> S3Storage:
    """Storage on Cloudflare R2.

    The endpoint is ``https://<account_id>.r2.cloudflarestorage.com`` unless ``endpoint_url``
    is given; requests are always path-style and signed for region ``auto`` by default.
    Without ``bucket``, the first segment of ``prefix`` is the bucket. A public bucket::

        r2_storage(prefix="bucket/path", endpoint_url="https://pub-xyz.r2.dev", anonymous=True)

    sends unsigned requests to ``https://pub-xyz.r2.dev/bucket/path/<key>``.
    """
    bucket, prefix = _r2_bucket_and_prefix(bucket, prefix)
    if endpoint_url is None:
        if account_id is None:
            raise ConfigurationError(
                "r2_storage needs account_id (the endpoint is then "
                "https://<account_id>.r2.cloudflarestorage.com) or endpoint_url."
            )
        if not isinstance(account_id, str) or not _ACCOUNT_ID.fullmatch(account_id):
            raise ConfigurationError(
                f"account_id must be your Cloudflare account id (letters, digits, '-'), "
                f"got {account_id!r}."
            )
        endpoint_url = f"https://{account_id}.r2.cloudflarestorage.com"
    options = S3Options(
        region=region or R2_REGION,
        endpoint_url=endpoint_url,
        allow_http=allow_http,
        anonymous=bool(anonymous),
        force_path_style=True,
        network_stream_timeout_seconds=network_stream_timeout_seconds,
        checksum_algorithm=checksum_algorithm,
    )
    return S3Storage(
        bucket=bucket,
        prefix=prefix,
        options=options,
        credentials=s3_credentials(
            access_key_id=access_key_id,
            secret_access_key=secret_access_key,
            session_token=session_token,
            expires_after=expires_after,
            anonymous=anonymous,
            from_env=from_env,
            get_credentials=get_credentials,
            scatter_initial_credentials=scatter_initial_credentials,
        ),
        headers=headers,
        read_headers=read_headers,
        write_headers=write_headers,
        settings=settings,
        provider="r2",
    )

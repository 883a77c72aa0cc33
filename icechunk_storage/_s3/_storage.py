"""``S3Storage``: AWS S3, S3-compatible stores (MinIO ...), Tigris and R2 (see ``_factories``).

Two request paths, one behaviour:

* the lean data plane: chunk reads (``get``, split reads, ``get_if_changed``),
  PutObject (conditional or not), HeadObject, ListObjectsV2, DeleteObject and CopyObject
  are one request each, signed by a standard-library SigV4 signer with a cached signing
  key (no signature for anonymous access) and sent through the shared transport
  (``.._transport``), from and into the caller's buffers. Requests are built in
  ``_wire.py`` exactly as botocore builds them; listings are parsed in ``_listing.py``,
  copy results (S3 reports some failed copies in a 200 body) in ``_copy.py``.
  aiobotocore costs ~4x more CPU per request, and building its client ~25 ms.
* aiobotocore keeps what is rare or intricate: multipart uploads, batch delete, a
  checksummed PUT that botocore streams as an ``aws-chunked`` trailer (https) or computes
  with awscrt (CRC32C, CRC64NVME), and the from-env credential chain (resolved without an
  S3 client, shared per loop).

Both use the same location (endpoint, addressing), headers (custom, Tigris, requester
pays), credentials (checked before every attempt), timeouts and error mapping
(``_errors.py``), and send the same headers, so a server cannot tell which path sent a
request. Retries are ours only (``BaseStorage._call``); botocore's are switched off.

Differences from Icechunk, each what a user would expect:

* ``requester_pays`` is sent on every request, PUT and UploadPart included (Icechunk leaves
  it off writes, which then fail on requester-pays buckets).
* An endpoint without a region signs for the region of the AWS configuration chain, else
  ``us-east-1`` (what MinIO and most S3-compatible servers expect), not Icechunk's
  placeholder ``region-was-not-set``.
* A multipart upload never has an empty part; every part but the last is at least 5 MiB and
  at most 5 GiB (S3's limits), and every multipart upload (not only conditional ones)
  carries a write id, so a lost CompleteMultipartUpload response is recovered by read-back.
* Storage classes: keys under ``chunks/`` (relative to the prefix) use
  ``chunks_storage_class``, every other key ``metadata_storage_class`` (both fall back to
  ``storage_class``), on PutObject, CreateMultipartUpload and CopyObject.
* ``legacy_rooted_keys`` is not supported (keys never start with ``/``).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

from .._backend import ListPage, OneGetPerRead
from .._credentials import AnyS3Credential, S3Credentials
from .._errors import (
    ConfigurationError,
    PreconditionFailedError,
)
from .._extras import require_extra
from .._ranges import (
    ByteRequest,
    OffsetByteRequest,
    RangeByteRequest,
    SuffixByteRequest,
    split_for_multipart,
)
from .._settings import StorageSettings
from .._storage import Data, GetResult, ObjectInfo, PutMode, VersionInfo
from .._transport import Request, Response, aclose_transport
from ._auth import CredentialSource, FrozenCredentials
from ._client import ClientSettings, LoopClients
from ._copy import MAX_COPY_RESULT_BYTES, copy_result_etag
from ._errors import (
    S3ErrorContext,
    error_for_status,
    parse_error_body,
    s3_errors,
)
from ._headers import HeaderPairs, RequestHeaders, resolve_request_headers, validate_headers
from ._listing import MAX_PAGE_BYTES, head_info, parse_list_page
from ._location import S3Location
from ._options import ChecksumAlgorithm, S3Options
from ._sigv4 import EMPTY_SHA256, SigV4Signer
from ._wire import checksum_headers, copy_headers, list_query, put_headers, signed

if TYPE_CHECKING:
    from types_aiobotocore_s3 import S3Client

    from .._loops import LoopLocal

__all__ = ["S3Storage", "build_get_request"]

T = TypeVar("T")

MIN_PART_SIZE = 5 * 1024 * 1024
MAX_PART_SIZE = 5 * 1024 * 1024 * 1024
MAX_PARTS = 10_000
CHUNKS_PREFIX = "chunks/"
REQUESTER_PAYS = (("x-amz-request-payer", "requester"),)


def _strip_quotes(etag: str) -> str:
    """S3 wants If-Match without the quotes its ETags carry; we keep them everywhere else."""
    if len(etag) >= 2 and etag[0] == '"' and etag[-1] == '"':
        return etag[1:-1]
    return etag


def _range_header(byte_range: ByteRequest | None) -> str | None:
    if byte_range is None:
        return None
    if isinstance(byte_range, RangeByteRequest):
        return f"bytes={byte_range.start}-{byte_range.end - 1}"
    if isinstance(byte_range, OffsetByteRequest):
        return f"bytes={byte_range.offset}-"
    assert isinstance(byte_range, SuffixByteRequest)
    return f"bytes=-{byte_range.suffix}"


def _credential_kind(credentials: AnyS3Credential) -> str:
    return {
        S3Credentials.FromEnv: "from_env",
        S3Credentials.Anonymous: "anonymous",
        S3Credentials.Static: "static",
        S3Credentials.Refreshable: "refreshable",
    }[type(credentials)]


class S3Storage(OneGetPerRead):
    """An S3 bucket (or an S3-compatible one) under a prefix.

    Build it with :func:`s3_storage`, :func:`tigris_storage` or :func:`r2_storage`.
    Construction does no I/O; clients are created per event loop on first use and released
    by ``aclose()``. It pickles by configuration (with the credential value) and works after
    unpickling in another process. ``provider`` (for repr) and ``forced_headers`` (headers
    that override the user's, e.g. Tigris consistency) are set by the factories.
    """

    backend_name = "s3"
    requires_prefix_for_repository: ClassVar[bool] = True
    _supports_multipart_upload: ClassVar[bool] = True
    _runtime_attributes: ClassVar[tuple[str, ...]] = ("_loops", "_source")
    _list_page_size: int = 1000

    def __init__(
        self,
        *,
        bucket: str,
        prefix: str | None = None,
        options: S3Options | None = None,
        credentials: AnyS3Credential | None = None,
        headers: Mapping[str, str] | None = None,
        read_headers: Mapping[str, str] | None = None,
        write_headers: Mapping[str, str] | None = None,
        settings: StorageSettings | None = None,
        read_only: bool = False,
        provider: str = "s3",
        forced_headers: tuple[HeaderPairs, HeaderPairs] = ((), ()),
    ) -> None:
        super().__init__(prefix=prefix, settings=settings, read_only=read_only)
        require_extra("s3", f"{provider}_storage")
        if not isinstance(bucket, str) or not bucket or "/" in bucket or bucket != bucket.strip():
            raise ConfigurationError(
                f"bucket must be a non-empty bucket name without '/' or surrounding spaces, "
                f"got {bucket!r}; put the path inside the bucket in prefix."
            )
        options = options if options is not None else S3Options()
        if not isinstance(options, S3Options):
            raise ConfigurationError(f"options must be an S3Options, got {type(options).__name__}.")
        if credentials is None:
            credentials = (
                S3Credentials.Anonymous() if options.anonymous else S3Credentials.FromEnv()
            )
        if not isinstance(
            credentials,
            S3Credentials.FromEnv
            | S3Credentials.Anonymous
            | S3Credentials.Static
            | S3Credentials.Refreshable,
        ):
            raise ConfigurationError(
                "credentials must be one of S3Credentials.FromEnv, Anonymous, Static or "
                f"Refreshable (see s3_credentials()), got {type(credentials).__name__}."
            )
        if options.anonymous and not isinstance(credentials, S3Credentials.Anonymous):
            raise ConfigurationError(
                "S3Options(anonymous=True) conflicts with the credentials given; pass "
                "anonymous credentials or drop anonymous=True."
            )
        forced_read, forced_write = forced_headers
        if options.requester_pays:
            forced_read = (*forced_read, *REQUESTER_PAYS)
            forced_write = (*forced_write, *REQUESTER_PAYS)
        self._bucket = bucket
        self._options = options
        self._credentials: AnyS3Credential = credentials
        self._provider = provider
        self._headers: RequestHeaders = resolve_request_headers(
            headers=validate_headers("headers", headers),
            read_headers=validate_headers("read_headers", read_headers),
            write_headers=validate_headers("write_headers", write_headers),
            forced_read=forced_read,
            forced_write=forced_write,
        )
        self._read_headers = self._headers.read_lower
        self._write_headers = {name.lower(): value for name, value in self._headers.write}
        self._reset_runtime()

    # --- configuration -----------------------------------------------------------------

    @property
    def bucket(self) -> str:
        return self._bucket

    @property
    def options(self) -> S3Options:
        return self._options

    @property
    def credentials(self) -> AnyS3Credential:
        return self._credentials

    @property
    def request_headers(self) -> RequestHeaders:
        """The effective extra headers of reads and writes (custom, Tigris, requester pays)."""
        return self._headers

    def _describe(self) -> str:
        location = f"{self._provider}://{self._bucket}/{self._prefix}".rstrip("/")
        parts = [location]
        if self._options.endpoint_url:
            parts.append(f"endpoint_url={self._options.endpoint_url!r}")
        if self._options.region:
            parts.append(f"region={self._options.region!r}")
        parts.append(f"credentials={_credential_kind(self._credentials)}")
        if self._read_only:
            parts.append("read_only")
        return ", ".join(parts)

    def _config_key(self) -> object:
        return (
            self._provider,
            self._bucket,
            self._prefix,
            self._options,
            self._credentials,
            self._headers,
        )

    # --- runtime -------------------------------------------------------------------------

    def _reset_runtime(self) -> None:
        from .._loops import LoopLocal

        credentials = self._credentials
        self._source: CredentialSource | None = None
        if isinstance(credentials, S3Credentials.Static | S3Credentials.Refreshable):
            self._source = CredentialSource(credentials)
        # The factory refers to values only, never to self: see _client.py on closing.
        self._loops: LoopLocal[LoopClients] = LoopLocal(
            functools.partial(LoopClients, self._client_settings(), self._source)
        )

    def _client_settings(self) -> ClientSettings:
        timeouts = self.settings.timeouts
        connect_ms = timeouts.connect_timeout_ms if timeouts else None
        read_ms = timeouts.read_timeout_ms if timeouts else None
        attempt_ms = timeouts.operation_attempt_timeout_ms if timeouts else None
        reads = [t for t in (self._options.stream_timeout,) if t is not None]
        if read_ms is not None:
            reads.append(read_ms / 1000)
        return ClientSettings(
            bucket=self._bucket,
            region=self._options.region,
            endpoint_url=self._options.endpoint_url,
            force_path_style=self._options.force_path_style,
            anonymous=isinstance(self._credentials, S3Credentials.Anonymous),
            connect_timeout=connect_ms / 1000 if connect_ms is not None else None,
            read_timeout=min(reads) if reads else None,
            headers=self._headers,
            attempt_timeout=attempt_ms / 1000 if attempt_ms is not None else None,
        )

    async def _clients(self) -> LoopClients:
        clients = self._loops.get()
        if clients.location is None:
            await clients.ready()
        return clients

    async def _client(self) -> S3Client:
        return await self._loops.get().client()

    async def _aclose(self) -> None:
        clients = self._loops.pop()
        if clients is not None:
            if clients.transport is not None:
                await aclose_transport(clients.transport)
            await clients.aclose()
        if self._source is not None and not self._loops.items():
            await self._source.aclose()

    async def _signing_credentials(self, clients: LoopClients) -> FrozenCredentials | None:
        """The credential to sign this attempt with (None: unsigned). Asked every attempt,
        so a request never goes out with a credential past its expiry."""
        if self._source is not None:
            return await self._source()
        if isinstance(self._credentials, S3Credentials.FromEnv):
            return await clients.env_credentials()
        return None

    def _attempt_timeout(self) -> contextlib.AbstractAsyncContextManager[Any]:
        timeouts = self.settings.timeouts
        ms = timeouts.operation_attempt_timeout_ms if timeouts else None
        if ms is None:
            return contextlib.nullcontext()
        return asyncio.timeout(ms / 1000)

    def _context(
        self,
        operation: str,
        path: str,
        *,
        mode: PutMode | None = None,
        expected: VersionInfo | None = None,
    ) -> S3ErrorContext:
        return S3ErrorContext(
            operation,
            self._key(path),  # errors name the user's key, relative to the prefix
            self._bucket,
            mode=None if mode == "overwrite" else mode,
            expected=expected,
        )

    def _storage_class(self, path: str) -> str | None:
        settings = self.settings
        if self._key(path).startswith(CHUNKS_PREFIX):
            return settings.effective_chunks_storage_class
        return settings.effective_metadata_storage_class

    @property
    def _checksum(self) -> ChecksumAlgorithm | None:
        return self._options.checksum_algorithm

    # --- the lean data plane: one signed request each over the shared transport ----------

    async def _lean_send(
        self,
        context: S3ErrorContext,
        method: str,
        uri: str,
        headers: dict[str, str],
        *,
        query: list[tuple[str, str]] | None = None,
        body: bytes | bytearray | memoryview | None = None,
        payload_hash: str | None = None,
        max_body: int = 64 * 1024,
        resend_if_stale: bool = True,
    ) -> Response:
        """One signed request that is not an object read; a non-2xx status is raised as
        our error (``error_for_status``), exactly as for reads."""
        clients = await self._clients()
        location, signer = clients.location, clients.signer
        assert location is not None
        assert signer is not None
        credentials = await self._signing_credentials(clients)
        if payload_hash is None:
            payload_hash = hashlib.sha256(body).hexdigest() if body is not None else EMPTY_SHA256
        target, headers = signed(
            location,
            signer,
            method,
            uri,
            headers,
            credentials,
            query=query,
            payload_hash=payload_hash,
        )
        # The transport raises only errors of our tree: no translation layer on this path.
        response = await clients.http_transport().request(
            Request(method, target, headers, body, resend_if_stale=resend_if_stale),
            what=context.describe(),
            max_body=max_body,
        )
        status = response.status
        if 200 <= status < 300:
            return response
        code, message = parse_error_body(bytes(response.body))
        raise error_for_status(status, code, message, context, response.headers)

    async def _read(
        self,
        operation: str,
        path: str,
        byte_range: ByteRequest | None,
        *,
        into: memoryview | None = None,
        unless: VersionInfo | None = None,
    ) -> tuple[GetResult | None, int, int | None]:
        """One signed GET through the shared transport (``If-None-Match`` with the etag of
        ``unless``); the body is read here, so a failure mid-body is retried whole."""
        if_none_match = unless.etag if unless is not None else None
        clients = await self._clients()
        location, signer = clients.location, clients.signer
        assert location is not None
        assert signer is not None
        context = self._context(operation, path)
        credentials = await self._signing_credentials(clients)
        target, headers = _get_request(
            location,
            signer,
            self._read_headers,
            path,
            range_value=_range_header(byte_range),
            if_none_match=if_none_match,
            credentials=credentials,
        )
        response = await clients.http_transport().read(
            Request("GET", target, headers), byte_range, what=context.describe(), into=into
        )
        status = response.status
        if status in (200, 206):
            result = GetResult(response.body, VersionInfo(etag=response.headers.get("etag")))
            written = response.written if response.written >= 0 else len(response.body)
            return result, written, response.total
        if status == 304 and if_none_match is not None:
            return None, 0, None
        code, message = parse_error_body(bytes(response.body))
        raise error_for_status(status, code, message, context, response.headers)

    # --- aiobotocore requests ------------------------------------------------------------

    async def _request(
        self, context: S3ErrorContext, send: Callable[[S3Client], Awaitable[T]]
    ) -> T:
        """One aiobotocore call with our error mapping and the per-attempt timeout."""
        with s3_errors(context):
            client = await self._client()
            async with self._attempt_timeout():
                return await send(client)

    async def _head_object(self, path: str) -> ObjectInfo:
        context = self._context("head", path)
        location = (await self._clients()).location
        assert location is not None
        response = await self._lean_send(
            context, "HEAD", location.uri(path), dict(self._read_headers)
        )
        return head_info(path, response.headers, context.describe())

    def _condition(self, path: str, mode: PutMode) -> dict[str, str]:
        if mode == "create":
            return {"IfNoneMatch": "*"}
        if isinstance(mode, VersionInfo):
            if mode.etag is None:
                raise PreconditionFailedError(
                    path, mode, f"Cannot write {path!r} conditionally on S3 without an etag."
                )
            return {"IfMatch": _strip_quotes(mode.etag)}
        return {}

    def _write_params(
        self, path: str, content_type: str | None, metadata: Mapping[str, str]
    ) -> dict[str, Any]:
        params: dict[str, Any] = {"Bucket": self._bucket, "Key": path, "Metadata": dict(metadata)}
        if content_type is not None:
            params["ContentType"] = content_type
        storage_class = self._storage_class(path)
        if storage_class is not None:
            params["StorageClass"] = storage_class
        if self._checksum is not None:
            params["ChecksumAlgorithm"] = self._checksum.wire_name
        return params

    async def _put_object(
        self,
        path: str,
        data: Data,
        mode: PutMode,
        content_type: str | None,
        metadata: Mapping[str, str],
    ) -> VersionInfo:
        """One PutObject from the caller's buffer (no copy), signed over the body's SHA-256
        as botocore signs it. A checksummed PUT that botocore would stream as an
        ``aws-chunked`` trailer (https) or compute with awscrt goes through aiobotocore."""
        clients = await self._clients()
        location = clients.location
        assert location is not None
        extra = None
        checksum = self._checksum
        if checksum is not None:
            extra = checksum_headers(checksum, data, location.scheme)
            if extra is None:
                return await self._sdk_put_object(path, data, mode, content_type, metadata)
        if_match = None
        if isinstance(mode, VersionInfo):
            if mode.etag is None:
                raise PreconditionFailedError(
                    path, mode, f"Cannot write {path!r} conditionally on S3 without an etag."
                )
            if_match = _strip_quotes(mode.etag)
        headers = put_headers(
            content_type=content_type,
            metadata=metadata,
            storage_class=self._storage_class(path),
            if_none_match=mode == "create",
            if_match=if_match,
            extra=extra,
            write_headers=self._write_headers,
        )
        response = await self._lean_send(
            self._context("put", path, mode=mode),
            "PUT",
            location.uri(path),
            headers,
            body=data,
            resend_if_stale=mode == "overwrite",  # see BaseStorage.put
        )
        return VersionInfo(etag=response.headers.get("etag"))

    async def _sdk_put_object(
        self,
        path: str,
        data: Data,
        mode: PutMode,
        content_type: str | None,
        metadata: Mapping[str, str],
    ) -> VersionInfo:
        params = self._write_params(path, content_type, metadata)
        params.update(self._condition(path, mode))
        params["Body"] = bytes(data) if isinstance(data, memoryview) else data
        response = await self._request(
            self._context("put", path, mode=mode), lambda c: c.put_object(**params)
        )
        return VersionInfo(etag=response.get("ETag"))

    # --- uploads in parts: the base runs these steps, each one request ---------------------

    def _multipart_ranges(self, size: int) -> list[tuple[int, int]]:
        """Equal parts but the last, within S3's limits: at least 5 MiB but the last, at most
        5 GiB, at most 10,000 parts."""
        max_parts, ideal = self.settings.effective_concurrency
        limit = min(max_parts, MAX_PARTS, max(1, size // MIN_PART_SIZE))
        limit = max(limit, -(-size // MAX_PART_SIZE))
        return split_for_multipart(size, ideal, limit)

    async def _multipart_start(
        self, path: str, mode: PutMode, content_type: str | None, metadata: Mapping[str, str]
    ) -> str:
        params = self._write_params(path, content_type, metadata)
        created = await self._request(
            self._context("create_multipart", path),
            lambda c: c.create_multipart_upload(**params),
        )
        return str(created["UploadId"])

    async def _multipart_part(
        self, path: str, upload: str, number: int, start: int, body: memoryview, total: int
    ) -> object:
        params: dict[str, Any] = {
            "Bucket": self._bucket,
            "Key": path,
            "UploadId": upload,
            "PartNumber": number,
            "Body": bytes(body),  # botocore reads the body as a stream: a copy per attempt
        }
        checksum = self._checksum
        if checksum is not None:
            params["ChecksumAlgorithm"] = checksum.wire_name
        response = await self._request(
            self._context("upload_part", path), lambda c: c.upload_part(**params)
        )
        part: dict[str, Any] = {"ETag": _strip_quotes(response["ETag"]), "PartNumber": number}
        if checksum is not None:
            fields: Mapping[str, Any] = response
            value = fields.get(f"Checksum{checksum.wire_name}")
            if value:
                part[f"Checksum{checksum.wire_name}"] = value
        return part

    async def _multipart_complete(
        self,
        path: str,
        upload: str,
        parts: list[object],
        mode: PutMode,
        content_type: str | None,
        metadata: Mapping[str, str],
    ) -> VersionInfo:
        complete: dict[str, Any] = {
            "Bucket": self._bucket,
            "Key": path,
            "UploadId": upload,
            "MultipartUpload": {"Parts": parts},
            **self._condition(path, mode),
        }
        response = await self._request(
            self._context("complete_multipart", path, mode=mode),
            lambda c: c.complete_multipart_upload(**complete),
        )
        return VersionInfo(etag=response.get("ETag"))

    async def _multipart_abort(self, path: str, upload: str) -> None:
        await self._request(
            self._context("abort_multipart", path),
            lambda c: c.abort_multipart_upload(Bucket=self._bucket, Key=path, UploadId=upload),
        )

    async def _multipart_uploads(self, path: str) -> list[str]:
        # issue 15: find the uploads a lost CreateMultipartUpload response hid (one page:
        # a key has few unfinished uploads).
        listed = await self._request(
            self._context("list_multipart", path),
            lambda c: c.list_multipart_uploads(Bucket=self._bucket, Prefix=path),
        )
        return [str(u["UploadId"]) for u in listed.get("Uploads", []) if u.get("Key") == path]

    async def _copy_object(
        self, source: str, destination: str, version: VersionInfo | None
    ) -> VersionInfo:
        """One CopyObject on the lean data plane, as botocore sends it (``copy_headers``);
        S3 may answer 200 and report the failure in the body (``_copy.py``)."""
        if_match = None
        if version is not None:
            if version.etag is None:
                raise PreconditionFailedError(
                    source, version, f"Cannot copy {source!r} conditionally without an etag."
                )
            if_match = _strip_quotes(version.etag)
        location = (await self._clients()).location
        assert location is not None
        headers = copy_headers(
            bucket=self._bucket,
            source=source,
            if_match=if_match,
            storage_class=self._storage_class(destination),
            write_headers=self._write_headers,
        )
        context = self._context("copy", source, expected=version)
        response = await self._lean_send(
            context,
            "PUT",
            location.uri(destination),
            headers,
            body=b"",  # botocore sends "content-length: 0", unsigned
            max_body=MAX_COPY_RESULT_BYTES,
        )
        return VersionInfo(etag=copy_result_etag(response.body, context))

    async def _list_page(
        self, path_prefix: str, delimiter: str | None, token: str | None
    ) -> ListPage:
        context = self._context("list", path_prefix)
        location = (await self._clients()).location
        assert location is not None
        response = await self._lean_send(
            context,
            "GET",
            location.bucket_uri(),
            dict(self._read_headers),
            query=list_query(path_prefix, self._list_page_size, token, delimiter),
            max_body=MAX_PAGE_BYTES,
        )
        return parse_list_page(
            response.body, path_prefix, delimiter, context.describe(), self._key_cut
        )

    async def _delete_objects(
        self, paths: list[str]
    ) -> tuple[dict[str, int | None], dict[str, str]]:
        if len(paths) == 1:  # DeleteObject: one lean request, no body to checksum
            path = paths[0]
            location = (await self._clients()).location
            assert location is not None
            await self._lean_send(
                self._context("delete", path),
                "DELETE",
                location.uri(path),
                dict(self._write_headers),
                body=b"",  # botocore sends "content-length: 0", unsigned
            )
            return {path: None}, {}
        params: dict[str, Any] = {
            "Bucket": self._bucket,
            "Delete": {"Objects": [{"Key": path} for path in paths], "Quiet": True},
        }
        if self._checksum is not None:
            params["ChecksumAlgorithm"] = self._checksum.wire_name
        response = await self._request(
            self._context("delete", paths[0]), lambda c: c.delete_objects(**params)
        )
        errors = {
            item["Key"]: f"{item.get('Code', 'Error')}: {item.get('Message', '')}".rstrip(": ")
            for item in response.get("Errors") or ()
        }
        deleted: dict[str, int | None] = {path: None for path in paths if path not in errors}
        return deleted, errors


def build_get_request(
    location: S3Location,
    signer: SigV4Signer,
    base_headers: Mapping[str, str],
    path: str,
    *,
    range_value: str | None = None,
    if_none_match: str | None = None,
    credentials: FrozenCredentials | None = None,
    timestamp: str | None = None,
) -> tuple[str, dict[str, str]]:
    """The URL and headers of one data-plane GET: what botocore would send for GetObject.

    ``base_headers``: the read headers, lower-case names. No credentials: unsigned.
    """
    uri, headers = _get_request(
        location,
        signer,
        base_headers,
        path,
        range_value=range_value,
        if_none_match=if_none_match,
        credentials=credentials,
        timestamp=timestamp,
    )
    return location.origin + uri, headers


def _get_request(
    location: S3Location,
    signer: SigV4Signer,
    base_headers: Mapping[str, str],
    path: str,
    *,
    range_value: str | None = None,
    if_none_match: str | None = None,
    credentials: FrozenCredentials | None = None,
    timestamp: str | None = None,
) -> tuple[str, dict[str, str]]:
    """``build_get_request`` with the request target (encoded path) instead of the URL."""
    headers = dict(base_headers)
    if range_value is not None:
        headers["range"] = range_value
    if if_none_match is not None:
        headers["if-none-match"] = if_none_match
    return signed(
        location, signer, "GET", location.uri(path), headers, credentials, timestamp=timestamp
    )

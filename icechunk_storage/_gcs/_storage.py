"""``GcsStorage``: a Google Cloud Storage bucket under a prefix, over the JSON API.

Every request is one HTTP request on the shared transport (``_transport``), built and
signed here (a bearer token from ``_auth.py``, or none for anonymous access); the transport
moves bytes, applies the attempt deadline and, for object reads (``Transport.read``), the
integrity rules; ``_errors.py`` maps statuses, ``BaseStorage._call`` retries and runs the
resumable-upload steps and the listing pages (gcloud-aio-storage has no retries of its own,
and is not used for requests: one implementation per behaviour).

GCS semantics:

* Versions are generations (``x-goog-generation`` / ``generation``), with the etag kept too.
  A conditional create sends ``ifGenerationMatch=0``, an update
  ``ifGenerationMatch=<generation>``, a conditional copy ``ifSourceGenerationMatch``, a
  conditional read ``ifGenerationNotMatch`` (and the answer's generation is compared
  too, for servers that ignore it).
* Writes below ``minimum_size_for_multipart_upload`` are one ``uploadType=multipart``
  request (metadata and bytes together; the only upload type on which fake-gcs-server
  enforces preconditions); larger ones are a resumable upload, in chunks that are multiples
  of 256 KiB sent in order, finalised by an empty ``bytes */<size>`` request, with the same
  precondition on the session.
* Listing is one page per request (``maxResults``, ``pageToken``, ``delimiter``); deletes
  are one request per object, run with bounded concurrency.
* Storage classes (``storage_class``, ``metadata_storage_class``, ``chunks_storage_class``)
  go in the object resource of uploads and rewrites.
"""

from __future__ import annotations

import contextlib
import functools
import json
import re
import uuid
from collections.abc import Mapping
from datetime import datetime
from typing import Any, ClassVar
from urllib.parse import quote, urlencode, urlsplit

import attrs

from .._backend import ListPage, OneGetPerRead
from .._credentials import AnyGcsCredential, GcsCredentials
from .._errors import (
    ConfigurationError,
    MultipartUploadVanishedError,
    PreconditionFailedError,
    StorageError,
    TransientError,
)
from .._extras import require_extra
from .._loops import LoopLocal
from .._ranges import ByteRequest, OffsetByteRequest, RangeByteRequest, SuffixByteRequest
from .._s3._headers import RequestHeaders, resolve_request_headers, validate_headers
from .._settings import StorageSettings
from .._storage import Capabilities, Data, GetResult, ObjectInfo, PutMode, VersionInfo
from .._transport import (
    Request,
    Response,
    Transport,
    TransportConfig,
    aclose_transport,
    get_transport,
    proxy_for,
)
from ._auth import TokenSource
from ._config import GcsEndpoint
from ._errors import error_for_status

__all__ = ["GcsStorage"]

RESUMABLE_CHUNK = 256 * 1024
"""GCS requires every chunk of a resumable upload but the last to be a multiple of this."""
CHUNKS_PREFIX = "chunks/"
LIST_FIELDS = "items(name,size,updated,generation,etag),prefixes,nextPageToken"
USER_AGENT = "icechunk-storage"
_PLAIN_NAME = re.compile(r"[A-Za-z0-9._~/-]*")
"""Object names that need no percent-encoding but of "/" (quote's always-safe set)."""


class _LoopTransport:
    """The transport of one storage in one event loop, kept so a request costs no registry
    lookup; asked again from ``get_transport`` once closed (as ``_s3/_client.py`` does)."""

    __slots__ = ("_config", "_transport")

    def __init__(self, config: TransportConfig) -> None:
        self._config = config
        self._transport: Transport | None = None

    def get(self) -> Transport:
        transport = self._transport
        if transport is None or transport.closed:
            transport = self._transport = get_transport(self._config)
        return transport


def _credential_kind(credentials: AnyGcsCredential) -> str:
    if isinstance(credentials, GcsCredentials.Static):
        return f"static {type(credentials.credentials).__name__}"
    return type(credentials).__name__.lower()


def _range_header(byte_range: ByteRequest | None) -> str | None:
    if byte_range is None:
        return None
    if isinstance(byte_range, RangeByteRequest):
        return f"bytes={byte_range.start}-{byte_range.end - 1}"
    if isinstance(byte_range, OffsetByteRequest):
        return f"bytes={byte_range.offset}-"
    assert isinstance(byte_range, SuffixByteRequest)
    return f"bytes=-{byte_range.suffix}"


def _unquote_etag(value: str | None) -> str | None:
    """Media responses quote the ETag header; the object resource's ``etag`` is bare."""
    if value is None:
        return None
    value = value.strip()
    if value.startswith("W/"):
        value = value[2:]
    if len(value) >= 2 and value[0] == value[-1] == '"':
        return value[1:-1]
    return value


def _timestamp(value: object) -> datetime | None:
    if not isinstance(value, str):
        return None
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


class _StoredOtherBytesError(StorageError):
    """A finished upload holds other bytes than were sent (not retried)."""

    def __init__(self, message: str, version: VersionInfo) -> None:
        super().__init__(message)
        self.version = version


def _persisted_bytes(response: Response) -> int | None:
    """How many bytes a resumable session holds, from a 308's ``Range: bytes=0-N``."""
    if response.status != 308:
        return None
    value = response.headers.get("range")
    if value is None:
        return 0
    match = re.fullmatch(r"bytes=0-(\d{1,19})", value.strip())
    return int(match.group(1)) + 1 if match else None


def _resource_version(resource: Mapping[str, Any]) -> VersionInfo:
    generation = resource.get("generation")
    etag = resource.get("etag")
    return VersionInfo(
        etag=str(etag) if etag is not None else None,
        generation=str(generation) if generation is not None else None,
    )


def _object_info(resource: Mapping[str, Any], cut: int = 0) -> ObjectInfo:
    """The ObjectInfo of an object resource, its name's first ``cut`` characters cut off."""
    metadata = resource.get("metadata") or {}
    return ObjectInfo(
        key=str(resource["name"])[cut:],
        size=int(resource.get("size", 0)),
        last_modified=_timestamp(resource.get("updated")),
        version=_resource_version(resource),
        content_type=resource.get("contentType"),
        metadata={str(k): str(v) for k, v in metadata.items()},
    )


def _json(response: Response, what: str) -> dict[str, Any]:
    try:
        parsed = json.loads(bytes(response.body))
    except ValueError as exc:
        raise TransientError(f"{what}: the server sent a body that is not JSON.") from exc
    if not isinstance(parsed, dict):
        raise TransientError(f"{what}: the server sent JSON that is not an object.")
    return parsed


class GcsStorage(OneGetPerRead):
    """A GCS bucket under a prefix. Build it with :func:`gcs_storage`.

    Construction does no I/O; tokens and connections are per process and event loop, made on
    first use and released by ``aclose()``. It pickles by configuration.
    """

    backend_name = "gcs"
    native_capabilities: ClassVar[Capabilities] = Capabilities()
    requires_prefix_for_repository: ClassVar[bool] = True
    _supports_multipart_upload: ClassVar[bool] = True
    _multipart_concurrent_parts: ClassVar[bool] = False
    _delete_batch_size: ClassVar[int] = 1
    _delete_batch_concurrency: ClassVar[int] = 32
    _runtime_attributes: ClassVar[tuple[str, ...]] = ("_tokens", "_transports")
    _list_page_size: int = 1000

    def __init__(
        self,
        *,
        bucket: str,
        prefix: str | None = None,
        credentials: AnyGcsCredential | None = None,
        endpoint: GcsEndpoint | None = None,
        headers: Mapping[str, str] | None = None,
        read_headers: Mapping[str, str] | None = None,
        write_headers: Mapping[str, str] | None = None,
        settings: StorageSettings | None = None,
        read_only: bool = False,
    ) -> None:
        super().__init__(prefix=prefix, settings=settings, read_only=read_only)
        require_extra("gcs", "gcs_storage")
        if not isinstance(bucket, str) or not bucket or "/" in bucket or bucket != bucket.strip():
            raise ConfigurationError(
                f"bucket must be a non-empty bucket name without '/' or surrounding spaces, "
                f"got {bucket!r}; put the path inside the bucket in prefix."
            )
        endpoint = endpoint if endpoint is not None else GcsEndpoint()
        if not isinstance(endpoint, GcsEndpoint):
            raise ConfigurationError(
                f"endpoint must be a GcsEndpoint, got {type(endpoint).__name__}."
            )
        if credentials is None:
            credentials = (
                GcsCredentials.Anonymous() if endpoint.emulator else GcsCredentials.FromEnv()
            )
        if not isinstance(
            credentials,
            GcsCredentials.Anonymous
            | GcsCredentials.FromEnv
            | GcsCredentials.Static
            | GcsCredentials.Refreshable,
        ):
            raise ConfigurationError(
                "credentials must be one of GcsCredentials.Anonymous, FromEnv, Static or "
                f"Refreshable (see gcs_credentials()), got {type(credentials).__name__}."
            )
        self._bucket = bucket
        self._endpoint = endpoint
        self._credentials: AnyGcsCredential = credentials
        self._headers: RequestHeaders = resolve_request_headers(
            headers=validate_headers("headers", headers),
            read_headers=validate_headers("read_headers", read_headers),
            write_headers=validate_headers("write_headers", write_headers),
        )
        fixed = {"host": endpoint.host, "user-agent": USER_AGENT}
        self._read_base = {name.lower(): value for name, value in self._headers.read} | fixed
        self._write_base = {name.lower(): value for name, value in self._headers.write} | fixed
        self._bucket_path = f"/storage/v1/b/{quote(bucket, safe='')}"
        self._upload_path = f"/upload/storage/v1/b/{quote(bucket, safe='')}/o"
        self._reset_runtime()

    # --- configuration -------------------------------------------------------------------

    @property
    def bucket(self) -> str:
        return self._bucket

    @property
    def endpoint(self) -> GcsEndpoint:
        return self._endpoint

    @property
    def credentials(self) -> AnyGcsCredential:
        return self._credentials

    @property
    def request_headers(self) -> RequestHeaders:
        return self._headers

    def _describe(self) -> str:
        parts = [f"gs://{self._bucket}/{self._prefix}".rstrip("/")]
        if self._endpoint.origin != GcsEndpoint().origin:
            parts.append(f"endpoint={self._endpoint.origin!r}")
        parts.append(f"credentials={_credential_kind(self._credentials)}")
        if self._read_only:
            parts.append("read_only")
        return ", ".join(parts)

    def _config_key(self) -> object:
        return (self._bucket, self._prefix, self._endpoint, self._credentials, self._headers)

    # --- runtime -------------------------------------------------------------------------

    def _reset_runtime(self) -> None:
        self._tokens = TokenSource(self._credentials)
        # The factory holds the config only, never self (storages are dropped without aclose).
        self._transports: LoopLocal[_LoopTransport] = LoopLocal(
            functools.partial(_LoopTransport, self._transport_config())
        )

    def _transport_config(self) -> TransportConfig:
        """Where and how requests go: the endpoint, its proxy (``proxy_url``, else the
        standard ``HTTPS_PROXY``/``NO_PROXY`` variables) and the user's timeouts (the
        transport applies the attempt deadline and the stall check)."""
        timeouts = self.settings.timeouts
        connect_ms = timeouts.connect_timeout_ms if timeouts else None
        read_ms = timeouts.read_timeout_ms if timeouts else None
        attempt_ms = timeouts.operation_attempt_timeout_ms if timeouts else None
        config = TransportConfig(
            origin=self._endpoint.origin,
            proxy=self._endpoint.proxy or proxy_for(self._endpoint.origin),
            attempt_timeout=attempt_ms / 1000 if attempt_ms is not None else None,
        )
        if connect_ms is not None:
            config = attrs.evolve(config, connect_timeout=connect_ms / 1000)
        if read_ms is not None:
            config = attrs.evolve(config, stream_timeout=read_ms / 1000)
        return config

    async def _aclose(self) -> None:
        # As every backend: release this storage's tokens and the loop's connections to its
        # endpoint (shared with storages of the same config, which reconnect on next use).
        if self._transports.pop() is not None:
            await aclose_transport(self._transport_config())
        await self._tokens.aclose()

    async def _headers_for(self, write: bool) -> dict[str, str]:
        headers = dict(self._write_base if write else self._read_base)
        authorization = await self._tokens.authorization()
        if authorization is not None:
            headers["authorization"] = authorization
        return headers

    def _object_path(self, path: str) -> str:
        # The object name is one path segment: "/" too is escaped. Most names are plain
        # (chunk and metadata keys), for which a replace is all quote() would do, faster.
        if _PLAIN_NAME.fullmatch(path):
            return f"{self._bucket_path}/o/{path.replace('/', '%2F')}"
        return f"{self._bucket_path}/o/{quote(path, safe='')}"

    def _storage_class(self, path: str) -> str | None:
        settings = self.settings
        if self._key(path).startswith(CHUNKS_PREFIX):
            return settings.effective_chunks_storage_class
        return settings.effective_metadata_storage_class

    def _what(self, operation: str, path: str) -> str:
        """How errors start; they name the user's key, relative to the prefix."""
        return f"{operation} of {self._key(path)!r} in GCS bucket {self._bucket!r}"

    def _fail(
        self,
        response: Response,
        operation: str,
        path: str,
        *,
        mode: object = None,
        expected: VersionInfo | None = None,
    ) -> StorageError:
        return error_for_status(
            response.status,
            response.body,
            operation=operation,
            path=self._key(path),
            bucket=self._bucket,
            mode=None if mode == "overwrite" else mode,
            expected=expected,
        )

    async def _send(
        self,
        method: str,
        target: str,
        *,
        write: bool,
        what: str,
        body: bytes | bytearray | memoryview | None = None,
        extra: Mapping[str, str] | None = None,
        resend_if_stale: bool = True,
    ) -> Response:
        headers = await self._headers_for(write)
        if extra:
            headers.update(extra)
        transport = self._transports.get().get()
        request = Request(method, target, headers, body, resend_if_stale=resend_if_stale)
        return await transport.request(request, what=what)

    # --- reads ---------------------------------------------------------------------------

    async def _read(
        self,
        operation: str,
        path: str,
        byte_range: ByteRequest | None,
        *,
        into: memoryview | None = None,
        unless: VersionInfo | None = None,
    ) -> tuple[GetResult | None, int, int | None]:
        """One media GET: ``(result or None if unchanged since unless, written, total)``."""
        what = self._what(operation, path)
        target = f"{self._object_path(path)}?alt=media"
        headers = await self._headers_for(False)
        range_value = _range_header(byte_range)
        if range_value is not None:
            headers["range"] = range_value
        if unless is not None:
            if unless.generation is not None:
                target += "&" + urlencode({"ifGenerationNotMatch": unless.generation})
            elif unless.etag is not None:
                headers["if-none-match"] = f'"{unless.etag}"'
        transport = self._transports.get().get()
        response = await transport.read(
            Request("GET", target, headers), byte_range, what=what, into=into
        )
        if response.status == 304:
            return None, 0, None
        if response.status not in (200, 206):
            raise self._fail(response, operation, path)
        generation = response.headers.get("x-goog-generation")
        version = VersionInfo(
            etag=_unquote_etag(response.headers.get("etag")), generation=generation
        )
        if unless is not None and _same_version(version, unless):
            return None, 0, response.total  # the server ignored ifGenerationNotMatch
        written = response.written if response.written >= 0 else len(response.body)
        return GetResult(response.body, version), written, response.total

    async def _head_object(self, path: str) -> ObjectInfo:
        what = self._what("head", path)
        response = await self._send("GET", self._object_path(path), write=False, what=what)
        if response.status != 200:
            raise self._fail(response, "head", path)
        resource = _json(response, what)
        if resource.get("name") != path:
            raise TransientError(f"{what}: the server described another object.")
        return _object_info(resource)

    # --- writes --------------------------------------------------------------------------

    def _condition(self, path: str, mode: PutMode) -> dict[str, str]:
        if mode == "create":
            return {"ifGenerationMatch": "0"}
        if isinstance(mode, VersionInfo):
            if mode.generation is None:
                key = self._key(path)
                raise PreconditionFailedError(
                    key,
                    mode,
                    f"Cannot write {key!r} on GCS conditionally on {mode}: a GCS conditional "
                    "update needs the generation (use the version a GCS read or write returned).",
                )
            return {"ifGenerationMatch": mode.generation}
        return {}

    def _resource(
        self, path: str, content_type: str | None, metadata: Mapping[str, str]
    ) -> dict[str, Any]:
        resource: dict[str, Any] = {"name": path}
        if content_type is not None:
            resource["contentType"] = content_type
        if metadata:
            resource["metadata"] = dict(metadata)
        storage_class = self._storage_class(path)
        if storage_class is not None:
            resource["storageClass"] = storage_class
        return resource

    def _written(
        self,
        response: Response,
        operation: str,
        path: str,
        mode: object,
        size: int | None = None,
    ) -> VersionInfo:
        what = self._what(operation, path)
        if response.status not in (200, 201):
            raise self._fail(response, operation, path, mode=mode)
        resource = _json(response, what)
        if resource.get("name") != path:
            raise TransientError(f"{what}: the server confirmed another object.")
        stored = resource.get("size")
        if size is not None and stored is not None and str(stored) != str(size):
            # The server kept other bytes than we sent (a resent chunk appended twice):
            # never report success, nor let the write-id read-back take it for our write.
            raise _StoredOtherBytesError(
                f"{what}: the server stored {stored} bytes for a {size}-byte upload; the "
                "object it made was deleted.",
                _resource_version(resource),
            )
        return _resource_version(resource)

    async def _put_object(
        self,
        path: str,
        data: Data,
        mode: PutMode,
        content_type: str | None,
        metadata: Mapping[str, str],
    ) -> VersionInfo:
        """One ``uploadType=multipart`` request: the object resource, then the bytes."""
        params = {"uploadType": "multipart", **self._condition(path, mode)}
        resource = self._resource(path, content_type, metadata)
        boundary = uuid.uuid4().hex
        media_type = content_type or "application/octet-stream"
        head = (
            f"--{boundary}\r\ncontent-type: application/json; charset=UTF-8\r\n\r\n"
            f"{json.dumps(resource)}\r\n--{boundary}\r\ncontent-type: {media_type}\r\n\r\n"
        ).encode()
        body = b"".join((head, data, f"\r\n--{boundary}--\r\n".encode()))
        response = await self._send(
            "POST",
            f"{self._upload_path}?{urlencode(params)}",
            write=True,
            what=self._what("put", path),
            body=body,
            extra={"content-type": f"multipart/related; boundary={boundary}"},
            resend_if_stale=mode == "overwrite",  # see BaseStorage.put
        )
        return self._written(response, "put", path, mode)

    # --- resumable uploads, as the base's multipart steps --------------------------------

    def _multipart_ranges(self, size: int) -> list[tuple[int, int]]:
        """Chunks of a multiple of 256 KiB (GCS's rule), about ``ideal_concurrent_request_size``
        each; the last one takes the rest."""
        _, ideal = self.settings.effective_concurrency
        chunk = max(RESUMABLE_CHUNK, ideal // RESUMABLE_CHUNK * RESUMABLE_CHUNK)
        return [(start, min(start + chunk, size)) for start in range(0, size, chunk)] or [(0, 0)]

    async def _multipart_start(
        self,
        path: str,
        mode: PutMode,
        content_type: str | None,
        metadata: Mapping[str, str],
    ) -> str:
        params = {"uploadType": "resumable", **self._condition(path, mode)}
        extra = {"content-type": "application/json; charset=UTF-8"}
        if content_type is not None:
            extra["x-upload-content-type"] = content_type
        what = self._what("put", path)
        response = await self._send(
            "POST",
            f"{self._upload_path}?{urlencode(params)}",
            write=True,
            what=what,
            body=json.dumps(self._resource(path, content_type, metadata)).encode(),
            extra=extra,
        )
        if response.status != 200:
            raise self._fail(response, "put", path, mode=mode)
        location = response.headers.get("location", "")
        parts = urlsplit(location)
        origin = urlsplit(self._endpoint.origin)
        if parts.scheme == "" and parts.netloc == "" and parts.path.startswith("/"):
            pass  # a relative session URI
        elif (parts.scheme, parts.netloc) != (origin.scheme, origin.netloc):
            # Not retried: the server names itself differently from the endpoint we were
            # given (an emulator started without -public-host, a proxy in between), and it
            # will do so again. Only the origins are named: the URI carries the session id.
            raise StorageError(
                f"{what}: the server put the resumable upload session at "
                f"{parts.scheme}://{parts.netloc}, not at the endpoint {self._endpoint.origin}; "
                "we send the upload's bytes only to the endpoint. Set the endpoint "
                "(google_base_url) to the address the server calls itself, or have the server "
                "(or proxy) answer with the endpoint's address."
            )
        if not parts.path.startswith("/upload/"):
            raise TransientError(f"{what}: the server sent no resumable session URI.")
        return f"{parts.path}?{parts.query}" if parts.query else parts.path

    async def _multipart_part(
        self, path: str, upload: str, number: int, start: int, body: memoryview, total: int
    ) -> object:
        end = start + len(body) - 1
        response = await self._send(
            "PUT",
            upload,
            write=True,
            what=self._what("put", path),
            body=body,
            extra={"content-range": f"bytes {start}-{end}/*"},
        )
        if response.status == 404:
            raise MultipartUploadVanishedError(
                f"The resumable upload of {self._key(path)!r} is gone."
            )
        if response.status not in (200, 201, 308):
            raise self._fail(response, "put", path)
        persisted = _persisted_bytes(response)
        if persisted is not None and persisted != start + len(body):
            # The session holds other bytes than we sent: a chunk stored twice (as
            # fake-gcs-server does with a resent chunk) or lost. Not retried (a resend would
            # append again): the base aborts the upload and the put fails.
            raise StorageError(
                f"{self._what('put', path)}: after the part at byte {start} the resumable "
                f"session holds {persisted} bytes, expected {start + len(body)}; the upload "
                "was abandoned."
            )
        return start + len(body)

    async def _multipart_complete(
        self,
        path: str,
        upload: str,
        parts: list[object],
        mode: PutMode,
        content_type: str | None,
        metadata: Mapping[str, str],
    ) -> VersionInfo:
        total = max((int(p) for p in parts if isinstance(p, int)), default=0)
        response = await self._send(
            "PUT",
            upload,
            write=True,
            what=self._what("put", path),
            body=b"",
            extra={"content-range": f"bytes */{total}"},
        )
        if response.status in (404, 410):
            raise MultipartUploadVanishedError(
                f"The resumable upload of {self._key(path)!r} is gone."
            )
        try:
            return self._written(response, "put", path, mode, size=total)
        except _StoredOtherBytesError as exc:
            # Only this very object (its generation) goes, never a newer one.
            with contextlib.suppress(StorageError):
                generation = exc.version.generation or "0"
                await self._send(
                    "DELETE",
                    f"{self._object_path(path)}?ifGenerationMatch={generation}",
                    write=True,
                    what=self._what("delete", path),
                )
            raise

    async def _multipart_abort(self, path: str, upload: str) -> None:
        # GCS answers a cancelled session with 499; anything is fine here, best effort.
        await self._send("DELETE", upload, write=True, what=self._what("abort upload", path))

    # --- copy, list, delete --------------------------------------------------------------

    async def _copy_object(
        self, source: str, destination: str, version: VersionInfo | None
    ) -> VersionInfo:
        """``rewriteTo`` (same bucket), repeated with its token until done."""
        params: dict[str, str] = {}
        if version is not None:
            if version.generation is None:
                key = self._key(source)
                raise PreconditionFailedError(
                    key,
                    version,
                    f"Cannot copy {key!r} conditionally on {version}: GCS needs the generation.",
                )
            params["ifSourceGenerationMatch"] = version.generation
        resource: dict[str, Any] = {}
        storage_class = self._storage_class(destination)
        if storage_class is not None:
            resource["storageClass"] = storage_class
        base = f"{self._object_path(source)}/rewriteTo/b/{quote(self._bucket, safe='')}/o/" + quote(
            destination, safe=""
        )
        what = self._what("copy", source)
        while True:
            target = f"{base}?{urlencode(params)}" if params else base
            response = await self._send(
                "POST",
                target,
                write=True,
                what=what,
                body=json.dumps(resource).encode(),
                extra={"content-type": "application/json; charset=UTF-8"},
            )
            if response.status != 200:
                raise self._fail(response, "copy", source, expected=version)
            answer = _json(response, what)
            if answer.get("done"):
                written = answer.get("resource") or {}
                if written.get("name") != destination:
                    raise TransientError(f"{what}: the server confirmed another object.")
                return _resource_version(written)
            token = answer.get("rewriteToken")
            if not isinstance(token, str) or not token:
                raise TransientError(f"{what}: an unfinished rewrite without a rewriteToken.")
            params["rewriteToken"] = token

    async def _list_page(
        self, path_prefix: str, delimiter: str | None, token: str | None
    ) -> ListPage:
        params = {"prefix": path_prefix, "maxResults": str(self._list_page_size)}
        params["fields"] = LIST_FIELDS
        if delimiter is not None:
            params["delimiter"] = delimiter
        if token is not None:
            params["pageToken"] = token
        what = self._what("list", path_prefix)
        response = await self._send(
            "GET", f"{self._bucket_path}/o?{urlencode(params)}", write=False, what=what
        )
        if response.status != 200:
            raise self._fail(response, "list", path_prefix)
        page = _json(response, what)
        items = page.get("items") or ()
        prefixes = [str(p) for p in page.get("prefixes") or ()]
        if any(not str(item.get("name", "")).startswith(path_prefix) for item in items) or any(
            not p.startswith(path_prefix) for p in prefixes
        ):
            raise TransientError(f"{what}: the server listed names outside the prefix.")
        cut = self._key_cut
        objects = [_object_info(item, cut) for item in items]
        next_token = page.get("nextPageToken")
        token = str(next_token) if next_token else None
        return ListPage(objects, prefixes, token, keys_relative=True)

    async def _delete_objects(
        self, paths: list[str]
    ) -> tuple[dict[str, int | None], dict[str, str]]:
        deleted: dict[str, int | None] = {}
        for path in paths:  # one per call: _delete_batch_size is 1
            response = await self._send(
                "DELETE", self._object_path(path), write=True, what=self._what("delete", path)
            )
            if response.status in (200, 204):
                deleted[path] = None
            elif response.status != 404:  # already gone: nothing to do
                raise self._fail(response, "delete", path)
        return deleted, {}


def _same_version(a: VersionInfo, b: VersionInfo) -> bool:
    if a.generation is not None and b.generation is not None:
        return a.generation == b.generation
    return a.etag is not None and a.etag == b.etag

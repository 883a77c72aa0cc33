"""``AzureStorage``: a container in an Azure storage account (or Azurite) under a prefix.

Two request paths, one credential source, one error mapping:

* the shared transport: chunk reads (``get``, split reads, ``get_if_changed``), HEAD, single
  request writes (Put Blob, with ``If-None-Match: *`` or ``If-Match: <etag>`` and the write
  id in ``x-ms-meta-``), single deletes and copies (``x-ms-source-if-match``), signed by us
  (``_auth.py``);
* azure-storage-blob's aio client: listing (pages, delimiter) and block uploads (blocks
  staged concurrently, the block list committed under the write's condition), with the SDK
  retry policy off (``_client.py``, which also keeps this loop's transport).

Retries are ours only (``BaseStorage._call``).

Differences from Icechunk, each what a user would expect:

* A suffix range (``SuffixByteRequest``) is resolved with a HEAD and then read at that
  version (``If-Match``): Azure has no suffix ranges.
* ``delete_many`` sends concurrent single deletes (Azure's batch API is not used: the async
  SDK's batch fails against Azurite, and single deletes behave the same everywhere).
* Every block upload carries a write id (not only conditional ones: the base stamps every
  upload in parts), so a lost response to the block-list commit is recovered by read-back.
* Uncommitted blocks of a failed upload cannot be deleted: Azure discards them after 7 days.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any, ClassVar
from urllib.parse import quote

from .._backend import ListPage, OneGetPerRead
from .._credentials import AnyAzureCredential, AzureCredentials
from .._errors import (
    AuthenticationError,
    ConfigurationError,
    MultipartUploadVanishedError,
    ObjectNotFoundError,
    PermissionDeniedError,
    PreconditionFailedError,
    RangeNotSatisfiableError,
    ResponseIntegrityError,
    StorageError,
    TransientError,
)
from .._extras import require_extra
from .._fetch import first_error
from .._ranges import (
    ByteRequest,
    OffsetByteRequest,
    RangeByteRequest,
    SuffixByteRequest,
    split_for_multipart,
)
from .._settings import StorageSettings
from .._storage import Data, GetResult, ObjectInfo, PutMode, VersionInfo
from .._transport import (
    DEFAULT_STREAM_TIMEOUT,
    Request,
    Response,
    TransportConfig,
    aclose_transport,
    proxy_for,
)
from ._auth import API_VERSION, Auth, CredentialSource, apply_auth, http_date
from ._client import LoopClients
from ._config import AzureLocation, parse_config, resolve_location, validate_names
from ._errors import AzureErrorContext, azure_errors, response_error

__all__ = ["AzureStorage"]

META = "x-ms-meta-"
MAX_BLOCK_SIZE = 4000 * 1024 * 1024
MAX_BLOCKS = 50_000
COPY_POLL_SECONDS = 0.2
DELETE_CONCURRENCY = 16


def _credential_kind(credentials: AnyAzureCredential) -> str:
    return {
        AzureCredentials.FromEnv: "from_env",
        AzureCredentials.Anonymous: "anonymous",
        AzureCredentials.Static: "static",
        AzureCredentials.Refreshable: "refreshable",
    }[type(credentials)]


def _range_header(start: int, end: int | None) -> str:
    return f"bytes={start}-" if end is None else f"bytes={start}-{end - 1}"


def _last_modified(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        parsed = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


class AzureStorage(OneGetPerRead):
    """A container in an Azure storage account, under a prefix.

    Build it with :func:`azure_storage`. Construction does no I/O; clients are created per
    event loop on first use and released by ``aclose()``. It pickles by configuration (with
    the credential value) and works after unpickling in another process.
    """

    backend_name = "azure"
    requires_prefix_for_repository: ClassVar[bool] = True
    _supports_multipart_upload: ClassVar[bool] = True
    _multipart_concurrent_parts: ClassVar[bool] = True
    _delete_batch_size: ClassVar[int] = 256
    _runtime_attributes: ClassVar[tuple[str, ...]] = ("_loops", "_source")
    _list_page_size: int = 1000

    def __init__(
        self,
        *,
        account: str,
        container: str,
        prefix: str | None = None,
        credentials: AnyAzureCredential | None = None,
        config: Mapping[str, object] | None = None,
        settings: StorageSettings | None = None,
        read_only: bool = False,
    ) -> None:
        super().__init__(prefix=prefix, settings=settings, read_only=read_only)
        require_extra("azure", "azure_storage")
        validate_names(account, container)
        parsed = parse_config(config)
        if credentials is None:
            credentials = AzureCredentials.FromEnv()
        if not isinstance(
            credentials,
            AzureCredentials.FromEnv
            | AzureCredentials.Anonymous
            | AzureCredentials.Static
            | AzureCredentials.Refreshable,
        ):
            raise ConfigurationError(
                "credentials must be one of AzureCredentials.FromEnv, Anonymous, Static or "
                f"Refreshable (see azure_credentials()), got {type(credentials).__name__}."
            )
        self._config = parsed
        self._location: AzureLocation = resolve_location(account, container, parsed)
        self._credentials: AnyAzureCredential = credentials
        self._reset_runtime()

    # --- configuration -----------------------------------------------------------------

    @property
    def account(self) -> str:
        return self._location.account

    @property
    def container(self) -> str:
        return self._location.container

    @property
    def location(self) -> AzureLocation:
        return self._location

    @property
    def credentials(self) -> AnyAzureCredential:
        return self._credentials

    def _describe(self) -> str:
        where = f"az://{self._location.account}/{self._location.container}/{self._prefix}"
        parts = [where.rstrip("/")]
        if self._location.emulator or "endpoint" in self._config:
            parts.append(f"endpoint={self._location.account_url!r}")
        parts.append(f"credentials={_credential_kind(self._credentials)}")
        if self._read_only:
            parts.append("read_only")
        return ", ".join(parts)

    def _config_key(self) -> object:
        return (self._location, self._prefix, self._credentials)

    # --- runtime -------------------------------------------------------------------------

    def _reset_runtime(self) -> None:
        from .._loops import LoopLocal

        self._source = CredentialSource(
            self._credentials, self._location.account, self._location.emulator
        )
        # The factory refers to values only, never to self (the loop holder outlives it).
        self._loops: LoopLocal[LoopClients] = LoopLocal(
            functools.partial(self._loop_clients, self._location, self._source, self.settings)
        )

    @staticmethod
    def _loop_clients(
        location: AzureLocation, source: CredentialSource, settings: StorageSettings
    ) -> LoopClients:
        """This loop's clients; the proxy is read from the environment here (per process)."""
        timeouts = settings.timeouts
        connect_ms = timeouts.connect_timeout_ms if timeouts else None
        read_ms = timeouts.read_timeout_ms if timeouts else None
        attempt_ms = timeouts.operation_attempt_timeout_ms if timeouts else None
        config = TransportConfig(
            origin=location.origin,
            connect_timeout=connect_ms / 1000 if connect_ms is not None else 10.0,
            stream_timeout=read_ms / 1000 if read_ms is not None else DEFAULT_STREAM_TIMEOUT,
            attempt_timeout=attempt_ms / 1000 if attempt_ms is not None else None,
            proxy=proxy_for(location.origin),
        )
        return LoopClients(location, source, config)

    async def _aclose(self) -> None:
        """Close this loop's SDK client and this storage's transport (only that one)."""
        clients = self._loops.pop()
        if clients is not None:
            await aclose_transport(clients.transport)
            await clients.aclose()
        if not self._loops.items():
            await self._source.aclose()

    def _context(
        self,
        operation: str,
        path: str,
        auth: Auth = None,
        *,
        mode: PutMode | None = None,
        expected: VersionInfo | None = None,
    ) -> AzureErrorContext:
        return AzureErrorContext(
            operation,
            self._key(path) or "/",  # errors name the user's key, relative to the prefix
            self._location.container,
            mode=None if mode == "overwrite" else mode,
            expected=expected,
            auth_kind=auth[0] if auth is not None else None,
        )

    async def _signed(
        self,
        method: str,
        path: str,
        headers: dict[str, str],
        query: str = "",
        body: Data | None = None,
    ) -> tuple[Request, Auth]:
        """A request on a blob, signed for this attempt with the current credential."""
        auth = await self._source()
        location = self._location
        target = location.path(path) + (f"?{query}" if query else "")
        headers["x-ms-date"] = http_date()
        headers["x-ms-version"] = API_VERSION
        if body is not None and len(body):
            headers["content-length"] = str(len(body))
        url = apply_auth(auth, location.account, method, location.origin + target, headers)
        headers["host"] = location.host
        headers.pop("content-length", None)  # the transport sets it
        return Request(method, url[len(location.origin) :], headers, body), auth

    async def _send(
        self,
        operation: str,
        method: str,
        path: str,
        headers: dict[str, str],
        *,
        query: str = "",
        body: Data | None = None,
        resend_if_stale: bool = True,
        **context: Any,
    ) -> Response:
        request, auth = await self._signed(method, path, headers, query, body)
        request.resend_if_stale = resend_if_stale
        ctx = self._context(operation, path, auth, **context)
        transport = self._loops.get().http_transport()
        response = await transport.request(request, what=ctx.describe())
        if not 200 <= response.status < 300:
            raise response_error(response.status, response.headers, response.body, ctx)
        return response

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
        """One GET through the shared transport (``If-None-Match`` with the etag of
        ``unless``): (result or None for 304, written, total)."""
        if_none_match = unless.etag if unless is not None else None
        headers: dict[str, str] = {}
        if isinstance(byte_range, SuffixByteRequest):
            # Azure has no suffix ranges: find the size, then read that version's tail.
            info = await self._head_object(path)
            start = max(info.size - byte_range.suffix, 0)
            if info.size == 0:
                return GetResult(b"", info.version), 0, 0
            byte_range = OffsetByteRequest(start)
            if info.version.etag is not None:
                headers["if-match"] = info.version.etag
        if isinstance(byte_range, RangeByteRequest):
            headers["x-ms-range"] = _range_header(byte_range.start, byte_range.end)
        elif isinstance(byte_range, OffsetByteRequest):
            if byte_range.offset == 0:
                byte_range = None  # the whole object (Azurite answers "bytes 0--1/0" if empty)
            else:
                headers["x-ms-range"] = _range_header(byte_range.offset, None)
        if if_none_match is not None:
            headers["if-none-match"] = if_none_match
        request, auth = await self._signed("GET", path, headers)
        context = self._context(operation, path, auth)
        transport = self._loops.get().http_transport()
        try:
            response = await transport.read(request, byte_range, what=context.describe(), into=into)
        except ResponseIntegrityError:
            await self._check_range_at_end(path, byte_range, context)
            raise
        status = response.status
        if status == 304:
            return None, 0, None
        if status == 412 and "if-match" in headers:
            raise TransientError(f"{context.describe()}: the blob changed during a suffix read.")
        if status not in (200, 206):
            raise response_error(status, response.headers, response.body, context)
        version = VersionInfo(etag=response.headers.get("etag"))
        written = response.written if into is not None else len(response.body)
        return GetResult(response.body, version), written, response.total

    async def _check_range_at_end(
        self, path: str, byte_range: ByteRequest | None, context: AzureErrorContext
    ) -> None:
        """Azurite answers a range starting exactly at the end (``bytes=N-`` on an N-byte
        blob, any range of an empty one) with a 206 and ``Content-Range: bytes N-(N-1)/N``,
        which the transport rightly refuses; Azure answers 416. After a refused read, a HEAD
        tells which: if the range starts at the blob's end this is the 416 Azure would give
        (the base then returns the empty result, from its own HEAD, not from this body).
        """
        if isinstance(byte_range, RangeByteRequest):
            start = byte_range.start
        elif isinstance(byte_range, OffsetByteRequest):
            start = byte_range.offset
        else:
            return
        if (await self._head_object(path)).size == start:
            raise RangeNotSatisfiableError(
                f"{context.describe()}: the range starts at byte {start}, the end of the blob."
            ) from None

    async def _head_object(self, path: str) -> ObjectInfo:
        response = await self._send("head", "HEAD", path, {})
        headers = response.headers
        return ObjectInfo(
            key=path,
            size=int(headers.get("content-length", 0)),
            last_modified=_last_modified(headers.get("last-modified")),
            version=VersionInfo(etag=headers.get("etag")),
            content_type=headers.get("content-type"),
            metadata={k[len(META) :]: v for k, v in headers.items() if k.startswith(META)},
        )

    # --- writes --------------------------------------------------------------------------

    @staticmethod
    def _condition(path: str, mode: PutMode | None) -> dict[str, str]:
        if mode == "create":
            return {"if-none-match": "*"}
        if isinstance(mode, VersionInfo):
            if mode.etag is None:
                raise PreconditionFailedError(
                    path, mode, f"Cannot write {path!r} conditionally on Azure without an etag."
                )
            return {"if-match": mode.etag}
        return {}

    async def _put_object(
        self,
        path: str,
        data: Data,
        mode: PutMode,
        content_type: str | None,
        metadata: Mapping[str, str],
    ) -> VersionInfo:
        headers = {"x-ms-blob-type": "BlockBlob", **self._condition(path, mode)}
        if content_type is not None:
            headers["x-ms-blob-content-type"] = content_type
        for name, value in metadata.items():
            headers[META + name.lower()] = value
        response = await self._send(
            "put",
            "PUT",
            path,
            headers,
            body=data,
            resend_if_stale=mode == "overwrite",  # see BaseStorage.put
            mode=mode,
        )
        return VersionInfo(etag=response.headers.get("etag"))

    async def _copy_object(
        self, source: str, destination: str, version: VersionInfo | None
    ) -> VersionInfo:
        """Copy Blob, conditional on the source's etag; waits for a pending copy."""
        headers: dict[str, str] = {}
        auth = await self._source()
        source_url = self._location.url(source)
        if auth is not None and auth[0] == "sas":
            source_url = f"{source_url}?{auth[1]}"
        headers["x-ms-copy-source"] = source_url
        if version is not None:
            if version.etag is None:
                raise PreconditionFailedError(
                    source, version, f"Cannot copy {source!r} conditionally without an etag."
                )
            headers["x-ms-source-if-match"] = version.etag
        try:
            response = await self._send(
                "copy", "PUT", destination, headers, body=b"", expected=version
            )
        except ObjectNotFoundError as exc:  # the source is missing: name it, not the target
            raise ObjectNotFoundError(
                source,
                f"No object at {self._key(source)!r} to copy to {self._key(destination)!r}.",
            ) from exc
        status = response.headers.get("x-ms-copy-status", "success")
        etag = response.headers.get("etag")
        while status == "pending":
            await asyncio.sleep(COPY_POLL_SECONDS)
            head = await self._send("copy", "HEAD", destination, {})
            status = head.headers.get("x-ms-copy-status", "success")
            etag = head.headers.get("etag")
        if status != "success":
            raise StorageError(f"Copy of {source!r} to {destination!r} ended as {status!r}.")
        return VersionInfo(etag=etag)

    async def _delete_objects(
        self, paths: list[str]
    ) -> tuple[dict[str, int | None], dict[str, str]]:
        """Concurrent single deletes; a missing blob counts as deleted. A transient failure
        of any fails the batch, which is retried whole (deleting again is harmless)."""
        deleted: dict[str, int | None] = {}
        failed: dict[str, str] = {}
        limit = asyncio.Semaphore(DELETE_CONCURRENCY)

        async def delete(path: str) -> None:
            async with limit:
                try:
                    await self._send("delete", "DELETE", path, {})
                except StorageError as exc:
                    if isinstance(
                        exc, TransientError | AuthenticationError | PermissionDeniedError
                    ):
                        raise  # retried whole / true of every path: not a per-object failure
                    if not isinstance(exc, ObjectNotFoundError):
                        failed[path] = str(exc)
                        return
                deleted[path] = None

        try:
            async with asyncio.TaskGroup() as group:
                for path in paths:
                    group.create_task(delete(path))
        except BaseExceptionGroup as group_error:
            raise first_error(group_error) from None
        return deleted, failed

    # --- block uploads (the base's multipart steps) -------------------------------------

    def _multipart_ranges(self, size: int) -> list[tuple[int, int]]:
        max_parts, ideal = self.settings.effective_concurrency
        limit = min(max_parts, MAX_BLOCKS)
        limit = max(limit, -(-size // MAX_BLOCK_SIZE))
        return split_for_multipart(size, ideal, limit)

    async def _multipart_start(
        self,
        path: str,
        mode: PutMode,
        content_type: str | None,
        metadata: Mapping[str, str],
    ) -> str:
        """Azure needs no request to start: the upload is a fresh block-id prefix."""
        return uuid.uuid4().hex

    @staticmethod
    def _block_id(upload: str, number: int) -> str:
        """The id as the SDK takes it (it base64-encodes ids in the block list itself)."""
        return f"{upload}-{number:06d}"

    async def _multipart_part(
        self, path: str, upload: str, number: int, start: int, body: memoryview, total: int
    ) -> object:
        block_id = self._block_id(upload, number)
        encoded = base64.b64encode(block_id.encode()).decode()
        await self._send(
            "upload_block",
            "PUT",
            path,
            {},
            query=f"comp=block&blockid={quote(encoded, safe='')}",
            body=body,
        )
        return block_id

    async def _multipart_complete(
        self,
        path: str,
        upload: str,
        parts: list[object],
        mode: PutMode,
        content_type: str | None,
        metadata: Mapping[str, str],
    ) -> VersionInfo:
        """Put Block List under the write's condition (through the SDK)."""
        from azure.core import MatchConditions
        from azure.storage.blob import BlobBlock, ContentSettings

        kwargs: dict[str, Any] = {"metadata": dict(metadata)}
        if content_type is not None:
            kwargs["content_settings"] = ContentSettings(content_type=content_type)
        condition = self._condition(path, mode)
        if "if-none-match" in condition:
            kwargs["match_condition"] = MatchConditions.IfMissing
        elif "if-match" in condition:
            kwargs["etag"] = condition["if-match"]
            kwargs["match_condition"] = MatchConditions.IfNotModified
        blocks = [BlobBlock(block_id=str(part)) for part in parts]
        auth = await self._source()
        context = self._context("complete_block_list", path, auth, mode=mode)
        from azure.core.exceptions import HttpResponseError

        with azure_errors(context):
            blob = self._loops.get().container().get_blob_client(path)
            try:
                response = await blob.commit_block_list(blocks, **kwargs)
            except HttpResponseError as exc:
                if getattr(exc, "error_code", None) == "InvalidBlockList":
                    raise MultipartUploadVanishedError(
                        f"{context.describe()}: the staged blocks are gone (committed by an "
                        "attempt whose response was lost?)."
                    ) from None
                raise
        etag = response.get("etag")
        return VersionInfo(etag=etag if isinstance(etag, str) else None)

    async def _multipart_abort(self, path: str, upload: str) -> None:
        """Nothing to do: Azure discards uncommitted blocks after 7 days."""

    # --- listing -------------------------------------------------------------------------

    async def _list_page(
        self, path_prefix: str, delimiter: str | None, token: str | None
    ) -> ListPage:
        """Exactly one List Blobs request; the base loops over the pages."""
        from azure.storage.blob.aio import BlobPrefix

        auth = await self._source()
        context = self._context("list", path_prefix, auth)
        container = self._loops.get().container()
        pager: Any
        with azure_errors(context):
            if delimiter is None:
                pager = container.list_blobs(
                    name_starts_with=path_prefix or None, results_per_page=self._list_page_size
                ).by_page(continuation_token=token)
            else:
                pager = container.walk_blobs(
                    name_starts_with=path_prefix or None,
                    delimiter=delimiter,
                    results_per_page=self._list_page_size,
                ).by_page(continuation_token=token)
            page = await pager.__anext__()
            objects: list[ObjectInfo] = []
            prefixes: list[str] = []
            async for item in page:
                if isinstance(item, BlobPrefix):
                    prefixes.append(item.name)
                    continue
                objects.append(
                    ObjectInfo(
                        key=item.name,
                        size=int(item.size or 0),
                        last_modified=item.last_modified,
                        version=VersionInfo(etag=item.etag),
                    )
                )
        for info in objects:
            if not info.key.startswith(path_prefix):
                raise StorageError(
                    f"{context.describe()}: the server listed {info.key!r}, outside the prefix."
                )
        return ListPage(objects, prefixes, pager.continuation_token or None)

"""The live side of one S3 storage in one event loop: connection pool, clients, credentials.

One :class:`LoopClients` per storage per running loop (held in a ``LoopLocal``), built
lazily on first use:

* one aiohttp ``ClientSession`` (one connection pool, sized to the process-wide request
  limit), used by aiobotocore, which is handed a session class that reuses it instead of
  opening a pool of its own;
* the :class:`~.._transport.TransportConfig` of the lean data plane (GET, PUT, HEAD, LIST,
  DELETE, copy), sent through the shared transport (our HTTP/1.1 client, or aiohttp behind a
  proxy); the aiobotocore client and its pool are built only when a rare request needs it;
* the aiobotocore client, with botocore's retries off (our retry loop is the only one),
  checksums only when required or asked for, custom headers added before signing, and the
  endpoint and addressing style taken from :class:`S3Location` so both paths agree;
* the resolved region, location and SigV4 signer, the proxy (``HTTP(S)_PROXY``/
  ``NO_PROXY``) and, for from-env credentials, botocore's credential chain.

Closing: ``aclose()``; failing that, when the loop shuts down (``asyncio.run`` and
``asyncio.Runner`` close suspended async generators, and one such generator guards the
pool), or soon after the storage is garbage-collected (a ``weakref.finalize`` schedules the
close on the pool's loop). The pool is reachable from that finalizer until it is closed, so
the garbage collector never finds it unclosed (no "Unclosed client session" warnings).

The SDKs are imported here lazily, inside functions, so ``import icechunk_storage`` loads
none of them.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import inspect
import os
import ssl
import threading
import weakref
from collections.abc import AsyncGenerator
from typing import TYPE_CHECKING, Any

import attrs

from .._errors import AuthenticationError
from .._limits import get_max_concurrent_requests
from .._loops import shut_down_at_exit
from .._redact import install_log_redaction, remember_secret
from .._transport import Transport, TransportConfig, get_transport, proxy_for
from .._transport._aiohttp import without_silent_resends
from .._transport._tls import ssl_context as ssl_context_for
from ._auth import CredentialSource, FrozenCredentials
from ._errors import S3ErrorContext, s3_errors
from ._headers import RequestHeaders
from ._location import S3Location, resolve_location
from ._sigv4 import SigV4Signer
from ._wire import NOT_SENT_WITH_PUT, UNSIGNED_HEADERS, USER_AGENT

if TYPE_CHECKING:
    import aiohttp
    from aiobotocore.session import AioSession, ClientCreatorContext
    from types_aiobotocore_s3 import S3Client

__all__ = ["USER_AGENT", "ClientSettings", "LoopClients"]

FALLBACK_REGION = "us-east-1"
KEEPALIVE_SECONDS = 12.0  # S3 closes idle connections after ~20 s
DEFAULT_CONNECT_TIMEOUT = 60.0


@attrs.frozen
class ClientSettings:
    """Everything the live clients are built from; derived from the storage's configuration."""

    bucket: str
    region: str | None
    endpoint_url: str | None
    force_path_style: bool
    anonymous: bool
    connect_timeout: float | None
    read_timeout: float | None
    headers: RequestHeaders
    attempt_timeout: float | None = None


_loader_lock = threading.Lock()
_loader: Any = None
_ssl_lock = threading.Lock()
_ca_bundles: dict[None, str | None] = {}


def _shared_loader() -> Any:
    """botocore's data loader (service models), shared by every client in the process.

    Loading the S3 model costs ~70 ms; per session it would be paid per storage and loop.
    """
    global _loader
    with _loader_lock:
        if _loader is None:
            import botocore.loaders

            _loader = botocore.loaders.create_loader()
        return _loader


def _ca_bundle() -> str | None:
    """The CA bundle for HTTPS endpoints: ``AWS_CA_BUNDLE``, else botocore's (certifi)."""
    bundle = os.environ.get("AWS_CA_BUNDLE") or None
    if bundle is not None:
        return bundle
    with _ssl_lock:
        if None not in _ca_bundles:
            from botocore.httpsession import get_cert_path

            found = get_cert_path(True)
            _ca_bundles[None] = found if isinstance(found, str) else None
        return _ca_bundles[None]


@functools.cache
def _sdk_classes() -> tuple[type[Any], type[Any]]:
    """The aiobotocore subclasses we need, defined on first use (the SDK loads lazily)."""
    from aiobotocore.credentials import AioCredentials
    from aiobotocore.httpsession import AIOHTTPSession
    from botocore.credentials import ReadOnlyCredentials

    class SourceCredentials(AioCredentials):
        """botocore asks for credentials before signing each attempt: ask our source."""

        def __init__(self, source: CredentialSource) -> None:
            super().__init__("unused", "unused", None, method="icechunk-storage")
            self._source = source

        async def get_frozen_credentials(self) -> Any:  # type: ignore[override]
            access_key, secret_key, token = await self._source()
            return ReadOnlyCredentials(access_key, secret_key, token, None)

    class SharedPoolSession(AIOHTTPSession):
        """aiobotocore's HTTP session, sending through our pool instead of its own."""

        shared: aiohttp.ClientSession | None = None

        async def _get_session(self, proxy_url: str | None) -> Any:
            if proxy_url is None and self.shared is not None:
                return self.shared
            return await super()._get_session(proxy_url)  # type: ignore[misc]

    return SourceCredentials, SharedPoolSession


def _new_session() -> AioSession:
    from aiobotocore.session import AioSession

    session = AioSession()
    session.register_component("data_loader", _shared_loader())
    return session


class _EnvChain:
    """botocore's session and from-env credentials, shared by every storage of one event loop
    while the ``AWS_*`` environment stays the same.

    Building a session and walking the credential chain costs ~7 ms of CPU; dask unpickles a
    fresh storage per task, so per storage it would be paid on every task's first request.
    Per loop, because aiobotocore's refreshable credentials hold an asyncio lock. The chain
    depends only on the environment (variables, and the files and services they point to),
    so storages with equal environments get equal credentials either way; refreshing
    credentials refresh themselves, for all of them at once.
    """

    __slots__ = ("credentials", "session")

    def __init__(self) -> None:
        self.session = _new_session()
        self.credentials: Any = None

    @classmethod
    def current(cls) -> _EnvChain:
        environment = tuple(sorted(i for i in os.environ.items() if i[0].startswith("AWS_")))
        chains = _env_chains.setdefault(asyncio.get_running_loop(), {})
        chain = chains.get(environment)
        if chain is None:
            chains.clear()  # the environment changed: forget the old chain
            chain = chains[environment] = cls()
        return chain


_env_chains: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[Any, _EnvChain]] = (
    weakref.WeakKeyDictionary()
)


class _SourceProvider:
    """A credential provider that botocore's resolver asks first."""

    METHOD = "icechunk-storage"
    CANONICAL_NAME = "IcechunkStorage"

    def __init__(self, source: CredentialSource) -> None:
        self._source = source

    async def load(self) -> Any:
        source_credentials, _ = _sdk_classes()
        return source_credentials(self._source)


def _optional_config(config_class: type[Any], **options: Any) -> dict[str, Any]:
    """The options this aiobotocore version's AioConfig knows (newer ones are optional)."""
    known = inspect.signature(config_class.__init__).parameters
    return {name: value for name, value in options.items() if name in known}


def _add_headers(headers: RequestHeaders, request: Any, **_: Any) -> None:
    """Custom headers (and Tigris/requester-pays headers), added before signing."""
    for name, value in headers.for_method(request.method):
        del request.headers[name]  # HTTPHeaders appends on assignment; deleting is safe
        request.headers[name] = value


_SDK_TELEMETRY: tuple[str, ...] = ("amz-sdk-invocation-id", "amz-sdk-request")


def _normalise_unsigned(request: Any, event_name: str = "", **_: Any) -> None:
    """Unsigned headers as the data plane sends them (after signing, so nothing signed
    changes): our User-Agent instead of botocore's, no SDK telemetry headers, and no
    ``Expect`` on PutObject (see ``_wire.NOT_SENT_WITH_PUT``). With this, the two paths send
    the same headers for the same request."""
    headers = request.headers
    dropped = _SDK_TELEMETRY
    if event_name.endswith(".PutObject"):
        dropped = (*dropped, *NOT_SENT_WITH_PUT)
    for name in dropped:
        if name in headers:
            del headers[name]
    for name, value in UNSIGNED_HEADERS.items():
        if name in headers:
            del headers[name]
        headers[name] = value


class _Pool:
    """What has to be closed. Holds no reference to the storage or to LoopClients."""

    def __init__(self) -> None:
        self.http: aiohttp.ClientSession | None = None
        self.client_context: ClientCreatorContext[S3Client] | None = None

    async def aclose(self) -> None:
        context, self.client_context = self.client_context, None
        http, self.http = self.http, None
        try:
            if context is not None:
                await context.__aexit__(None, None, None)
        finally:
            if http is not None:
                await http.close()


async def _close_at_loop_shutdown(pool: _Pool) -> AsyncGenerator[None, None]:
    """Suspended until the loop shuts down (or we close it); then closes ``pool``."""
    try:
        yield
    finally:
        await pool.aclose()


_closing: set[asyncio.Task[None]] = set()


def _close_soon(
    loop_ref: weakref.ReferenceType[asyncio.AbstractEventLoop],
    closer: AsyncGenerator[None, None],
) -> None:
    """Finalizer of a LoopClients nobody closed: close its pool on its loop, if it still runs.

    Runs in whatever thread the garbage collector runs in, so it only schedules.
    """
    loop = loop_ref()
    if loop is None or loop.is_closed():
        return

    def start() -> None:
        task = loop.create_task(closer.aclose())
        _closing.add(task)
        task.add_done_callback(_closing.discard)

    with contextlib.suppress(RuntimeError):  # the loop closed meanwhile: nothing to do
        loop.call_soon_threadsafe(start)


class LoopClients:
    """Live clients of one storage in one event loop. See the module docstring."""

    def __init__(self, settings: ClientSettings, source: CredentialSource | None) -> None:
        install_log_redaction(source.credentials if source is not None else None)  # issue 15
        self.settings = settings
        self._source = source  # static/refreshable credentials; None: anonymous or from env
        self._lock = asyncio.Lock()
        self._pool = _Pool()
        self._closer: AsyncGenerator[None, None] | None = None
        self._finalizer: weakref.finalize[Any, Any] | None = None
        self.http: aiohttp.ClientSession | None = None
        self.location: S3Location | None = None
        self.transport: TransportConfig | None = None
        self._http_transport: Transport | None = None
        self.signer: SigV4Signer | None = None
        self.proxy: str | None = None
        self.region: str | None = None
        self._session: AioSession | None = None
        self._s3: S3Client | None = None
        self._env_credentials: Any = None

    # --- building ------------------------------------------------------------------------

    def _botocore_session(self) -> AioSession:
        if self._session is None:
            if self._source is None:  # the chain's session, shared: see _EnvChain
                self._session = _EnvChain.current().session
            else:  # its credential resolver gets our source: this storage's alone
                self._session = _new_session()
        return self._session

    def _resolve_region(self) -> str:
        if self.settings.region is not None:
            return self.settings.region
        context = S3ErrorContext("region lookup", "", self.settings.bucket)
        with s3_errors(context):
            configured = self._botocore_session().get_config_variable("region")
        return str(configured) if configured else FALLBACK_REGION

    async def ready(self) -> None:
        """Resolve the location and signer, and the transport of the data plane (once
        per loop). Builds no SDK client and no connection: the first read is cheap."""
        if self.location is None:
            async with self._lock:
                await self._ready_locked()

    async def _ready_locked(self) -> None:
        if self.location is not None:
            return
        region = self._resolve_region()
        location = resolve_location(
            self.settings.bucket,
            self.settings.endpoint_url,
            region,
            self.settings.force_path_style,
        )
        ca_bundle = await asyncio.to_thread(_ca_bundle) if location.scheme == "https" else None
        self.proxy = proxy_for(location.origin)
        self.transport = TransportConfig(
            origin=location.origin,
            connect_timeout=self.settings.connect_timeout or DEFAULT_CONNECT_TIMEOUT,
            stream_timeout=self.settings.read_timeout,
            attempt_timeout=self.settings.attempt_timeout,
            ca_bundle=ca_bundle,
            proxy=self.proxy,
        )
        self.region = region
        self.signer = SigV4Signer(region)
        self.location = location

    def http_transport(self) -> Transport:
        """The lean data plane's transport in this loop (kept here: one lookup per loop)."""
        transport = self._http_transport
        if transport is None or transport.closed:
            assert self.transport is not None
            transport = self._http_transport = get_transport(self.transport)
        return transport

    async def _open_pool(self) -> None:
        """The aiohttp session aiobotocore sends through, closed with the loop."""
        import aiohttp

        assert self.transport is not None
        ssl_context: ssl.SSLContext | bool = True
        if self.transport.scheme == "https":
            ssl_context = ssl_context_for(self.transport.ca_bundle)
        connector = aiohttp.TCPConnector(
            limit=get_max_concurrent_requests(),
            ssl=ssl_context,
            keepalive_timeout=KEEPALIVE_SECONDS,
            ttl_dns_cache=300,
        )
        http = without_silent_resends(  # our retry loop is the only one (see there)
            aiohttp.ClientSession(
                connector=connector,
                timeout=aiohttp.ClientTimeout(
                    total=None,
                    sock_connect=self.settings.connect_timeout or DEFAULT_CONNECT_TIMEOUT,
                    sock_read=self.settings.read_timeout,
                ),
                headers={"User-Agent": USER_AGENT, "Accept-Encoding": "identity"},
                skip_auto_headers={"Content-Type", "Accept"},
                auto_decompress=False,  # objects are returned byte for byte, gzip or not
            )
        )
        self._pool = pool = _Pool()
        pool.http = http
        closer = _close_at_loop_shutdown(pool)
        await closer.__anext__()
        self._closer = closer
        shut_down_at_exit(asyncio.get_running_loop())  # e.g. zarr's loop: see _loops
        loop_ref = weakref.ref(asyncio.get_running_loop())
        self._finalizer = weakref.finalize(self, _close_soon, loop_ref, closer)
        self._finalizer.atexit = False
        self.http = http

    async def client(self) -> S3Client:
        """The aiobotocore client (built once per loop)."""
        if self._s3 is not None:
            return self._s3
        async with self._lock:
            if self._s3 is None:
                await self._ready_locked()
                if self.http is None:
                    await self._open_pool()
                self._s3 = await self._create_client()
        return self._s3

    async def _create_client(self) -> S3Client:
        import botocore
        from aiobotocore.config import AioConfig

        _, shared_pool_session = _sdk_classes()
        assert self.location is not None
        assert self.http is not None
        session = self._botocore_session()
        settings = self.settings
        if settings.anonymous:
            signature_version: Any = botocore.UNSIGNED
        else:
            signature_version = "s3v4"
            if self._source is not None:
                resolver = session.get_component("credential_provider")
                resolver.providers.insert(0, _SourceProvider(self._source))
            else:
                await self._load_env_credentials()
        http_session_cls = type("SharedPoolSession", (shared_pool_session,), {"shared": self.http})
        config = AioConfig(
            region_name=self.region,
            signature_version=signature_version,
            s3={"addressing_style": "path" if self.location.path_style else "virtual"},
            retries={"total_max_attempts": 1, "mode": "standard"},
            connect_timeout=settings.connect_timeout or DEFAULT_CONNECT_TIMEOUT,
            read_timeout=settings.read_timeout,  # used only for requests through a proxy
            max_pool_connections=get_max_concurrent_requests(),
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
            user_agent_extra=USER_AGENT,
            http_session_cls=http_session_cls,
            **_optional_config(AioConfig, warm_up_loader_caches=True),  # off the loop, if known
        )
        context = S3ErrorContext("client setup", "", settings.bucket)
        with s3_errors(context):
            creator = session.create_client(
                "s3",
                region_name=self.region,
                endpoint_url=self.location.endpoint_url,
                config=config,
            )
            client = await creator.__aenter__()
        self._pool.client_context = creator
        client.meta.events.register(
            "before-sign.s3", functools.partial(_add_headers, settings.headers)
        )
        client.meta.events.register("before-send.s3", _normalise_unsigned)
        return client

    # --- credentials -------------------------------------------------------------------

    async def _load_env_credentials(self) -> Any:
        if self._env_credentials is None:
            chain = _EnvChain.current()
            self._session = self._session or chain.session
            context = S3ErrorContext("credential lookup", "", self.settings.bucket)
            with s3_errors(context):
                found = chain.credentials or await chain.session.get_credentials()
            if found is None:
                raise AuthenticationError(
                    "No AWS credentials were found in the environment (AWS_ACCESS_KEY_ID and "
                    "AWS_SECRET_ACCESS_KEY, AWS_PROFILE with a shared credentials or config "
                    "file, web identity, instance metadata). Pass access_key_id and "
                    "secret_access_key, get_credentials, or anonymous=True for a public bucket."
                )
            self._env_credentials = chain.credentials = found
        return self._env_credentials

    async def env_credentials(self) -> FrozenCredentials:
        """botocore's credential chain, refreshed by botocore when its credentials expire."""
        credentials = self._env_credentials
        if credentials is None:
            async with self._lock:
                credentials = await self._load_env_credentials()
        context = S3ErrorContext("credential refresh", "", self.settings.bucket)
        with s3_errors(context):
            frozen = await credentials.get_frozen_credentials()
        remember_secret(frozen.secret_key)  # issue 15: redacted from logs and errors
        remember_secret(frozen.token)
        return frozen.access_key, frozen.secret_key, frozen.token

    # --- closing -----------------------------------------------------------------------

    async def aclose(self) -> None:
        """Close the pool and the client; they are rebuilt if used again."""
        async with self._lock:
            closer, self._closer = self._closer, None
            if self._finalizer is not None:
                self._finalizer.detach()
                self._finalizer = None
            self.http = None
            self._s3 = None
            if closer is not None:
                await closer.aclose()  # closes the pool
            else:
                await self._pool.aclose()

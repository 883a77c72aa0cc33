"""The live clients of one Azure storage on one event loop (``LoopLocal``): the shared
transport, for everything but listing and block-list commits, and azure-storage-blob's aio
``ContainerClient`` for those two.

The transport is the one ``get_transport`` returns for the storage's ``TransportConfig``,
kept here so a chunk read costs no registry lookup, and asked for again once closed.

The SDK client is built with:

* ``retry_total=0``: the SDK's own policy (15 s before its first retry) is off; our retry
  loop (``BaseStorage._call``) is the only one;
* no SDK credential: :class:`SigningTransport` signs each request as it leaves, with the
  storage's own credential source, after the SDK's logging policies have run. Both request
  paths therefore sign the same way, a refreshed credential is used at once, and the SDK's
  loggers never see a key, a SAS or a token;
* the same ``x-ms-version`` as the transport path.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from .._transport import Transport, TransportConfig, get_transport
from ._auth import API_VERSION, Auth, shared_key_signature
from ._config import AzureLocation

if TYPE_CHECKING:
    from azure.storage.blob.aio import ContainerClient

__all__ = ["LoopClients"]

SDK_READ_TIMEOUT = 60.0
"""The SDK's socket read timeout when the user turned the transport's stall check off."""


def _signing_transport_class() -> type[Any]:
    from azure.core.pipeline.transport import AioHttpTransport

    class SigningTransport(AioHttpTransport):  # type: ignore[misc]
        """aiohttp transport that signs each request just before sending it."""

        def __init__(
            self, auth: Callable[[], Awaitable[Auth]], account: str, **kwargs: Any
        ) -> None:
            super().__init__(**kwargs)
            self._auth = auth
            self._account = account

        async def send(self, request: Any, **kwargs: Any) -> Any:
            auth = await self._auth()
            if auth is not None:
                kind, secret = auth
                if kind == "sas":
                    request.url = f"{request.url}{'&' if '?' in request.url else '?'}{secret}"
                elif kind == "bearer":
                    request.headers["Authorization"] = f"Bearer {secret}"
                else:
                    request.headers["Authorization"] = shared_key_signature(
                        self._account,
                        secret,
                        request.method,
                        request.url,
                        dict(request.headers),
                        transport=self,
                    )
            return await super().send(request, **kwargs)

    return SigningTransport


class LoopClients:
    """The transport and the SDK client of one storage on one event loop."""

    def __init__(
        self,
        location: AzureLocation,
        auth: Callable[[], Awaitable[Auth]],
        transport: TransportConfig,
    ) -> None:
        self._location = location
        self._auth = auth
        self.transport = transport
        self._http_transport: Transport | None = None
        self._container: ContainerClient | None = None

    def http_transport(self) -> Transport:
        """The shared transport in this loop (kept here: one registry lookup per loop)."""
        transport = self._http_transport
        if transport is None or transport.closed:
            transport = self._http_transport = get_transport(self.transport)
        return transport

    def container(self) -> ContainerClient:
        if self._container is None:
            from azure.storage.blob.aio import ContainerClient

            transport = _signing_transport_class()(
                self._auth,
                self._location.account,
                connection_timeout=self.transport.connect_timeout,
                read_timeout=self.transport.stream_timeout or SDK_READ_TIMEOUT,
            )
            self._container = ContainerClient(
                self._location.account_url,
                self._location.container,
                credential=None,
                transport=transport,
                retry_total=0,
                api_version=API_VERSION,
            )
        return self._container

    async def aclose(self) -> None:
        container, self._container = self._container, None
        if container is not None:
            await container.close()

"""GCS access tokens: one bearer per identity per process, kept fresh by the shared refresher.

Every credential that yields tokens goes through ``_refresher.py``:

* ``Refreshable`` (the user's ``get_credentials``): as is.
* service account file, service account key, application credentials file, and from-env
  (``GOOGLE_APPLICATION_CREDENTIALS``, the ADC well-known file, else the metadata server):
  wrapped in a :class:`GoogleTokenFetcher`, a picklable callable whose ``__call__`` asks
  gcloud-aio-auth for one token (signed-JWT exchange, refresh-token exchange or the metadata
  server: no JWT code here) and returns it as a :class:`GcsBearerCredential` with its
  expiry. Equal fetchers pickle equal, so every storage (and every dask task) in a process
  that uses the same identity shares one cached token, refreshed before it expires.

gcloud-aio-auth's own cache and retry (``Token.get``) are bypassed: we call
``Token.refresh`` once per refresh, so there is one cache and one retry policy (the
refresher's backoff). A static bearer token is sent as is; anonymous sends no header.
"""

from __future__ import annotations

import asyncio
import io
import json
import os
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import attrs

from .._credentials import (
    AnyGcsCredential,
    GcsBearerCredential,
    GcsCredentials,
    GcsStaticCredentials,
)
from .._errors import AuthenticationError
from .._redact import install_log_redaction, remember_secret

if TYPE_CHECKING:
    from .._refresher import CredentialHandle

__all__ = ["SCOPE", "GoogleTokenFetcher", "TokenSource", "metadata_host"]

SCOPE = "https://www.googleapis.com/auth/cloud-platform"
"""The scope object_store (so Icechunk) asks for; storage roles still limit what it can do."""
TOKEN_TIMEOUT = 30
METADATA_TOKEN_PATH = "/computeMetadata/v1/instance/service-accounts/default/token?recursive=true"


def metadata_host() -> str:
    """``GCE_METADATA_HOST`` (or its older name ``GCE_METADATA_ROOT``), read now: gcloud-aio
    reads it once at import, which would ignore a value set later in the process."""
    return (
        os.environ.get("GCE_METADATA_HOST")
        or os.environ.get("GCE_METADATA_ROOT")
        or "metadata.google.internal"
    )


@attrs.frozen(repr=False)
class GoogleTokenFetcher:
    """One token from gcloud-aio-auth for one identity.

    ``kind``: ``"file"`` (a service-account or authorized-user JSON file, read at each
    refresh so a rotated file is picked up), ``"key"`` (the JSON itself, a secret) or
    ``"metadata"`` (the metadata server at ``source``, a host[:port]).
    """

    kind: str
    source: str

    def __repr__(self) -> str:
        shown = "'***'" if self.kind == "key" else repr(self.source)
        return f"GoogleTokenFetcher({self.kind}, {shown})"

    def describe(self) -> str:
        if self.kind == "file":
            return f"the credentials file {self.source!r}"
        if self.kind == "key":
            return "the service account key"
        return f"the metadata server at {self.source!r}"

    async def __call__(self) -> GcsBearerCredential:
        import aiohttp
        from gcloud.aio.auth import Token

        async with aiohttp.ClientSession() as client:
            session: Any = client  # gcloud-aio types it as its requests/aiohttp union
            try:
                if self.kind == "metadata":
                    # An empty service file makes gcloud-aio use the metadata server; its URL
                    # is set here because gcloud-aio reads GCE_METADATA_HOST at import only.
                    token = Token(service_file=io.StringIO("{}"), session=session)
                    token.token_uri = f"http://{self.source}{METADATA_TOKEN_PATH}"
                elif self.kind == "key":
                    remember_secret(self.source)  # its private key: redacted from logs
                    token = Token(
                        service_file=io.StringIO(self.source), session=session, scopes=[SCOPE]
                    )
                else:
                    token = Token(service_file=self.source, session=session, scopes=[SCOPE])
                started = datetime.now(UTC)
                response = await token.refresh(timeout=TOKEN_TIMEOUT)
            except Exception as exc:
                status = getattr(exc, "status", None)
                why = f"HTTP {status}" if isinstance(status, int) else type(exc).__name__
                raise AuthenticationError(
                    f"Could not obtain a GCS access token from {self.describe()} ({why})."
                ) from None
        if not response.value:
            raise AuthenticationError(f"{self.describe()} returned an empty access token.")
        lifetime = max(int(response.expires_in), 0)
        return GcsBearerCredential(
            response.value, expires_after=started + timedelta(seconds=lifetime)
        )


def _fetcher_for_static(credentials: GcsCredentials.Static) -> GoogleTokenFetcher:
    static = credentials.credentials
    if isinstance(static, GcsStaticCredentials.ServiceAccountKey):
        return GoogleTokenFetcher("key", static.key)
    assert isinstance(
        static, GcsStaticCredentials.ServiceAccount | GcsStaticCredentials.ApplicationCredentials
    )
    return GoogleTokenFetcher("file", static.path)


def _fetcher_from_env() -> GoogleTokenFetcher:
    """Application default credentials, resolved by gcloud-aio-auth's own search order:
    ``GOOGLE_APPLICATION_CREDENTIALS``, the gcloud ADC well-known file, else metadata."""
    from gcloud.aio.auth.token import get_service_data

    explicit = os.environ.get("GOOGLE_APPLICATION_CREDENTIALS")
    if explicit:
        return GoogleTokenFetcher("file", explicit)
    data = get_service_data(None)
    if data:
        return GoogleTokenFetcher("key", json.dumps(data, sort_keys=True))
    return GoogleTokenFetcher("metadata", metadata_host())


class TokenSource:
    """The ``Authorization`` value for one storage in one process; ask before every attempt."""

    def __init__(self, credentials: AnyGcsCredential) -> None:
        install_log_redaction(credentials)
        self._credentials = credentials
        self._handle: CredentialHandle[GcsBearerCredential] | None = None

    @property
    def handle(self) -> CredentialHandle[GcsBearerCredential] | None:
        return self._handle

    async def authorization(self) -> str | None:
        credentials = self._credentials
        if isinstance(credentials, GcsCredentials.Anonymous):
            return None
        if isinstance(credentials, GcsCredentials.Static) and isinstance(
            credentials.credentials, GcsStaticCredentials.BearerToken
        ):
            return f"Bearer {credentials.credentials.token}"
        handle = self._handle
        if handle is None:
            handle = await self._open_handle()
        fresh = await handle.get()
        return f"Bearer {fresh.bearer}"

    async def _open_handle(self) -> CredentialHandle[GcsBearerCredential]:
        from .._refresher import credential_handle

        credentials = self._credentials
        if isinstance(credentials, GcsCredentials.Refreshable):
            refreshable = credentials
        elif isinstance(credentials, GcsCredentials.Static):
            refreshable = GcsCredentials.Refreshable(_fetcher_for_static(credentials))
        else:
            fetcher = await asyncio.to_thread(_fetcher_from_env)  # may read a file
            refreshable = GcsCredentials.Refreshable(fetcher)
        if self._handle is None:
            self._handle = credential_handle(refreshable)
        return self._handle

    async def aclose(self) -> None:
        handle, self._handle = self._handle, None
        if handle is not None:
            await handle.aclose()

"""Static and refreshable S3 credentials, handed out per request attempt.

Both request paths ask a :class:`CredentialSource` before *every* attempt (the data plane
before signing, aiobotocore through its credential provider before signing), so a request
never goes out with a credential past its expiry: static credentials past ``expires_after``
are refused, refreshable ones come from the shared refresher (``_refresher.py``), which
refreshes them before they expire. From-env credentials are botocore's chain (``_client.py``).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING

from .._credentials import S3Credentials, S3StaticCredentials
from .._errors import AuthenticationError

if TYPE_CHECKING:
    from .._refresher import CredentialHandle

__all__ = ["CredentialSource", "FrozenCredentials"]

FrozenCredentials = tuple[str, str, str | None]
"""``(access_key_id, secret_access_key, session_token)`` for one request."""


class CredentialSource:
    """Credentials for one storage in one process; call it before every attempt."""

    def __init__(self, credentials: S3Credentials.Static | S3Credentials.Refreshable) -> None:
        self._credentials = credentials
        self._handle: CredentialHandle[S3StaticCredentials] | None = None

    async def __call__(self) -> FrozenCredentials:
        credentials = self._credentials
        if isinstance(credentials, S3Credentials.Static):
            return unexpired(credentials.credentials)
        handle = self._handle
        if handle is None:
            from .._refresher import credential_handle

            handle = self._handle = credential_handle(credentials)
        fresh = await handle.get()
        return fresh.access_key_id, fresh.secret_access_key, fresh.session_token

    @property
    def credentials(self) -> S3Credentials.Static | S3Credentials.Refreshable:
        return self._credentials

    @property
    def handle(self) -> CredentialHandle[S3StaticCredentials] | None:
        """The refresher handle, once a refreshable credential has been asked for."""
        return self._handle

    async def aclose(self) -> None:
        """Release the refresher handle (a later call takes a new one)."""
        handle, self._handle = self._handle, None
        if handle is not None:
            await handle.aclose()


def unexpired(credentials: S3StaticCredentials) -> FrozenCredentials:
    expires = credentials.expires_after
    if expires is not None and datetime.now(UTC) >= expires:
        raise AuthenticationError(
            f"The static S3 credentials expired at {expires.isoformat()}; pass fresh ones, or "
            "get_credentials=... so that they are refreshed before they expire."
        )
    return credentials.access_key_id, credentials.secret_access_key, credentials.session_token

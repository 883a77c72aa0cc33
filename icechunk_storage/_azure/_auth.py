"""Azure credentials, resolved per request attempt, and how a request is signed with them.

One credential source per storage per process, asked before *every* attempt on both request
paths (the shared transport, and the SDK through ``_sdk.SigningTransport``), so a request
never goes out with a credential past its expiry and both paths sign identically:

* ``("key", key)``: SharedKey. The string to sign and the signature are computed by
  azure-storage-blob's own ``SharedKeyCredentialPolicy`` (so they agree with the SDK's byte
  for byte, its header collation included), run on our plain request;
* ``("sas", token)``: the SAS query parameters appended to the URL;
* ``("bearer", token)``: ``Authorization: Bearer``;
* ``None``: anonymous (public containers).

Refreshable credentials come from the shared refresher (``_refresher.py``). From-env reads
``AZURE_STORAGE_CONNECTION_STRING``, ``AZURE_STORAGE_ACCOUNT_KEY``, ``AZURE_STORAGE_SAS_TOKEN``
(in that order), then azure-identity's ``DefaultAzureCredential`` if it is installed, whose
tokens also go through the shared refresher.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import threading
import time
from datetime import UTC, datetime
from email.utils import formatdate
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import unquote, urlsplit

from .._credentials import (
    AnyAzureCredential,
    AnyAzureRefreshableCredential,
    AzureCredentials,
    AzureRefreshableCredential,
    AzureStaticCredentials,
)
from .._errors import AuthenticationError, ConfigurationError
from .._redact import install_log_redaction, remember_secrets_of
from ._config import AZURITE_ACCOUNT, AZURITE_KEY

if TYPE_CHECKING:
    from .._refresher import CredentialHandle

__all__ = [
    "API_VERSION",
    "Auth",
    "CredentialSource",
    "apply_auth",
    "default_azure_token",
    "env_credentials",
    "shared_key_signature",
]

API_VERSION = "2025-01-05"
"""x-ms-version of every request, on both paths (the SDK is pinned to it too)."""
STORAGE_SCOPE = "https://storage.azure.com/.default"

Auth = tuple[Literal["key", "sas", "bearer"], str] | None
"""The credential one attempt is signed with; None: unsigned."""


_date: tuple[int, str] = (0, "")


def http_date() -> str:
    """``x-ms-date`` for now; formatted once per second (formatdate costs ~5 us a call)."""
    global _date
    now = int(time.time())
    if _date[0] != now:
        _date = (now, formatdate(now, usegmt=True))
    return _date[1]


class _PlainRequest:
    """The two attributes ``SharedKeyCredentialPolicy`` reads, over a plain request."""

    __slots__ = ("context", "http_request")

    class _Http:
        __slots__ = ("headers", "method", "query", "url")

        def __init__(
            self, method: str, url: str, headers: dict[str, str], query: dict[str, str]
        ) -> None:
            self.method = method
            self.url = url
            self.headers = headers
            self.query = query

    class _Context:
        __slots__ = ("transport",)

        def __init__(self, transport: object) -> None:
            # None: the path is signed exactly as sent; the SDK's aiohttp transport: the path
            # as yarl will send it (the SDK's own rule)
            self.transport = transport

    def __init__(
        self, method: str, url: str, headers: dict[str, str], transport: object = None
    ) -> None:
        query: dict[str, str] = {}
        for pair in urlsplit(url).query.split("&"):
            if pair:
                name, _, value = pair.partition("=")
                query[name] = value
        self.http_request = self._Http(method, url, headers, query)
        self.context = self._Context(transport)


_policies: dict[tuple[str, str], Any] = {}


def _policy(account: str, key: str) -> Any:
    policy = _policies.get((account, key))
    if policy is None:
        from azure.storage.blob._shared.authentication import SharedKeyCredentialPolicy

        policy = SharedKeyCredentialPolicy(account, key)  # type: ignore[no-untyped-call]
        if len(_policies) > 64:
            _policies.clear()
        _policies[(account, key)] = policy
    return policy


_SIGNED_STANDARD = (
    "content-encoding",
    "content-language",
    "content-length",
    "content-md5",
    "content-type",
    "date",
    "if-modified-since",
    "if-match",
    "if-none-match",
    "if-unmodified-since",
)
"""The standard headers of the string to sign, in order (the SDK sends ranges as x-ms-range,
so the Range slot after them is always empty)."""
_FAST_XMS = ("x-ms-date", "x-ms-range", "x-ms-version")
"""x-ms headers whose canonical order is plain sorting (checked against the SDK's collation
in the tests); a request with any other x-ms header is signed by the SDK's policy."""
_hmacs: dict[str, Any] = {}


def _fast_signature(account: str, key: str, method: str, url: str, headers: dict[str, str]) -> str:
    """SharedKey for reads, HEADs and deletes, byte for byte what the SDK's policy computes
    (tests compare them) at a fifth of its cost: the decoded key's HMAC state is cached."""
    mac = _hmacs.get(key)
    if mac is None:
        mac = hmac.new(base64.b64decode(key), digestmod=hashlib.sha256)
        if len(_hmacs) > 64:
            _hmacs.clear()
        _hmacs[key] = mac
    parts = urlsplit(url)
    lines = [method]
    for name in _SIGNED_STANDARD:
        value = headers.get(name) or ""
        lines.append("" if name == "content-length" and value == "0" else value)
    lines.append("")  # the SDK's never-present "byte_range"
    text = "\n".join(lines) + "\n"
    for name in _FAST_XMS:
        if headers.get(name):
            text += f"{name}:{headers[name]}\n"
    text += f"/{account}{parts.path}"
    if parts.query:
        pairs = sorted(pair.partition("=")[::2] for pair in parts.query.split("&") if pair)
        text += "".join(f"\n{name.lower()}:{unquote(value)}" for name, value in pairs)
    signer = mac.copy()
    signer.update(text.encode())
    return f"SharedKey {account}:{base64.b64encode(signer.digest()).decode()}"


def shared_key_signature(
    account: str,
    key: str,
    method: str,
    url: str,
    headers: dict[str, str],
    *,
    transport: object = None,
) -> str:
    """The ``Authorization`` value for a request: ``SharedKey <account>:<signature>``.

    ``headers`` must already hold every header that is sent (``x-ms-date`` included). The
    SDK's policy computes it; an invalid key is an AuthenticationError naming no secret.
    """
    if transport is None and all(name in _FAST_XMS for name in headers if name.startswith("x-ms-")):
        try:
            return _fast_signature(account, key, method, url, headers)
        except (ValueError, TypeError):
            pass  # not base64: the SDK's policy below raises the clear error
    request = _PlainRequest(method, url, dict(headers), transport)
    try:
        _policy(account, key).on_request(request)
    except Exception as exc:
        raise AuthenticationError(
            f"Could not sign the request with the account key of {account!r} "
            f"({type(exc).__name__}); the key must be the base64 string from the portal."
        ) from None
    return str(request.http_request.headers["Authorization"])


def apply_auth(auth: Auth, account: str, method: str, url: str, headers: dict[str, str]) -> str:
    """Sign a request in place; returns the URL to use (a SAS extends the query)."""
    if auth is None:
        return url
    kind, secret = auth
    if kind == "sas":
        return f"{url}{'&' if '?' in url else '?'}{secret}"
    if kind == "bearer":
        headers["authorization"] = f"Bearer {secret}"
        return url
    headers["authorization"] = shared_key_signature(account, secret, method, url, headers)
    return url


def _sas(token: str) -> str:
    return token[1:] if token.startswith("?") else token


def _static_auth(credential: object) -> Auth:
    if isinstance(
        credential, AzureStaticCredentials.AccessKey | AzureRefreshableCredential.AccessKey
    ):
        return ("key", credential.key)
    if isinstance(
        credential, AzureStaticCredentials.SasToken | AzureRefreshableCredential.SasToken
    ):
        return ("sas", _sas(credential.token))
    if isinstance(credential, AzureStaticCredentials.BearerToken):
        return ("bearer", credential.token)
    if isinstance(credential, AzureRefreshableCredential.BearerToken):
        return ("bearer", credential.bearer)
    raise TypeError(f"not an Azure credential: {type(credential).__name__}")


def sas_expiry(token: str) -> datetime | None:
    """The ``se=`` (signed expiry) of a SAS token, or None if it has none we can read."""
    for pair in token.split("&"):
        name, _, value = pair.partition("=")
        if name == "se":
            try:
                parsed = datetime.fromisoformat(unquote(value).replace("Z", "+00:00"))
            except ValueError:
                return None
            return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    return None


def check_sas_expiry(token: str) -> None:
    """A clear error for a SAS token past its expiry, before any request is sent."""
    expires = sas_expiry(token)
    if expires is not None and datetime.now(UTC) >= expires:
        raise AuthenticationError(
            f"The SAS token expired at {expires.isoformat()} (its 'se' field); generate a "
            "new one, or pass get_credentials=... returning AzureRefreshableCredential."
            "SasToken(..., expires_after=...) so that it is refreshed before it expires."
        )


def parse_connection_string(value: str) -> dict[str, str]:
    """``Name=value;...`` pairs; values may contain '=' (base64 keys)."""
    fields: dict[str, str] = {}
    for part in value.split(";"):
        name, sep, field = part.strip().partition("=")
        if sep and name:
            fields[name.lower()] = field
    return fields


def env_credentials(account: str, emulator: bool) -> AnyAzureCredential:
    """What ``from_env`` means right now, in this process (never logged, never in a message)."""
    connection = os.environ.get("AZURE_STORAGE_CONNECTION_STRING")
    if connection:
        fields = parse_connection_string(connection)
        named = fields.get("accountname")
        if named and named != account:
            raise ConfigurationError(
                f"AZURE_STORAGE_CONNECTION_STRING is for account {named!r}, but the storage "
                f"is for account {account!r}."
            )
        if fields.get("accountkey"):
            return AzureCredentials.Static(AzureStaticCredentials.AccessKey(fields["accountkey"]))
        if fields.get("sharedaccesssignature"):
            return AzureCredentials.Static(
                AzureStaticCredentials.SasToken(fields["sharedaccesssignature"])
            )
    key = os.environ.get("AZURE_STORAGE_ACCOUNT_KEY")
    if key:
        return AzureCredentials.Static(AzureStaticCredentials.AccessKey(key))
    sas = os.environ.get("AZURE_STORAGE_SAS_TOKEN")
    if sas:
        return AzureCredentials.Static(AzureStaticCredentials.SasToken(sas))
    if emulator and account == AZURITE_ACCOUNT:
        return AzureCredentials.Static(AzureStaticCredentials.AccessKey(AZURITE_KEY))
    try:
        import azure.identity  # noqa: F401
    except ImportError:
        raise AuthenticationError(
            f"No Azure credentials found in the environment for account {account!r}: set "
            "AZURE_STORAGE_CONNECTION_STRING, AZURE_STORAGE_ACCOUNT_KEY or "
            "AZURE_STORAGE_SAS_TOKEN, install azure-identity (DefaultAzureCredential), or "
            "pass access_key / sas_token / bearer_token / get_credentials, or anonymous=True "
            "for a public container."
        ) from None
    return AzureCredentials.Refreshable(default_azure_token)


_identity_lock = threading.Lock()
_identity: Any = None


def default_azure_token() -> AzureRefreshableCredential.BearerToken:
    """A storage token from azure-identity's ``DefaultAzureCredential`` (one per process).

    Module level, so it pickles; called by the shared refresher in a worker thread.
    """
    global _identity
    with _identity_lock:
        if _identity is None:
            from azure.identity import DefaultAzureCredential

            _identity = DefaultAzureCredential()
        credential = _identity
    token = credential.get_token(STORAGE_SCOPE)
    return AzureRefreshableCredential.BearerToken(
        token.token, expires_after=datetime.fromtimestamp(token.expires_on, UTC)
    )


class CredentialSource:
    """The credential of one storage in one process; call it before every attempt."""

    def __init__(self, credentials: AnyAzureCredential, account: str, emulator: bool) -> None:
        install_log_redaction(credentials)
        self._credentials = credentials
        self._account = account
        self._emulator = emulator
        self._resolved: AnyAzureCredential | None = None
        self._handle: CredentialHandle[AnyAzureRefreshableCredential] | None = None

    async def __call__(self) -> Auth:
        credentials = self._resolved
        if credentials is None:
            credentials = self._credentials
            if isinstance(credentials, AzureCredentials.FromEnv):
                credentials = env_credentials(self._account, self._emulator)
                remember_secrets_of(credentials)
            self._resolved = credentials
        if isinstance(credentials, AzureCredentials.Anonymous):
            return None
        if isinstance(credentials, AzureCredentials.Static):
            auth = _static_auth(credentials.credentials)
            if auth is not None and auth[0] == "sas":
                check_sas_expiry(auth[1])
            return auth
        assert isinstance(credentials, AzureCredentials.Refreshable)
        handle = self._handle
        if handle is None:
            from .._refresher import credential_handle

            handle = self._handle = credential_handle(credentials)
        return _static_auth(await handle.get())

    async def aclose(self) -> None:
        handle, self._handle = self._handle, None
        if handle is not None:
            await handle.aclose()

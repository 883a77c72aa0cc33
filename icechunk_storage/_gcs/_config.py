"""Where requests go: the endpoint, from ``config``, ``STORAGE_EMULATOR_HOST`` or the default.

``config`` takes object_store's ``GoogleConfigKey`` names (as Icechunk does), but only the
ones this adapter honours; any other key is refused with the list of valid ones (Icechunk
drops unknown keys silently). Credential keys are refused with a pointer to the matching
``gcs_storage`` argument, so there is one way to give each credential.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from urllib.parse import urlsplit

import attrs

from .._errors import ConfigurationError

__all__ = ["DEFAULT_ENDPOINT", "EMULATOR_ENV", "GcsEndpoint", "resolve_endpoint"]

DEFAULT_ENDPOINT = "https://storage.googleapis.com"
EMULATOR_ENV = "STORAGE_EMULATOR_HOST"

BASE_URL_KEYS = ("google_base_url", "base_url")
ALLOW_HTTP_KEYS = ("allow_http", "google_allow_http")
PROXY_KEYS = ("proxy_url", "google_proxy_url")
VALID_KEYS = (*BASE_URL_KEYS, *ALLOW_HTTP_KEYS, *PROXY_KEYS)

_CREDENTIAL_KEYS = {
    "google_service_account": "service_account_file",
    "service_account": "service_account_file",
    "google_service_account_path": "service_account_file",
    "service_account_path": "service_account_file",
    "google_service_account_key": "service_account_key",
    "service_account_key": "service_account_key",
    "google_application_credentials": "application_credentials",
    "application_credentials": "application_credentials",
    "google_bearer_token": "bearer_token",
    "bearer_token": "bearer_token",
    "google_skip_signature": "anonymous=True",
    "skip_signature": "anonymous=True",
}
_BOOLEANS = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}


@attrs.frozen
class GcsEndpoint:
    """``origin`` (scheme://host[:port]); ``emulator``: it came from STORAGE_EMULATOR_HOST."""

    origin: str = DEFAULT_ENDPOINT
    emulator: bool = False
    proxy: str | None = None

    @property
    def host(self) -> str:
        return urlsplit(self.origin).netloc


def _origin(value: str, source: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ConfigurationError(
            f"{source} must be an http(s) URL such as 'https://storage.googleapis.com' or "
            f"'http://127.0.0.1:4443', got {value!r}."
        )
    if parts.path.strip("/") or parts.query or parts.fragment:
        raise ConfigurationError(
            f"{source} must be scheme://host[:port] without a path, got {value!r}; the "
            "JSON API paths (/storage/v1, /upload/storage/v1) are added by the storage."
        )
    return f"{parts.scheme}://{parts.netloc}"


def _one(config: Mapping[str, str], keys: tuple[str, ...]) -> str | None:
    given = [key for key in keys if key in config]
    if len(given) > 1:
        raise ConfigurationError(
            f"config keys {' and '.join(given)} mean the same thing; give only one."
        )
    return config[given[0]] if given else None


def resolve_endpoint(config: Mapping[str, str] | None) -> GcsEndpoint:
    """Validate ``config`` and decide the endpoint: ``google_base_url`` wins, then the
    ``STORAGE_EMULATOR_HOST`` environment variable (read here, at construction), then GCS."""
    config = dict(config or {})
    for key, value in config.items():
        if not isinstance(key, str) or not isinstance(value, str):
            raise ConfigurationError(
                "config must map str keys to str values (object_store GoogleConfigKey names), "
                f"got a {type(key).__name__} key with a {type(value).__name__} value."
            )
        if key in _CREDENTIAL_KEYS:
            raise ConfigurationError(
                f"config key {key!r} is a credential; pass it as gcs_storage("
                f"{_CREDENTIAL_KEYS[key]}...) instead, so credential conflicts can be checked."
            )
        if key not in VALID_KEYS:
            raise ConfigurationError(
                f"Unknown GCS config key {key!r}; valid keys are: {', '.join(VALID_KEYS)}."
            )
    allow_http_text = _one(config, ALLOW_HTTP_KEYS)
    allow_http = False
    if allow_http_text is not None:
        if allow_http_text.strip().lower() not in _BOOLEANS:
            raise ConfigurationError(
                f"config 'allow_http' must be 'true' or 'false', got {allow_http_text!r}."
            )
        allow_http = _BOOLEANS[allow_http_text.strip().lower()]
    proxy = _one(config, PROXY_KEYS)
    if proxy is not None:
        proxy = _origin(proxy, "config 'proxy_url'")
    base_url = _one(config, BASE_URL_KEYS)
    if base_url is not None:
        origin = _origin(base_url, "config 'google_base_url'")
        if origin.startswith("http:") and not allow_http:
            raise ConfigurationError(
                f"config 'google_base_url' {base_url!r} is plain http; add "
                "config={'allow_http': 'true', ...} to allow unencrypted requests."
            )
        return GcsEndpoint(origin, emulator=False, proxy=proxy)
    emulator = os.environ.get(EMULATOR_ENV)
    if emulator:
        if "://" not in emulator:
            emulator = f"http://{emulator}"  # Google's clients and gcloud-aio accept host:port
        return GcsEndpoint(_origin(emulator, EMULATOR_ENV), emulator=True, proxy=proxy)
    return GcsEndpoint(DEFAULT_ENDPOINT, emulator=False, proxy=proxy)

"""``gcs_storage``: Icechunk's constructor and parameters.

It validates everything and does no I/O, except that ``scatter_initial_credentials=True``
calls ``get_credentials`` once, as asked.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from .._credentials import GcsBearerCredential, gcs_credentials
from .._errors import ConfigurationError
from .._settings import StorageSettings
from ._config import resolve_endpoint
from ._storage import GcsStorage

__all__ = ["gcs_storage"]

GetGcsCredentials = Callable[[], GcsBearerCredential | Awaitable[GcsBearerCredential]]


def _key_json(key: str | Mapping[str, Any] | None) -> str | None:
    """A service account key as JSON text: a dict is serialised, a str must parse."""
    if key is None:
        return None
    if isinstance(key, Mapping):
        try:
            return json.dumps(dict(key))
        except (TypeError, ValueError) as exc:
            raise ConfigurationError(
                "service_account_key is a mapping that cannot be serialised as JSON "
                f"({type(exc).__name__}); pass the key file's JSON content."
            ) from None
    if not isinstance(key, str):
        raise ConfigurationError(
            "service_account_key must be the key's JSON (a str) or a dict, got "
            f"{type(key).__name__}."
        )
    try:
        parsed = json.loads(key)
    except ValueError:
        raise ConfigurationError(
            "service_account_key is not valid JSON; pass the content of the service account "
            "key file (or service_account_file= with its path)."
        ) from None
    if not isinstance(parsed, dict):
        raise ConfigurationError("service_account_key must be a JSON object.")
    return key


def gcs_storage(
    *,
    bucket: str,
    prefix: str | None,
    service_account_file: str | None = None,
    service_account_key: str | Mapping[str, Any] | None = None,
    application_credentials: str | None = None,
    bearer_token: str | None = None,
    anonymous: bool | None = None,
    from_env: bool | None = None,
    config: Mapping[str, str] | None = None,
    get_credentials: GetGcsCredentials | None = None,
    scatter_initial_credentials: bool = False,
    headers: Mapping[str, str] | None = None,
    read_headers: Mapping[str, str] | None = None,
    write_headers: Mapping[str, str] | None = None,
    settings: StorageSettings | None = None,
) -> GcsStorage:
    """Storage in a Google Cloud Storage bucket.

    Credentials (exactly one way; conflicting arguments are refused, naming both):
    ``service_account_file`` (path), ``service_account_key`` (the JSON, or a dict),
    ``application_credentials`` (an ADC file: authorized user or service account),
    ``bearer_token`` (used as is), ``anonymous=True`` (no Authorization header),
    ``get_credentials`` (returns :class:`GcsBearerCredential`; refreshed before expiry), or
    nothing / ``from_env=True``: ``GOOGLE_APPLICATION_CREDENTIALS``, the gcloud ADC file,
    else the metadata server (``GCE_METADATA_HOST``).

    Endpoint: ``config={"google_base_url": "http://127.0.0.1:4443", "allow_http": "true"}``,
    else the ``STORAGE_EMULATOR_HOST`` environment variable (read now; with it and no
    credential arguments, requests are anonymous, as Google's clients do), else
    ``https://storage.googleapis.com``. Other ``config`` keys: ``allow_http``,
    ``proxy_url``; anything else is refused.
    """
    endpoint = resolve_endpoint(config)
    key = _key_json(service_account_key)
    nothing_given = all(
        value is None
        for value in (
            service_account_file,
            key,
            application_credentials,
            bearer_token,
            anonymous,
            from_env,
            get_credentials,
        )
    )
    credentials = gcs_credentials(
        service_account_file=service_account_file,
        service_account_key=key,
        application_credentials=application_credentials,
        bearer_token=bearer_token,
        from_env=from_env,
        anonymous=anonymous,
        get_credentials=get_credentials,
        scatter_initial_credentials=scatter_initial_credentials,
    )
    return GcsStorage(
        bucket=bucket,
        prefix=prefix,
        credentials=None if nothing_given else credentials,
        endpoint=endpoint,
        headers=headers,
        read_headers=read_headers,
        write_headers=write_headers,
        settings=settings,
    )

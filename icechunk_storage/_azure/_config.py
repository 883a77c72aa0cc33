"""Where an Azure container lives: the ``config`` keys (object_store's names) and the URL.

Three ways to the blob service, as object_store's ``MicrosoftAzureBuilder`` does:

* default: ``https://<account>.blob.core.windows.net``;
* ``use_emulator``: Azurite at ``http://127.0.0.1:10000/<account>`` (the origin overridable
  by ``AZURITE_BLOB_STORAGE_URL``), where the account is part of the path;
* ``endpoint``: the account's blob endpoint, for sovereign clouds, private links and
  emulators (``https://acct.blob.core.chinacloudapi.cn``, ``http://host:port/acct``).
  A plain-HTTP endpoint needs ``allow_http`` (the request would otherwise carry a SAS or
  bearer token in clear text without the user having said so).

Unknown keys are refused with the list of valid ones (Icechunk drops them silently).
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from urllib.parse import quote, urlsplit

import attrs

from .._errors import ConfigurationError

__all__ = ["AZURITE_ACCOUNT", "AZURITE_KEY", "CONFIG_KEYS", "AzureLocation", "parse_config"]

AZURITE_ACCOUNT = "devstoreaccount1"
AZURITE_KEY = (
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
)
"""Azurite's documented public development key; used only with ``use_emulator``."""
AZURITE_DEFAULT_URL = "http://127.0.0.1:10000"

CONFIG_KEYS: dict[str, str] = {
    "use_emulator": "use_emulator",
    "azure_storage_use_emulator": "use_emulator",
    "endpoint": "endpoint",
    "azure_storage_endpoint": "endpoint",
    "azure_endpoint": "endpoint",
    "allow_http": "allow_http",
    "azure_allow_http": "allow_http",
}
"""Accepted ``config`` keys (object_store ``AzureConfigKey`` spellings) -> canonical name."""

_ACCOUNT = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")
"""Azure's own rule is 3-24 lowercase letters and digits; we accept any lowercase DNS label
(so Icechunk's documentation example ``account="my-account-name"`` constructs) and let the
service answer for names it does not know."""
_CONTAINER = re.compile(r"[a-z0-9](?:[a-z0-9]|-(?=[a-z0-9])){2,62}|\$root")
_TRUE = {"true", "1", "yes", "on"}
_FALSE = {"false", "0", "no", "off", ""}


def _flag(name: str, value: object) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
        return value.strip().lower() in _TRUE
    raise ConfigurationError(
        f"config[{name!r}] must be 'true' or 'false', got {type(value).__name__} {value!r}."
    )


@attrs.frozen
class AzureLocation:
    """The container's address: ``origin`` (scheme://host[:port]), ``host`` (Host header),
    ``base`` (path before the container: '' or '/<account>' for emulators)."""

    account: str
    container: str
    origin: str
    host: str
    base: str
    emulator: bool = False

    def path(self, blob: str) -> str:
        """The percent-encoded request path of a blob (what SharedKey signs)."""
        return f"{self.base}/{self.container}/{quote(blob, safe='/~')}"

    def url(self, blob: str) -> str:
        return self.origin + self.path(blob)

    @property
    def account_url(self) -> str:
        return self.origin + self.base


def validate_names(account: object, container: object) -> None:
    if not isinstance(account, str) or not _ACCOUNT.fullmatch(account):
        raise ConfigurationError(
            f"account must be a storage account name (lowercase letters and digits, e.g. "
            f"'mystorageaccount'), got {account!r}."
        )
    if not isinstance(container, str) or not _CONTAINER.fullmatch(container):
        raise ConfigurationError(
            f"container must be a container name (3-63 lowercase letters, digits and single "
            f"hyphens, starting with a letter or digit), got {container!r}; put the path "
            "inside the container in prefix."
        )


def parse_config(config: Mapping[str, object] | None) -> dict[str, str]:
    """Canonical ``{name: value}`` from the user's ``config``; refuses unknown keys."""
    if config is None:
        return {}
    if not isinstance(config, Mapping):
        raise ConfigurationError(
            f"config must be a dict of object_store Azure keys, got {type(config).__name__}."
        )
    parsed: dict[str, str] = {}
    for key, value in config.items():
        name = CONFIG_KEYS.get(key.lower()) if isinstance(key, str) else None
        if name is None:
            raise ConfigurationError(
                f"Unknown Azure config key {key!r}. Valid keys: {', '.join(CONFIG_KEYS)}. "
                "Credentials go in their own arguments (access_key, sas_token, bearer_token, "
                "get_credentials)."
            )
        if name in parsed:
            raise ConfigurationError(f"config gives {name!r} twice (as {key!r} and another alias).")
        if name == "endpoint":
            if not isinstance(value, str) or not value:
                raise ConfigurationError(
                    f"config[{key!r}] must be a URL such as "
                    f"'https://<account>.blob.core.windows.net', got {type(value).__name__}."
                )
            parsed[name] = value
        else:
            parsed[name] = "true" if _flag(key, value) else "false"
    return parsed


def resolve_location(account: str, container: str, config: Mapping[str, str]) -> AzureLocation:
    """Where requests go. Reads ``AZURITE_BLOB_STORAGE_URL`` (emulator only) when called."""
    emulator = config.get("use_emulator") == "true"
    endpoint = config.get("endpoint")
    allow_http = config.get("allow_http") == "true"
    if emulator and endpoint is not None:
        raise ConfigurationError(
            "config gives both use_emulator and endpoint; use_emulator means Azurite at "
            "http://127.0.0.1:10000 (or AZURITE_BLOB_STORAGE_URL): give one of them."
        )
    if emulator:
        url = os.environ.get("AZURITE_BLOB_STORAGE_URL") or AZURITE_DEFAULT_URL
        origin, host, base = _split(url.rstrip("/"), "AZURITE_BLOB_STORAGE_URL", True)
        return AzureLocation(account, container, origin, host, f"{base}/{account}", True)
    if endpoint is None:
        host = f"{account}.blob.core.windows.net"
        return AzureLocation(account, container, f"https://{host}", host, "")
    origin, host, base = _split(endpoint.rstrip("/"), "config['endpoint']", allow_http)
    return AzureLocation(account, container, origin, host, base)


def _split(url: str, what: str, allow_http: bool) -> tuple[str, str, str]:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigurationError(f"{what} must be an http(s) URL, got {url!r}.")
    if parts.query or parts.fragment or parts.username or parts.password:
        raise ConfigurationError(
            f"{what} must be a plain URL without credentials, query or fragment; put a SAS "
            "token in sas_token."
        )
    if parts.scheme == "http" and not allow_http:
        raise ConfigurationError(
            f"{what} is plain HTTP ({url!r}); pass config={{'allow_http': 'true'}} to allow "
            "unencrypted requests, or use https."
        )
    return f"{parts.scheme}://{parts.netloc}", parts.netloc, parts.path.rstrip("/")

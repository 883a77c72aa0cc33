"""``azure_storage``: Icechunk's constructor, accepting both spellings of its arguments.

Icechunk's code names the arguments ``account`` and ``access_key``; its documentation writes
``account_name``, ``account_key`` and ``access_token``. Both work here; the canonical names are
the code's (``account``, ``access_key``, ``bearer_token``), and a call giving both spellings
of one argument is refused. It validates everything and does no I/O, except that
``scatter_initial_credentials=True`` calls ``get_credentials`` once, as asked.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping

from .._credentials import AnyAzureRefreshableCredential, azure_credentials
from .._errors import ConfigurationError
from .._settings import StorageSettings
from ._storage import AzureStorage

__all__ = ["azure_storage"]

GetAzureCredentials = Callable[
    [], AnyAzureRefreshableCredential | Awaitable[AnyAzureRefreshableCredential]
]


def _one(canonical: str, value: object, alias: str, alias_value: object) -> object:
    if value is not None and alias_value is not None:
        raise ConfigurationError(
            f"azure_storage() got both {canonical}= and {alias}=, two spellings of the same "
            f"argument; pass only {canonical}= (the canonical name)."
        )
    return value if value is not None else alias_value


def azure_storage(
    *,
    account: str | None = None,
    container: str,
    prefix: str | None,
    access_key: str | None = None,
    sas_token: str | None = None,
    bearer_token: str | None = None,
    from_env: bool | None = None,
    anonymous: bool | None = None,
    config: Mapping[str, str | bool] | None = None,
    get_credentials: GetAzureCredentials | None = None,
    scatter_initial_credentials: bool = False,
    account_name: str | None = None,
    account_key: str | None = None,
    access_token: str | None = None,
    settings: StorageSettings | None = None,
) -> AzureStorage:
    """Storage in an Azure Blob Storage container, under ``prefix``.

    Credentials (exactly one way): ``access_key`` (the account key, SharedKey signing),
    ``sas_token``, ``bearer_token`` (an OAuth token, never refreshed), ``get_credentials``
    (called for an ``AzureRefreshableCredential.AccessKey``, ``.SasToken`` or
    ``.BearerToken`` with ``expires_after``, refreshed before it expires),
    ``anonymous=True`` (public containers), or nothing / ``from_env=True``: the environment
    (``AZURE_STORAGE_CONNECTION_STRING``, ``AZURE_STORAGE_ACCOUNT_KEY``,
    ``AZURE_STORAGE_SAS_TOKEN``, then azure-identity's ``DefaultAzureCredential`` if it is
    installed).

    ``account_name``, ``account_key`` and ``access_token`` (Icechunk's documentation's
    spelling) are accepted for ``account``, ``access_key`` and ``bearer_token``.

    ``config`` takes object_store's Azure keys: ``use_emulator`` (Azurite's
    ``devstoreaccount1`` at ``http://127.0.0.1:10000``, or ``AZURITE_BLOB_STORAGE_URL``;
    its well-known key is used when no credential is given), ``endpoint`` (the account's
    blob endpoint, for sovereign clouds and emulators) and ``allow_http``. Unknown keys are
    refused.
    """
    account = _one("account", account, "account_name", account_name)  # type: ignore[assignment]
    access_key = _one("access_key", access_key, "account_key", account_key)  # type: ignore[assignment]
    bearer_token = _one("bearer_token", bearer_token, "access_token", access_token)  # type: ignore[assignment]
    if account is None:
        raise ConfigurationError(
            "azure_storage() needs account= (the storage account name; account_name= is "
            "accepted too)."
        )
    return AzureStorage(
        account=account,
        container=container,
        prefix=prefix,
        credentials=azure_credentials(
            access_key=access_key,
            sas_token=sas_token,
            bearer_token=bearer_token,
            from_env=from_env,
            anonymous=anonymous,
            get_credentials=get_credentials,
            scatter_initial_credentials=scatter_initial_credentials,
        ),
        config=config,
        settings=settings,
    )

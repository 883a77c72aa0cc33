"""Credential values and the ``s3_*`` / ``gcs_*`` / ``azure_*`` helpers, with Icechunk's names.

Every value is a frozen attrs class: immutable, equal by value, and picklable, because
storages travel to dask workers inside pickles. Secrets (keys, tokens, service-account JSON)
are masked in ``repr``/``str`` and never appear in an error message; validation messages
name the argument and the type, never the value.

A ``Refreshable`` holds the user's ``get_credentials`` callback, which may be sync or
``async def`` and must return the matching credential type. The callback must pickle with the
standard :mod:`pickle` module (a module-level function, an instance of a module-level class,
or a ``functools.partial`` of those) because every process that uses the storage calls it
there; an unpicklable callback is refused at construction, not on a worker hours later.
Calling it is the job of :mod:`._refresher`, shared by every storage in the process.

Differences from Icechunk, each what a user would expect:

* ``gcs_credentials(get_credentials=f)`` means refreshable. Icechunk silently returns
  from-env unless ``from_env=False`` is also passed (its bug).
* The ``*_credentials`` dispatchers refuse every ambiguous combination with a message naming
  the arguments, where Icechunk lets one silently win: GCS and Azure ``anonymous=True`` with
  other arguments, several GCS static credentials at once (Icechunk takes the first),
  ``scatter_initial_credentials=True`` without ``get_credentials``.
* Callbacks may be ``async def``; they are called on the callback object itself (not on a
  fresh unpickled copy each time), so a stateful callable keeps its state within a process.
* Empty strings are refused for keys and tokens, and ``expires_after`` must be tz-aware (it is
  converted to UTC).
"""

from __future__ import annotations

import functools
import os
import pickle
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from types import UnionType
from typing import Any, ClassVar, Generic, Protocol, TypeAlias, TypeVar

import attrs

from ._errors import ConfigurationError

__all__ = [
    "AnyAzureCredential",
    "AnyAzureRefreshableCredential",
    "AnyAzureStaticCredential",
    "AnyGcsCredential",
    "AnyGcsStaticCredential",
    "AnyS3Credential",
    "AzureCredentials",
    "AzureRefreshableCredential",
    "AzureStaticCredentials",
    "GcsBearerCredential",
    "GcsCredentials",
    "GcsStaticCredentials",
    "RefreshableCredentials",
    "S3Credentials",
    "S3StaticCredentials",
    "azure_anonymous_credentials",
    "azure_credentials",
    "azure_from_env_credentials",
    "azure_refreshable_credentials",
    "azure_static_credentials",
    "callable_name",
    "gcs_anonymous_credentials",
    "gcs_credentials",
    "gcs_from_env_credentials",
    "gcs_refreshable_credentials",
    "gcs_static_credentials",
    "s3_anonymous_credentials",
    "s3_credentials",
    "s3_from_env_credentials",
    "s3_refreshable_credentials",
    "s3_static_credentials",
]

_MASK = "'***'"


# --- field helpers -------------------------------------------------------------------------


def _masked(value: object) -> str:
    return "None" if value is None else _MASK


def _describe_bad(value: object) -> str:
    """How a rejected value is described: its type only, since it may be a secret."""
    return "an empty str" if value == "" else type(value).__name__


def _non_empty_str(instance: Any, attribute: attrs.Attribute[Any], value: object) -> None:
    if not isinstance(value, str) or not value:
        raise ConfigurationError(
            f"{type(instance).__qualname__}.{attribute.name} must be a non-empty str, "
            f"got {_describe_bad(value)}."
        )


def _optional_non_empty_str(instance: Any, attribute: attrs.Attribute[Any], value: object) -> None:
    if value is not None:
        _non_empty_str(instance, attribute, value)


def _instance_of(kind: type | UnionType) -> Any:
    """Like attrs' ``instance_of``, but the message names types only: attrs' shows the value,
    which may be a secret passed in the wrong place."""

    def check(instance: Any, attribute: attrs.Attribute[Any], value: object) -> None:
        if not isinstance(value, kind):
            raise ConfigurationError(
                f"{type(instance).__qualname__}.{attribute.name} must be {type_name(kind)}, "
                f"got {type(value).__name__}."
            )

    return check


def _utc(value: datetime | None) -> datetime | None:
    """Converter for ``expires_after``: None, or a tz-aware datetime expressed in UTC."""
    if value is None:
        return None
    if not isinstance(value, datetime):
        raise ConfigurationError(
            f"expires_after must be a timezone-aware datetime or None, got {_describe_bad(value)}."
        )
    if value.tzinfo is None or value.utcoffset() is None:
        raise ConfigurationError(
            "expires_after must be timezone-aware, got a naive datetime; "
            "use e.g. datetime.now(UTC) + timedelta(hours=1)."
        )
    return value.astimezone(UTC)


def _path(value: str | os.PathLike[str]) -> str:
    return os.fspath(value) if isinstance(value, os.PathLike) else value


def callable_name(fn: object) -> str:
    """A callback's qualified name for messages and reprs; never its repr, which may hold
    secrets (a partial's arguments, an instance's attributes)."""
    if isinstance(fn, functools.partial):
        return f"functools.partial({callable_name(fn.func)})"
    name = getattr(fn, "__qualname__", None)
    if isinstance(name, str):
        return f"{getattr(fn, '__module__', None) or '?'}.{name}"
    kind = type(fn)
    return f"{kind.__module__}.{kind.__qualname__} instance"


def type_name(kind: type | UnionType) -> str:
    """``S3StaticCredentials``, or ``A or B or C`` for a union."""
    if isinstance(kind, UnionType):
        return " or ".join(t.__qualname__ for t in kind.__args__)
    return kind.__qualname__


# --- refreshable base ----------------------------------------------------------------------


class _Expiring(Protocol):
    @property
    def expires_after(self) -> datetime | None: ...


C = TypeVar("C", bound=_Expiring)


@attrs.frozen
class RefreshableCredentials(Generic[C]):
    """Base of the three ``*Credentials.Refreshable`` variants.

    ``get_credentials`` is called with no arguments and returns a ``C`` or an awaitable of
    one. ``current`` is a credential already fetched (``scatter_initial_credentials``): it
    travels with the value and is used until it nears expiry. ``pickled_function`` is the
    callback's pickle: storages with equal bytes share one cached credential per process.
    """

    credential_type: ClassVar[type | UnionType]

    get_credentials: Callable[[], C | Awaitable[C]] = attrs.field(eq=False, repr=callable_name)
    current: C | None = attrs.field(default=None)
    pickled_function: bytes = attrs.field(init=False, repr=False)

    @current.validator
    def _check_current(self, attribute: attrs.Attribute[Any], value: object) -> None:
        if value is not None and not isinstance(value, self.credential_type):
            raise ConfigurationError(
                f"{type(self).__qualname__}.current must be {type_name(self.credential_type)} "
                f"or None, got {type(value).__name__}."
            )

    def __attrs_post_init__(self) -> None:
        fn = self.get_credentials
        if not callable(fn):
            raise ConfigurationError(
                f"get_credentials must be a callable returning "
                f"{type_name(self.credential_type)}, got {type(fn).__name__}."
            )
        try:
            pickled = pickle.dumps(fn)
        except Exception as exc:
            raise ConfigurationError(
                f"get_credentials ({callable_name(fn)}) cannot be pickled "
                f"({type(exc).__name__}: {exc}). It must pickle with the standard pickle "
                "module because storages are pickled and shipped to other processes (dask "
                "workers, multiprocessing), which call it there. Use a module-level function, "
                "an instance of a module-level class, or functools.partial of one; not a "
                "lambda or a function defined inside another function."
            ) from exc
        object.__setattr__(self, "pickled_function", pickled)


# --- S3 ------------------------------------------------------------------------------------


@attrs.frozen
class S3StaticCredentials:
    """A fixed S3 key pair, with optional session token and expiry (None: never expires)."""

    access_key_id: str = attrs.field(validator=_non_empty_str, repr=_masked)
    secret_access_key: str = attrs.field(validator=_non_empty_str, repr=_masked)
    session_token: str | None = attrs.field(
        default=None, validator=_optional_non_empty_str, repr=_masked
    )
    expires_after: datetime | None = attrs.field(default=None, converter=_utc)


class S3Credentials:
    """Namespace of the ways to authenticate to S3: ``FromEnv``, ``Anonymous``, ``Static``,
    ``Refreshable``."""

    @attrs.frozen
    class FromEnv:
        """The AWS default chain: environment, profile, SSO, web identity, IMDS."""

    @attrs.frozen
    class Anonymous:
        """Unsigned requests (public buckets)."""

    @attrs.frozen
    class Static:
        credentials: S3StaticCredentials = attrs.field(validator=_instance_of(S3StaticCredentials))

    @attrs.frozen
    class Refreshable(RefreshableCredentials[S3StaticCredentials]):
        """``get_credentials() -> S3StaticCredentials`` (or an awaitable of one)."""

        credential_type: ClassVar[type | UnionType] = S3StaticCredentials


AnyS3Credential: TypeAlias = (
    S3Credentials.FromEnv
    | S3Credentials.Anonymous
    | S3Credentials.Static
    | S3Credentials.Refreshable
)


# --- GCS -----------------------------------------------------------------------------------


@attrs.frozen
class GcsBearerCredential:
    """An OAuth2 bearer token for GCS, with optional expiry (None: never expires)."""

    bearer: str = attrs.field(validator=_non_empty_str, repr=_masked)
    expires_after: datetime | None = attrs.field(default=None, converter=_utc, kw_only=True)


class GcsStaticCredentials:
    """Namespace of fixed GCS credentials."""

    @attrs.frozen
    class ServiceAccount:
        """Path to a service-account JSON file."""

        path: str = attrs.field(converter=_path, validator=_non_empty_str)

    @attrs.frozen
    class ServiceAccountKey:
        """The service-account JSON itself (a secret)."""

        key: str = attrs.field(validator=_non_empty_str, repr=_masked)

    @attrs.frozen
    class ApplicationCredentials:
        """Path to an application-default-credentials file."""

        path: str = attrs.field(converter=_path, validator=_non_empty_str)

    @attrs.frozen
    class BearerToken:
        """A bearer token that is used as is and never refreshed."""

        token: str = attrs.field(validator=_non_empty_str, repr=_masked)


AnyGcsStaticCredential: TypeAlias = (
    GcsStaticCredentials.ServiceAccount
    | GcsStaticCredentials.ServiceAccountKey
    | GcsStaticCredentials.ApplicationCredentials
    | GcsStaticCredentials.BearerToken
)


class GcsCredentials:
    """Namespace of the ways to authenticate to GCS."""

    @attrs.frozen
    class Anonymous:
        """Unauthenticated requests (public buckets)."""

    @attrs.frozen
    class FromEnv:
        """Application default credentials from the environment."""

    @attrs.frozen
    class Static:
        credentials: AnyGcsStaticCredential = attrs.field(
            validator=_instance_of(AnyGcsStaticCredential)
        )

    @attrs.frozen
    class Refreshable(RefreshableCredentials[GcsBearerCredential]):
        """``get_credentials() -> GcsBearerCredential`` (or an awaitable of one)."""

        credential_type: ClassVar[type | UnionType] = GcsBearerCredential


AnyGcsCredential: TypeAlias = (
    GcsCredentials.Anonymous
    | GcsCredentials.FromEnv
    | GcsCredentials.Static
    | GcsCredentials.Refreshable
)


# --- Azure ---------------------------------------------------------------------------------


class AzureStaticCredentials:
    """Namespace of fixed Azure credentials."""

    @attrs.frozen
    class AccessKey:
        key: str = attrs.field(validator=_non_empty_str, repr=_masked)

    @attrs.frozen
    class SasToken:
        token: str = attrs.field(validator=_non_empty_str, repr=_masked)

    @attrs.frozen
    class BearerToken:
        token: str = attrs.field(validator=_non_empty_str, repr=_masked)


AnyAzureStaticCredential: TypeAlias = (
    AzureStaticCredentials.AccessKey
    | AzureStaticCredentials.SasToken
    | AzureStaticCredentials.BearerToken
)


class AzureRefreshableCredential:
    """Namespace of what an Azure ``get_credentials`` callback may return."""

    @attrs.frozen
    class AccessKey:
        key: str = attrs.field(validator=_non_empty_str, repr=_masked)
        expires_after: datetime | None = attrs.field(default=None, converter=_utc, kw_only=True)

    @attrs.frozen
    class SasToken:
        token: str = attrs.field(validator=_non_empty_str, repr=_masked)
        expires_after: datetime | None = attrs.field(default=None, converter=_utc, kw_only=True)

    @attrs.frozen
    class BearerToken:
        bearer: str = attrs.field(validator=_non_empty_str, repr=_masked)
        expires_after: datetime | None = attrs.field(default=None, converter=_utc, kw_only=True)


AnyAzureRefreshableCredential: TypeAlias = (
    AzureRefreshableCredential.AccessKey
    | AzureRefreshableCredential.SasToken
    | AzureRefreshableCredential.BearerToken
)


class AzureCredentials:
    """Namespace of the ways to authenticate to Azure Blob Storage."""

    @attrs.frozen
    class Anonymous:
        """Unauthenticated requests (public containers)."""

    @attrs.frozen
    class FromEnv:
        """Credentials from the environment (``AZURE_*`` variables, managed identity ...)."""

    @attrs.frozen
    class Static:
        credentials: AnyAzureStaticCredential = attrs.field(
            validator=_instance_of(AnyAzureStaticCredential)
        )

    @attrs.frozen
    class Refreshable(RefreshableCredentials[AnyAzureRefreshableCredential]):
        """``get_credentials()`` returns an ``AzureRefreshableCredential.*`` value."""

        credential_type: ClassVar[type | UnionType] = AnyAzureRefreshableCredential


AnyAzureCredential: TypeAlias = (
    AzureCredentials.Anonymous
    | AzureCredentials.FromEnv
    | AzureCredentials.Static
    | AzureCredentials.Refreshable
)


# --- helper functions ----------------------------------------------------------------------

R = TypeVar("R", bound=RefreshableCredentials[Any])


def _scatter(value: R, scatter_initial_credentials: bool) -> R:
    """With scatter, fetch a credential now (from the process cache if fresh) into ``current``,
    so pickled copies carry it and do not call the callback until it nears expiry."""
    if not scatter_initial_credentials:
        return value
    from ._refresher import default_refresher

    return attrs.evolve(value, current=default_refresher().get_blocking(value))


def _choose(function: str, modes: dict[str, list[str]], from_env: bool | None) -> str | None:
    """The one credential mode the arguments ask for, or None for "nothing given".

    ``modes`` maps each mode to the arguments given for it (empty when not asked for).
    """
    chosen = {mode: given for mode, given in modes.items() if given}
    if len(chosen) > 1:
        parts = [", ".join(given) for given in chosen.values()]
        raise ConfigurationError(
            f"Conflicting arguments to {function}(): {' and '.join(parts)} cannot be combined. "
            f"Give exactly one of: {', '.join(modes)}."
        )
    if not chosen and from_env is False:
        raise ConfigurationError(
            f"{function}(from_env=False) was given no other credentials. Pass credentials, "
            "anonymous=True or get_credentials, or leave from_env unset to use the environment."
        )
    return next(iter(chosen), None)


def _check_scatter(function: str, scatter: bool, get_credentials: object) -> None:
    if scatter and get_credentials is None:
        raise ConfigurationError(
            f"{function}(scatter_initial_credentials=True) needs get_credentials: there is "
            "nothing to scatter without a callback."
        )


def _given(**arguments: object) -> list[str]:
    return [name for name, value in arguments.items() if value is not None]


def _flag(name: str, value: bool | None) -> list[str]:
    return [f"{name}=True"] if value else []


def s3_static_credentials(
    *,
    access_key_id: str,
    secret_access_key: str,
    session_token: str | None = None,
    expires_after: datetime | None = None,
) -> S3Credentials.Static:
    """Fixed keys. ``expires_after`` only tells the client when they stop working."""
    return S3Credentials.Static(
        S3StaticCredentials(access_key_id, secret_access_key, session_token, expires_after)
    )


def s3_anonymous_credentials() -> S3Credentials.Anonymous:
    """Unsigned requests."""
    return S3Credentials.Anonymous()


def s3_from_env_credentials() -> S3Credentials.FromEnv:
    """The AWS default credential chain."""
    return S3Credentials.FromEnv()


def s3_refreshable_credentials(
    get_credentials: Callable[[], S3StaticCredentials | Awaitable[S3StaticCredentials]],
    scatter_initial_credentials: bool = False,
) -> S3Credentials.Refreshable:
    """Credentials from ``get_credentials``, refreshed before they expire.

    With ``scatter_initial_credentials=True`` the callback is called now and its credential
    travels inside every pickled copy (so it is a live secret in the pickle); the copies call
    the callback only once that credential nears expiry.
    """
    return _scatter(S3Credentials.Refreshable(get_credentials), scatter_initial_credentials)


def s3_credentials(
    *,
    access_key_id: str | None = None,
    secret_access_key: str | None = None,
    session_token: str | None = None,
    expires_after: datetime | None = None,
    anonymous: bool | None = None,
    from_env: bool | None = None,
    get_credentials: Callable[[], S3StaticCredentials | Awaitable[S3StaticCredentials]]
    | None = None,
    scatter_initial_credentials: bool = False,
) -> AnyS3Credential:
    """S3 credentials from keyword arguments; no arguments means the environment (FromEnv).

    Exactly one way may be given: keys (``access_key_id`` + ``secret_access_key``, optionally
    ``session_token`` and ``expires_after``), ``anonymous=True``, ``from_env=True`` or
    ``get_credentials``. ``from_env=False`` alone is refused.
    """
    _check_scatter("s3_credentials", scatter_initial_credentials, get_credentials)
    keys = _given(
        access_key_id=access_key_id,
        secret_access_key=secret_access_key,
        session_token=session_token,
        expires_after=expires_after,
    )
    mode = _choose(
        "s3_credentials",
        {
            "access_key_id + secret_access_key": keys,
            "anonymous=True": _flag("anonymous", anonymous),
            "from_env=True": _flag("from_env", from_env),
            "get_credentials": _given(get_credentials=get_credentials),
        },
        from_env,
    )
    if mode == "anonymous=True":
        return s3_anonymous_credentials()
    if get_credentials is not None:
        return s3_refreshable_credentials(get_credentials, scatter_initial_credentials)
    if keys:
        if access_key_id is None or secret_access_key is None:
            missing = [n for n in ("access_key_id", "secret_access_key") if n not in keys]
            raise ConfigurationError(
                f"s3_credentials() was given {', '.join(keys)} but not {' or '.join(missing)}: "
                "static credentials need both access_key_id and secret_access_key."
            )
        return s3_static_credentials(
            access_key_id=access_key_id,
            secret_access_key=secret_access_key,
            session_token=session_token,
            expires_after=expires_after,
        )
    return s3_from_env_credentials()


def gcs_static_credentials(
    *,
    service_account_file: str | None = None,
    service_account_key: str | None = None,
    application_credentials: str | None = None,
    bearer_token: str | None = None,
) -> AnyGcsStaticCredential:
    """Exactly one fixed GCS credential (Icechunk silently takes the first of several)."""
    given = _given(
        service_account_file=service_account_file,
        service_account_key=service_account_key,
        application_credentials=application_credentials,
        bearer_token=bearer_token,
    )
    if len(given) != 1:
        raise ConfigurationError(
            "gcs_static_credentials() needs exactly one of service_account_file, "
            f"service_account_key, application_credentials, bearer_token; got "
            f"{', '.join(given) or 'none'}."
        )
    if service_account_file is not None:
        return GcsStaticCredentials.ServiceAccount(service_account_file)
    if service_account_key is not None:
        return GcsStaticCredentials.ServiceAccountKey(service_account_key)
    if application_credentials is not None:
        return GcsStaticCredentials.ApplicationCredentials(application_credentials)
    assert bearer_token is not None
    return GcsStaticCredentials.BearerToken(bearer_token)


def gcs_anonymous_credentials() -> GcsCredentials.Anonymous:
    """Unauthenticated requests."""
    return GcsCredentials.Anonymous()


def gcs_from_env_credentials() -> GcsCredentials.FromEnv:
    """Application default credentials."""
    return GcsCredentials.FromEnv()


def gcs_refreshable_credentials(
    get_credentials: Callable[[], GcsBearerCredential | Awaitable[GcsBearerCredential]],
    scatter_initial_credentials: bool = False,
) -> GcsCredentials.Refreshable:
    """Bearer tokens from ``get_credentials``; see :func:`s3_refreshable_credentials`."""
    return _scatter(GcsCredentials.Refreshable(get_credentials), scatter_initial_credentials)


def gcs_credentials(
    *,
    service_account_file: str | None = None,
    service_account_key: str | None = None,
    application_credentials: str | None = None,
    bearer_token: str | None = None,
    from_env: bool | None = None,
    anonymous: bool | None = None,
    get_credentials: Callable[[], GcsBearerCredential | Awaitable[GcsBearerCredential]]
    | None = None,
    scatter_initial_credentials: bool = False,
) -> AnyGcsCredential:
    """GCS credentials from keyword arguments; no arguments means the environment.

    ``get_credentials`` alone means refreshable (Icechunk returns FromEnv there: its bug).
    """
    _check_scatter("gcs_credentials", scatter_initial_credentials, get_credentials)
    static = _given(
        service_account_file=service_account_file,
        service_account_key=service_account_key,
        application_credentials=application_credentials,
        bearer_token=bearer_token,
    )
    mode = _choose(
        "gcs_credentials",
        {
            "one static credential": static,
            "anonymous=True": _flag("anonymous", anonymous),
            "from_env=True": _flag("from_env", from_env),
            "get_credentials": _given(get_credentials=get_credentials),
        },
        from_env,
    )
    if mode == "anonymous=True":
        return gcs_anonymous_credentials()
    if get_credentials is not None:
        return gcs_refreshable_credentials(get_credentials, scatter_initial_credentials)
    if static:
        return GcsCredentials.Static(
            gcs_static_credentials(
                service_account_file=service_account_file,
                service_account_key=service_account_key,
                application_credentials=application_credentials,
                bearer_token=bearer_token,
            )
        )
    return gcs_from_env_credentials()


def azure_static_credentials(
    *,
    access_key: str | None = None,
    sas_token: str | None = None,
    bearer_token: str | None = None,
) -> AnyAzureStaticCredential:
    """Exactly one fixed Azure credential."""
    given = _given(access_key=access_key, sas_token=sas_token, bearer_token=bearer_token)
    if len(given) != 1:
        raise ConfigurationError(
            "azure_static_credentials() needs exactly one of access_key, sas_token, "
            f"bearer_token; got {', '.join(given) or 'none'}."
        )
    if access_key is not None:
        return AzureStaticCredentials.AccessKey(access_key)
    if sas_token is not None:
        return AzureStaticCredentials.SasToken(sas_token)
    assert bearer_token is not None
    return AzureStaticCredentials.BearerToken(bearer_token)


def azure_anonymous_credentials() -> AzureCredentials.Anonymous:
    """Unauthenticated requests."""
    return AzureCredentials.Anonymous()


def azure_from_env_credentials() -> AzureCredentials.FromEnv:
    """Credentials from the environment."""
    return AzureCredentials.FromEnv()


def azure_refreshable_credentials(
    get_credentials: Callable[
        [], AnyAzureRefreshableCredential | Awaitable[AnyAzureRefreshableCredential]
    ],
    scatter_initial_credentials: bool = False,
) -> AzureCredentials.Refreshable:
    """Keys or tokens from ``get_credentials``; see :func:`s3_refreshable_credentials`."""
    return _scatter(AzureCredentials.Refreshable(get_credentials), scatter_initial_credentials)


def azure_credentials(
    *,
    access_key: str | None = None,
    sas_token: str | None = None,
    bearer_token: str | None = None,
    from_env: bool | None = None,
    anonymous: bool | None = None,
    get_credentials: Callable[
        [], AnyAzureRefreshableCredential | Awaitable[AnyAzureRefreshableCredential]
    ]
    | None = None,
    scatter_initial_credentials: bool = False,
) -> AnyAzureCredential:
    """Azure credentials from keyword arguments; no arguments means the environment."""
    _check_scatter("azure_credentials", scatter_initial_credentials, get_credentials)
    static = _given(access_key=access_key, sas_token=sas_token, bearer_token=bearer_token)
    mode = _choose(
        "azure_credentials",
        {
            "one static credential": static,
            "anonymous=True": _flag("anonymous", anonymous),
            "from_env=True": _flag("from_env", from_env),
            "get_credentials": _given(get_credentials=get_credentials),
        },
        from_env,
    )
    if mode == "anonymous=True":
        return azure_anonymous_credentials()
    if get_credentials is not None:
        return azure_refreshable_credentials(get_credentials, scatter_initial_credentials)
    if static:
        return AzureCredentials.Static(
            azure_static_credentials(
                access_key=access_key, sas_token=sas_token, bearer_token=bearer_token
            )
        )
    return azure_from_env_credentials()

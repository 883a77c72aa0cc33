"""Storage settings: Icechunk's names, defaults and merge semantics.

Every field is optional: ``None`` means "not set here", and the effective value comes from the
layer below when settings are merged (user over persisted repository config over the
backend's ``default_settings()``). ``a.merge(b)`` returns ``a`` with every field that ``b``
sets taken from ``b``; nested settings merge field by field. The merged value is built by
calling the constructor again, so it is validated again.

Invalid values raise ``ValueError`` (a :class:`ConfigurationError`) that names the field.
"""

from __future__ import annotations

from typing import Any, Self

import attrs

from ._errors import ConfigurationError

__all__ = [
    "DEFAULT_CONCURRENCY",
    "DEFAULT_RETRIES",
    "DEFAULT_STORAGE_SETTINGS",
    "StorageConcurrencySettings",
    "StorageRetriesSettings",
    "StorageSettings",
    "StorageTimeoutSettings",
]


def _optional_int(minimum: int) -> Any:
    """Validator: None, or an int (not a bool) of at least ``minimum``."""

    def check(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
        if value is None:
            return
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigurationError(
                f"{type(instance).__name__}.{attribute.name} must be an int, "
                f"got {type(value).__name__} {value!r}."
            )
        if value < minimum:
            raise ConfigurationError(
                f"{type(instance).__name__}.{attribute.name} must be >= {minimum}, got {value}."
            )

    return check


def _optional_instance(kind: type | tuple[type, ...]) -> Any:
    def check(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
        if value is not None and not isinstance(value, kind):
            expected = (
                kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
            )
            raise ConfigurationError(
                f"{type(instance).__name__}.{attribute.name} must be {expected} or None, "
                f"got {type(value).__name__} {value!r}."
            )

    return check


class _Mergeable:
    """``merge(other)``: fields set in ``other`` win, nested settings merge field by field."""

    def merge(self, other: Self | None) -> Self:
        if other is None:
            return self
        if type(other) is not type(self):
            raise ConfigurationError(
                f"Cannot merge {type(other).__name__} into {type(self).__name__}."
            )
        changes: dict[str, Any] = {}
        for field in attrs.fields(type(self)):  # type: ignore[arg-type]
            theirs = getattr(other, field.name)
            if theirs is None:
                continue
            ours = getattr(self, field.name)
            if isinstance(ours, _Mergeable):
                changes[field.name] = ours.merge(theirs)
            else:
                changes[field.name] = theirs
        return attrs.evolve(self, **changes)  # type: ignore[misc]


@attrs.frozen(kw_only=True)
class StorageRetriesSettings(_Mergeable):
    """How often and how patiently a transient failure is retried.

    Backoff is exponential with full jitter: before attempt ``n`` (n >= 2) we sleep a random
    time in ``[0, min(max_backoff_ms, initial_backoff_ms * 2**(n-2))]``.
    Defaults: 10 tries (the first counts; 1 disables retries), 100 ms, 180 000 ms.
    """

    max_tries: int | None = attrs.field(default=None, validator=_optional_int(1))
    initial_backoff_ms: int | None = attrs.field(default=None, validator=_optional_int(0))
    max_backoff_ms: int | None = attrs.field(default=None, validator=_optional_int(0))


@attrs.frozen(kw_only=True)
class StorageTimeoutSettings(_Mergeable):
    """Timeouts in milliseconds; None means the client's default. Only network backends use them."""

    connect_timeout_ms: int | None = attrs.field(default=None, validator=_optional_int(1))
    read_timeout_ms: int | None = attrs.field(default=None, validator=_optional_int(1))
    operation_timeout_ms: int | None = attrs.field(default=None, validator=_optional_int(1))
    operation_attempt_timeout_ms: int | None = attrs.field(default=None, validator=_optional_int(1))


@attrs.frozen(kw_only=True)
class StorageConcurrencySettings(_Mergeable):
    """How a large ranged read is split into concurrent requests.

    ``n = clamp(ceil(size / ideal_concurrent_request_size), 1, max_concurrent_requests_for_object)``
    parts, as equal as possible. Defaults: 18 requests, 12 MiB.
    """

    max_concurrent_requests_for_object: int | None = attrs.field(
        default=None, validator=_optional_int(1)
    )
    ideal_concurrent_request_size: int | None = attrs.field(
        default=None, validator=_optional_int(1)
    )


@attrs.frozen(kw_only=True)
class StorageSettings(_Mergeable):
    """All storage settings. See the module docstring for None and merge semantics.

    The ``unsafe_use_*`` flags default to True. Setting ``unsafe_use_conditional_create`` or
    ``unsafe_use_conditional_update`` to False drops the matching condition from writes, for
    stores that lack conditional writes: concurrent writers can then silently overwrite each
    other. ``unsafe_use_metadata=False`` drops content type and user metadata from writes, which
    also disables lost-response recovery of conditional writes.
    """

    concurrency: StorageConcurrencySettings | None = attrs.field(
        default=None, validator=_optional_instance(StorageConcurrencySettings)
    )
    retries: StorageRetriesSettings | None = attrs.field(
        default=None, validator=_optional_instance(StorageRetriesSettings)
    )
    timeouts: StorageTimeoutSettings | None = attrs.field(
        default=None, validator=_optional_instance(StorageTimeoutSettings)
    )
    unsafe_use_conditional_create: bool | None = attrs.field(
        default=None, validator=_optional_instance(bool)
    )
    unsafe_use_conditional_update: bool | None = attrs.field(
        default=None, validator=_optional_instance(bool)
    )
    unsafe_use_metadata: bool | None = attrs.field(default=None, validator=_optional_instance(bool))
    storage_class: str | None = attrs.field(default=None, validator=_optional_instance(str))
    metadata_storage_class: str | None = attrs.field(
        default=None, validator=_optional_instance(str)
    )
    chunks_storage_class: str | None = attrs.field(default=None, validator=_optional_instance(str))
    minimum_size_for_multipart_upload: int | None = attrs.field(
        default=None, validator=_optional_int(1)
    )

    # Effective values: what a backend uses after merging over DEFAULT_STORAGE_SETTINGS.

    @property
    def effective_concurrency(self) -> tuple[int, int]:
        """``(max_concurrent_requests_for_object, ideal_concurrent_request_size)``."""
        merged = DEFAULT_CONCURRENCY.merge(self.concurrency)
        assert merged.max_concurrent_requests_for_object is not None
        assert merged.ideal_concurrent_request_size is not None
        return merged.max_concurrent_requests_for_object, merged.ideal_concurrent_request_size

    @property
    def effective_retries(self) -> tuple[int, int, int]:
        """``(max_tries, initial_backoff_ms, max_backoff_ms)``."""
        merged = DEFAULT_RETRIES.merge(self.retries)
        assert merged.max_tries is not None
        assert merged.initial_backoff_ms is not None
        assert merged.max_backoff_ms is not None
        return merged.max_tries, merged.initial_backoff_ms, merged.max_backoff_ms

    @property
    def conditional_create(self) -> bool:
        return self.unsafe_use_conditional_create is not False

    @property
    def conditional_update(self) -> bool:
        return self.unsafe_use_conditional_update is not False

    @property
    def use_metadata(self) -> bool:
        return self.unsafe_use_metadata is not False

    @property
    def effective_metadata_storage_class(self) -> str | None:
        return self.metadata_storage_class or self.storage_class

    @property
    def effective_chunks_storage_class(self) -> str | None:
        return self.chunks_storage_class or self.storage_class

    @property
    def effective_minimum_size_for_multipart_upload(self) -> int:
        return self.minimum_size_for_multipart_upload or 100 * 1024 * 1024


DEFAULT_CONCURRENCY = StorageConcurrencySettings(
    max_concurrent_requests_for_object=18, ideal_concurrent_request_size=12 * 1024 * 1024
)
DEFAULT_RETRIES = StorageRetriesSettings(
    max_tries=10, initial_backoff_ms=100, max_backoff_ms=180_000
)
DEFAULT_STORAGE_SETTINGS = StorageSettings(
    concurrency=DEFAULT_CONCURRENCY,
    retries=DEFAULT_RETRIES,
    timeouts=StorageTimeoutSettings(),
    unsafe_use_conditional_create=True,
    unsafe_use_conditional_update=True,
    unsafe_use_metadata=True,
    minimum_size_for_multipart_upload=100 * 1024 * 1024,
)
"""What the cloud backends use; memory and local override some fields."""

"""``RepositoryConfig`` and its parts: Icechunk's names, None meaning "not set here".

Like :class:`StorageSettings`, every field is optional and ``a.merge(b)`` takes every field
``b`` sets. Layers, lowest first: :meth:`RepositoryConfig.default` (for the storage part: the
backend's ``default_settings()``), the config persisted in the repository, the user's config.
``repo.config`` is the fully merged result.

Persisted configs hold only what was set explicitly, so backend defaults are never baked into a
repository (a repository copied from the local disk to S3 gets S3's defaults).
"""

from __future__ import annotations

from typing import Any, Literal

import attrs

from .._errors import ConfigurationError
from .._settings import (
    StorageConcurrencySettings,
    StorageRetriesSettings,
    StorageSettings,
    StorageTimeoutSettings,
    _Mergeable,
    _optional_instance,
    _optional_int,
)

__all__ = [
    "DEFAULT_INLINE_CHUNK_THRESHOLD_BYTES",
    "DEFAULT_MAX_CONCURRENT_REQUESTS",
    "DEFAULT_REPO_UPDATE_RETRIES",
    "CompressionConfig",
    "RepoUpdateRetryConfig",
    "RepositoryConfig",
    "config_from_json",
    "config_to_json",
]

DEFAULT_MAX_CONCURRENT_REQUESTS = 256
DEFAULT_INLINE_CHUNK_THRESHOLD_BYTES = 512
DEFAULT_REPO_UPDATE_RETRIES = StorageRetriesSettings(
    max_tries=100, initial_backoff_ms=50, max_backoff_ms=30_000
)
"""Icechunk's effective values for updates of the info object."""

CompressionAlgorithm = Literal["zlib", "none"]


def _algorithm(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if value is not None and value not in ("zlib", "none"):
        raise ConfigurationError(
            f"CompressionConfig.algorithm must be 'zlib', 'none' or None, got {value!r}."
        )


def _level(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    _optional_int(0)(instance, attribute, value)
    if isinstance(value, int) and value > 9:
        raise ConfigurationError(f"CompressionConfig.level must be between 0 and 9, got {value}.")


@attrs.frozen(kw_only=True)
class CompressionConfig(_Mergeable):
    """Compression of metadata objects (the info object and snapshots).

    ``algorithm``: ``"zlib"`` (default) or ``"none"``; ``level``: 0-9, default 3. Chunks are
    stored as given: compressing them is the array codec's job.
    """

    algorithm: CompressionAlgorithm | None = attrs.field(default=None, validator=_algorithm)
    level: int | None = attrs.field(default=None, validator=_level)


@attrs.frozen(kw_only=True)
class RepoUpdateRetryConfig(_Mergeable):
    """Retries of compare-and-swap updates of the info object (commits, refs, config).

    ``default``: max tries 100, initial backoff 50 ms, max backoff 30 000 ms. The first five
    attempts run back to back; later ones wait with jittered exponential backoff.
    """

    default: StorageRetriesSettings | None = attrs.field(
        default=None, validator=_optional_instance(StorageRetriesSettings)
    )

    @property
    def effective(self) -> StorageRetriesSettings:
        return DEFAULT_REPO_UPDATE_RETRIES.merge(self.default)


@attrs.frozen(kw_only=True)
class RepositoryConfig(_Mergeable):
    """Repository configuration. Every field is optional; None means "from the layer below".

    ``storage``
        :class:`StorageSettings` applied to the repository's storage (merged over the
        persisted settings, over the backend's defaults). Default: the backend's defaults.
    ``max_concurrent_requests``
        Logical storage operations (a chunk read or write, a snapshot read or write) in flight
        per repository and event loop. Default 256. The process-wide request limit
        (``set_max_concurrent_requests``) still caps backend requests across all repositories.
    ``repo_update_retries``
        :class:`RepoUpdateRetryConfig`. Default: 100 attempts, 50 ms to 30 s backoff.
    ``inline_chunk_threshold_bytes``
        Values this size or smaller live in the snapshot itself; larger ones are written to
        ``chunks/<id>``. Default 512.
    ``compression``
        :class:`CompressionConfig` for metadata objects. Default zlib, level 3.
    """

    storage: StorageSettings | None = attrs.field(
        default=None, validator=_optional_instance(StorageSettings)
    )
    max_concurrent_requests: int | None = attrs.field(default=None, validator=_optional_int(1))
    repo_update_retries: RepoUpdateRetryConfig | None = attrs.field(
        default=None, validator=_optional_instance(RepoUpdateRetryConfig)
    )
    inline_chunk_threshold_bytes: int | None = attrs.field(default=None, validator=_optional_int(0))
    compression: CompressionConfig | None = attrs.field(
        default=None, validator=_optional_instance(CompressionConfig)
    )

    @classmethod
    def default(cls) -> RepositoryConfig:
        """Every field at its default, except ``storage``, which is the backend's."""
        return cls(
            max_concurrent_requests=DEFAULT_MAX_CONCURRENT_REQUESTS,
            repo_update_retries=RepoUpdateRetryConfig(default=DEFAULT_REPO_UPDATE_RETRIES),
            inline_chunk_threshold_bytes=DEFAULT_INLINE_CHUNK_THRESHOLD_BYTES,
            compression=CompressionConfig(algorithm="zlib", level=3),
        )

    # Effective values (this config over the defaults).

    @property
    def effective_max_concurrent_requests(self) -> int:
        return self.max_concurrent_requests or DEFAULT_MAX_CONCURRENT_REQUESTS

    @property
    def effective_inline_chunk_threshold_bytes(self) -> int:
        value = self.inline_chunk_threshold_bytes
        return DEFAULT_INLINE_CHUNK_THRESHOLD_BYTES if value is None else value

    @property
    def effective_repo_update_retries(self) -> tuple[int, float, float]:
        """``(max_tries, initial_backoff_seconds, max_backoff_seconds)``."""
        retries = (self.repo_update_retries or RepoUpdateRetryConfig()).effective
        assert retries.max_tries is not None
        assert retries.initial_backoff_ms is not None
        assert retries.max_backoff_ms is not None
        return retries.max_tries, retries.initial_backoff_ms / 1000, retries.max_backoff_ms / 1000

    @property
    def effective_compression(self) -> tuple[CompressionAlgorithm, int]:
        compression = self.compression or CompressionConfig()
        return (
            compression.algorithm or "zlib",
            3 if compression.level is None else compression.level,
        )


# --- JSON form, as persisted in the info object ----------------------------------------------

_NESTED: dict[tuple[type, str], type] = {
    (RepositoryConfig, "storage"): StorageSettings,
    (RepositoryConfig, "repo_update_retries"): RepoUpdateRetryConfig,
    (RepositoryConfig, "compression"): CompressionConfig,
    (RepoUpdateRetryConfig, "default"): StorageRetriesSettings,
    (StorageSettings, "concurrency"): StorageConcurrencySettings,
    (StorageSettings, "retries"): StorageRetriesSettings,
    (StorageSettings, "timeouts"): StorageTimeoutSettings,
}


def config_to_json(value: Any) -> dict[str, Any]:
    """The fields that are set (not None), nested settings as nested objects."""
    result: dict[str, Any] = {}
    for field in attrs.fields(type(value)):
        item = getattr(value, field.name)
        if item is None:
            continue
        result[field.name] = config_to_json(item) if attrs.has(type(item)) else item
    return result


def config_from_json(data: object, cls: type[Any] = RepositoryConfig) -> Any:
    """Inverse of :func:`config_to_json`. Unknown fields (from newer writers) are ignored."""
    if not isinstance(data, dict):
        raise ConfigurationError(f"A persisted {cls.__name__} must be a JSON object, got {data!r}.")
    known = {field.name for field in attrs.fields(cls)}
    kwargs: dict[str, Any] = {}
    for name, item in data.items():
        if name not in known:
            continue
        nested = _NESTED.get((cls, name))
        kwargs[name] = config_from_json(item, nested) if nested is not None else item
    return cls(**kwargs)

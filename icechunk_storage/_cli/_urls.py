"""Storage URLs for the command line: ``s3://``, ``gs://``, ``az://``, ``file://``, plain paths
and ``memory://``, turned into storages by the public factories.

A :class:`Location` is where a URL points: a store and a path inside it. ``scope(prefix)``
gives a storage whose keys are relative to ``prefix``: the factories' own ``prefix`` for the
cloud, a root directory for the local filesystem. Memory storages have no prefix, so their
scope keeps one (``Scope.base``) and joins it to every key itself.

Connection options (``--endpoint-url`` ...) apply to every cloud URL of a command; one that
applies to none of them is refused, never ignored. A cloud URL can carry its own, as a query
string that wins over the command line's (for a copy between two endpoints):
``s3://bucket/prefix?endpoint_url=http://127.0.0.1:9000&allow_http=true``; other query keys
are ``--config`` keys. Credentials are never options: each
factory reads them from the environment, as it does when called with none.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from typing import Any

import attrs

from .._errors import ConfigurationError
from .._settings import StorageRetriesSettings, StorageSettings
from .._storage import Storage

__all__ = ["CloudOptions", "Location", "Scope", "UsageError", "join", "parse_url"]

SCHEMES = "s3://bucket/prefix, gs://bucket/prefix, az://account/container/prefix, "
SCHEMES += "file:///path (or a plain path), memory://"


class UsageError(ConfigurationError):
    """The command line is wrong: a bad URL, an option that applies to nothing."""


def join(*parts: str) -> str:
    """``a``, ``b/c`` -> ``a/b/c``; empty parts vanish."""
    return "/".join(part.strip("/") for part in parts if part.strip("/"))


def _flag(name: str, value: str) -> bool:
    lowered = value.strip().lower()
    if lowered in ("true", "1", "yes"):
        return True
    if lowered in ("false", "0", "no"):
        return False
    raise UsageError(f"--config {name}={value!r}: expected true or false.")


def _positive_int(name: str, value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        number = 0
    if number < 1:
        raise UsageError(f"--config {name}={value!r}: expected a whole number of at least 1.")
    return number


S3_CONFIG_KEYS: dict[str, Callable[[str, str], object]] = {
    "requester_pays": _flag,
    "checksum_algorithm": lambda _name, value: value,
    "network_stream_timeout_seconds": _positive_int,
}
"""``--config`` keys for ``s3://`` URLs: s3_storage() arguments that are neither a credential
nor one of the dedicated options. GCS and Azure URLs pass ``--config`` as the factory's
``config`` mapping, which validates it."""


@attrs.frozen(kw_only=True)
class CloudOptions:
    """The connection options of the command line, as given (None: not given)."""

    endpoint_url: str | None = None
    region: str | None = None
    allow_http: bool = False
    force_path_style: bool = False
    anonymous: bool = False
    config: Mapping[str, str] = attrs.field(factory=dict)
    max_tries: int | None = None

    @classmethod
    def from_args(cls, args: Any) -> CloudOptions:
        config: dict[str, str] = {}
        for item in args.config or []:
            name, sep, value = item.partition("=")
            if not sep or not name:
                raise UsageError(f"--config {item!r}: expected KEY=VALUE.")
            if name in config:
                raise UsageError(f"--config gives {name!r} twice.")
            config[name] = value
        return cls(
            endpoint_url=args.endpoint_url,
            region=args.region,
            allow_http=args.allow_http,
            force_path_style=args.force_path_style,
            anonymous=args.anonymous,
            config=config,
            max_tries=args.max_tries,
        )

    def given(self) -> dict[str, object]:
        """The options set on the command line, by their flag."""
        flags = {
            "--endpoint-url": self.endpoint_url,
            "--region": self.region,
            "--allow-http": self.allow_http or None,
            "--force-path-style": self.force_path_style or None,
            "--anonymous": self.anonymous or None,
            "--config": dict(self.config) or None,
        }
        return {flag: value for flag, value in flags.items() if value is not None}

    def with_query(self, url: str, query: str) -> CloudOptions:
        """These options with a URL's own query string over them."""
        from urllib.parse import parse_qsl

        changes: dict[str, Any] = {}
        config = dict(self.config)
        try:
            pairs = parse_qsl(query, keep_blank_values=True, strict_parsing=True)
        except ValueError:
            raise UsageError(f"{url}: the query string is not KEY=VALUE&...") from None
        for name, value in pairs:
            if name in ("endpoint_url", "region"):
                changes[name] = value
            elif name in ("allow_http", "force_path_style", "anonymous"):
                changes[name] = _flag(name, value)
            else:
                config[name] = value
        return attrs.evolve(self, config=config, **changes)

    @property
    def settings(self) -> StorageSettings:
        return StorageSettings(retries=StorageRetriesSettings(max_tries=self.max_tries))


ACCEPTS = {
    "s3": {
        "--endpoint-url",
        "--region",
        "--allow-http",
        "--force-path-style",
        "--anonymous",
        "--config",
    },
    "gcs": {"--endpoint-url", "--allow-http", "--anonymous", "--config"},
    "azure": {"--endpoint-url", "--allow-http", "--anonymous", "--config"},
    "local": set(),
    "memory": set(),
}


@attrs.frozen
class Scope:
    """A storage and the key prefix inside it that relative keys are joined to."""

    storage: Storage
    base: str = ""

    def key(self, relative: str) -> str:
        return join(self.base, relative)

    def relative(self, key: str) -> str:
        return key[len(self.base) + 1 :] if self.base else key


_memory: Storage | None = None


def _memory_storage() -> Storage:
    """One memory storage per process, so ``cp memory://a memory://b`` sees one store."""
    global _memory
    if _memory is None:
        from .._memory import in_memory_storage

        _memory = in_memory_storage()
    return _memory


@attrs.frozen
class Location:
    """Where a URL points: ``kind`` of store, and ``path`` (a key prefix) inside it."""

    url: str
    kind: str
    path: str
    make: Callable[[str], Storage] = attrs.field(repr=False)

    def scope(self, prefix: str = "") -> Scope:
        """A storage whose keys are relative to ``prefix`` (relative to this location's store,
        not to ``path``)."""
        if self.kind == "memory":
            return Scope(self.make(""), prefix)
        return Scope(self.make(prefix))

    def split(self) -> tuple[str, str]:
        """``(parent prefix, name)`` of an object URL; refuses a URL that names no object."""
        parent, _, name = self.path.rpartition("/")
        if not name or self.url.endswith("/"):
            raise UsageError(f"{self.url} names a prefix, not an object.")
        return parent, name

    @property
    def is_local_directory(self) -> bool:
        """A local URL naming an existing directory (a cheap stat, fine on the loop)."""
        return self.kind == "local" and os.path.isdir("/" + self.path)

    @property
    def is_local_file(self) -> bool:
        """A local URL naming an existing file (a cheap stat, fine on the loop)."""
        return self.kind == "local" and os.path.isfile("/" + self.path)

    @property
    def is_cloud(self) -> bool:
        return self.kind in ("s3", "gcs", "azure")

    def describe(self, relative: str = "") -> str:
        """The URL of ``relative`` under this location, for messages."""
        if not relative:
            return self.url
        return self.url.rstrip("/") + "/" + relative


def _s3(bucket: str, options: CloudOptions) -> Callable[[str], Storage]:
    from .._s3 import s3_storage

    extra: dict[str, Any] = {}
    for name, value in options.config.items():
        parse = S3_CONFIG_KEYS.get(name)
        if parse is None:
            raise UsageError(
                f"--config {name} does not apply to s3:// URLs; valid keys: "
                f"{', '.join(S3_CONFIG_KEYS)} (credentials come from the environment)."
            )
        extra[name] = parse(name, value)

    def make(prefix: str) -> Storage:
        return s3_storage(
            bucket=bucket,
            prefix=prefix or None,
            region=options.region,
            endpoint_url=options.endpoint_url,
            allow_http=options.allow_http,
            force_path_style=options.force_path_style,
            anonymous=True if options.anonymous else None,
            settings=options.settings,
            **extra,
        )

    return make


def _gcs(bucket: str, options: CloudOptions) -> Callable[[str], Storage]:
    from .._gcs import gcs_storage

    config = dict(options.config)
    if options.endpoint_url is not None:
        config["google_base_url"] = options.endpoint_url
    if options.allow_http:
        config["allow_http"] = "true"

    def make(prefix: str) -> Storage:
        return gcs_storage(
            bucket=bucket,
            prefix=prefix or None,
            anonymous=True if options.anonymous else None,
            config=config or None,
            settings=options.settings,
        )

    return make


def _azure(account: str, container: str, options: CloudOptions) -> Callable[[str], Storage]:
    from .._azure import azure_storage

    config: dict[str, str | bool] = dict(options.config)
    if options.endpoint_url is not None:
        config["endpoint"] = options.endpoint_url
    if options.allow_http:
        config["allow_http"] = "true"

    def make(prefix: str) -> Storage:
        return azure_storage(
            account=account,
            container=container,
            prefix=prefix or None,
            anonymous=True if options.anonymous else None,
            config=config or None,
            settings=options.settings,
        )

    return make


def _local(prefix: str) -> Storage:
    from .._local import local_filesystem_storage

    return local_filesystem_storage("/" + prefix)


def parse_url(url: str, options: CloudOptions, used: set[str] | None = None) -> Location:
    """The location ``url`` names. Adds the options it takes to ``used``; refuses bad URLs."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        if not url:
            raise UsageError(f"An empty URL; expected one of: {SCHEMES}.")
        path = os.path.abspath(os.path.expanduser(url)).strip("/")
        return Location(url, "local", path, _local)
    scheme = scheme.lower()
    kind = {"s3": "s3", "gs": "gcs", "gcs": "gcs", "az": "azure", "azure": "azure"}.get(scheme)
    if scheme == "file":
        host, _, path = rest.partition("/")
        if host not in ("", "localhost"):
            raise UsageError(
                f"{url}: file URLs name a local path (file:///path), not a host ({host!r})."
            )
        return Location(url, "local", os.path.abspath("/" + path).strip("/"), _local)
    if scheme == "memory":
        return Location(url, "memory", rest.strip("/"), lambda _: _memory_storage())
    if kind is None:
        raise UsageError(
            f"{url}: unknown URL scheme {scheme + '://'!r}; expected one of: {SCHEMES}."
        )
    if used is not None:
        used.update(ACCEPTS[kind] & set(options.given()))
    rest, question, query = rest.partition("?")
    if question:
        options = options.with_query(url, query)
        url = url.partition("?")[0]
    first, _, path = rest.partition("/")
    if not first:
        what = "account" if kind == "azure" else "bucket"
        raise UsageError(f"{url}: the URL names no {what}; expected one of: {SCHEMES}.")
    if kind == "s3":
        return Location(url, kind, path.strip("/"), _s3(first, options))
    if kind == "gcs":
        return Location(url, kind, path.strip("/"), _gcs(first, options))
    container, _, path = path.partition("/")
    if not container:
        raise UsageError(f"{url}: the URL names no container; expected az://account/container.")
    return Location(url, kind, path.strip("/"), _azure(first, container, options))


def check_options_used(options: CloudOptions, used: set[str], urls: list[str]) -> None:
    """Refuse options that none of the command's URLs takes (nothing is silently ignored)."""
    for flag in options.given():
        if flag not in used:
            takers = sorted(kind for kind, flags in ACCEPTS.items() if flag in flags)
            raise UsageError(
                f"{flag} applies to {', '.join(takers)} URLs only, and none of "
                f"{', '.join(urls)} is one."
            )

"""Static checks of the public API: ``mypy --strict`` (run by ``nox -s check``) must reject
every misuse below, each marked with the exact error it must raise. ``warn_unused_ignores``
(part of ``--strict``) turns an accepted misuse into a failure: if a constructor ever loses its
types again (an ``Any`` field, a missing required argument), mypy fails here.

Never imported or run: pytest collects only ``test_*.py``."""

from __future__ import annotations

from datetime import UTC, datetime

from icechunk_storage import (
    AzureRefreshableCredential,
    AzureStaticCredentials,
    ChecksumAlgorithm,
    GcsBearerCredential,
    GcsStaticCredentials,
    RangeByteRequest,
    RepositoryConfig,
    S3Credentials,
    S3Options,
    S3StaticCredentials,
    Session,
    Storage,
    StorageConcurrencySettings,
    StorageSettings,
    VersionInfo,
    in_memory_storage,
    local_filesystem_storage,
    s3_storage,
)
from icechunk_storage.zarr import ZarrStore


def good() -> None:
    """The right calls type-check (else mypy reports them, and there is no ignore to hide it)."""
    S3StaticCredentials(access_key_id="id", secret_access_key="secret")
    S3StaticCredentials("id", "secret", "token", datetime.now(UTC))
    S3Credentials.Static(S3StaticCredentials("id", "secret"))
    S3Options(checksum_algorithm=ChecksumAlgorithm.Crc32c)
    S3Options(checksum_algorithm="crc32c")
    GcsBearerCredential("token", expires_after=None)
    GcsStaticCredentials.ServiceAccountKey("{}")
    AzureStaticCredentials.AccessKey("key")
    AzureRefreshableCredential.SasToken("sas")
    StorageSettings(concurrency=StorageConcurrencySettings(max_concurrent_requests_for_object=4))
    s3_storage(bucket="b", prefix="p", checksum_algorithm=ChecksumAlgorithm.Sha256)
    local_filesystem_storage("data")
    ZarrStore(in_memory_storage(), read_only=True)
    RepositoryConfig()


def credentials_need_their_secrets() -> None:
    S3StaticCredentials()  # type: ignore[call-arg]
    S3StaticCredentials(access_key_id="id")  # type: ignore[call-arg]
    S3StaticCredentials(access_key_id=1, secret_access_key="s")  # type: ignore[arg-type]
    S3StaticCredentials("id", "secret", expires_after="tomorrow")  # type: ignore[arg-type]
    GcsBearerCredential()  # type: ignore[call-arg]
    GcsStaticCredentials.ServiceAccountKey()  # type: ignore[call-arg]
    GcsStaticCredentials.BearerToken()  # type: ignore[call-arg]
    AzureStaticCredentials.AccessKey()  # type: ignore[call-arg]
    AzureStaticCredentials.SasToken(token=b"x")  # type: ignore[arg-type]
    AzureRefreshableCredential.BearerToken()  # type: ignore[call-arg]
    S3Credentials.Static()  # type: ignore[call-arg]
    S3Credentials.Static(credentials="id:secret")  # type: ignore[arg-type]


def options_and_settings_are_typed() -> None:
    S3Options(checksum_algorithm=32)  # type: ignore[arg-type]
    S3Options(region=1)  # type: ignore[arg-type]
    S3Options("us-east-1")  # type: ignore[call-arg]
    StorageSettings(concurrency=4)  # type: ignore[arg-type]
    StorageSettings(unsafe_use_metadata="no")  # type: ignore[arg-type]
    StorageConcurrencySettings(ideal_concurrent_request_size="1MiB")  # type: ignore[arg-type]
    RangeByteRequest(0)  # type: ignore[call-arg]
    VersionInfo(1)  # type: ignore[arg-type]


def constructors_are_typed() -> None:
    s3_storage(bucket="b")  # type: ignore[call-arg]
    s3_storage("b", "p")  # type: ignore[call-arg]
    s3_storage(bucket="b", prefix="p", checksum_algorithm=1)  # type: ignore[arg-type]
    s3_storage(bucket="b", prefix="p", get_credentials=lambda: "keys")  # type: ignore[arg-type,return-value]
    local_filesystem_storage(3)  # type: ignore[arg-type]
    ZarrStore("memory://")  # type: ignore[arg-type]
    ZarrStore(in_memory_storage(), True)  # type: ignore[call-arg]


async def calls_are_typed(storage: Storage) -> None:
    await storage.get_many(["a/c/0"])  # type: ignore[list-item]
    await storage.get_many([("a/c/0", (0, 10))])  # type: ignore[list-item]
    await storage.put("k", "text")  # type: ignore[arg-type]
    await storage.put("k", b"x", mode="append")  # type: ignore[arg-type]


def commit_metadata_is_json(repository_session: Session) -> None:
    repository_session.commit("m", metadata={"author": "me", "tags": ["a"], "n": 1, "x": None})
    repository_session.commit("m", metadata={"when": datetime.now(UTC)})  # type: ignore[dict-item]

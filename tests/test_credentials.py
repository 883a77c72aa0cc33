"""Credential values and helper functions: types, the validation matrix, secret masking,
pickling and scattering."""

from __future__ import annotations

import asyncio
import functools
import pickle
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import attrs
import pytest

import icechunk_storage as ics
from icechunk_storage import (
    AzureCredentials,
    AzureRefreshableCredential,
    AzureStaticCredentials,
    ConfigurationError,
    CredentialsRefreshError,
    GcsBearerCredential,
    GcsCredentials,
    GcsStaticCredentials,
    S3Credentials,
    S3StaticCredentials,
    azure_anonymous_credentials,
    azure_credentials,
    azure_from_env_credentials,
    azure_refreshable_credentials,
    azure_static_credentials,
    gcs_anonymous_credentials,
    gcs_credentials,
    gcs_from_env_credentials,
    gcs_refreshable_credentials,
    gcs_static_credentials,
    refresh_stats,
    s3_anonymous_credentials,
    s3_credentials,
    s3_from_env_credentials,
    s3_refreshable_credentials,
    s3_static_credentials,
)

from ._credential_helpers import (
    SCRIPTS,
    AsyncScripted,
    Script,
    Scripted,
    async_s3_credential,
    failing_callback,
    static_azure_credential,
    static_gcs_credential,
    static_s3_credential,
    utcnow,
    with_suffix,
)

LATER = datetime(2030, 1, 1, tzinfo=UTC)

# Distinctive secrets: none may ever appear in a repr, str or error message.
SECRETS = {
    "akid": "AKIDQQSECRETQQ1",
    "sak": "SAKQQSECRETQQ2",
    "token": "TOKENQQSECRETQQ3",
    "gkey": '{"private_key": "GKEYQQSECRETQQ4"}',
    "bearer": "BEARERQQSECRETQQ5",
    "azkey": "AZKEYQQSECRETQQ6",
    "sas": "SASQQSECRETQQ7",
    "aztoken": "AZTOKENQQSECRETQQ8",
}


def assert_no_secret(text: str) -> None:
    assert "QQSECRETQQ" not in text, text


def every_secret_value() -> list[object]:
    s3 = S3StaticCredentials(SECRETS["akid"], SECRETS["sak"], SECRETS["token"], LATER)
    gcs_bearer = GcsBearerCredential(SECRETS["bearer"], expires_after=LATER)
    az_sas = AzureRefreshableCredential.SasToken(SECRETS["sas"], expires_after=LATER)
    return [
        s3,
        S3Credentials.Static(s3),
        S3Credentials.Refreshable(static_s3_credential, current=s3),
        S3Credentials.Refreshable(functools.partial(with_suffix, SECRETS["token"])),
        gcs_bearer,
        GcsStaticCredentials.ServiceAccountKey(SECRETS["gkey"]),
        GcsStaticCredentials.BearerToken(SECRETS["bearer"]),
        GcsCredentials.Static(GcsStaticCredentials.ServiceAccountKey(SECRETS["gkey"])),
        GcsCredentials.Refreshable(static_gcs_credential, current=gcs_bearer),
        AzureStaticCredentials.AccessKey(SECRETS["azkey"]),
        AzureStaticCredentials.SasToken(SECRETS["sas"]),
        AzureStaticCredentials.BearerToken(SECRETS["aztoken"]),
        AzureCredentials.Static(AzureStaticCredentials.SasToken(SECRETS["sas"])),
        AzureRefreshableCredential.AccessKey(SECRETS["azkey"]),
        az_sas,
        AzureRefreshableCredential.BearerToken(SECRETS["aztoken"]),
        AzureCredentials.Refreshable(static_azure_credential, current=az_sas),
    ]


@pytest.fixture
def script() -> Iterator[Callable[..., tuple[Script, Scripted]]]:
    """Callbacks for the process-wide refresher (which scatter uses): real clock, unique name."""
    names: list[str] = []

    def make(**kwargs: Any) -> tuple[Script, Scripted]:
        name = f"cred-{uuid.uuid4().hex}"
        SCRIPTS[name] = Script(clock=utcnow, **kwargs)
        names.append(name)
        return SCRIPTS[name], Scripted(name)

    yield make
    for name in names:
        SCRIPTS.pop(name)


# --- value types ---------------------------------------------------------------------------


def test_s3_static_credentials_fields_and_defaults() -> None:
    c = S3StaticCredentials("a", "b")
    assert (c.access_key_id, c.secret_access_key, c.session_token, c.expires_after) == (
        "a",
        "b",
        None,
        None,
    )
    assert c == S3StaticCredentials(access_key_id="a", secret_access_key="b")
    assert hash(c) == hash(S3StaticCredentials("a", "b"))
    assert c != S3StaticCredentials("a", "c")
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        c.access_key_id = "x"  # type: ignore[misc]


def test_expires_after_is_converted_to_utc_and_must_be_aware() -> None:
    plus_two = datetime(2030, 1, 1, 12, tzinfo=timezone(timedelta(hours=2)))
    c = S3StaticCredentials("a", "b", expires_after=plus_two)
    assert c.expires_after == plus_two
    assert c.expires_after is not None
    assert c.expires_after.tzinfo is UTC
    assert c.expires_after.hour == 10
    with pytest.raises(ConfigurationError, match="timezone-aware"):
        S3StaticCredentials("a", "b", expires_after=datetime(2030, 1, 1))
    with pytest.raises(ValueError, match="datetime"):
        GcsBearerCredential("t", expires_after="2030-01-01")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "build",
    [
        lambda: S3StaticCredentials("", "b"),
        lambda: S3StaticCredentials("a", 5),  # type: ignore[arg-type]
        lambda: S3StaticCredentials("a", "b", session_token=""),
        lambda: GcsBearerCredential(None),  # type: ignore[arg-type]
        lambda: GcsStaticCredentials.ServiceAccount(""),
        lambda: AzureStaticCredentials.SasToken(b"bytes"),  # type: ignore[arg-type]
        lambda: AzureRefreshableCredential.BearerToken(""),
        lambda: S3Credentials.Static("not credentials"),  # type: ignore[arg-type]
        lambda: GcsCredentials.Static(S3StaticCredentials("a", "b")),  # type: ignore[arg-type]
        lambda: AzureCredentials.Static(AzureRefreshableCredential.SasToken("x")),  # type: ignore[arg-type]
    ],
)
def test_bad_field_values_are_refused(build: Callable[[], object]) -> None:
    with pytest.raises(ConfigurationError):
        build()


def test_gcs_paths_accept_pathlike() -> None:
    assert GcsStaticCredentials.ServiceAccount(Path("/k.json")).path == "/k.json"
    assert GcsStaticCredentials.ApplicationCredentials("/adc.json").path == "/adc.json"


def test_gcs_and_azure_expiry_is_keyword_only() -> None:
    with pytest.raises(TypeError):
        GcsBearerCredential("t", LATER)  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        AzureRefreshableCredential.SasToken("t", LATER)  # type: ignore[call-arg]


def test_public_names() -> None:
    for name in ["S3Credentials", "s3_credentials", "gcs_credentials", "azure_credentials"]:
        assert name in ics.__all__
    assert ics.AnyS3Credential == (
        S3Credentials.FromEnv
        | S3Credentials.Anonymous
        | S3Credentials.Static
        | S3Credentials.Refreshable
    )


# --- secrets never shown -------------------------------------------------------------------


@pytest.mark.parametrize("value", every_secret_value(), ids=lambda v: type(v).__qualname__)
def test_repr_and_str_mask_secrets(value: object) -> None:
    assert_no_secret(repr(value))
    assert_no_secret(str(value))
    assert_no_secret(f"{value!r} {value}")
    assert "***" in repr(value) or "partial" in repr(value)


def test_repr_shows_what_is_not_secret() -> None:
    value = S3Credentials.Refreshable(static_s3_credential)
    assert repr(value) == (
        "S3Credentials.Refreshable("
        "get_credentials=tests._credential_helpers.static_s3_credential, current=None)"
    )
    assert "/k.json" in repr(GcsStaticCredentials.ServiceAccount("/k.json"))
    assert "2030" in repr(S3StaticCredentials("a", "b", expires_after=LATER))


@pytest.mark.parametrize(
    "build",
    [
        lambda: S3StaticCredentials(SECRETS["akid"], 5),  # type: ignore[arg-type]
        lambda: S3StaticCredentials(5, SECRETS["sak"], session_token=b"TOKENQQSECRETQQ3"),  # type: ignore[arg-type]
        lambda: S3Credentials.Static(SECRETS["sak"]),  # type: ignore[arg-type]
        lambda: GcsCredentials.Static(SECRETS["gkey"]),  # type: ignore[arg-type]
        lambda: AzureCredentials.Static(SECRETS["sas"]),  # type: ignore[arg-type]
        lambda: S3Credentials.Refreshable(static_s3_credential, current=SECRETS["token"]),  # type: ignore[arg-type]
        lambda: S3Credentials.Refreshable(SECRETS["token"]),  # type: ignore[arg-type]
        lambda: S3Credentials.Refreshable(lambda: SECRETS["token"]),  # type: ignore[arg-type,return-value]
        lambda: s3_credentials(
            access_key_id=SECRETS["akid"], secret_access_key=SECRETS["sak"], from_env=True
        ),
        lambda: s3_credentials(access_key_id=SECRETS["akid"], session_token=SECRETS["token"]),
        lambda: s3_credentials(
            access_key_id=SECRETS["akid"],
            secret_access_key=SECRETS["sak"],
            get_credentials=static_s3_credential,
        ),
        lambda: gcs_static_credentials(
            service_account_key=SECRETS["gkey"], bearer_token=SECRETS["bearer"]
        ),
        lambda: gcs_credentials(bearer_token=SECRETS["bearer"], anonymous=True),
        lambda: azure_static_credentials(access_key=SECRETS["azkey"], sas_token=SECRETS["sas"]),
        lambda: azure_credentials(sas_token=SECRETS["sas"], from_env=True),
    ],
)
def test_error_messages_never_contain_secrets(build: Callable[[], object]) -> None:
    with pytest.raises(ConfigurationError) as info:
        build()
    assert isinstance(info.value, ValueError)
    assert_no_secret(str(info.value))
    assert_no_secret(repr(info.value))


def test_wrong_type_returned_at_scatter_is_named_without_the_value(script: Any) -> None:
    _, callback = script(result={"secret": SECRETS["sak"]})
    with pytest.raises(TypeError, match="expected S3StaticCredentials") as info:
        s3_refreshable_credentials(callback, scatter_initial_credentials=True)
    assert_no_secret(str(info.value))


# --- validation matrix ---------------------------------------------------------------------

K = {"access_key_id": "a", "secret_access_key": "b"}


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({}, S3Credentials.FromEnv),
        ({"from_env": True}, S3Credentials.FromEnv),
        ({"anonymous": False}, S3Credentials.FromEnv),
        ({"anonymous": True}, S3Credentials.Anonymous),
        ({"anonymous": True, "from_env": False}, S3Credentials.Anonymous),
        ({"get_credentials": static_s3_credential}, S3Credentials.Refreshable),
        ({"get_credentials": static_s3_credential, "from_env": False}, S3Credentials.Refreshable),
        (K, S3Credentials.Static),
        ({**K, "session_token": "t", "expires_after": LATER}, S3Credentials.Static),
        ({**K, "from_env": False, "anonymous": False}, S3Credentials.Static),
    ],
)
def test_s3_credentials_accepted(kwargs: dict[str, Any], expected: type) -> None:
    assert type(s3_credentials(**kwargs)) is expected


@pytest.mark.parametrize(
    ("kwargs", "named"),
    [
        ({**K, "from_env": True}, ["access_key_id", "secret_access_key", "from_env=True"]),
        ({**K, "anonymous": True}, ["access_key_id", "anonymous=True"]),
        (
            {"anonymous": True, "get_credentials": static_s3_credential},
            ["anonymous=True", "get_credentials"],
        ),
        ({**K, "get_credentials": static_s3_credential}, ["access_key_id", "get_credentials"]),
        ({"access_key_id": "a"}, ["access_key_id", "secret_access_key"]),
        ({"secret_access_key": "b"}, ["secret_access_key", "access_key_id"]),
        ({"session_token": "t"}, ["session_token", "access_key_id"]),
        ({"expires_after": LATER}, ["expires_after", "access_key_id"]),
        ({"from_env": True, "anonymous": True}, ["from_env=True", "anonymous=True"]),
        ({"from_env": False}, ["from_env=False"]),
        ({"from_env": False, "anonymous": False}, ["from_env=False"]),
        ({"scatter_initial_credentials": True}, ["scatter_initial_credentials", "get_credentials"]),
        ({"access_key_id": "", "secret_access_key": "b"}, ["access_key_id", "empty"]),
    ],
)
def test_s3_credentials_rejected(kwargs: dict[str, Any], named: list[str]) -> None:
    with pytest.raises(ConfigurationError) as info:
        s3_credentials(**kwargs)
    for name in named:
        assert name in str(info.value)


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({}, GcsCredentials.FromEnv),
        ({"from_env": True}, GcsCredentials.FromEnv),
        ({"anonymous": True}, GcsCredentials.Anonymous),
        ({"anonymous": True, "from_env": False}, GcsCredentials.Anonymous),
        # Icechunk returns FromEnv here (its bug): get_credentials alone means refreshable.
        ({"get_credentials": static_gcs_credential}, GcsCredentials.Refreshable),
        ({"get_credentials": static_gcs_credential, "from_env": False}, GcsCredentials.Refreshable),
        ({"service_account_file": "/k.json"}, GcsCredentials.Static),
        ({"service_account_key": "{}", "from_env": False}, GcsCredentials.Static),
        ({"application_credentials": "/adc.json"}, GcsCredentials.Static),
        ({"bearer_token": "t"}, GcsCredentials.Static),
    ],
)
def test_gcs_credentials_accepted(kwargs: dict[str, Any], expected: type) -> None:
    assert type(gcs_credentials(**kwargs)) is expected


@pytest.mark.parametrize(
    ("kwargs", "named"),
    [
        ({"bearer_token": "t", "from_env": True}, ["bearer_token", "from_env=True"]),
        ({"bearer_token": "t", "anonymous": True}, ["bearer_token", "anonymous=True"]),
        (
            {"get_credentials": static_s3_credential, "from_env": True},
            ["get_credentials", "from_env=True"],
        ),
        (
            {"service_account_file": "/k", "get_credentials": static_s3_credential},
            ["service_account_file", "get_credentials"],
        ),
        (
            {"service_account_file": "/k", "bearer_token": "t"},
            ["service_account_file", "bearer_token"],
        ),
        ({"from_env": False}, ["from_env=False"]),
        ({"scatter_initial_credentials": True}, ["get_credentials"]),
    ],
)
def test_gcs_credentials_rejected(kwargs: dict[str, Any], named: list[str]) -> None:
    with pytest.raises(ConfigurationError) as info:
        gcs_credentials(**kwargs)
    for name in named:
        assert name in str(info.value)


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({}, AzureCredentials.FromEnv),
        ({"from_env": True}, AzureCredentials.FromEnv),
        ({"anonymous": True}, AzureCredentials.Anonymous),
        ({"get_credentials": static_azure_credential}, AzureCredentials.Refreshable),
        ({"access_key": "k"}, AzureCredentials.Static),
        ({"sas_token": "s", "from_env": False}, AzureCredentials.Static),
        ({"bearer_token": "t"}, AzureCredentials.Static),
    ],
)
def test_azure_credentials_accepted(kwargs: dict[str, Any], expected: type) -> None:
    assert type(azure_credentials(**kwargs)) is expected


@pytest.mark.parametrize(
    ("kwargs", "named"),
    [
        ({"access_key": "k", "sas_token": "s"}, ["access_key", "sas_token"]),
        ({"access_key": "k", "from_env": True}, ["access_key", "from_env=True"]),
        ({"anonymous": True, "sas_token": "s"}, ["anonymous=True", "sas_token"]),
        (
            {"get_credentials": static_s3_credential, "from_env": True},
            ["get_credentials", "from_env=True"],
        ),
        ({"from_env": False}, ["from_env=False"]),
        ({"scatter_initial_credentials": True}, ["get_credentials"]),
    ],
)
def test_azure_credentials_rejected(kwargs: dict[str, Any], named: list[str]) -> None:
    with pytest.raises(ConfigurationError) as info:
        azure_credentials(**kwargs)
    for name in named:
        assert name in str(info.value)


def test_specific_helpers() -> None:
    assert s3_static_credentials(access_key_id="a", secret_access_key="b") == S3Credentials.Static(
        S3StaticCredentials("a", "b")
    )
    assert s3_anonymous_credentials() == S3Credentials.Anonymous()
    assert s3_from_env_credentials() == S3Credentials.FromEnv()
    assert gcs_anonymous_credentials() == GcsCredentials.Anonymous()
    assert gcs_from_env_credentials() == GcsCredentials.FromEnv()
    assert azure_anonymous_credentials() == AzureCredentials.Anonymous()
    assert azure_from_env_credentials() == AzureCredentials.FromEnv()
    assert gcs_static_credentials(service_account_file="/k") == (
        GcsStaticCredentials.ServiceAccount("/k")
    )
    assert gcs_static_credentials(service_account_key="{}") == (
        GcsStaticCredentials.ServiceAccountKey("{}")
    )
    assert gcs_static_credentials(application_credentials="/a") == (
        GcsStaticCredentials.ApplicationCredentials("/a")
    )
    assert gcs_static_credentials(bearer_token="t") == GcsStaticCredentials.BearerToken("t")
    assert azure_static_credentials(access_key="k") == AzureStaticCredentials.AccessKey("k")
    assert azure_static_credentials(sas_token="s") == AzureStaticCredentials.SasToken("s")
    assert azure_static_credentials(bearer_token="t") == AzureStaticCredentials.BearerToken("t")
    for helper in (gcs_static_credentials, azure_static_credentials):
        with pytest.raises(ValueError, match="exactly one"):
            helper()
    assert type(gcs_refreshable_credentials(static_gcs_credential)) is GcsCredentials.Refreshable
    assert type(azure_refreshable_credentials(static_azure_credential)) is (
        AzureCredentials.Refreshable
    )


# --- callbacks and pickling ----------------------------------------------------------------


def test_every_value_pickles_to_an_equal_value() -> None:
    values = [
        *every_secret_value(),
        S3Credentials.FromEnv(),
        S3Credentials.Anonymous(),
        GcsCredentials.Anonymous(),
        GcsCredentials.FromEnv(),
        GcsStaticCredentials.ServiceAccount("/k"),
        GcsStaticCredentials.ApplicationCredentials("/a"),
        AzureCredentials.Anonymous(),
        AzureCredentials.FromEnv(),
    ]
    for value in values:
        copy = pickle.loads(pickle.dumps(value))
        assert copy == value
        assert type(copy) is type(value)


@pytest.mark.parametrize(
    "callback",
    [
        static_s3_credential,
        async_s3_credential,
        Scripted("x"),
        AsyncScripted("x"),
        functools.partial(with_suffix, "1"),
        Scripted("x").__call__,
    ],
    ids=["function", "async function", "instance", "async instance", "partial", "bound method"],
)
def test_picklable_callbacks_are_accepted(callback: Any) -> None:
    value = S3Credentials.Refreshable(callback)
    copy = pickle.loads(pickle.dumps(value))
    assert copy == value
    assert copy.pickled_function == pickle.dumps(callback)


def test_equality_follows_the_pickled_callback() -> None:
    assert S3Credentials.Refreshable(Scripted("a")) == S3Credentials.Refreshable(Scripted("a"))
    assert S3Credentials.Refreshable(Scripted("a")) != S3Credentials.Refreshable(Scripted("b"))
    with_current = S3Credentials.Refreshable(Scripted("a"), current=S3StaticCredentials("x", "y"))
    assert with_current != S3Credentials.Refreshable(Scripted("a"))


def test_unpicklable_callbacks_are_refused_with_the_reason() -> None:
    def local() -> S3StaticCredentials:
        return S3StaticCredentials("a", "b")

    for callback in (local, lambda: S3StaticCredentials("a", "b")):
        with pytest.raises(ConfigurationError) as info:
            S3Credentials.Refreshable(callback)
        message = str(info.value)
        assert "cannot be pickled" in message
        assert "dask" in message
        assert "module-level function" in message
        assert callback.__qualname__ in message
        assert isinstance(info.value.__cause__, Exception)
    with pytest.raises(ConfigurationError, match="must be a callable returning S3Static"):
        s3_refreshable_credentials(42)  # type: ignore[arg-type]


# --- scatter_initial_credentials -----------------------------------------------------------


def test_scatter_calls_once_and_the_pickle_carries_the_credential(script: Any) -> None:
    state, callback = script()
    value = s3_refreshable_credentials(callback, scatter_initial_credentials=True)
    assert state.calls == 1
    assert value.current is not None
    assert value.current.access_key_id == "AKID1"
    copy = pickle.loads(pickle.dumps(value))
    assert copy.current == value.current
    assert refresh_stats(callback).calls == 1
    # Without scatter, nothing is called at construction.
    _, other = script()
    assert s3_refreshable_credentials(other).current is None
    assert refresh_stats(other).calls == 0


def test_scatter_reuses_a_fresh_credential_in_this_process(script: Any) -> None:
    state, callback = script()
    first = s3_refreshable_credentials(callback, scatter_initial_credentials=True)
    second = s3_credentials(get_credentials=callback, scatter_initial_credentials=True)
    assert state.calls == 1
    assert isinstance(second, S3Credentials.Refreshable)
    assert second.current == first.current


@pytest.mark.parametrize(
    ("helper", "kind", "field"),
    [
        (gcs_refreshable_credentials, "gcs", "bearer"),
        (azure_refreshable_credentials, "azure", "token"),
    ],
)
def test_scatter_for_gcs_and_azure(script: Any, helper: Any, kind: str, field: str) -> None:
    _, callback = script(kind=kind)
    value = helper(callback, scatter_initial_credentials=True)
    assert getattr(value.current, field).endswith("1")


def test_scatter_with_an_async_callback_from_sync_code(script: Any) -> None:
    state, _ = script()
    name = next(n for n, v in SCRIPTS.items() if v is state)
    value = s3_refreshable_credentials(AsyncScripted(name), scatter_initial_credentials=True)
    assert value.current is not None
    assert state.calls == 1


async def test_scatter_inside_a_running_event_loop(script: Any) -> None:
    state, _ = script()
    name = next(n for n, v in SCRIPTS.items() if v is state)
    value = s3_refreshable_credentials(AsyncScripted(name), scatter_initial_credentials=True)
    assert value.current is not None
    assert state.calls == 1
    await asyncio.sleep(0)


def test_scatter_failure_raises_at_construction() -> None:
    with pytest.raises(CredentialsRefreshError, match="bad creds") as info:
        s3_refreshable_credentials(failing_callback, scatter_initial_credentials=True)
    assert isinstance(info.value.__cause__, RuntimeError)
    assert "tests._credential_helpers.failing_callback" in str(info.value)

"""Proxy selection (``_transport._proxy``): which environment variable applies to an origin,
and every form of ``NO_PROXY`` entry, at its edges."""

from __future__ import annotations

import pytest

from icechunk_storage._transport._proxy import bypasses_proxy, proxy_for

PROXY_VARIABLES = ["http_proxy", "https_proxy", "all_proxy", "no_proxy"]


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.upper(), raising=False)


@pytest.mark.parametrize(
    ("host", "port", "no_proxy", "bypass"),
    [
        ("s3.example.com", 443, "*", True),
        ("s3.example.com", 443, "", False),
        ("s3.example.com", 443, " , ,", False),
        ("s3.example.com", 443, "other.org,,example.com", True),  # empty entries are skipped
        ("s3.example.com", 443, "example.com:80, example.com", True),  # so are other ports
        ("Xample.com", 443, "xample.com", True),
        ("s3.example.com", 443, "example.com", True),
        ("s3.example.com", 443, ".example.com", True),
        ("example.com", 443, ".example.com", True),
        ("S3.Example.COM", 443, "EXAMPLE.com", True),
        ("notexample.com", 443, "example.com", False),
        ("example.com.evil", 443, "example.com", False),
        ("s3.example.com", 443, "other.org, example.com ", True),
        ("s3.example.com", 443, "example.com:443", True),
        ("s3.example.com", 9000, "example.com:443", False),
        ("s3.example.com", None, "example.com:443", True),
        ("s3.example.com", 443, "example.com:https", False),
        ("10.1.2.3", 80, "10.0.0.0/8", True),
        ("11.1.2.3", 80, "10.0.0.0/8", False),
        ("10.1.2.3", 80, "10.1.2.3", True),
        ("10.1.2.3", 80, "10.1.2.0/8", True),  # host bits set: still the /8 network
        ("10.1.2.3", 80, "10.1.2.3:80", True),
        ("10.1.2.3", 81, "10.1.2.3:80", False),
        ("10.1.2.3", 80, "example.com", False),
        ("10.1.2.3", 80, "1.2.3", False),  # an IP is not matched as a domain suffix
        ("[::1]", 9000, "::1", True),
        ("::1", 9000, "[::1]", True),
        ("::1", 9000, "[::1]:9000", True),
        ("::1", 9001, "[::1]:9000", False),
        ("::1", 10, "[::1]:9", False),
        ("::1", 9001, "[::1]:x", True),
        ("::2", 9000, "[::1]", False),
        ("fd00::5", 443, "fd00::/8", True),
        ("fe80::5", 443, "fd00::/8", False),
    ],
)
def test_no_proxy_entries(host: str, port: int | None, no_proxy: str, bypass: bool) -> None:
    assert bypasses_proxy(host, port, no_proxy) is bypass


def test_the_scheme_picks_the_variable_and_all_proxy_is_the_fallback(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert proxy_for("https://s3.example.com") is None
    monkeypatch.setenv("ALL_PROXY", "http://all:1")
    assert proxy_for("https://s3.example.com") == "http://all:1"
    monkeypatch.setenv("HTTPS_PROXY", "http://secure:2")
    assert proxy_for("https://s3.example.com") == "http://secure:2"
    assert proxy_for("http://s3.example.com") == "http://all:1"
    monkeypatch.setenv("http_proxy", "http://plain:3")
    assert proxy_for("http://s3.example.com") == "http://plain:3"


def test_lower_case_variables_win_and_empty_ones_count_as_unset(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("https_proxy", "http://lower:1")
    monkeypatch.setenv("HTTPS_PROXY", "http://upper:2")
    assert proxy_for("https://h") == "http://lower:1"
    monkeypatch.setenv("https_proxy", "")
    assert proxy_for("https://h") == "http://upper:2"
    monkeypatch.setenv("HTTPS_PROXY", "")
    assert proxy_for("https://h") is None


def test_no_proxy_exempts_matching_origins_only(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HTTPS_PROXY", "http://p:1")
    monkeypatch.setenv("NO_PROXY", "internal.example, 127.0.0.1:9000")
    assert proxy_for("https://s3.internal.example") is None
    assert proxy_for("https://127.0.0.1:9000") is None
    assert proxy_for("https://127.0.0.1:9001") == "http://p:1"
    assert proxy_for("https://s3.amazonaws.com") == "http://p:1"
    monkeypatch.setenv("no_proxy", "amazonaws.com")  # the lower-case one wins
    assert proxy_for("https://s3.amazonaws.com") is None
    assert proxy_for("https://s3.internal.example") == "http://p:1"


def test_an_origin_without_a_host_gets_no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HTTPS_PROXY", "http://p:1")
    assert proxy_for("https://") is None

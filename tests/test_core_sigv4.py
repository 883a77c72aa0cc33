"""The SigV4 signer (``_s3._sigv4``) against AWS's published examples, and its parts: path
and query encoding, header canonicalization, the timestamp, and the signing-key cache."""

from __future__ import annotations

import hashlib
import hmac
import time

import pytest

from icechunk_storage._s3 import _sigv4
from icechunk_storage._s3._sigv4 import (
    EMPTY_SHA256,
    UNSIGNED_PAYLOAD,
    SigV4Signer,
    canonical_query,
    encode_path,
)

# The examples of AWS's "Signature Version 4" documentation (IAM and S3 GetObject).
EXAMPLE_ACCESS_KEY = "AKIAIOSFODNN7EXAMPLE"
EXAMPLE_SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"


def test_the_signing_key_matches_aws_example() -> None:
    signer = SigV4Signer("us-east-1", "iam")
    key = signer.signing_key("wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", "20120215")
    assert key.hex() == "f4780e2d9f65fa895f9c67b32ce1baf0b0d8a43505a000a1a9e090d414db404d"


def test_a_ranged_get_matches_aws_s3_example() -> None:
    headers = SigV4Signer("us-east-1").sign(
        method="GET",
        host="examplebucket.s3.amazonaws.com",
        canonical_uri="/test.txt",
        headers={"range": "bytes=0-9"},
        access_key=EXAMPLE_ACCESS_KEY,
        secret_key=EXAMPLE_SECRET,
        timestamp="20130524T000000Z",
    )
    assert headers == {
        "range": "bytes=0-9",
        "host": "examplebucket.s3.amazonaws.com",
        "x-amz-date": "20130524T000000Z",
        "x-amz-content-sha256": EMPTY_SHA256,
        "authorization": (
            "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/"
            "aws4_request, SignedHeaders=host;range;x-amz-content-sha256;x-amz-date, "
            "Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41"
        ),
    }
    assert hashlib.sha256(b"").hexdigest() == EMPTY_SHA256


def _expected_signature(
    secret: str, stamp: str, region: str, service: str, canonical_request: str
) -> str:
    """SigV4 written out from the specification, to check the signer against."""
    key = ("AWS4" + secret).encode()
    for part in (stamp[:8], region, service, "aws4_request"):
        key = hmac.new(key, part.encode(), "sha256").digest()
    scope = f"{stamp[:8]}/{region}/{service}/aws4_request"
    to_sign = "\n".join(
        [
            "AWS4-HMAC-SHA256",
            stamp,
            scope,
            hashlib.sha256(canonical_request.encode()).hexdigest(),
        ]
    )
    return hmac.new(key, to_sign.encode(), "sha256").hexdigest()


def test_every_part_of_the_canonical_request_is_signed() -> None:
    stamp = "20240301T120000Z"
    headers = SigV4Signer("eu-west-2", "s3").sign(
        method="PUT",
        host="h.example",
        canonical_uri="/a%20b/c",
        query="partNumber=2&uploadId=x",
        headers={
            "x-amz-meta-odd": "  two   spaces\tand tab  ",
            "user-agent": "ua/1",
            "authorization": "stale",
            "range": "bytes=1-2",
        },
        access_key="AK",
        secret_key="SK",
        session_token="TOKEN",
        payload_hash=UNSIGNED_PAYLOAD,
        timestamp=stamp,
    )
    canonical_request = (
        "PUT\n/a%20b/c\npartNumber=2&uploadId=x\n"
        "host:h.example\n"
        "range:bytes=1-2\n"
        f"x-amz-content-sha256:{UNSIGNED_PAYLOAD}\n"
        f"x-amz-date:{stamp}\n"
        "x-amz-meta-odd:two spaces and tab\n"
        "x-amz-security-token:TOKEN\n"
        "\n"
        "host;range;x-amz-content-sha256;x-amz-date;x-amz-meta-odd;x-amz-security-token\n"
        f"{UNSIGNED_PAYLOAD}"
    )
    signature = _expected_signature("SK", stamp, "eu-west-2", "s3", canonical_request)
    assert headers["authorization"] == (
        "AWS4-HMAC-SHA256 Credential=AK/20240301/eu-west-2/s3/aws4_request, "
        "SignedHeaders=host;range;x-amz-content-sha256;x-amz-date;x-amz-meta-odd;"
        f"x-amz-security-token, Signature={signature}"
    )
    # sent, but neither signed nor changed
    assert headers["user-agent"] == "ua/1"
    assert headers["x-amz-meta-odd"] == "  two   spaces\tand tab  "
    assert headers["x-amz-security-token"] == "TOKEN"
    assert headers["x-amz-content-sha256"] == UNSIGNED_PAYLOAD


def test_no_session_token_header_without_a_token() -> None:
    for token in (None, ""):
        headers = SigV4Signer("us-east-1").sign(
            method="GET",
            host="h",
            canonical_uri="/k",
            headers={},
            access_key="AK",
            secret_key="SK",
            session_token=token,
            timestamp="20240301T120000Z",
        )
        assert "x-amz-security-token" not in headers
        assert "SignedHeaders=host;x-amz-content-sha256;x-amz-date," in headers["authorization"]


@pytest.mark.parametrize("name", sorted(_sigv4.UNSIGNED_HEADERS))
def test_hop_by_hop_and_tracing_headers_are_never_signed(name: str) -> None:
    headers = SigV4Signer("us-east-1").sign(
        method="GET",
        host="h",
        canonical_uri="/k",
        headers={name: "v"},
        access_key="AK",
        secret_key="SK",
        timestamp="20240301T120000Z",
    )
    assert "SignedHeaders=host;x-amz-content-sha256;x-amz-date," in headers["authorization"]


@pytest.mark.parametrize(
    ("path", "encoded"),
    [
        ("/bucket/a/c/0.1", "/bucket/a/c/0.1"),
        ("/b/A-z_9.~x", "/b/A-z_9.~x"),
        ("/b/a b", "/b/a%20b"),
        ("/b/a+b=c&d", "/b/a%2Bb%3Dc%26d"),
        ("/b/é", "/b/%C3%A9"),
        ("/b/%41", "/b/%2541"),
        ("", ""),
    ],
)
def test_paths_are_encoded_as_s3_puts_them_on_the_wire(path: str, encoded: str) -> None:
    assert encode_path(path) == encoded


def test_the_canonical_query_is_encoded_and_sorted_by_key_then_value() -> None:
    assert canonical_query([]) == ""
    assert canonical_query([("b", "2"), ("a", "z"), ("a", "y")]) == "a=y&a=z&b=2"
    assert canonical_query([("k y", "v/w~"), ("list-type", "2")]) == "k%20y=v%2Fw~&list-type=2"
    assert canonical_query([("prefix", "")]) == "prefix="
    assert canonical_query([("a/b", "c/d")]) == "a%2Fb=c%2Fd"


def test_the_timestamp_follows_the_clock_second_by_second(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    now = [1369353600.25]  # 2013-05-24T00:00:00.25Z
    monkeypatch.setattr(time, "time", lambda: now[0])
    signer = SigV4Signer("us-east-1")
    assert signer.timestamp() == "20130524T000000Z"
    now[0] += 0.5
    assert signer.timestamp() == "20130524T000000Z"
    now[0] += 0.5
    assert signer.timestamp() == "20130524T000001Z"
    now[0] = 1.5  # the first call formats, whatever the second
    assert SigV4Signer("us-east-1").timestamp() == "19700101T000001Z"
    now[0] = 1369353600 + 86400 * 366 + 3661
    assert signer.timestamp() == "20140525T010101Z"
    headers = signer.sign(
        method="GET", host="h", canonical_uri="/", headers={}, access_key="A", secret_key="S"
    )
    assert headers["x-amz-date"] == "20140525T010101Z"
    assert "Credential=A/20140525/us-east-1/s3/aws4_request" in headers["authorization"]


def test_signing_keys_are_cached_per_secret_and_day_and_the_cache_is_bounded() -> None:
    signer = SigV4Signer("us-east-1")
    first = signer.signing_key("S", "20240101")
    assert signer.signing_key("S", "20240101") is first
    assert signer.signing_key("S", "20240102") != first
    assert signer.signing_key("T", "20240101") != first
    for day in range(3, 3 + 61):
        signer.signing_key("S", f"2024{day:04d}")
    assert len(signer._keys) == _sigv4._MAX_CACHED_KEYS
    signer.signing_key("S", "20991231")  # the 65th key: the cache starts over
    assert len(signer._keys) == 1
    # a key recomputed after the reset is the same key
    assert signer.signing_key("S", "20240101") == first

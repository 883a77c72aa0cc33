"""ListObjectsV2 pages from a scripted server: what a good page yields, and every rule the
parser enforces against a wrong or hostile one (``icechunk_storage._s3._listing``).

moto only sends well-formed pages; these answers come from ``MockTransport``, the lean
transport's scripted stand-in, so each rule is shown to fire on the wire format itself.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from icechunk_storage import (
    ObjectInfo,
    ResponseIntegrityError,
    RetriesExhaustedError,
    StorageError,
    StorageRetriesSettings,
    StorageSettings,
    VersionInfo,
    s3_storage,
)

pytestmark = pytest.mark.asyncio

_HEAD = (
    '<?xml version="1.0" encoding="UTF-8"?>\n'
    '<ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">'
    "<Name>bucket</Name><EncodingType>url</EncodingType>"
)


def _entry(key: str, size: str = "3", modified: str | None = "2026-12-01T05:00:00.000Z") -> str:
    when = f"<LastModified>{modified}</LastModified>" if modified is not None else ""
    return (
        f"<Contents><Key>{key}</Key>{when}<ETag>&quot;e-{key}&quot;</ETag>"
        f"<Size>{size}</Size><StorageClass>STANDARD</StorageClass></Contents>"
    )


def _page(*parts: str, truncated: bool = False, token: str | None = None) -> bytes:
    tail = f"<IsTruncated>{'true' if truncated else 'false'}</IsTruncated>"
    if token is not None:
        tail += f"<NextContinuationToken>{token}</NextContinuationToken>"
    return (_HEAD + "".join(parts) + tail + "</ListBucketResult>").encode()


Pages = Callable[[dict[str, list[str]]], bytes]


def _storage(pages: Pages, monkeypatch: pytest.MonkeyPatch) -> tuple[Any, list[Any]]:
    """A prefixed S3 storage whose lean transport is the scripted server ``pages`` (called
    with each request's query), tried once per request so a refusal surfaces at once."""
    from icechunk_storage._s3._client import LoopClients
    from icechunk_storage._transport._mock import MockResponse, MockTransport

    def answer(request: Any) -> Any:
        query = parse_qs(urlsplit(request.target).query, keep_blank_values=True)
        return MockResponse(200, {"content-type": "application/xml"}, pages(query))

    transport = MockTransport(answer)
    monkeypatch.setattr(LoopClients, "http_transport", lambda self: transport)
    storage = s3_storage(
        bucket="bucket",
        prefix="root",
        endpoint_url="http://127.0.0.1:9",
        allow_http=True,
        region="us-east-1",
        access_key_id="AKIDEXAMPLE",
        secret_access_key="wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
        settings=StorageSettings(retries=StorageRetriesSettings(max_tries=1)),
    )
    return storage, transport.requests


async def _listed(storage: Any, prefix: str = "") -> list[ObjectInfo]:
    return [info async for info in storage.list(prefix)]


async def test_a_good_page_yields_relative_keys_decoded_with_sizes_times_and_etags(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    body = _page(
        _entry("root%2Fa%2Fx"),
        _entry("root%2Fa%2Fwith+space%2B%25", size="0"),
        _entry("root%2Fb", modified="2026-12-01T05:00:00"),  # no zone: taken as UTC
        _entry("root%2Fc", modified=None),
    )
    storage, requests = _storage(lambda query: body, monkeypatch)
    listed = await _listed(storage)
    assert [info.key for info in listed] == ["a/x", "a/with space+%", "b", "c"]
    assert [info.size for info in listed] == [3, 0, 3, 3]
    moment = datetime(2026, 12, 1, 5, tzinfo=UTC)
    assert [info.last_modified for info in listed] == [moment, moment, moment, None]
    assert listed[0].version == VersionInfo(etag='"e-root%2Fa%2Fx"')
    assert len(requests) == 1
    query = parse_qs(urlsplit(requests[0].target).query, keep_blank_values=True)
    assert query["prefix"] == ["root/"]
    assert query["encoding-type"] == ["url"]


async def test_pages_follow_the_continuation_token_until_the_last(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def pages(query: dict[str, list[str]]) -> bytes:
        token = query.get("continuation-token", [None])[0]
        if token is None:
            return _page(_entry("root%2F1"), truncated=True, token="t+1/=")
        assert token == "t+1/="
        return _page(_entry("root%2F2"))

    storage, requests = _storage(pages, monkeypatch)
    assert [info.key for info in await _listed(storage)] == ["1", "2"]
    assert len(requests) == 2


async def test_a_delimited_listing_returns_relative_objects_and_prefixes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    body = _page(
        _entry("root%2Fd%2Ffile"),
        "<CommonPrefixes><Prefix>root%2Fd%2Fsub%2F</Prefix></CommonPrefixes>",
        "<CommonPrefixes><Prefix>root%2Fd%2Fa+b%2F</Prefix></CommonPrefixes>",
    )
    storage, _ = _storage(lambda query: body, monkeypatch)
    result = await storage.list_dir("d")
    assert [info.key for info in result.objects] == ["d/file"]
    assert result.prefixes == ["d/a b/", "d/sub/"]


_REFUSED = {
    "a key outside the prefix": (_page(_entry("other%2Fx")), "not under the prefix"),
    "a key beside the prefix": (_page(_entry("rootless%2Fx")), "not under the prefix"),
    "an entry without a key": (
        _page("<Contents><Size>1</Size></Contents>"),
        "an entry without a Key",
    ),
    "a negative size": (_page(_entry("root%2Fx", size="-1")), "negative size"),
    "a size that is not a number": (_page(_entry("root%2Fx", size="lots")), "bad listing"),
    "a bad timestamp": (_page(_entry("root%2Fx", modified="yesterday")), "bad listing"),
    "a common prefix in a recursive listing": (
        _page("<CommonPrefixes><Prefix>root%2Fd%2F</Prefix></CommonPrefixes>"),
        "was not asked for",
    ),
    "a truncated page without a token": (
        _page(_entry("root%2Fx"), truncated=True),
        "without a continuation token",
    ),
    "a document type declaration": (
        b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY a "b">]>' + _page()[39:],
        "document type declaration",
    ),
    "XML that is not well-formed": (_page(_entry("root%2Fx"))[:-20], "not well-formed"),
    "another document": (b"<Error><Code>Nope</Code></Error>", "expected a ListBucketResult"),
}


@pytest.mark.parametrize("case", sorted(_REFUSED))
async def test_a_wrong_page_is_refused_and_names_what_is_wrong(
    case: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    body, words = _REFUSED[case]
    storage, requests = _storage(lambda query: body, monkeypatch)
    with pytest.raises(RetriesExhaustedError) as raised:
        await _listed(storage)
    assert isinstance(raised.value.last_error, ResponseIntegrityError)
    assert words in str(raised.value.last_error)
    assert len(requests) == 1  # max_tries=1: refused, not taken as a listing


async def test_a_common_prefix_outside_the_prefix_is_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    body = _page("<CommonPrefixes><Prefix>elsewhere%2F</Prefix></CommonPrefixes>")
    storage, _ = _storage(lambda query: body, monkeypatch)
    with pytest.raises(RetriesExhaustedError, match="was not asked for"):
        await storage.list_dir("d")


async def test_the_same_token_twice_ends_the_listing_with_an_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A server that hands back the token it was given would loop forever."""
    body = _page(_entry("root%2Fx"), truncated=True, token="again")
    storage, requests = _storage(lambda query: body, monkeypatch)
    with pytest.raises(StorageError, match="same page token twice"):
        await _listed(storage)
    assert len(requests) == 2

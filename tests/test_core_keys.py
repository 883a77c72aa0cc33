"""Key validation and prefixing (``_keys``): what is refused, with which message, and how a
key is joined to and stripped from a prefix."""

from __future__ import annotations

import pytest

from icechunk_storage import InvalidKeyError
from icechunk_storage._keys import (
    join_key,
    normalize_list_prefix,
    normalize_prefix,
    strip_prefix,
    validate_key,
)


@pytest.mark.parametrize(
    ("key", "message"),
    [
        (7, "A key must be a str, got int 7."),
        (b"a", "A key must be a str, got bytes b'a'."),
        ("", "A key must not be empty."),
        (
            "/a",
            "Key '/a' is absolute; keys are relative to the storage prefix, drop the leading '/'.",
        ),
        ("a\x00b", "Key 'a\\x00b' contains a control character (NUL included)."),
        ("a\\b", "Key 'a\\\\b' contains a backslash; use '/' as the separator."),
        (
            "a//b",
            "Key 'a//b' has an empty, '.' or '..' segment; such keys could reach outside "
            "the storage prefix.",
        ),
    ],
)
def test_each_refusal_names_the_problem_and_the_fix(key: object, message: str) -> None:
    with pytest.raises(InvalidKeyError) as caught:
        validate_key(key)  # type: ignore[arg-type]
    assert str(caught.value) == message


@pytest.mark.parametrize(
    "key",
    ["/", "/a/b", "a/", "a/./b", "./a", "a/..", "../a", "a\x1fb", "a\x7f", "a\tb", "a\\"],
)
def test_keys_that_could_leave_the_prefix_are_refused(key: str) -> None:
    with pytest.raises(InvalidKeyError):
        validate_key(key)


@pytest.mark.parametrize(
    "key", ["a", "a/b/c", "...", "a.b/..c", "a/b.", "~x", " a ", "a b", "é/ü", "a\x80", "XX/XX"]
)
def test_valid_keys_come_back_unchanged(key: str) -> None:
    assert validate_key(key) is key


def test_prefixes_lose_their_slashes_and_are_validated() -> None:
    assert normalize_prefix(None) == ""
    assert normalize_prefix("") == ""
    assert normalize_prefix("/") == ""
    assert normalize_prefix("//a/b//") == "a/b"
    assert normalize_prefix("X/a/X") == "X/a/X"
    with pytest.raises(InvalidKeyError):
        normalize_prefix("a/../b")


def test_list_prefixes_match_whole_segments() -> None:
    assert normalize_list_prefix("") == ""
    assert normalize_list_prefix("/") == ""
    assert normalize_list_prefix("a") == "a/"
    assert normalize_list_prefix("a/b/") == "a/b/"
    assert normalize_list_prefix("X/a/X") == "X/a/X/"
    with pytest.raises(InvalidKeyError):
        normalize_list_prefix("a//b")
    with pytest.raises(InvalidKeyError, match="absolute"):  # listed as get refuses it
        normalize_list_prefix("/a/b/")


@pytest.mark.parametrize(("prefix", "key"), [("p", "k"), ("a/b", "c/d"), ("", "k/x")])
def test_join_and_strip_are_inverses(prefix: str, key: str) -> None:
    path = join_key(prefix, key)
    assert path == (f"{prefix}/{key}" if prefix else key)
    assert strip_prefix(prefix, path) == key


def test_strip_prefix_removes_exactly_the_prefix_and_its_slash() -> None:
    assert strip_prefix("ab", "ab/cde") == "cde"
    assert strip_prefix("", "ab/cde") == "ab/cde"

"""The root directory of a local filesystem storage, checked once at construction.

A user who passes ``"~/data"`` means their home directory; one who passes a ``file://`` URL
or the path of a file has made a mistake that would otherwise surface much later as a raw
``NotADirectoryError`` on put, "no object" on get and an empty listing. So: ``~`` is expanded,
and a URL, or a path that is (or lies under) a file, is refused with a message naming it.
"""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Iterator

from ._errors import ConfigurationError, InvalidKeyError, PermissionDeniedError, StorageError

__all__ = ["local_os_errors", "resolve_local_root"]


def resolve_local_root(path: str | os.PathLike[str]) -> str:
    """The absolute root for ``path``; ConfigurationError if it cannot be a directory."""
    if not isinstance(path, str | os.PathLike) or not os.fspath(path):
        raise ConfigurationError(
            f"local_filesystem_storage needs a directory path (str or os.PathLike), got {path!r}."
        )
    text = os.fspath(path)
    if "://" in text:
        scheme = text.split("://", 1)[0]
        hint = f" pass {text[len('file://') :]!r}" if scheme == "file" else ""
        raise ConfigurationError(
            f"local_filesystem_storage takes a directory path, not a URL ({text!r});{hint}"
            f"{'' if hint else ' pass a path'}."
        )
    if text.startswith("~"):
        expanded = os.path.expanduser(text)
        if expanded.startswith("~"):
            raise ConfigurationError(
                f"Cannot expand {text!r}: no such user or no home directory; pass an absolute path."
            )
        text = expanded
    root = os.path.abspath(text)
    _check_not_under_a_file(root)
    return root


def _check_not_under_a_file(root: str) -> None:
    """The root, or the nearest ancestor that exists, must be a directory."""
    current = root
    while True:
        try:
            mode = os.stat(current).st_mode
        except FileNotFoundError:
            parent = os.path.dirname(current)
            if parent == current:
                return
            current = parent
            continue
        except NotADirectoryError:
            current = os.path.dirname(current)
            continue
        except OSError:
            return  # unreadable: the first operation will say why
        if stat.S_ISDIR(mode):
            return
        where = "is" if current == root else f"lies under {current!r}, which is"
        raise ConfigurationError(
            f"local_filesystem_storage path {root!r} {where} a file, not a directory; pass a "
            "directory (it is created on the first write if missing)."
        )


@contextlib.contextmanager
def local_os_errors() -> Iterator[None]:
    """No raw ``OSError`` leaves the local backend: an object where a directory is needed
    (``a`` exists and ``a/b`` is written, or the reverse) is InvalidKeyError, since a local
    filesystem cannot hold both, where an object store can; anything else is typed too."""
    try:
        yield
    except StorageError:
        raise
    except (FileExistsError, NotADirectoryError, IsADirectoryError) as exc:
        raise InvalidKeyError(
            f"The local filesystem cannot store this key: {exc.strerror} at "
            f"{exc.filename!r}. An object and a directory of the same name cannot both exist "
            "here (they can on object stores): choose keys that do not nest under objects."
        ) from exc
    except PermissionError as exc:
        raise PermissionDeniedError(
            f"The local filesystem refused access: {exc.strerror} at {exc.filename!r}."
        ) from exc
    except OSError as exc:
        raise StorageError(
            f"The local filesystem failed: {exc.strerror or exc} at {exc.filename!r}."
        ) from exc

"""What every subcommand shares: resolving its URLs, closing its storages, printing."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from .._storage import ObjectInfo, Storage, VersionInfo
from ._urls import CloudOptions, Location, Scope, check_options_used, parse_url

__all__ = ["Context", "emit_json", "human_size", "info_json", "version_json"]


class Context:
    """A command's URLs and the storages it opened, all closed by :meth:`aclose`."""

    def __init__(self, args: Any) -> None:
        self.args = args
        self.json: bool = bool(args.json)
        self.options = CloudOptions.from_args(args)
        self._storages: list[Storage] = []
        self.stderr_is_terminal = sys.stderr.isatty()

    def locations(self, urls: Iterable[str]) -> list[Location]:
        """Parse every URL of the command first, so a bad one fails before any I/O."""
        used: set[str] = set()
        listed = list(urls)
        found = [parse_url(url, self.options, used) for url in listed]
        check_options_used(self.options, used, listed)
        return found

    def scope(self, location: Location, prefix: str) -> Scope:
        scope = location.scope(prefix)
        if all(scope.storage is not s for s in self._storages):
            self._storages.append(scope.storage)
        return scope

    async def aclose(self) -> None:
        for storage in self._storages:
            await storage.aclose()


def emit_json(value: object) -> None:
    sys.stdout.write(json.dumps(value, indent=2) + "\n")


def version_json(version: VersionInfo) -> dict[str, str | None]:
    return {"etag": version.etag, "generation": version.generation}


def _time(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def info_json(key: str, info: ObjectInfo, *, full: bool = False) -> dict[str, Any]:
    out: dict[str, Any] = {
        "key": key,
        "size": info.size,
        "last_modified": _time(info.last_modified),
        **version_json(info.version),
    }
    if full:
        out["content_type"] = info.content_type
        out["metadata"] = dict(info.metadata)
    return out


def human_size(n: float) -> str:
    """``512 B``, ``16.0 KiB``, ``1.5 GiB``."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


def version_text(version: VersionInfo) -> str:
    return str(version) if not version.is_for_creation else "-"


def time_text(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S") if value is not None else "-"

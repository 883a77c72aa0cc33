"""A progress bar on stderr for ``cp``, drawn by rich (the ``cli`` extra).

Shown when stderr is a terminal (or with ``--progress``), never when it is piped (or with
``--no-progress``). Without rich installed, a terminal gets one line saying how to get the
bar instead of a bar: the copy itself does not need it.
"""

from __future__ import annotations

import sys
from types import TracebackType
from typing import Any

__all__ = ["Progress"]


class Progress:
    """Bytes and objects done, against the totals; a no-op when disabled."""

    def __init__(self, total_bytes: int, total_objects: int, *, enabled: bool) -> None:
        self.total_bytes, self.total_objects = total_bytes, total_objects
        self.objects = 0
        self._bar: Any = None
        self._task: Any = None
        if not enabled:
            return
        try:
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                DownloadColumn,
                TextColumn,
                TimeRemainingColumn,
                TransferSpeedColumn,
            )
            from rich.progress import Progress as RichProgress
        except ImportError:
            sys.stderr.write(
                "(no progress bar: install it with pip install 'icechunk-storage[cli]')\n"
            )
            return
        self._bar = RichProgress(
            TextColumn("copy"),
            BarColumn(),
            DownloadColumn(binary_units=True),
            TransferSpeedColumn(),
            TextColumn("{task.fields[objects]}"),
            TimeRemainingColumn(),
            console=Console(stderr=True, force_terminal=True),
            transient=False,
        )
        self._task = self._bar.add_task("copy", total=total_bytes, objects=self._objects_text())

    def _objects_text(self) -> str:
        return f"{self.objects}/{self.total_objects} objects"

    def advance(self, size: int) -> None:
        self.objects += 1
        if self._bar is not None:
            self._bar.update(self._task, advance=size, objects=self._objects_text())

    def __enter__(self) -> Progress:
        if self._bar is not None:
            self._bar.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._bar is not None:
            self._bar.stop()

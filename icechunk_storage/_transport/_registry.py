"""One transport per (config, event loop, process): ``get_transport``.

Storages pickle and move between processes and loops; transports hold sockets and belong to
one loop. So storages never keep a transport: they ask ``get_transport(config)`` per request
(a dictionary lookup). Equal configs share one pool. Everything is forgotten after a fork
(the child never touches its parent's sockets) and closed when the loop shuts down
(``asyncio.run`` and ``asyncio.Runner`` close suspended async generators, and one such
generator per loop guards the transports).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator

from .._loops import LoopLocal, shut_down_at_exit
from ._model import Transport, TransportConfig

__all__ = ["aclose_transport", "aclose_transports", "get_transport", "peek_transport"]


class _LoopTransports:
    """The transports of one loop, and the generator that closes them at loop shutdown."""

    def __init__(self) -> None:
        self.transports: dict[TransportConfig, Transport] = {}
        self.guard: AsyncGenerator[None, None] | None = None

    async def aclose(self) -> None:
        transports, self.transports = list(self.transports.values()), {}
        for transport in transports:
            await transport.aclose()


_loops: LoopLocal[_LoopTransports] = LoopLocal(_LoopTransports)


async def _close_at_shutdown(holder: _LoopTransports) -> AsyncGenerator[None, None]:
    try:
        yield
    finally:
        await holder.aclose()


def _guard(holder: _LoopTransports) -> None:
    """Start the holder's shutdown guard: advance it to its ``yield`` now, synchronously
    (nothing runs before it), so the loop's async-generator hooks know it."""
    guard = _close_at_shutdown(holder)
    shut_down_at_exit(asyncio.get_running_loop())  # a loop stopped at exit (zarr's): see _loops
    step = guard.__anext__()
    with contextlib.suppress(StopIteration):
        step.send(None)
    holder.guard = guard


def get_transport(config: TransportConfig) -> Transport:
    """The transport for ``config`` in the running loop, built on first use."""
    holder = _loops.get()
    transport = holder.transports.get(config)
    if transport is None:
        transport = _build(config)
        holder.transports[config] = transport
        if holder.guard is None:
            _guard(holder)
    return transport


def _build(config: TransportConfig) -> Transport:
    if config.proxy is not None:
        from ._aiohttp import AiohttpTransport

        return AiohttpTransport(config)
    from ._lean import LeanTransport

    return LeanTransport(config)


async def aclose_transport(config: TransportConfig) -> None:
    """Close the running loop's transport for ``config``, if any; it is rebuilt on next use.
    Requests in flight on it fail as lost connections (and are retried)."""
    holder = _loops.peek()
    if holder is not None:
        transport = holder.transports.pop(config, None)
        if transport is not None:
            await transport.aclose()


def peek_transport(config: TransportConfig) -> Transport | None:
    """The running loop's transport for ``config`` if it was built (for tests and stats)."""
    holder = _loops.peek()
    return holder.transports.get(config) if holder is not None else None


async def aclose_transports() -> None:
    """Close every transport of the running loop (they are rebuilt if used again)."""
    holder = _loops.pop()
    if holder is not None:
        guard, holder.guard = holder.guard, None
        await holder.aclose()
        if guard is not None:
            await guard.aclose()

"""Which proxy, if any, the environment asks for an origin: ``HTTP(S)_PROXY`` and
``NO_PROXY``, matched as curl and the AWS SDKs do, IPv6 literals and CIDR blocks included
(the standard library's ``proxy_bypass`` matches neither)."""

from __future__ import annotations

import ipaddress
import os
from urllib.parse import urlsplit

__all__ = ["bypasses_proxy", "proxy_for"]


def _env(name: str) -> str | None:
    return os.environ.get(name.lower()) or os.environ.get(name.upper()) or None


def bypasses_proxy(host: str, port: int | None, no_proxy: str) -> bool:
    """True when ``host`` matches an entry of ``no_proxy`` (comma separated: ``*``, domain
    suffixes with or without a leading dot, host:port, IPs, ``[v6]`` literals, CIDR)."""
    host = host.strip("[]").lower()
    try:
        address: ipaddress.IPv4Address | ipaddress.IPv6Address | None = ipaddress.ip_address(host)
    except ValueError:
        address = None
    for raw in no_proxy.split(","):
        entry = raw.strip().lower()
        if not entry:
            continue
        if entry == "*":
            return True
        entry_port: int | None = None
        if entry.startswith("["):  # [v6] or [v6]:port
            literal, _, rest = entry[1:].partition("]")
            entry = literal
            if rest.startswith(":") and rest[1:].isdigit():
                entry_port = int(rest[1:])
        elif entry.count(":") == 1:  # host:port or v4:port
            name, _, port_text = entry.partition(":")
            if port_text.isdigit():
                entry, entry_port = name, int(port_text)
        if entry_port is not None and port is not None and entry_port != port:
            continue
        if address is not None:
            try:
                if address in ipaddress.ip_network(entry, strict=False):
                    return True
            except ValueError:
                pass
            continue
        domain = entry.lstrip(".")
        if host == domain or host.endswith("." + domain):
            return True
    return False


def proxy_for(origin: str) -> str | None:
    """The proxy URL for requests to ``origin`` (``scheme://host[:port]``), or None."""
    parts = urlsplit(origin)
    proxy = _env(f"{parts.scheme}_proxy") or _env("all_proxy")
    if not proxy or not parts.hostname:
        return None
    no_proxy = _env("no_proxy")
    if no_proxy and bypasses_proxy(parts.hostname, parts.port, no_proxy):
        return None
    return proxy

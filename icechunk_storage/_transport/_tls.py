"""TLS contexts, built once per CA bundle per process (reading a bundle costs ~10 ms)."""

from __future__ import annotations

import ssl
import threading

__all__ = ["ssl_context"]

_lock = threading.Lock()
_contexts: dict[str | None, ssl.SSLContext] = {}


def ssl_context(ca_bundle: str | None) -> ssl.SSLContext:
    """A verifying client context trusting ``ca_bundle`` (a PEM file), or the system's CAs
    (``SSL_CERT_FILE`` / ``SSL_CERT_DIR`` are honoured). Verification is never switched off."""
    with _lock:
        context = _contexts.get(ca_bundle)
        if context is None:
            context = ssl.create_default_context(cafile=ca_bundle)
            _contexts[ca_bundle] = context
        return context

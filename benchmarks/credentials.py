"""Short-lived credentials for the refreshable-credentials workload (P4).

Each call of the callback counts once and issues a key that expires ``lifetime_s`` later:
access key id ``BENCHEXP<expiry ms>``, session token ``tok-<key id>``. The moto server of
the harness (``benchmarks._moto_server``) refuses a request signed with such a key once it
has expired, so a client that lets a credential lapse fails for real.

The callbacks are module-level classes holding only plain values, so they pickle (our
library keys its shared refresher on the callback's pickled bytes); the call counts live in
a module-level table keyed by run id, so pickled copies count into the same place.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

__all__ = ["CredentialSource", "Issued"]

EXPIRING_PREFIX = "BENCHEXP"
_calls: dict[str, int] = {}
_lock = threading.Lock()


@dataclass(frozen=True)
class Issued:
    access_key_id: str
    secret_access_key: str
    session_token: str
    expires_at: datetime


@dataclass(frozen=True)
class CredentialSource:
    """Issues credentials living ``lifetime_s`` seconds; counts calls per ``run_id``."""

    run_id: str
    lifetime_s: float

    def issue(self) -> Issued:
        with _lock:
            _calls[self.run_id] = _calls.get(self.run_id, 0) + 1
        expiry = time.time() + self.lifetime_s
        key = f"{EXPIRING_PREFIX}{int(expiry * 1000)}"
        return Issued(key, "bench-secret", f"tok-{key}", datetime.fromtimestamp(expiry, UTC))

    @property
    def calls(self) -> int:
        with _lock:
            return _calls.get(self.run_id, 0)


@dataclass(frozen=True)
class OursCallback:
    """``get_credentials`` for icechunk_storage: returns ``S3StaticCredentials``."""

    source: CredentialSource

    def __call__(self) -> Any:
        from benchmarks.clients import ours

        issued = self.source.issue()
        return ours("S3StaticCredentials")(
            access_key_id=issued.access_key_id,
            secret_access_key=issued.secret_access_key,
            session_token=issued.session_token,
            expires_after=issued.expires_at,
        )


@dataclass(frozen=True)
class ObstoreCallback:
    """obstore's ``credential_provider``: a dict with ``expires_at``."""

    source: CredentialSource

    def __call__(self) -> dict[str, Any]:
        issued = self.source.issue()
        return {
            "access_key_id": issued.access_key_id,
            "secret_access_key": issued.secret_access_key,
            "token": issued.session_token,
            "expires_at": issued.expires_at,
        }


@dataclass(frozen=True)
class BotocoreCallback:
    """botocore's ``refresh_using``: metadata with an ISO ``expiry_time``."""

    source: CredentialSource

    async def __call__(self) -> dict[str, str]:
        issued = self.source.issue()
        return {
            "access_key": issued.access_key_id,
            "secret_key": issued.secret_access_key,
            "token": issued.session_token,
            "expiry_time": issued.expires_at.isoformat(),
        }

"""moto's S3 server as ``moto_server`` runs it, plus two harness endpoints and an expiry check.

``python -m benchmarks._moto_server PORT`` serves moto's WSGI app with moto's request handler
(threaded werkzeug, like ``moto_server -H 127.0.0.1 -p PORT``), wrapped in a small middleware:

* **Expiry check.** moto accepts any signature and never looks at expiry, so a client that
  signs with an expired credential would go unnoticed. The benchmark's credential callback
  issues access key ids ``BENCHEXP<expiry in ms since the epoch>`` with session token
  ``tok-<access key id>``. A request signed with such a key is refused with 403
  ``ExpiredToken`` once that time has passed when it arrives (as AWS does), and with 403
  ``InvalidToken`` if its token does not belong to its key. Other keys pass untouched.
* ``GET /_bench/stats``: how many requests carried such keys, and how many were refused.
* ``POST /_bench/seed`` ``{"bucket", "prefix", "count", "size"}``: create the bucket and
  ``count`` objects ``prefix%05d`` straight in moto's backend, so a listing workload needs no
  thousands of slow uploads.
"""

from __future__ import annotations

import json
import re
import sys
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

_CREDENTIAL = re.compile(r"Credential=([^/,\s]+)/")
EXPIRING_PREFIX = "BENCHEXP"

StartResponse = Callable[..., Any]
App = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]


class ExpiryCheck:
    """WSGI middleware: see the module docstring."""

    def __init__(self, app: App) -> None:
        self.app = app
        self.lock = threading.Lock()
        self.stats = {"checked": 0, "expired": 0, "bad_token": 0}

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if path.startswith("/_bench/"):
            return self._control(path, environ, start_response)
        key = self._access_key(environ)
        if key is not None and key.startswith(EXPIRING_PREFIX):
            now_ms = time.time() * 1000
            token = environ.get("HTTP_X_AMZ_SECURITY_TOKEN")
            with self.lock:
                self.stats["checked"] += 1
                try:
                    expiry_ms = int(key[len(EXPIRING_PREFIX) :])
                except ValueError:
                    expiry_ms = 0
                if token != f"tok-{key}":
                    self.stats["bad_token"] += 1
                    return _error(start_response, "InvalidToken", "token does not match key")
                if now_ms > expiry_ms:
                    self.stats["expired"] += 1
                    late = now_ms - expiry_ms
                    return _error(start_response, "ExpiredToken", f"expired {late:.0f} ms ago")
        return self.app(environ, start_response)

    @staticmethod
    def _access_key(environ: dict[str, Any]) -> str | None:
        header = environ.get("HTTP_AUTHORIZATION", "")
        match = _CREDENTIAL.search(header)
        if match:
            return match.group(1)
        query = environ.get("QUERY_STRING", "")
        if "X-Amz-Credential=" in query:
            from urllib.parse import parse_qs

            values = parse_qs(query).get("X-Amz-Credential", [""])
            return values[0].split("/", 1)[0] or None
        return None

    def _control(
        self, path: str, environ: dict[str, Any], start_response: StartResponse
    ) -> Iterable[bytes]:
        if path == "/_bench/stats":
            with self.lock:
                body = json.dumps(self.stats).encode()
        elif path == "/_bench/seed":
            length = int(environ.get("CONTENT_LENGTH") or 0)
            request = json.loads(environ["wsgi.input"].read(length))
            body = json.dumps(_seed(**request)).encode()
        else:
            start_response("404 Not Found", [("Content-Type", "text/plain")])
            return [b"unknown harness endpoint"]
        start_response("200 OK", [("Content-Type", "application/json")])
        return [body]


def _seed(bucket: str, prefix: str, count: int, size: int) -> dict[str, int]:
    from moto.core.models import DEFAULT_ACCOUNT_ID
    from moto.s3.models import s3_backends

    backend = s3_backends[DEFAULT_ACCOUNT_ID]["global"]
    try:
        backend.get_bucket(bucket)
    except Exception:
        backend.create_bucket(bucket, "us-east-1")
    payload = b"x" * size
    for index in range(count):
        backend.put_object(bucket, f"{prefix}{index:05d}", payload)
    return {"created": count}


def _error(start_response: StartResponse, code: str, message: str) -> Iterable[bytes]:
    body = (
        '<?xml version="1.0" encoding="UTF-8"?>'
        f"<Error><Code>{code}</Code><Message>{message}</Message></Error>"
    ).encode()
    start_response(
        "403 Forbidden",
        [("Content-Type", "application/xml"), ("Content-Length", str(len(body)))],
    )
    return [body]


def main(argv: list[str]) -> int:
    from moto.moto_server.werkzeug_app import (
        DomainDispatcherApplication,
        MotoRequestHandler,
        create_backend_app,
    )
    from werkzeug.serving import make_server

    port = int(argv[0])
    app = ExpiryCheck(DomainDispatcherApplication(create_backend_app))
    server = make_server("127.0.0.1", port, app, threaded=True, request_handler=MotoRequestHandler)
    server.serve_forever()
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))

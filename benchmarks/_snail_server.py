"""moto's S3 behind snailmail's latency and bandwidth middleware: a 20 ms, 50 MB/s "cloud".

``python -m benchmarks._snail_server PORT RTT_MS MBS`` serves what ``snailmail.ObjectStore``
serves (moto's S3 app wrapped in ``snailmail.LatencyMiddleware``: one fixed delay of
``RTT_MS`` per request, every request and response body through one shared pipe of ``MBS``
MB/s), but in its own process: ``ObjectStore`` runs moto in the calling process, where its
threads would compete with the client for the GIL and the client's CPU figures would include
the server's. moto's request handler is used, as in ``benchmarks._moto_server``.

Harness endpoints, served at once (no delay, not metered, not counted):

* ``GET /_bench/stats``: snailmail's counters (``n_requests``, ``ops``, ``bytes_down`` ...);
* ``POST /_bench/reset``: zero them;
* ``POST /_bench/seed`` ``{"bucket", "prefix", "count", "size"}``: create the bucket and
  ``count`` objects ``prefix%05d`` of random bytes straight in moto's backend, so a data set
  costs no upload through the pipe.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Iterable
from typing import Any

StartResponse = Callable[..., Any]
App = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]


class Control:
    """WSGI middleware: the harness endpoints, then snailmail's shaped app."""

    def __init__(self, shaped: Any) -> None:
        self.shaped = shaped

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if not path.startswith("/_bench/"):
            result: Iterable[bytes] = self.shaped(environ, start_response)
            return result
        if path == "/_bench/stats":
            body = json.dumps(self.shaped.stats()).encode()
        elif path == "/_bench/reset":
            self.shaped.reset_counts()
            body = b"{}"
        elif path == "/_bench/seed":
            length = int(environ.get("CONTENT_LENGTH") or 0)
            body = json.dumps(_seed(**json.loads(environ["wsgi.input"].read(length)))).encode()
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
    for index in range(count):
        backend.put_object(bucket, f"{prefix}{index:05d}", os.urandom(size))
    return {"created": count}


def main(argv: list[str]) -> int:
    from moto.moto_server.werkzeug_app import (
        DomainDispatcherApplication,
        MotoRequestHandler,
        create_backend_app,
    )
    from snailmail import Fixed, LatencyMiddleware
    from werkzeug.serving import make_server

    port, rtt_ms, mbs = int(argv[0]), float(argv[1]), float(argv[2])
    shaped = LatencyMiddleware(
        DomainDispatcherApplication(create_backend_app),
        latency=Fixed(rtt_ms),
        bandwidth_mbs=mbs or None,
        max_records=0,
    )
    app = Control(shaped)
    server = make_server("127.0.0.1", port, app, threaded=True, request_handler=MotoRequestHandler)
    server.serve_forever()
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))

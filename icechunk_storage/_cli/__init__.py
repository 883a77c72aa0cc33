"""The ``icechunk-storage`` command (also ``python -m icechunk_storage``).

One module per subcommand: ``_check.py`` (check), ``_inspect.py`` (ls, cat, stat),
``_cp.py`` (cp); ``demo`` is ``icechunk_storage._demo``. ``_urls.py`` turns URLs into
storages. Every error ends as one line on stderr and a non-zero exit code, never a traceback:
2 for a wrong command line or configuration (bad URL or option, unknown bucket: the storage
layer's ConfigurationError), 1 for a failure at run time (missing object or credentials,
refused connection) or a failed check.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.metadata
import os
import sys
import textwrap
from collections.abc import Awaitable, Callable, Sequence

from .._errors import ConfigurationError, StorageError
from ._common import Context

__all__ = ["build_parser", "main"]

PROG = "icechunk-storage"

URLS = textwrap.dedent(
    """\
    URLs:
      s3://bucket/prefix              S3 or an S3-compatible store (MinIO, Ceph, R2 ...)
      gs://bucket/prefix              Google Cloud Storage (gcs:// works too)
      az://account/container/prefix   Azure Blob Storage (azure:// works too)
      file:///path, or a plain path   the local filesystem
      memory://                       a store in memory, gone when the command ends

    Credentials are never options: each store reads them from the environment, as
    s3_storage(), gcs_storage() and azure_storage() do when given none:
      S3     AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY[/AWS_SESSION_TOKEN], AWS_PROFILE and
             the shared files, web identity, instance metadata; AWS_REGION
      GCS    GOOGLE_APPLICATION_CREDENTIALS, the gcloud ADC file, the metadata server;
             STORAGE_EMULATOR_HOST (an emulator, anonymous)
      Azure  AZURE_STORAGE_CONNECTION_STRING, AZURE_STORAGE_ACCOUNT_KEY,
             AZURE_STORAGE_SAS_TOKEN, then azure-identity if installed
    --anonymous sends unsigned requests instead (public buckets and containers).
    A cloud URL may carry its own connection options as a query string, which win over the
    command line's (to copy between two endpoints), other keys going to --config:
      s3://bucket/prefix?endpoint_url=http://127.0.0.1:9000&allow_http=true

    Exit codes: 0 success; 1 a failure (missing object or credentials, refused connection,
    a check that did not pass); 2 a wrong command line or configuration (bad URL or option,
    unknown bucket).
    """
)


def _version() -> str:
    try:
        return importlib.metadata.version("icechunk-storage")
    except importlib.metadata.PackageNotFoundError:  # run from a source tree
        return "unknown (not installed)"


def _at_least(minimum: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {value}")
        return value

    return parse


class _Help(argparse.RawDescriptionHelpFormatter):
    """Keeps the description's layout; shows defaults where the help text has ``%(default)s``."""


def _common() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    group = common.add_argument_group("output")
    group.add_argument("--json", action="store_true", help="machine-readable output on stdout")
    group = common.add_argument_group(
        "connection (for s3://, gs:// and az:// URLs; refused when no URL takes them)"
    )
    group.add_argument(
        "--endpoint-url",
        metavar="URL",
        help="the service endpoint: an S3-compatible server, a GCS emulator "
        "(google_base_url), an Azure blob endpoint (https://<account>.blob...)",
    )
    group.add_argument("--region", help="S3 region (default: the AWS configuration chain)")
    group.add_argument(
        "--allow-http", action="store_true", help="allow a plain-http --endpoint-url"
    )
    group.add_argument(
        "--force-path-style",
        action="store_true",
        help="S3 path-style requests (endpoint/bucket/key), as MinIO and Ceph often need",
    )
    group.add_argument(
        "--anonymous",
        action="store_true",
        help="unsigned requests, no credentials (public buckets and containers)",
    )
    group.add_argument(
        "--config",
        action="append",
        metavar="KEY=VALUE",
        help="a provider option, repeatable: for gs:// and az:// the factory's config= "
        "mapping (e.g. proxy_url, use_emulator); for s3:// requester_pays, "
        "checksum_algorithm, network_stream_timeout_seconds",
    )
    group.add_argument(
        "--max-tries",
        type=_at_least(1),
        default=5,
        metavar="N",
        help="tries per request on cloud stores, the first included (default: %(default)s, "
        "so that an unreachable endpoint fails within seconds)",
    )
    return common


def build_parser() -> argparse.ArgumentParser:
    common = _common()
    parser = argparse.ArgumentParser(
        prog=PROG,
        description=textwrap.fill(
            "Check a storage endpoint (does it honour conditional writes?), look at what is "
            "there, and copy between stores: S3 and S3-compatible, GCS, Azure, the local "
            "filesystem, memory.",
            88,
        )
        + "\n\n"
        + URLS,
        formatter_class=_Help,
    )
    parser.add_argument("--version", action="version", version=f"{PROG} {_version()}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    def add(name: str, summary: str, description: str) -> argparse.ArgumentParser:
        return commands.add_parser(
            name,
            help=summary,
            description=f"{textwrap.fill(summary, 88)}\n\n{textwrap.dedent(description)}\n{URLS}",
            parents=[common],
            formatter_class=_Help,
        )

    check = add(
        "check",
        "Check that an endpoint reads, writes, lists and deletes, and honours conditional writes.",
        """\
        Works under a scratch prefix .icechunk-storage-check-<random>/ below URL, and
        removes it completely afterwards. Tests whole and ranged reads, head, writes,
        listing and deletes; whether a second create of one key is refused (conditional
        create) and whether an update at a stale version is refused (conditional update);
        and times every operation (latency percentiles). Prints the StorageSettings to use
        with the store, e.g. StorageSettings(unsafe_use_conditional_update=False) for one
        that ignores If-Match. Exit code 0 only if everything passed.
        """,
    )
    check.add_argument("url", metavar="URL")
    check.add_argument(
        "--rounds",
        type=_at_least(1),
        default=10,
        help="objects written, read, listed and deleted, for the latency percentiles "
        "(default: %(default)s)",
    )

    ls = add(
        "ls",
        "List objects and prefixes under a URL.",
        """\
        One level (prefixes end in /) unless -r. A URL that names an object lists it.
        """,
    )
    ls.add_argument("url", metavar="URL")
    ls.add_argument(
        "-l", "--long", action="store_true", help="size, last-modified time and version"
    )
    ls.add_argument(
        "-r", "--recursive", action="store_true", help="every object under the URL, at any depth"
    )

    cat = add(
        "cat",
        "Write an object's bytes to stdout.",
        """\
        A whole object is read in parts of 16 MiB (memory stays bounded), each checked to
        come from the same version. With --json: the bytes in base64, with size and version.
        """,
    )
    cat.add_argument("url", metavar="URL")
    cat.add_argument(
        "--range",
        metavar="RANGE",
        help="bytes as in HTTP, the end included: 0-99 (the first 100), 100- (from byte "
        "100), -100 (the last 100)",
    )

    stat = add(
        "stat",
        "Show an object's size, last-modified time, version, content type and metadata.",
        "",
    )
    stat.add_argument("url", metavar="URL")

    cp = add(
        "cp",
        "Copy one object, or every object under a prefix, between any two stores.",
        """\
        SRC names an object, or a prefix (everything under it is copied to the same
        relative keys under DST). An object copied to a DST ending in / (or to an existing
        directory, or a bucket root) keeps its name. Reads go through the chunk fetch path
        (get_many) in batches, with at most --buffer-mib of data in memory (an object
        larger than half of it is held whole). Shows a progress bar when stderr is a
        terminal. Every copy is verified: sizes always; the MD5 etags when both ends are
        S3 and the source's etag is the MD5 of the bytes; objects of 8 MiB or more are read
        back with head. Only the bytes are copied, not content type or user metadata.
        """,
    )
    cp.add_argument("src", metavar="SRC")
    cp.add_argument("dst", metavar="DST")
    cp.add_argument(
        "--if-absent",
        action="store_true",
        help="conditional create: an object already at the destination is kept and "
        "skipped (counted in the summary)",
    )
    cp.add_argument(
        "--concurrency",
        type=_at_least(1),
        default=16,
        help="requests at a time, per direction (default: %(default)s)",
    )
    cp.add_argument(
        "--buffer-mib",
        type=_at_least(2),
        default=256,
        help="at most this much data in memory: two batches of half of it (default: %(default)s)",
    )
    cp.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="a progress bar on stderr (default: when stderr is a terminal and not --json)",
    )
    cp.add_argument(
        "--verify-etag",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="compare MD5 etags between S3 stores (--no-verify-etag for a destination "
        "whose etags are not MD5s, such as SSE-KMS buckets)",
    )

    commands.add_parser(
        "demo",
        help="Write chunks to the local filesystem, read them back, show how fast "
        "(see demo --help).",
        add_help=False,
    )
    return parser


async def _run(args: argparse.Namespace) -> int:
    from ._check import check
    from ._cp import cp
    from ._inspect import cat, ls, stat

    commands: dict[str, Callable[[Context], Awaitable[int]]] = {
        "check": check,
        "ls": ls,
        "cat": cat,
        "stat": stat,
        "cp": cp,
    }
    context = Context(args)
    try:
        return await commands[args.command](context)
    finally:
        with contextlib.suppress(Exception):
            await context.aclose()


def _fail(message: str) -> None:
    text = " ".join(message.split())
    sys.stderr.write(f"{PROG}: error: {text}\n")


def main(argv: Sequence[str] | None = None) -> int:
    arguments = list(sys.argv[1:] if argv is None else argv)
    if arguments[:1] == ["demo"]:
        from .._demo import main as demo

        return demo(arguments[1:])
    parser = build_parser()
    args = parser.parse_args(arguments)
    if args.command is None:
        parser.print_help(sys.stderr)
        return 2
    try:
        return asyncio.run(_run(args))
    except ConfigurationError as exc:  # a bad URL, option or configuration: fix the command
        _fail(str(exc))
        return 2
    except StorageError as exc:
        _fail(str(exc))
        return 1
    except BrokenPipeError:  # stdout closed early (| head): not an error of ours
        with contextlib.suppress(OSError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except OSError as exc:
        _fail(f"{exc.strerror or exc}" + (f": {exc.filename}" if exc.filename else ""))
        return 1
    except KeyboardInterrupt:
        _fail("interrupted")
        return 130
    except Exception as exc:  # never a traceback; the type says where to look
        _fail(f"unexpected {type(exc).__name__}: {exc}")
        return 1

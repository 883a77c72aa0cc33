"""Redaction: no secret in a log record, from us or from the libraries we drive.

botocore logs the signed request (``Authorization``, ``X-Amz-Security-Token``) at DEBUG,
aiohttp and gcloud-aio log URLs and token responses, and servers echo request headers back in
error bodies. Two layers, both applied by :func:`redact`:

* the exact secret values this process holds (keys, session/SAS/bearer tokens, private
  keys), remembered when a provider's client is built and when a credential is refreshed;
* patterns for what a secret looks like wherever it comes from: the value after
  ``Authorization``, ``x-amz-security-token``, ``sig=``, ``Signature=``, ``access_token`` ...
  in headers, query strings, dict reprs and JSON, a ``Bearer``/``SharedKey`` value, and PEM
  private-key blocks.

:func:`install_log_redaction` (called by each provider's client setup, idempotent) wraps the
logging record factory, so every record from the loggers in :data:`REDACTED_LOGGERS` and
their children is redacted when it is created, before any handler or formatter sees it. A
filter on a logger would not do: it does not see records of child loggers
(``botocore.auth``). :class:`~._errors.StorageError` redacts its own message, so server text
in an exception is redacted too.
"""

from __future__ import annotations

import collections
import contextlib
import json
import logging
import re
import threading
import urllib.parse
from typing import Any

import attrs

__all__ = [
    "REDACTED",
    "REDACTED_LOGGERS",
    "install_log_redaction",
    "redact",
    "remember_secret",
    "remember_secrets_of",
    "scrub_exception",
]

REDACTED = "<redacted>"

REDACTED_LOGGERS = (
    "icechunk_storage",
    "botocore",
    "aiobotocore",
    "boto3",
    "s3transfer",
    "urllib3",
    "aiohttp",
    "azure",
    "gcloud",
    "google",
    "asyncio",
)
"""Loggers (and their children) whose records are redacted."""

_MIN_SECRET_LENGTH = 8  # shorter values would redact ordinary words
_MAX_REMEMBERED = 512  # refreshed credentials keep coming: remember the newest

_NAMES = (
    r"authorization|proxy-authorization|x-ms-copy-source-authorization|"
    r"x-amz-security-token|x-amz-signature|signature|sig|x-goog-signature|"
    r"access_token|refresh_token|id_token|client_secret|assertion|client_assertion|"
    r"private_key|secret_access_key|aws_secret_access_key|secretaccesskey|secret_key|"
    r"session_token|aws_session_token|sessiontoken|security_token|securitytoken|token|"
    r"accountkey|account_key|sharedaccesssignature|sas_token|password|passwd|"
    r"api_key|apikey|bearer"
)
# The name must not be the tail of a longer word ("ContinuationToken" keeps its value).
_NAME = rf"(?<![A-Za-z0-9_\-])(?:{_NAMES})"
# name, optional closing quote of a dict key, ':' or '=', optional b prefix, quoted value
_QUOTED = re.compile(
    rf"(?P<head>{_NAME}['\"]?\s*[:=]\s*b?)(?P<q>['\"])(?P<value>(?:\\.|(?!(?P=q)).)*)(?P=q)",
    re.IGNORECASE,
)
_UNQUOTED = re.compile(
    rf"(?P<head>{_NAME}\s*[:=]\s*)(?![\s'\"]|b['\"])(?P<value>[^\s'\"&,;<>)\]}}]+)",
    re.IGNORECASE,
)
_SCHEME = re.compile(
    r"(?P<head>\b(?:Bearer|SharedKey|SharedKeyLite|Basic)\s+)(?P<value>[A-Za-z0-9\-._~+/:=%]+)"
)
_PEM = re.compile(
    r"-----BEGIN [A-Z ]*PRIVATE KEY-----.*?(?:-----END [A-Z ]*PRIVATE KEY-----|$)", re.DOTALL
)

_lock = threading.Lock()
_secrets: collections.OrderedDict[str, None] = collections.OrderedDict()
_installed = False


def remember_secret(value: object) -> None:
    """Redact this exact value (and its URL-encoded form) wherever it appears from now on."""
    if not isinstance(value, str) or len(value) < _MIN_SECRET_LENGTH or value in _secrets:
        return  # already known: the common case, asked on every request of some paths
    forms = {value, urllib.parse.quote(value, safe=""), urllib.parse.quote_plus(value)}
    if value.lstrip().startswith("{"):  # a service-account JSON: its private key too
        try:
            document = json.loads(value)
        except ValueError:
            document = None
        if isinstance(document, dict):
            for name in ("private_key", "private_key_id", "client_secret", "refresh_token"):
                remember_secret(document.get(name))
    with _lock:
        for form in forms:
            _secrets[form] = None
            _secrets.move_to_end(form)
        while len(_secrets) > _MAX_REMEMBERED:
            _secrets.popitem(last=False)


def remember_secrets_of(credential: object) -> None:
    """Remember every masked field of a credential value (recursively): the fields whose
    ``repr`` is masked are exactly the secrets."""
    from ._credentials import _masked

    seen: set[int] = set()

    def walk(value: object) -> None:
        kind = type(value)
        if id(value) in seen or not attrs.has(kind):
            return
        seen.add(id(value))
        for field in attrs.fields(kind):
            item = getattr(value, field.name, None)
            if field.repr is _masked:
                remember_secret(item)
            else:
                walk(item)

    walk(credential)


def redact(text: str) -> str:
    """``text`` with every secret we know of, or that looks like one, replaced."""
    with _lock:
        secrets = [secret for secret in _secrets if secret in text]
    for secret in sorted(secrets, key=len, reverse=True):
        text = text.replace(secret, REDACTED)
    if "PRIVATE KEY" in text:
        text = _PEM.sub(REDACTED, text)
    text = _SCHEME.sub(lambda m: f"{m['head']}{REDACTED}", text)
    text = _QUOTED.sub(lambda m: f"{m['head']}{m['q']}{REDACTED}{m['q']}", text)
    return _UNQUOTED.sub(lambda m: f"{m['head']}{REDACTED}", text)


def _redact_value(value: object) -> object:
    return redact(value) if isinstance(value, str) else value


def scrub_exception(exc: BaseException) -> None:
    """Redact the messages of ``exc`` and of every exception chained to it, in place (SDK
    exceptions carry server text; a traceback prints every link of the chain)."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        with contextlib.suppress(AttributeError, TypeError):  # exotic exception types
            current.args = tuple(_redact_value(arg) for arg in current.args)
        for name in ("message", "msg", "reason"):
            value = getattr(current, name, None)
            if isinstance(value, str):
                with contextlib.suppress(AttributeError, TypeError):
                    setattr(current, name, redact(value))
        current = current.__cause__ or current.__context__


def _redact_record(record: logging.LogRecord) -> None:
    try:
        message = record.getMessage()
    except Exception:  # a broken format: leave it to logging to report
        return
    record.msg, record.args = redact(message), None
    if record.exc_info and record.exc_info[1] is not None:
        # Formatters print exc_text when set, even without exc_info; rendered here, redacted.
        text = logging.Formatter().formatException(record.exc_info)
        record.exc_text, record.exc_info = redact(text), None
    elif record.exc_text:
        record.exc_text = redact(record.exc_text)
    if record.stack_info:
        record.stack_info = redact(record.stack_info)


def _is_redacted_logger(name: str) -> bool:
    return any(name == root or name.startswith(root + ".") for root in REDACTED_LOGGERS)


def install_log_redaction(credential: object = None) -> None:
    """Redact records of :data:`REDACTED_LOGGERS` from now on (once per process), and
    remember the secrets of ``credential``. Each provider calls this when it builds a
    client."""
    global _installed
    if credential is not None:
        remember_secrets_of(credential)
    with _lock:
        if _installed:
            return
        _installed = True
        previous = logging.getLogRecordFactory()

        def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
            record = previous(*args, **kwargs)
            if _is_redacted_logger(record.name):
                _redact_record(record)
            return record

        logging.setLogRecordFactory(factory)

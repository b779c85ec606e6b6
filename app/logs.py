"""Log lines of ``meridian serve``: one line per event, as text or JSON, never a secret.

:func:`configure_logging` puts one handler on the root logger (stderr), with
:class:`Redactor` on it from the start; :func:`bind_node` adds the serving node's identity
(:class:`NodeContext`) and the cluster secret to mask once the settings are known. Filters sit
on the handler, not on loggers, so they see every record, uvicorn's and the websockets
library's included (a logger's own filters skip records propagated from its children).

A JSON line::

    {"time": "2025-01-01T12:00:00.123Z", "level": "INFO", "logger": "meridian.peer",
     "message": "link to us-east-1 up (protocol 1)", "node": "eu-west-1", "region": "eu-west",
     "peer": "us-east-1"}

``peer`` and ``doc`` appear when the call passes them: ``log.info(..., extra={"peer": id})``.
"""

from __future__ import annotations

import json
import logging
import re
import sys
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any, Literal, TextIO

__all__ = [
    "LOG_FORMATS",
    "JsonFormatter",
    "NodeContext",
    "Redactor",
    "TextFormatter",
    "bind_node",
    "configure_logging",
]

LogFormat = Literal["text", "json"]
LOG_FORMATS: tuple[LogFormat, ...] = ("text", "json")

#: Fields a log call may pass with ``extra=``, shown after the message (text) or as keys (JSON).
_CONTEXT_FIELDS = ("peer", "doc")

_MASK = "[redacted]"
#: A Meridian access token (app.auth): ``mrd1.<payload>.<signature>``.
_TOKEN = re.compile(r"mrd1\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+")
#: The value of a ``token`` query parameter, whatever it holds (uvicorn logs WebSocket paths
#: with their query strings).
_TOKEN_PARAMETER = re.compile(r"([?&]token=)[^&\s\"']*")


class Redactor(logging.Filter):
    """Masks access tokens, ``token=`` query values and the given secrets in every record:
    its message (arguments included), and its traceback and stack text. Always lets the
    record through."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        super().__init__()
        # Longest first, so a secret containing another is masked whole.
        self.secrets = sorted({s for s in secrets if s}, key=len, reverse=True)

    def add_secret(self, secret: str) -> None:
        if secret and secret not in self.secrets:
            self.secrets = sorted([*self.secrets, secret], key=len, reverse=True)

    def redact(self, text: str) -> str:
        for secret in self.secrets:
            text = text.replace(secret, _MASK)
        text = _TOKEN.sub(_MASK, text)
        return _TOKEN_PARAMETER.sub(rf"\g<1>{_MASK}", text)

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a malformed call: keep its parts, masked, rather than lose it
            message = f"{record.msg!r} % {record.args!r}"
        record.msg = self.redact(message)
        record.args = None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = self.redact(record.exc_text)
        if record.stack_info:
            record.stack_info = self.redact(record.stack_info)
        for name in _CONTEXT_FIELDS:
            value = getattr(record, name, None)
            if isinstance(value, str):
                setattr(record, name, self.redact(value))
        return True


class NodeContext(logging.Filter):
    """Stamps every record with the serving node's id and region (``record.node``,
    ``record.region``)."""

    def __init__(self, node: str, region: str) -> None:
        super().__init__()
        self.node = node
        self.region = region

    def filter(self, record: logging.LogRecord) -> bool:
        record.node = self.node
        record.region = self.region
        return True


class TextFormatter(logging.Formatter):
    """``<time> <LEVEL> <logger> <message>``, then ``peer=`` / ``doc=`` when the call passed
    them."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s %(message)s")

    def formatMessage(self, record: logging.LogRecord) -> str:
        line = super().formatMessage(record)
        context = " ".join(
            f"{name}={value}"
            for name in _CONTEXT_FIELDS
            if (value := getattr(record, name, None)) is not None
        )
        return f"{line} {context}" if context else line


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ``time`` (UTC, ISO 8601), ``level``, ``logger``,
    ``message``, ``node``, ``region``, then ``peer``, ``doc`` and ``exception`` when
    present. Newlines inside values are escaped, so an event is always one line."""

    def format(self, record: logging.LogRecord) -> str:
        created = datetime.fromtimestamp(record.created, UTC)
        line: dict[str, Any] = {
            "time": created.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "node": getattr(record, "node", None),
            "region": getattr(record, "region", None),
        }
        for name in _CONTEXT_FIELDS:
            value = getattr(record, name, None)
            if value is not None:
                line[name] = value
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            line["exception"] = record.exc_text
        if record.stack_info:
            line["stack"] = record.stack_info
        return json.dumps(line, ensure_ascii=False, default=str)


def configure_logging(
    level: str, log_format: LogFormat = "text", stream: TextIO | None = None
) -> logging.Handler:
    """Replaces the root logger's handlers with one writing to ``stream`` (stderr) in
    ``log_format``, with a :class:`Redactor`; returns that handler."""
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(JsonFormatter() if log_format == "json" else TextFormatter())
    handler.addFilter(Redactor())
    root = logging.getLogger()
    for old in root.handlers[:]:
        root.removeHandler(old)
        old.close()
    root.addHandler(handler)
    root.setLevel(level.upper())
    return handler


def bind_node(node: str, region: str, secrets: Iterable[str] = ()) -> None:
    """Adds ``node`` and ``region`` to every record the root logger's handlers write, and
    masks ``secrets`` in them (the cluster secret). Call once the node's settings are known,
    after :func:`configure_logging`."""
    for handler in logging.getLogger().handlers:
        redactors = [f for f in handler.filters if isinstance(f, Redactor)]
        if not redactors:
            redactors = [Redactor()]
            handler.addFilter(redactors[0])
        for secret in secrets:
            redactors[0].add_secret(secret)
        for old in [f for f in handler.filters if isinstance(f, NodeContext)]:
            handler.removeFilter(old)
        handler.addFilter(NodeContext(node, region))

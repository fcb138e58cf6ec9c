"""What the logs may hold, and how they are written.

Never a visitor's address, an e-mail, an API key or a bearer token, whatever logs it
(popin, uvicorn, a library's exception): uvicorn names the client of every WebSocket
handshake ('1.2.3.4:5678 - "WebSocket /ws" [accepted]'), and that client is replaced
before any handler sees the line; then every line, traceback included, is scrubbed as it
is written (`scrub`). The server's own addresses (loopback, "any") are kept: they say
where it listens, not who called.

`popin serve --log-format text` (the default) writes "LEVEL logger: message";
`--log-format json` one JSON object per line: time (UTC, ISO 8601), level, logger,
message, the record's structured fields (`extra=`), the process id, and the exception's
traceback as one string. uvicorn's own lines go through the same handler."""

from __future__ import annotations

import logging
import re
import sys
from datetime import UTC, datetime
from ipaddress import ip_address
from typing import Any

import orjson

SCRUBBED_LOGGERS = ("uvicorn.error", "uvicorn.access")
# The shape of uvicorn's lines that start with the client's address.
CLIENT_FIRST = '%s - "'
LOG_FORMATS = ("text", "json")
TEXT_FORMAT = "%(levelname)s %(name)s: %(message)s"
# Where the server itself listens: not anyone's address.
OWN_ADDRESSES = frozenset({"127.0.0.1", "0.0.0.0", "::1", "::"})

_CREDENTIALS = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)[^/@\s]+@")
_BEARER = re.compile(r"(?i)\b(bearer)\s+[^\s\"',]+")
_KEY = re.compile(r"\bpk_[A-Za-z0-9_-]+")
_EMAIL = re.compile(r"[\w.%+-]+@[\w-]+(?:\.[\w-]+)+")
# Candidates only: each is checked as an address before it is replaced (not a version
# number or a clock time).
_IPV4 = re.compile(r"(?<![\w.])(?:\d{1,3}\.){3}\d{1,3}(?![\w.])")
_IPV6 = re.compile(r"(?<![\w:.])(?:[0-9A-Fa-f]{0,4}:){2,7}(?:[0-9A-Fa-f]{1,4}|"
                   r"(?:\d{1,3}\.){3}\d{1,3})?(?![\w:])")
# A LogRecord's own attributes: the others were given with `extra=` and are its fields.
_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message", "asctime", "color_message", "taskName"}


def _address(found: re.Match[str]) -> str:
    text = found.group(0)
    try:
        address = ip_address(text)
    except ValueError:
        return text
    return text if str(address) in OWN_ADDRESSES else "[address]"


def scrub(text: str) -> str:
    """`text` without addresses, e-mails, API keys, bearer tokens or URL credentials."""
    text = _CREDENTIALS.sub(r"\1[credentials]@", text)
    text = _BEARER.sub(r"\1 [token]", text)
    text = _KEY.sub("pk_[key]", text)
    text = _EMAIL.sub("[e-mail]", text)
    text = _IPV4.sub(_address, text)
    return _IPV6.sub(_address, text)


class NoClientAddresses(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str) and record.msg.startswith(CLIENT_FIRST) and (
                isinstance(record.args, tuple) and record.args):
            record.args = ("[client]", *record.args[1:])
        return True


def scrub_client_addresses() -> None:
    """Attach the filter once; uvicorn configures its loggers before the app starts."""
    for name in SCRUBBED_LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(found, NoClientAddresses) for found in logger.filters):
            logger.addFilter(NoClientAddresses())


class TextLines(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return scrub(super().format(record))


class JsonLines(logging.Formatter):
    """One JSON object per record, on one line."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(
                timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname.lower(), "logger": record.name,
            "message": scrub(record.getMessage()), "pid": record.process}
        for name, value in vars(record).items():
            if name not in _STANDARD and name not in line:
                line[name] = _scrubbed(value)
        if record.exc_info:
            line["exception"] = scrub(self.formatException(record.exc_info))
        if record.stack_info:
            line["stack"] = scrub(self.formatStack(record.stack_info))
        return orjson.dumps(line, default=lambda value: scrub(str(value))).decode()


def _scrubbed(value: Any) -> Any:
    if isinstance(value, str):
        return scrub(value)
    if isinstance(value, dict):
        return {str(key): _scrubbed(item) for key, item in value.items()}
    if isinstance(value, list | tuple | set):
        return [_scrubbed(item) for item in value]
    return value


def configure_logging(level: str, log_format: str = "text") -> None:
    """One handler on the root logger, for popin's lines and uvicorn's (which is started
    with log_config=None, so that it adds none of its own)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonLines() if log_format == "json" else TextLines(TEXT_FORMAT))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    # uvicorn's loggers otherwise stop at their own level, set from --log-level too.
    for name in ("uvicorn", "uvicorn.error"):
        logging.getLogger(name).handlers = []
        logging.getLogger(name).propagate = True

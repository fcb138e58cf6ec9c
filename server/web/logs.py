"""What the logs may hold: never a visitor's address. uvicorn names the client of every
WebSocket handshake ('1.2.3.4:5678 - "WebSocket /ws" [accepted]') and of every access
line; its access log is off, and the client in these lines is replaced before any
handler sees them. Other lines (the server's own address at start, a store's host) are
left as they are."""

from __future__ import annotations

import logging

SCRUBBED_LOGGERS = ("uvicorn.error", "uvicorn.access")
# The shape of uvicorn's lines that start with the client's address.
CLIENT_FIRST = '%s - "'


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

"""What the logs may hold: never a visitor's address. uvicorn names the client of every
WebSocket handshake ("1.2.3.4:5678 - "WebSocket /ws" [accepted]"); its access log is off,
and these lines are scrubbed before any handler sees them."""

from __future__ import annotations

import logging
import re

# IPv4; IPv6 written in full (seven colons) or shortened ("::"), bracketed or not.
_ADDRESS = re.compile(r"\b\d{1,3}(?:\.\d{1,3}){3}(?::\d+)?\b"
                      r"|\[?(?:[0-9a-fA-F]{1,4}:){7}[0-9a-fA-F]{1,4}\]?(?::\d+)?"
                      r"|\[?[0-9a-fA-F:]*::[0-9a-fA-F:]*\]?(?::\d+)?")
SCRUBBED_LOGGERS = ("uvicorn.error", "uvicorn.access", "uvicorn")


class NoClientAddresses(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        scrubbed = _ADDRESS.sub("[client]", message)
        if scrubbed != message:
            record.msg, record.args = scrubbed, ()
        return True


def scrub_client_addresses() -> None:
    """Attach the filter once; uvicorn configures its loggers before the app starts."""
    for name in SCRUBBED_LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(found, NoClientAddresses) for found in logger.filters):
            logger.addFilter(NoClientAddresses())

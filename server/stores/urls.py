"""Store URLs as they may be printed or logged: a Redis password given in the URL
(redis://:password@host) is the store's key, and the store's URL is said at start-up, in
the refusals of `serve` and in the warnings of `rules check`."""

from __future__ import annotations

import re

# scheme://[user]:password@hosts: the user is kept, the password up to the "@" is not.
_PASSWORD = re.compile(r"^([a-z][a-z0-9+.-]*://[^/?#@:]*):[^/?#]*@", re.IGNORECASE)


def without_password(url: str) -> str:
    return _PASSWORD.sub(r"\1:[password]@", url)

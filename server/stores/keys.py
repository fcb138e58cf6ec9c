"""Per-site API keys for the site's backend: shown once, stored only as a SHA-256 digest.

The tokens are 32 random bytes, so a plain SHA-256 is the right digest: unlike a
password there is nothing to guess, and each request needs only one lookup.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass, replace
from typing import Any

# events: post events and identify; profiles: read and erase a visitor;
# export: download audiences (ad platforms get only this one).
SCOPES = ("events", "profiles", "export")
TOKEN_PREFIX = "pk_"


@dataclass(frozen=True, slots=True)
class ApiKey:
    id: str
    site: str
    digest: str
    scopes: tuple[str, ...]
    label: str = ""
    created: float = 0.0
    revoked: float | None = None

    def revoke(self, now: float) -> ApiKey:
        return replace(self, revoked=now)

    def allows(self, scope: str) -> bool:
        return self.revoked is None and scope in self.scopes

    def public(self) -> dict[str, Any]:
        """What may be shown: never the digest."""
        return {"id": self.id, "site": self.site, "scopes": list(self.scopes),
                "label": self.label, "created": self.created, "revoked": self.revoked}

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> ApiKey:
        return cls(**{**raw, "scopes": tuple(raw["scopes"])})


def digest_of(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def new_key(site: str, scopes: tuple[str, ...], label: str, now: float) -> tuple[str, ApiKey]:
    """A fresh token (to show once) and the record to store."""
    unknown = [scope for scope in scopes if scope not in SCOPES]
    if unknown or not scopes:
        raise ValueError(f"scopes must be among {', '.join(SCOPES)}, not {scopes!r}")
    body = secrets.token_urlsafe(32)
    while not body[0].isalnum():
        # The key's id is the token's start: one starting with '-' would read as an option
        # on the command line (`popin keys revoke -x...`).
        body = secrets.token_urlsafe(32)
    token = TOKEN_PREFIX + body
    return token, ApiKey(token[3:13], site, digest_of(token), scopes, label, now)

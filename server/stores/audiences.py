"""Retargeting audiences: who is in which, since when, until when, and what changed.

A rule's `tag` action puts a visitor into a named audience of the site for some days;
each qualifying event pushes the end further, and a membership that reaches its end
leaves by itself. Ad platforms take these lists as exports, whole or incremental.

Every join and leave of a member gets the audience's next sequence number, and the
member's row keeps the numbers of its recent changes (joins and leaves alternate).
Whether someone was a member at sequence S is then their state now, flipped once per
change after S: so the delta between two cursors is exact, for any two cursors, with
no log to replay. Changes are kept for RETENTION_SECONDS; an older cursor is refused
and the consumer takes a full export instead.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import secrets
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Literal

import orjson

from ..core.visitor.profile import Profile

DAY = 86400.0
# A nightly (or weekly) sync resumes well within this; older cursors need a full export.
RETENTION_SECONDS = 30 * DAY
# Keys of a member's `ids`: hashed contacts in each platform's normal form, and the
# site's own user id.
ID_KEYS = ("user_id", "email", "email_google", "phone", "phone_digits", "fn")

Change = Literal["joined", "left"]


class CursorError(ValueError):
    pass


class CursorExpired(CursorError):
    pass


@dataclass(slots=True)
class Member:
    visitor: str
    joined: float
    expires: float
    # When the membership ended (expired, consent withdrawn, erased); 0.0 while it lasts.
    ended: float = 0.0
    last_seq: int = 0
    # When the last join or leave was recorded.
    changed: float = 0.0
    # (sequence number, when it was recorded) of each recent join and leave, oldest first.
    changes: list[tuple[int, float]] = field(default_factory=list)
    ids: dict[str, str] = field(default_factory=dict)

    def member_at(self, seq: int) -> bool:
        """Was this visitor a member once change number `seq` had been made?"""
        flips = sum(1 for number, _at in self.changes if number > seq)
        return (self.ended == 0.0) != (flips % 2 == 1)

    def change_between(self, since: int, until: int) -> Change | None:
        before, after = self.member_at(since), self.member_at(until)
        if before == after:
            return None
        return "joined" if after else "left"

    def record(self, seq: int, now: float) -> int:
        """Add a change; forget those past retention. The highest number forgotten."""
        cutoff = now - RETENTION_SECONDS
        forgotten = max((number for number, at in self.changes if at < cutoff), default=0)
        self.changes = [(number, at) for number, at in self.changes if at >= cutoff]
        self.changes.append((seq, now))
        self.last_seq = seq
        self.changed = now
        return forgotten

    def to_json(self) -> bytes:
        return orjson.dumps(self)

    @classmethod
    def from_json(cls, data: bytes | str) -> Member:
        raw = orjson.loads(data)
        # Redis's Lua JSON writes an empty list as {}.
        changes = [(int(seq), float(at)) for seq, at in (raw.pop("changes") or [])]
        return cls(**raw, changes=changes)


@dataclass(frozen=True, slots=True)
class Tagging:
    """One qualifying event: `visitor` is in `audience` until `until` at least."""

    visitor: str
    audience: str
    until: float
    ids: dict[str, str]


@dataclass(frozen=True, slots=True)
class AudienceInfo:
    name: str
    size: int
    # The last change's number.
    seq: int = 0
    # The highest change number forgotten (retention): cursors below it are refused.
    floor: int = 0


@dataclass(frozen=True, slots=True)
class Cursor:
    """Where an incremental export resumes: a position in the audience's changes, opaque
    to consumers; the same position always reads the same."""

    audience: str
    seq: int

    def encode(self) -> str:
        raw = orjson.dumps([1, self.audience, self.seq])
        return base64.urlsafe_b64encode(raw).decode().rstrip("=")

    @classmethod
    def decode(cls, text: str, info: AudienceInfo) -> Cursor:
        """Check it against the audience as it is now."""
        try:
            raw = orjson.loads(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)))
            version, name, seq = raw
            cursor = cls(str(name), int(seq))
        except (binascii.Error, orjson.JSONDecodeError, ValueError, TypeError):
            raise CursorError("not a cursor given by an earlier export") from None
        if version != 1 or not 0 <= cursor.seq <= info.seq:
            raise CursorError("not a cursor given by an earlier export")
        if cursor.audience != info.name:
            raise CursorError(f"this cursor belongs to the audience {cursor.audience!r}")
        if cursor.seq < info.floor:
            raise CursorExpired("changes since this cursor were kept for "
                                f"{RETENTION_SECONDS / DAY:.0f} days and are gone: take a "
                                "full export")
        return cursor


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def meta_name(name: str) -> str:
    """Meta's normal form for names: lower case, letters only (accents kept, UTF-8)."""
    return "".join(char for char in name.lower() if char.isalpha())


def identifiers(profile: Profile) -> dict[str, str]:
    """What an export may say about a member: hashed contacts and the site's user id."""
    name = meta_name(profile.first_name)
    ids = {"user_id": profile.user_id, "email": profile.email_sha256,
           "email_google": profile.email_google_sha256, "phone": profile.phone_sha256,
           "phone_digits": profile.phone_digits_sha256, "fn": sha256(name) if name else ""}
    return {key: value for key, value in ids.items() if value}


def utc_day(moment: float) -> str:
    """Audience sizes are kept per UTC day: every process of every site agrees on it."""
    return datetime.fromtimestamp(moment, UTC).date().isoformat()


def erased_id() -> str:
    """Stands for an erased member until the platforms were told: leads to nobody."""
    return f"erased-{secrets.token_hex(8)}"


"""Audience exports that ad platforms take as they are, streamed page by page so that
memory stays flat whatever the audience's size.

    csv     generic: visitor_id, user_id, joined, expires, email_sha256, phone_sha256
    jsonl   the same, one JSON object per line
    meta    Meta Custom Audiences customer file: email, phone, fn, extern_id (hashed as
            Meta asks: e-mail trimmed and lower case, phone digits with country code and
            no "+", first name lower case letters only)
    google  Google Ads Customer Match: Email, Phone (hashed as Google asks: e-mail trimmed
            and lower case without the dots of a Gmail local part, phone in E.164)
    ids     first-party visitor ids, one per line, for the site's own pixel or sync

A full export lists the current members. An incremental one (`since` a cursor from an
earlier export) lists who joined and who left in between; csv and jsonl say which in a
`change` column, the platform files take `change=joined` (an upload) or `change=left`
(a removal). Every export gives the cursor to resume from.
"""

from __future__ import annotations

import csv
import functools
import io
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import date, timedelta

import orjson

from ..stores.audiences import AudienceInfo, Change, Cursor, CursorError, CursorExpired, Member
from ..stores.contract import Store

PAGE = 2000
# Lines are sent in chunks of about this size: few writes, little memory.
CHUNK_BYTES = 64 * 1024
EPOCH = date(1970, 1, 1)
GENERIC_FIELDS = ("visitor_id", "user_id", "joined", "expires", "email_sha256", "phone_sha256")


class ExportError(ValueError):
    def __init__(self, field: str, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.field = field
        # 410 Gone: the cursor is too old, a full export is the way back.
        self.status = status


Row = tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Format:
    media_type: str
    extension: str
    # How rows are written: "csv" (with a header), "jsonl" (objects) or "lines".
    kind: str
    # Column names, given whether the export is a delta.
    columns: Callable[[bool], Row]
    # One member and its change (None in a full export) -> its values, or None to leave
    # the member out (nothing the platform could match).
    row: Callable[[Member, Change | None], Row | None]
    # Platform files are add lists or remove lists, never both.
    needs_change: bool


@functools.lru_cache(maxsize=4096)
def _date(days: int) -> str:
    return (EPOCH + timedelta(days=days)).isoformat()


def _iso(moment: float) -> str:
    """ISO 8601 in UTC, to the second; strftime costs four times as much."""
    if not moment:
        return ""
    days, second = divmod(int(moment), 86400)
    return f"{_date(days)}T{second // 3600:02d}:{second // 60 % 60:02d}:{second % 60:02d}Z"


def _generic_columns(delta: bool) -> Row:
    return ("change", *GENERIC_FIELDS) if delta else GENERIC_FIELDS


def _generic(member: Member, change: Change | None) -> Row:
    ids = member.ids
    values = (member.visitor, ids.get("user_id", ""), _iso(member.joined),
              _iso(member.ended or member.expires), ids.get("email", ""), ids.get("phone", ""))
    return values if change is None else (change, *values)


def _meta(member: Member, _change: Change | None) -> Row | None:
    ids = member.ids
    values = (ids.get("email", ""), ids.get("phone_digits", ""), ids.get("fn", ""),
              ids.get("user_id", ""))
    # A first name alone matches nobody.
    return values if values[0] or values[1] or values[3] else None


def _google(member: Member, _change: Change | None) -> Row | None:
    values = (member.ids.get("email_google", ""), member.ids.get("phone", ""))
    return values if values[0] or values[1] else None


FORMATS: dict[str, Format] = {
    "csv": Format("text/csv; charset=utf-8", "csv", "csv", _generic_columns, _generic, False),
    "jsonl": Format("application/x-ndjson", "jsonl", "jsonl", _generic_columns, _generic,
                    False),
    "meta": Format("text/csv; charset=utf-8", "csv", "csv",
                   lambda _delta: ("email", "phone", "fn", "extern_id"), _meta, True),
    "google": Format("text/csv; charset=utf-8", "csv", "csv",
                     lambda _delta: ("Email", "Phone"), _google, True),
    "ids": Format("text/plain; charset=utf-8", "txt", "lines", lambda _delta: ("visitor_id",),
                  lambda member, _change: (member.visitor,), True),
}


@dataclass(frozen=True, slots=True)
class Export:
    media_type: str
    filename: str
    # Give it back as `since` to get only what changes from now on.
    cursor: str
    body: AsyncIterator[bytes]


async def start_export(store: Store, site: str, audience: str, format_name: str, now: float,
                       since: str = "", until: str = "", change: str = "") -> Export:
    """Check the request, bring expiries up to date, fix the cursor; the body streams."""
    fmt = FORMATS.get(format_name)
    if fmt is None:
        raise ExportError("format", f"'format' is one of {', '.join(FORMATS)}")
    if change not in ("", "joined", "left"):
        raise ExportError("change", "'change' is joined or left")
    if change and not since:
        raise ExportError("change", "'change' goes with 'since' (an incremental export)")
    if fmt.needs_change and since and not change:
        raise ExportError("change", f"a {format_name} delta is an upload or a removal: "
                          "give change=joined or change=left")
    # Memberships whose time is up leave now, so the export and its cursor agree.
    while await store.audience_expire(site, now):
        pass
    info = next((info for info in await store.audience_list(site) if info.name == audience),
                AudienceInfo(audience, 0))
    start = _cursor(since, info, "since") if since else None
    end = _cursor(until, info, "until") if until else Cursor(audience, info.seq)
    if start is not None and start.seq > end.seq:
        raise ExportError("until", "'until' comes before 'since'")
    filename = f"{audience}-{format_name}{'-' + change if change else ''}.{fmt.extension}"
    rows = (_delta(store, site, audience, start.seq, end.seq, change) if start is not None
            else _members(store, site, audience, now))
    return Export(fmt.media_type, filename, end.encode(),
                  _chunks(fmt, rows, delta=start is not None))


def _cursor(text: str, info: AudienceInfo, field: str) -> Cursor:
    try:
        return Cursor.decode(text, info)
    except CursorExpired as error:
        raise ExportError(field, str(error), 410) from error
    except CursorError as error:
        raise ExportError(field, str(error)) from error


async def _members(store: Store, site: str, audience: str,
                   now: float) -> AsyncIterator[tuple[Member, Change | None]]:
    after = ""
    while page := await store.audience_members(site, audience, after, PAGE):
        for member in page:
            if member.expires > now:
                yield member, None
        after = page[-1].visitor


async def _delta(store: Store, site: str, audience: str, since: int, until: int,
                 wanted: str) -> AsyncIterator[tuple[Member, Change | None]]:
    after = since
    while page := await store.audience_changed(site, audience, after, PAGE):
        for member in page:
            change = member.change_between(since, until)
            if change is not None and wanted in ("", change):
                yield member, change
        after = page[-1].last_seq


async def _chunks(fmt: Format, rows: AsyncIterator[tuple[Member, Change | None]],
                  delta: bool) -> AsyncIterator[bytes]:
    buffer = io.StringIO()
    columns = fmt.columns(delta)
    write = _writer(fmt.kind, buffer, columns)
    if fmt.kind == "csv":
        write(columns)
    async for member, change in rows:
        values = fmt.row(member, change)
        if values is None:
            continue
        write(values)
        if buffer.tell() >= CHUNK_BYTES:
            yield buffer.getvalue().encode()
            buffer.seek(0)
            buffer.truncate()
    if buffer.tell():
        yield buffer.getvalue().encode()


def _writer(kind: str, buffer: io.StringIO, columns: Row) -> Callable[[Row], object]:
    if kind == "csv":
        return csv.writer(buffer, lineterminator="\n").writerow
    if kind == "jsonl":
        return lambda values: buffer.write(orjson.dumps(dict(zip(columns, values, strict=True)))
                                           .decode() + "\n")
    return lambda values: buffer.write(values[0] + "\n")

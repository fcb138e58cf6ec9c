"""What every change the editor makes goes through: a form read within limits and with
its session's token, the campaign file opened afresh, and a save that is checked as
`popin rules check` checks, written in one step, kept in the history and reloaded."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any
from urllib.parse import quote

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap
from ruamel.yaml.error import YAMLError
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response

from ...core.site import Site
from ...live.guard import guard_all
from ...live.hub import Hub
from ...live.reload import reload_rules
from ...stores.pauses import PAUSED, Pause, load_pauses, save_pauses
from . import drafts, history
from .auth import csrf_ok
from .fields import BY_NAME, MAX_VALUE
from .locks import Busy, SaveLocks
from .pages import render

# A campaign's form is a few kilobytes; anything far larger is not one.
MAX_FORM_BYTES = 256 * 1024
MAX_FORM_FIELDS = 200
MAX_AUTHOR = 80


class Refused(Exception):
    def __init__(self, code: int, field: str, message: str) -> None:
        super().__init__(message)
        self.code, self.field, self.message = code, field, message


def refusal(request: Request, refused: Refused, json: bool = False) -> Response:
    if json:
        return JSONResponse({"error": {"field": refused.field, "message": refused.message}},
                            refused.code)
    return render(request, "message.html", refused.code, title="Not saved",
                  message=refused.message)


async def submitted(request: Request) -> dict[str, str]:
    """The form's fields, each within its size, sent with the session's form token."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_FORM_BYTES:
        raise Refused(413, "", f"the form is {int(declared) // 1024} KB; expected at most "
                      f"{MAX_FORM_BYTES // 1024} KB")
    form = await request.form(max_files=0, max_fields=MAX_FORM_FIELDS)
    found: dict[str, str] = {}
    for key, value in form.multi_items():
        if not isinstance(value, str):
            raise Refused(400, key, f"{key!r} is a file; expected text")
        limit = MAX_AUTHOR if key == "author" else MAX_VALUE
        if len(value) > limit:
            label = BY_NAME[key].label if key in BY_NAME else key
            raise Refused(413, key, f"{label!r} ({key}) is {len(value)} characters long; "
                          f"expected at most {limit}")
        found[key] = value
    if len(found) > MAX_FORM_FIELDS:
        raise Refused(413, "", f"the form has {len(found)} fields; expected at most "
                      f"{MAX_FORM_FIELDS}")
    if not csrf_ok(request, found.get("csrf")):
        raise Refused(403, "csrf", "The form expired (its token does not match your session); "
                      "go back, reload the page and try again.")
    return found


@asynccontextmanager
async def turn(request: Request, hub: Hub, site: Site) -> AsyncIterator[None]:
    """Held from reading a campaign file to writing it: see locks.py."""
    locks: SaveLocks = request.app.state.editor_locks
    try:
        async with locks.turn(hub.store, site.key, request.app.state.rule_folders[site.key]):
            yield
    except Busy as busy:
        raise Refused(503, "", str(busy)) from None


Change = Callable[[Request, Hub, Site, dict[str, str]], Awaitable[Response]]


async def in_turn(request: Request, hub: Hub, site: Site, change: Change) -> Response:
    """Every form that changes a site's campaign files: the form read and checked
    (session token, sizes), then `change` in the site's turn; a refusal is a page."""
    try:
        form = await submitted(request)
        async with turn(request, hub, site):
            return await change(request, hub, site, form)
    except Refused as refused:
        return refusal(request, refused)


@dataclass(slots=True)
class Opened:
    rule_id: str
    path: Path
    text: str
    version: str
    yaml: YAML
    document: CommentedMap
    node: CommentedMap


def opened(request: Request, hub: Hub, site: Site, rule_id: str) -> Opened:
    """One of this site's campaigns, read from its file as it is now."""
    rule = hub.rules_of(site.key).by_id.get(rule_id)
    folder: Path = request.app.state.rule_folders[site.key]
    if rule is None or (not drafts.within(folder, Path(rule.file)) and not Path(
            rule.file).is_symlink()):
        raise Refused(404, "rule", f"this site has no campaign {rule_id!r} in force")
    path = Path(rule.file)
    why = drafts.linked(folder, path)
    if why:
        raise Refused(409, "rule", f"{rule_id!r} cannot be changed here: {why}")
    try:
        text = path.read_text(encoding="utf-8")
        yaml = drafts.loader(text)
        document = drafts.load(yaml, text)
    except (OSError, YAMLError, ValueError) as error:
        raise Refused(409, "", f"{path.name} cannot be read now ({error})") from None
    node = drafts.find(document, rule_id)
    if node is None:
        raise Refused(409, "", f"{path.name} no longer holds {rule_id!r}: it was changed "
                      "since; open the campaign again")
    return Opened(rule_id, path, text, drafts.version_of(text), yaml, document, node)


@dataclass(frozen=True, slots=True)
class Saved:
    site: Site
    query: str

    def redirect(self, target: str) -> Response:
        return RedirectResponse(f"{target}{self.query}", status_code=303)


def relative(request: Request, site: Site, path: Path) -> str:
    folder: Path = request.app.state.rule_folders[site.key]
    base = folder if folder.is_dir() else folder.parent
    return str(path.resolve().relative_to(base.resolve()))


async def save(request: Request, hub: Hub, site: Site, path: Path, before: str, yaml: YAML,
               document: Any, rule_id: str, author: str, note: str,
               text: str | None = None, was: str = "",
               pause: bool = False) -> Saved | dict[str, list[str]]:
    """Check, write, keep in the history, reload; or the errors, by form field. Called
    within the site's `turn`, from the reading of `before` on. `was` is the campaign's id
    before this change (a rename); `pause` starts it paused by the owner."""
    folder: Path = request.app.state.rule_folders[site.key]
    after = drafts.dump(yaml, document) if text is None else text
    errors: dict[str, list[str]] = {}
    # Off the event loop: it copies and parses the site's whole folder.
    checked = await asyncio.to_thread(drafts.check, folder, path, after,
                                      request.app.state.allow_http_hosts)
    for error in checked.errors:
        field = drafts.field_of(after, rule_id, error) if error.line else ""
        errors.setdefault(field, []).append(f"line {error.line}: {error.reason}"
                                            if error.line else error.reason)
    if errors:
        return errors
    query = f"?site={quote(site.key)}" if request.query_params.get("site") else ""
    if after != before:
        kept = await _keep_paused(hub, site, checked.fingerprints, rule_id, was or rule_id,
                                  pause)
        # No await from here to the reload: no guard of this process sees the new file
        # before the pauses that name its new version.
        drafts.write(path, after)
        reload_rules(hub, request.app.state.rule_folders, request.app.state.geo_available,
                 allow_http_hosts=request.app.state.allow_http_hosts)
        hub.paused_for(site.key).update(kept)
        await history.record(hub.store, site.key, relative(request, site, path), before,
                             history.Version(hub.clock(), author.strip() or "the owner",
                                             after, note))
        await guard_all(hub)
    return Saved(site, query)


async def _keep_paused(hub: Hub, site: Site, fingerprints: dict[str, str], rule_id: str,
                       was: str, pause: bool) -> set[str]:
    """The owner's pauses follow their campaigns through a save (to the new version, to
    the new name); the guard's own pauses do not: a changed campaign is a new one to judge
    (see live/guard.py). Returns the campaigns that stay paused."""
    pauses = await load_pauses(hub.store, site.key)
    kept: set[str] = set()
    for current, fingerprint in fingerprints.items():
        before = was if current == rule_id else current
        found = pauses.get(before)
        if found is not None and found.state == PAUSED and found.by == "owner":
            pauses.pop(before)
            pauses[current] = replace(found, rule=current, fingerprint=fingerprint)
            kept.add(current)
    if pause and rule_id in fingerprints:
        pauses[rule_id] = Pause(rule_id, PAUSED, hub.clock(), fingerprints[rule_id], by="owner")
        kept.add(rule_id)
    if kept:
        await save_pauses(hub.store, site.key, pauses)
    return kept


async def reload(request: Request, hub: Hub) -> None:
    """As for a change to the file: the folder reloads, and the campaign guard looks again
    (a changed campaign that was paused runs again)."""
    reload_rules(hub, request.app.state.rule_folders, request.app.state.geo_available,
                 allow_http_hosts=request.app.state.allow_http_hosts)
    await guard_all(hub)

"""What the owner does to a whole campaign besides editing it: duplicate, pause,
read its history and restore an earlier version; and the editor's own files."""

from __future__ import annotations

import copy
import re
from functools import cache
from pathlib import Path
from urllib.parse import quote

from starlette.requests import Request
from starlette.responses import FileResponse, RedirectResponse, Response
from starlette.routing import Route

from ...config import STATIC_DIR
from ...core.site import Site
from ...live.hub import Hub
from ...stores.pauses import PAUSED, Pause, load_pauses, save_pauses
from . import drafts, editor, history
from .pages import owner_only, render
from .saving import (
    Refused,
    Saved,
    in_turn,
    opened,
    refusal,
    relative,
    save,
    submitted,
)
from .sentence import sentence

# The widget's card styles, as a string literal in its built script: ':host{...}' + ...
_VERSION_NUMBER = re.compile(r"[0-9]{1,9}")
_CARD_CSS = re.compile(r"'(:host\{all:initial\}[^']*)'((?:\s*\+\s*'[^']*')*)")


def _query(request: Request, site: Site) -> str:
    return f"?site={quote(site.key)}" if request.query_params.get("site") else ""


def summary(request: Request, hub: Hub, site: Site, rule_id: str) -> dict[str, str]:
    """For the campaign's page: its sentence, the version its Delete button acts on, and
    why it cannot be changed from the dashboard, if so."""
    try:
        found = opened(request, hub, site, rule_id)
    except Refused as refused:
        # Said on the page instead of offering buttons that would be refused.
        return {"query": _query(request, site), "version": "", "sentence": "",
                "not_editable": refused.message if refused.code == 409 else ""}
    return {"query": _query(request, site), "version": found.version,
            "sentence": sentence(found.node), "not_editable": ""}


async def duplicate(request: Request, hub: Hub, site: Site) -> Response:
    return await in_turn(request, hub, site, _duplicate)


async def _duplicate(request: Request, hub: Hub, site: Site,
                     _form: dict[str, str]) -> Response:
    found = opened(request, hub, site, request.path_params["rule"])
    taken = set(hub.rules_of(site.key).by_id)
    number, rule_id = 1, f"{found.rule_id}-copy"[:64]
    while rule_id in taken:
        number += 1
        rule_id = f"{found.rule_id}-copy-{number}"[-64:]
    twin = copy.deepcopy(found.node)
    twin["id"] = rule_id
    found.document["rules"].append(twin)
    # Paused: two identical campaigns would otherwise compete for the same visitors.
    result = await save(request, hub, site, found.path, found.text, found.yaml, None,
                        rule_id, "", f"duplicated {found.rule_id}",
                        text=drafts.set_apart(found.yaml, found.document, rule_id), pause=True)
    if not isinstance(result, Saved):
        return render(request, "message.html", 400, title="Not duplicated",
                      message="; ".join(line for lines in result.values() for line in lines))
    # The form says the copy is paused: it is where the owner lands.
    copied = f"{result.query}&copy=1" if result.query else "?copy=1"
    return RedirectResponse(f"/admin/campaigns/{quote(rule_id)}/edit{copied}", status_code=303)


async def pause(request: Request, hub: Hub, site: Site) -> Response:
    """Stopped until the owner resumes it. Unlike the guard's pauses, a save from the
    dashboard keeps it (saving._keep_paused): the owner paused the campaign, not a version
    of it. A change to its file by hand is a new version, and runs."""
    try:
        await submitted(request)
    except Refused as refused:
        return refusal(request, refused)
    rule = hub.rules_of(site.key).by_id.get(request.path_params["rule"])
    if rule is None:
        return render(request, "message.html", 404, title="No such campaign",
                      message="This site has no such campaign in force.")
    pauses = await load_pauses(hub.store, site.key)
    pauses[rule.id] = Pause(rule.id, PAUSED, hub.clock(), rule.fingerprint, by="owner")
    await save_pauses(hub.store, site.key, pauses)
    hub.paused_for(site.key).add(rule.id)
    return RedirectResponse(f"/admin/campaigns/{quote(rule.id)}{_query(request, site)}",
                            status_code=303)


async def versions(request: Request, hub: Hub, site: Site) -> Response:
    try:
        found = opened(request, hub, site, request.path_params["rule"])
    except Refused as refused:
        return refusal(request, refused)
    kept = await history.versions(hub.store, site.key, relative(request, site, found.path))
    # The oldest version kept is shown whole; each later one as its changes.
    rows = [(number, version, history.changes(kept[number - 1].text, version.text) if number
             else [(" ", line) for line in version.text.splitlines()])
            for number, version in enumerate(kept)]
    # Only the newest of the versions with the file's text is the file now: a restore or
    # a deletion undone writes an older text again.
    now = max((number for number, version in enumerate(kept) if version.text == found.text),
              default=-1)
    return render(request, "history.html", site=site, rule_id=found.rule_id,
                  file=found.path.name, rows=list(reversed(rows)), now=now,
                  opened=found.version, zone=site.zone, query=_query(request, site))


async def restore(request: Request, hub: Hub, site: Site) -> Response:
    return await in_turn(request, hub, site, _restore)


async def _restore(request: Request, hub: Hub, site: Site, form: dict[str, str]) -> Response:
    found = opened(request, hub, site, request.path_params["rule"])
    if form.get("version") != found.version:
        return render(request, "message.html", 409, title="Not restored", message=(
            "This campaign was changed since you opened its history; open it again first."))
    kept = await history.versions(hub.store, site.key, relative(request, site, found.path))
    number = form.get("number", "")
    # Not str.isdigit(), which takes the digits of every script (an Arabic-Indic zero
    # would be version 1).
    if not _VERSION_NUMBER.fullmatch(number):
        raise Refused(400, "number", f"'number' is {number[:20]!r}; expected a version's "
                      "number, in the digits 0-9 only")
    if int(number) >= len(kept) or not kept[int(number)].text:
        raise Refused(404, "number", f"'number' is {number}; this campaign's file has no "
                      f"such version kept ({len(kept)} kept)")
    chosen = kept[int(number)]
    result = await save(request, hub, site, found.path, found.text, found.yaml, None,
                        found.rule_id, form.get("author", ""),
                        f"restored the version {int(number) + 1}", text=chosen.text)
    if not isinstance(result, Saved):
        return render(request, "message.html", 400, title="Not restored",
                      message="; ".join(line for lines in result.values() for line in lines))
    return result.redirect(f"/admin/campaigns/{quote(found.rule_id)}/history")


@cache
def card_css(script: Path) -> str:
    """The widget's own card styles, read from its built script: the preview shows the
    card as visitors see it, at no cost in widget bytes."""
    found = _CARD_CSS.search(script.read_text(encoding="utf-8"))
    if found is None:
        return ""
    return found[1] + "".join(re.findall(r"'([^']*)'", found[2]))


async def card_styles(_request: Request) -> Response:
    return Response(card_css(STATIC_DIR / "popin.min.js"), media_type="text/css; charset=utf-8")


async def editor_script(_request: Request) -> Response:
    return FileResponse(STATIC_DIR / "admin" / "editor.js",
                        media_type="text/javascript; charset=utf-8")


ROUTES = [
    Route("/admin/editor/new", owner_only(editor.new_page), methods=["GET"]),
    Route("/admin/editor/new", owner_only(editor.create), methods=["POST"]),
    Route("/admin/editor/preview", owner_only(editor.preview), methods=["POST"]),
    Route("/admin/campaigns/{rule}/edit", owner_only(editor.edit_page), methods=["GET"]),
    Route("/admin/campaigns/{rule}/edit", owner_only(editor.update), methods=["POST"]),
    Route("/admin/campaigns/{rule}/duplicate", owner_only(duplicate), methods=["POST"]),
    Route("/admin/campaigns/{rule}/pause", owner_only(pause), methods=["POST"]),
    Route("/admin/campaigns/{rule}/history", owner_only(versions), methods=["GET"]),
    Route("/admin/campaigns/{rule}/restore", owner_only(restore), methods=["POST"]),
    Route("/admin/card.css", card_styles),
    Route("/admin/editor.js", editor_script),
]

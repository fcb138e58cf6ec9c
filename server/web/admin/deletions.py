"""Deleted campaigns, kept so that one click brings them back: each deletion keeps the
campaign's file as it was (in the store's settings, shared by every process), listed on
the site's overview until it is restored or pushed out by later ones.

    /admin/campaigns/{rule}/delete    delete a campaign (its file goes with its last one)
    /admin/deleted/restore            put a deleted campaign back, checked as a save is
"""

from __future__ import annotations

import uuid
from dataclasses import asdict, dataclass
from pathlib import Path
from urllib.parse import quote

import orjson
from ruamel.yaml.comments import CommentedSeq
from ruamel.yaml.error import YAMLError
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from ...core.site import Site
from ...live.hub import Hub
from ...stores.contract import Store
from . import drafts, history
from .pages import owner_only, render
from .saving import (
    Refused,
    Saved,
    in_turn,
    opened,
    relative,
    reload,
    save,
)

# Enough to undo a bad afternoon; older deletions are in the owner's git, if anywhere.
KEEP = 30


@dataclass(frozen=True, slots=True)
class Deleted:
    id: str
    rule: str
    file: str
    at: float
    who: str
    # The whole file as it was just before: the campaign with its comments, and the file
    # to write back when the deletion removed it.
    text: str


def _key(site: str) -> str:
    return f"editor:deleted:{site}"


async def kept(store: Store, site: str) -> list[Deleted]:
    """Newest first."""
    raw = await store.setting_get(_key(site))
    return [Deleted(**entry) for entry in orjson.loads(raw)] if raw else []


async def _put(store: Store, site: str, entries: list[Deleted]) -> None:
    await store.setting_put(_key(site), orjson.dumps(
        [asdict(entry) for entry in entries[:KEEP]]).decode())


async def listed(hub: Hub, site: Site) -> list[Deleted]:
    """For the overview: those not in force again (a file may have brought one back)."""
    live = hub.rules_of(site.key).by_id
    return [entry for entry in await kept(hub.store, site.key) if entry.rule not in live]


def _query(request: Request, site: Site) -> str:
    return f"?site={quote(site.key)}" if request.query_params.get("site") else ""


def _errors(result: dict[str, list[str]]) -> str:
    return "; ".join(line for lines in result.values() for line in lines)


async def delete(request: Request, hub: Hub, site: Site) -> Response:
    return await in_turn(request, hub, site, _delete)


async def _delete(request: Request, hub: Hub, site: Site, form: dict[str, str]) -> Response:
    found = opened(request, hub, site, request.path_params["rule"])
    if form.get("version") != found.version:
        return render(request, "message.html", 409, title="Not deleted", message=(
            "This campaign was changed since you opened it; open it again first."))
    file = relative(request, site, found.path)
    found.document["rules"].remove(found.node)
    if found.document["rules"] or not found.path.parent.samefile(
            request.app.state.rule_folders[site.key]):
        result = await save(request, hub, site, found.path, found.text, found.yaml,
                            found.document, found.rule_id, form.get("author", ""),
                            f"deleted {found.rule_id}")
        if not isinstance(result, Saved):
            return render(request, "message.html", 400, title="Not deleted",
                          message=_errors(result))
    else:
        # Its last campaign: the file goes; its last text stays in the history.
        await history.record(hub.store, site.key, file, found.text, history.Version(
            hub.clock(), "the owner", "", f"deleted {found.rule_id}"))
        found.path.unlink()
        await reload(request, hub)
    entry = Deleted(uuid.uuid4().hex[:16], found.rule_id, file, hub.clock(),
                    form.get("author", "").strip() or "the owner", found.text)
    await _put(hub.store, site.key, [entry, *await kept(hub.store, site.key)])
    return RedirectResponse(f"/admin/{_query(request, site)}", status_code=303)


async def restore(request: Request, hub: Hub, site: Site) -> Response:
    return await in_turn(request, hub, site, _restore)


async def _restore(request: Request, hub: Hub, site: Site, form: dict[str, str]) -> Response:
    entries = await kept(hub.store, site.key)
    entry = next((entry for entry in entries if entry.id == form.get("deleted")), None)
    if entry is None:
        raise Refused(404, "deleted", "This deleted campaign is no longer kept (restored "
                      "already, or pushed out by later deletions).")
    if entry.rule in hub.rules_of(site.key).by_id:
        raise Refused(409, "deleted", f"A campaign named {entry.rule!r} is in force again; "
                      "rename or delete it first.")
    folder: Path = request.app.state.rule_folders[site.key]
    path = (folder if folder.is_dir() else folder.parent) / entry.file
    if not drafts.within(folder, path):
        raise Refused(404, "deleted", f"{entry.file} is not a file of this site's folder.")
    author = form.get("author", "")
    note = f"restored {entry.rule} after its deletion"
    try:
        if path.exists():
            # The file lives on with other campaigns: the deleted one goes back at its end,
            # with the comments it had.
            text = path.read_text(encoding="utf-8")
            yaml = drafts.loader(text)
            document = drafts.load(yaml, text)
            node = drafts.find(drafts.load(drafts.loader(entry.text), entry.text), entry.rule)
            rules = document.setdefault("rules", CommentedSeq())
            if node is None or not isinstance(rules, list):
                raise Refused(409, "deleted", f"{path.name} cannot take {entry.rule!r} back.")
            rules.append(node)
            result = await save(request, hub, site, path, text, yaml, document, entry.rule,
                                author, note)
        else:
            result = await save(request, hub, site, path, "", drafts.loader(entry.text), None,
                                entry.rule, author, note, text=entry.text)
    except (OSError, YAMLError, ValueError) as error:
        raise Refused(409, "deleted", f"{entry.file} cannot be read now ({error})") from None
    if not isinstance(result, Saved):
        return render(request, "message.html", 400, title="Not restored",
                      message=_errors(result))
    await _put(hub.store, site.key, [other for other in await kept(hub.store, site.key)
                                     if other.id != entry.id])
    return result.redirect(f"/admin/campaigns/{quote(entry.rule)}")


ROUTES = [
    Route("/admin/campaigns/{rule}/delete", owner_only(delete), methods=["POST"]),
    Route("/admin/deleted/restore", owner_only(restore), methods=["POST"]),
]

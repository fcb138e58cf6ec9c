"""The campaign editor's pages: a new campaign, a campaign's form, and the live preview the
form asks for as the owner types. Saving writes the campaign's file (see drafts.py) and
reloads the site's rules as a change to the file would.

    /admin/editor/new                 a new campaign (its own file in the site's folder)
    /admin/campaigns/{rule}/edit      the form of one campaign, saved into its file
    /admin/editor/preview             the card as a visitor would see it (JSON)
"""

from __future__ import annotations

import html
import re
from pathlib import Path
from typing import Any
from urllib.parse import quote

from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import YAMLError
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from ...core.preview import PreviewError, preview_message
from ...core.rules.campaign import RULE_ID, parse_document
from ...core.rules.yamlsource import SourceError, read
from ...core.site import Site
from ...core.visitor.agent import Agent
from ...core.visitor.facts import Facts
from ...core.visitor.profile import Profile
from ...core.wire.events import PageView
from ...features.previews import preview_pages
from ...live.hub import Hub
from ...stores.pauses import PAUSED, Pause, load_pauses
from . import drafts
from .changes import apply, new_rule
from .fields import (
    BY_NAME,
    CONDITION_HELP,
    CONDITION_NAMES,
    CONDITION_ROWS,
    FIELDS_TABLE,
    MODES,
    TAG_HELP,
    TAG_ROWS,
    VARIANT_HELP,
    VARIANT_ROWS,
)
from .forms import applies, values
from .pages import render
from .rows import VARIANT_COLUMNS, VARIANT_PLACEMENTS
from .saving import Refused, Saved, in_turn, opened, refusal, save, submitted
from .sentence import sentence
from .texts import Unreadable

# What a new campaign's form starts from: a keyword-dwell pop-in, polite by default.
DEFAULTS = {"trigger": "dwell", "show": "popin", "category": "behavioural",
            "popin.placement": "corner", "cap.per_session": "1", "when.mode": "all",
            "quiet_after_dismiss": "7d"}
# The sample visitors the preview writes for: one the site knows, and the one most
# visitors are (a first visit, no name), for whom a template's values are empty.
SAMPLE_NAME, SAMPLE_VISITS = "Alex", 3
SAMPLE_VISITORS = {"known": "Alex, on their 3rd visit",
                   "first": "a first-time visitor, no name known"}


def _form_page(request: Request, site: Site, code: int, form: dict[str, str],
               rule_id: str = "", version: str = "", errors: dict[str, list[str]] | None = None,
               message: str = "", links: list[tuple[str, str]] | None = None,
               paused: Pause | None = None, copied: bool = False) -> Response:
    trigger, show = form.get("trigger", ""), form.get("show", "")
    hidden = {field.name for field in BY_NAME.values() if not applies(field, trigger, show)}
    query = f"?site={quote(site.key)}" if request.query_params.get("site") else ""
    action = (f"/admin/campaigns/{quote(rule_id)}/edit{query}" if rule_id
              else f"/admin/editor/new{query}")
    return render(request, "editor.html", code, site=site, form=form, rule_id=rule_id,
                  version=version, errors=errors or {}, message=message, groups=FIELDS_TABLE,
                  hidden=hidden, action=action, preview=f"/admin/editor/preview{query}",
                  condition_names=CONDITION_NAMES, condition_rows=range(CONDITION_ROWS),
                  variant_rows=range(VARIANT_ROWS), modes=MODES, condition_help=CONDITION_HELP,
                  variant_help=VARIANT_HELP, variant_columns=VARIANT_COLUMNS,
                  placements=VARIANT_PLACEMENTS, tag_rows=range(TAG_ROWS), tag_help=TAG_HELP,
                  links=links or [], query=query, paused=paused, copied=copied,
                  sample_visitors=SAMPLE_VISITORS)


async def new_page(request: Request, hub: Hub, site: Site) -> Response:
    defaults = {field.name: field.default for field in BY_NAME.values() if field.default}
    return _form_page(request, site, 200, {**defaults, **DEFAULTS, "campaign": ""})


async def edit_page(request: Request, hub: Hub, site: Site) -> Response:
    try:
        found = opened(request, hub, site, request.path_params["rule"])
    except Refused as refused:
        return refusal(request, refused)
    server = str(request.base_url).rstrip("/")
    links = [(page, hub.previews.link(page, site.key, found.rule_id))
             for page in preview_pages(site, server)]
    return _form_page(request, site, 200, {**values(found.node),
                                            "campaign": str(found.document.get("campaign", ""))},
                      found.rule_id, found.version, links=links,
                      paused=await paused_now(hub, site, found.rule_id),
                      copied=request.query_params.get("copy") == "1")


async def paused_now(hub: Hub, site: Site, rule_id: str) -> Pause | None:
    """The pause in force on this campaign, if any: the form says it, since a save keeps
    the owner's pause and ends the guard's."""
    if rule_id not in hub.paused_for(site.key):
        return None
    pause = (await load_pauses(hub.store, site.key)).get(rule_id)
    return pause if pause is not None and pause.state == PAUSED else None


async def create(request: Request, hub: Hub, site: Site) -> Response:
    return await in_turn(request, hub, site, _create)


async def _create(request: Request, hub: Hub, site: Site, form: dict[str, str]) -> Response:
    rule_id = form.get("id", "").strip()
    folder: Path = request.app.state.rule_folders[site.key]
    if not RULE_ID.match(rule_id):
        return _form_page(request, site, 400, form, errors={"id": [
            f"{rule_id!r} is not a name; expected lower-case letters, digits, '-', '_' or '.', "
            "at most 64, starting with a letter or a digit"]})
    path = drafts.home_of(folder, rule_id)
    if not drafts.within(folder, path) or (folder.is_dir() and path.exists()):
        return _form_page(request, site, 400, form, errors={"id": [
            f"a campaign file named {path.name} already exists; expected another name"]})
    text = path.read_text(encoding="utf-8") if path.exists() else ""
    yaml = drafts.loader(text)
    document = drafts.load(yaml, text)
    if not text:
        document["campaign"] = form.get("campaign", "").strip() or rule_id
        document["rules"] = CommentedSeq()
    try:
        document["rules"].append(new_rule(form))
    except Unreadable as error:
        return _form_page(request, site, 400, form, errors={_field_of(form, error): [str(error)]})
    result = await save(request, hub, site, path, text, yaml, document, rule_id,
                        form.get("author", ""), "created")
    if isinstance(result, Saved):
        return result.redirect(f"/admin/campaigns/{quote(rule_id)}")
    return _form_page(request, site, 400, form, errors=result)


async def update(request: Request, hub: Hub, site: Site) -> Response:
    return await in_turn(request, hub, site, _update)


async def _update(request: Request, hub: Hub, site: Site, form: dict[str, str]) -> Response:
    found = opened(request, hub, site, request.path_params["rule"])
    if form.get("version") != found.version:
        return _form_page(request, site, 409, form, found.rule_id, found.version,
                          paused=await paused_now(hub, site, found.rule_id), message=(
            "This campaign was changed since you opened it (in the dashboard or in its file). "
            "Nothing was saved: open it again to see the change, then make yours."))
    try:
        apply(found.node, form)
    except Unreadable as error:
        return _form_page(request, site, 400, form, found.rule_id, found.version,
                          errors={_field_of(form, error): [str(error)]})
    campaign = form.get("campaign", "").strip()
    if campaign and campaign != found.document.get("campaign"):
        found.document["campaign"] = campaign
    rule_id = str(found.node.get("id", found.rule_id))
    result = await save(request, hub, site, found.path, found.text, found.yaml,
                        found.document, rule_id, form.get("author", ""), "edited",
                        was=found.rule_id)
    if isinstance(result, Saved):
        return result.redirect(f"/admin/campaigns/{quote(rule_id)}")
    return _form_page(request, site, 400, form, found.rule_id, found.version, errors=result,
                      paused=await paused_now(hub, site, found.rule_id))


def _draft(request: Request, hub: Hub, site: Site, form: dict[str, str]) -> CommentedMap:
    original = form.get("rule", "")
    if original:
        found = opened(request, hub, site, original)
        apply(found.node, form)
        return found.node
    # A campaign still unnamed shows all the same.
    return new_rule({**form, "id": form.get("id", "").strip() or "new-campaign"})


def _field_of(form: dict[str, str], error: Unreadable) -> str:
    return next((name for name, value in form.items() if error.text.strip() in value), "")


async def preview(request: Request, hub: Hub, site: Site) -> Response:
    """The draft as the widget would show it, with a sample visitor; never saved."""
    try:
        form = await submitted(request)
        node = _draft(request, hub, site, form)
    except Refused as refused:
        return refusal(request, refused, json=True)
    except Unreadable as error:
        return JSONResponse({"errors": [{"field": _field_of(form, error),
                                         "message": str(error)}]}, 400)
    except (YAMLError, ValueError) as error:
        return JSONResponse({"errors": [{"field": "", "message": str(error)}]}, 400)
    yaml = drafts.loader("")
    text = drafts.dump(yaml, {"campaign": form.get("campaign", "") or "draft", "rules": [node]})
    answer: dict[str, Any] = {"sentence": sentence(node), "yaml": text, "errors": [],
                              "html": "", "placement": "corner"}
    document, problems = read(text, "draft.yaml")
    try:
        if problems:
            raise problems[0]
        rules = hub.rules_of(site.key)
        rule = parse_document(document, "draft.yaml", rules.keywords,
                              request.app.state.allow_http_hosts)[0]
    except SourceError as errors:
        answer["errors"] = [{"field": drafts.field_of(text, str(node.get("id", "")), error),
                             "message": f"line {error.line}: {error.reason}"}
                            for error in errors.errors]
        return JSONResponse(answer)
    device = "mobile" if form.get("preview_device") == "mobile" else "desktop"
    page = PageView(f"https://{site.key}.example/", "/", "Sample page")
    cards: dict[str, dict[str, Any]] = {}
    for sample, profile in (("known", Profile("sample-visitor", visits=SAMPLE_VISITS,
                                              first_name=SAMPLE_NAME)),
                            ("first", Profile("sample-visitor", visits=1))):
        facts = Facts(profile, site, Agent(device), consent="granted", now=hub.clock())
        try:
            cards[sample] = preview_message(rule, form.get("preview_variant", ""), facts, page,
                                            rules, "editor")
        except PreviewError as error:
            answer["notice"] = str(error)
            return JSONResponse(answer)
    message = cards["first" if form.get("preview_visitor") == "first" else "known"]
    answer.update(html=message["html"], placement=message["placement"], kind=message["kind"],
                  warning=_reads_badly(_title(cards["known"]["html"]),
                                       _title(cards["first"]["html"])))
    return JSONResponse(answer)


_TITLE = re.compile(r'<p class="title">(.*?)</p>', re.S)


def _title(card: str) -> str:
    found = _TITLE.search(card)
    return html.unescape(re.sub(r"<[^>]*>", "", found[1])) if found else ""


def _reads_badly(known: str, first: str) -> str:
    """A warning when the title reads well for a known visitor but not for a first-time
    one (an empty value left a gap); the owner decides, nothing is refused."""
    if known == first:
        return ""
    if not first.strip() or first != first.rstrip() or re.search(r"\s[?!.,;:]|,\s*$", first):
        return (f"A first-time visitor, whose name is not known, sees the title "
                f"\u201c{first.strip()}\u201d: most visitors are such. A default helps: "
                "{{ visitor.first_name or 'there' }}.")
    return ""

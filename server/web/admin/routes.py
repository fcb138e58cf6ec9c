"""The owner's dashboard at /admin: server-rendered pages behind a login.

    /admin/                      overview: live numbers, every campaign's funnel and lift
    /admin/campaigns/{rule}      one campaign: its lift, variants, funnel, rule, errors,
                                 activity; Resume when the guard paused it
    /admin/audiences             sizes over time, export links
    /admin/bookings              appointments ahead, leads
    /admin/rules                 loaded files, errors with file:line, last reload

Their security headers (a strict CSP, no-store) come from web/headers.py, for every
answer under /admin.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Awaitable, Callable
from urllib.parse import quote

from starlette.requests import Request
from starlette.responses import (
    FileResponse,
    JSONResponse,
    RedirectResponse,
    Response,
    StreamingResponse,
)
from starlette.routing import Route

from ...config import STATIC_DIR
from ...core.rules.schema import plural
from ...core.site import Site
from ...features.exports import ExportError, start_export
from ...features.previews import page_allowed, preview_pages
from ...live.guard import resume
from ...live.hub import Hub
from . import campaigns, dashboard, deletions
from .auth import (
    PASSWORD_SETTING,
    SESSION_COOKIE,
    SESSION_SECONDS,
    LoginGuard,
    PasswordChecks,
    Sessions,
    credentials,
    csrf_ok,
    end_every_session,
    set_cookie,
)
from .pages import owner_only, render, signed_in

# The columns of a campaign's daily CSV.
DAILY_METRICS = ("triggered", "exposed", "held_out", "shown", "clicked", "dismissed",
                 "converted", "converted_click", "converted_control", "revenue",
                 "revenue_control", "errors", "converted_confirmed",
                 "converted_control_confirmed", "revenue_confirmed",
                 "revenue_control_confirmed")
VARIANT_METRICS = ("exposed", "shown", "clicked", "dismissed", "converted", "converted_click",
                   "revenue", "revenue_confirmed")

async def login_page(request: Request) -> Response:
    hub: Hub = request.app.state.hub
    unset = await hub.store.setting_get(PASSWORD_SETTING) is None
    return render(request, "login.html", unset=unset, error="",
                   next=request.query_params.get("next", "/admin/"))


async def login(request: Request) -> Response:
    hub: Hub = request.app.state.hub
    guard: LoginGuard = request.app.state.login_guard
    form = await request.form()
    target = str(form.get("next") or "/admin/")
    if not target.startswith("/admin/") or target.startswith("//"):
        target = "/admin/"
    if not csrf_ok(request, form.get("csrf")):
        return render(request, "login.html", 403, unset=False, next=target,
                       error="The form expired: please try again.")
    address = request.client.host if request.client else "unknown"
    wait = guard.retry_after(address)
    if wait:
        response = render(request, "login.html", 429, unset=False, next=target,
                           error=f"Too many attempts: try again in "
                           f"{plural(wait // 60 + 1, 'minute')}.")
        response.headers["Retry-After"] = str(wait)
        return response
    stored, epoch = await credentials(hub.store)
    checks: PasswordChecks = request.app.state.password_checks
    matches = await checks.matches(stored, str(form.get("password", "")))
    if matches is None:
        hub.counts["admin.login_busy"] += 1
        response = render(request, "login.html", 503, unset=False, next=target,
                           error="Too many logins at once: try again in a few seconds.")
        response.headers["Retry-After"] = "5"
        return response
    if not matches:
        guard.failed(address)
        hub.counts["admin.login_failed"] += 1
        return render(request, "login.html", 401, unset=stored is None, next=target,
                       error="Wrong password.")
    assert stored is not None
    guard.succeeded(address)
    sessions: Sessions = request.app.state.admin_sessions
    redirect = RedirectResponse(target, status_code=303)
    set_cookie(redirect, request, SESSION_COOKIE, sessions.issue(stored, epoch),
               SESSION_SECONDS)
    return redirect


async def logout(request: Request) -> Response:
    form = await request.form()
    if not csrf_ok(request, form.get("csrf")):
        return render(request, "message.html", 403, title="The form expired",
                       message="Please go back and try again.")
    # Only the owner may end the sessions: anyone can get a form token of their own, and
    # would otherwise log the owner out at will.
    if await signed_in(request):
        hub: Hub = request.app.state.hub
        await end_every_session(hub.store)
    response = RedirectResponse("/admin/login", status_code=303)
    response.delete_cookie(SESSION_COOKIE, path="/admin")
    return response


async def overview(request: Request, hub: Hub, site: Site) -> Response:
    return render(request, "overview.html", site=site, deleted=await deletions.listed(hub, site),
                  **await dashboard.overview(hub, site))


async def campaign(request: Request, hub: Hub, site: Site) -> Response:
    rule_id = request.path_params["rule"]
    found = await dashboard.campaign(hub, site, rule_id)
    # A deleted campaign's page is where an owner looks for it: the way back is offered.
    deleted = next((entry for entry in await deletions.listed(hub, site)
                    if entry.rule == rule_id), None)
    if found is None:
        if deleted is not None:
            return render(request, "deleted.html", 404, site=site, entry=deleted)
        return render(request, "message.html", 404, title="No such campaign",
                       message="No rule has this id, and none had one in the last 30 days.")
    rule = found["rule"]
    server = str(request.base_url).rstrip("/")
    pages = preview_pages(site, server)
    asked = request.query_params.get("preview_url", "").strip()
    variant = request.query_params.get("variant", "")
    refused = ""
    if asked and not page_allowed(asked, site.origins, server):
        refused = (f"A preview opens on the pages of {site.name or site.key} only: "
                   f"{', '.join(_origins(site, server))}.")
    elif asked:
        pages = [asked]
    # Links, not a redirect: the dashboard's policy lets forms go nowhere but popin.
    previews = ([(page, hub.previews.link(page, site.key, rule.id, variant)) for page in pages]
                if rule is not None and rule.visual is not None else [])
    return render(request, "campaign.html", 400 if refused else 200, site=site,
                  previews=previews, preview_refused=refused, deleted=deleted, **found,
                  **campaigns.summary(request, hub, site, rule.id if rule else ""))


def _origins(site: Site, server: str) -> list[str]:
    return [server if origin == "self" else origin for origin in site.origins]


async def campaign_resume(request: Request, hub: Hub, site: Site) -> Response:
    """The owner resumes a campaign the guard paused."""
    form = await request.form()
    if not csrf_ok(request, form.get("csrf")):
        return render(request, "message.html", 403, title="The form expired",
                       message="Please go back and try again.")
    rule_id = request.path_params["rule"]
    if not await resume(hub, site, rule_id):
        return render(request, "message.html", 404, title="Not paused",
                       message="This campaign is not paused.")
    query = f"?site={quote(site.key)}" if request.query_params.get("site") else ""
    return RedirectResponse(f"/admin/campaigns/{quote(rule_id)}{query}", status_code=303)


async def campaign_days(request: Request, hub: Hub, site: Site) -> Response:
    """A campaign's daily figures as CSV, for the owner's own spreadsheet."""
    found = await dashboard.campaign(hub, site, request.path_params["rule"])
    if found is None:
        return render(request, "message.html", 404, title="No such campaign",
                       message="No rule has this id, and none had one in the last 30 days.")
    funnel = found["funnel"]
    # Each variant's own columns after the rule's ("loud:shown", ...).
    columns = [(funnel, metric, metric) for metric in DAILY_METRICS] + [
        (own, metric, f"{name}:{metric}") for name, own, _lift in found["variants"]
        for metric in VARIANT_METRICS]
    rows = io.StringIO()
    writer = csv.writer(rows)
    writer.writerow(["day", *(title for _funnel, _metric, title in columns)])
    for day in found["days"]:
        writer.writerow([day, *(f"{source.days.get(day, {}).get(metric, 0.0):g}"
                                for source, metric, _title in columns)])
    name = f"{site.key}-{funnel.rule}-daily.csv"
    return Response(rows.getvalue(), media_type="text/csv; charset=utf-8",
                    headers={"Content-Disposition": f'attachment; filename="{name}"'})


async def audiences(request: Request, hub: Hub, site: Site) -> Response:
    return render(request, "audiences.html", site=site,
                   **await dashboard.audiences(hub, site))


async def export(request: Request, hub: Hub, site: Site) -> Response:
    name = request.path_params["name"]
    if name not in await hub.audience_names(site.key):
        return render(request, "message.html", 404, title="No such audience", message=name)
    try:
        found = await start_export(hub.store, site.key, name,
                                   request.query_params.get("format", "csv"), hub.clock())
    except ExportError as error:
        return render(request, "message.html", 400, title="Cannot export", message=str(error))
    return StreamingResponse(found.body, media_type=found.media_type, headers={
        "Popin-Cursor": found.cursor,
        "Content-Disposition": f'attachment; filename="{found.filename}"'})


async def bookings(request: Request, hub: Hub, site: Site) -> Response:
    return render(request, "bookings.html", site=site, **await dashboard.bookings(hub, site))


async def rules(request: Request, hub: Hub, site: Site) -> Response:
    return render(request, "rules.html", site=site, status=hub.status_of(site.key),
                   count=len(hub.rules_of(site.key)))


async def live(request: Request, hub: Hub, site: Site) -> Response:
    return JSONResponse(await dashboard.live(hub, site))


def _asset(name: str, media_type: str) -> Callable[[Request], Awaitable[Response]]:
    async def serve(_request: Request) -> Response:
        return FileResponse(STATIC_DIR / "admin" / name, media_type=media_type)

    return serve


ROUTES = [
    *campaigns.ROUTES,
    *deletions.ROUTES,
    Route("/admin/login", login_page, methods=["GET"]),
    Route("/admin/login", login, methods=["POST"]),
    Route("/admin/logout", logout, methods=["POST"]),
    Route("/admin/", owner_only(overview)),
    Route("/admin/campaigns/{rule}", owner_only(campaign)),
    Route("/admin/campaigns/{rule}/daily.csv", owner_only(campaign_days)),
    Route("/admin/campaigns/{rule}/resume", owner_only(campaign_resume), methods=["POST"]),
    Route("/admin/audiences", owner_only(audiences)),
    Route("/admin/audiences/{name}/export", owner_only(export)),
    Route("/admin/bookings", owner_only(bookings)),
    Route("/admin/rules", owner_only(rules)),
    Route("/admin/live", owner_only(live)),
    Route("/admin/admin.css", _asset("admin.css", "text/css; charset=utf-8")),
    Route("/admin/admin.js", _asset("admin.js", "text/javascript; charset=utf-8")),
]

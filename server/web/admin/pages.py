"""What every dashboard page shares: its templates, the owner's login check, the site a
page is about, and how a page is rendered (with the form token of the session)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from ...core.rules.schema import plural
from ...core.site import Site
from ...live.hub import Hub
from .auth import CSRF_COOKIE, SESSION_COOKIE, Sessions, credentials, csrf_token, set_cookie

TEMPLATES = Environment(loader=FileSystemLoader(Path(__file__).parent / "templates"),
                        autoescape=select_autoescape(default=True), trim_blocks=True,
                        lstrip_blocks=True)
TEMPLATES.filters["plural"] = plural
TEMPLATES.filters["when"] = lambda moment, zone: datetime.fromtimestamp(moment, zone).strftime(
    "%d %b %H:%M:%S")
Page = Callable[[Request, Hub, Site], Awaitable[Response]]


def render(request: Request, name: str, code: int = 200, **context: Any) -> HTMLResponse:
    token = csrf_token(request)
    hub: Hub = request.app.state.hub
    html = TEMPLATES.get_template(name).render(
        csrf=token, path=request.url.path, sites=list(hub.sites.values()),
        site_key=request.query_params.get("site", ""), **context)
    response = HTMLResponse(html, status_code=code)
    if not request.cookies.get(SESSION_COOKIE) and request.cookies.get(CSRF_COOKIE) != token:
        set_cookie(response, request, CSRF_COOKIE, token)
    return response


def site_of(request: Request, hub: Hub) -> Site | None:
    key = request.query_params.get("site")
    return hub.sites.get(key) if key else next(iter(hub.sites.values()), None)


async def signed_in(request: Request) -> bool:
    hub: Hub = request.app.state.hub
    sessions: Sessions = request.app.state.admin_sessions
    return sessions.valid(request.cookies.get(SESSION_COOKIE), *await credentials(hub.store))


def owner_only(page: Page) -> Callable[[Request], Awaitable[Response]]:
    async def guarded(request: Request) -> Response:
        hub: Hub = request.app.state.hub
        if not await signed_in(request):
            target = quote(request.url.path + (f"?{request.url.query}" if request.url.query
                                               else ""))
            return RedirectResponse(f"/admin/login?next={target}", status_code=303)
        # The pages read statistics and profiles: what is pending goes in first.
        await hub.flush()
        site = site_of(request, hub)
        if site is None:
            return render(request, "message.html", 404, title="No such site",
                           message="This site is not in popin.toml.")
        return await page(request, hub, site)

    return guarded

"""The Starlette application: the widget script, its socket, the demo shop."""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

from starlette.applications import Starlette
from starlette.datastructures import State
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import (
    FileResponse,
    JSONResponse,
    PlainTextResponse,
    RedirectResponse,
    Response,
)
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import Receive, Scope, Send

from ..config import Limits, Settings, load_secret
from ..core.visitor.agent import Geo
from ..features.appointments.links import Links
from ..features.previews import PreviewLinks
from ..features.webhooks import send_forever
from ..live.guard import GUARD_SECONDS, guard_all
from ..live.hub import Hub
from ..live.relay import Relay, redis_url
from ..live.reload import reload_rules, watch_rules
from ..stores.backends import open_store
from ..stores.contract import Store
from ..stores.retention import FORGET_BATCH
from ..stores.roundtrips import timed
from ..stores.writebehind import FLUSH_SECONDS
from .admin.auth import LoginGuard, PasswordChecks, Sessions
from .admin.locks import SaveLocks
from .admin.routes import ROUTES as ADMIN_ROUTES
from .api.audiences import ROUTES as AUDIENCE_ROUTES
from .api.openapi import document
from .api.routes import ROUTES as API_ROUTES
from .api.routes import ApiError, api_error
from .appointments import ROUTES as APPOINTMENT_ROUTES
from .connection import WidgetProtocol
from .headers import SecurityHeaders
from .health import routes as health_routes
from .health import sync_metrics
from .heap import settle_heap
from .limits import Admission, receive_body_within, slow_header_guard
from .logs import scrub_client_addresses
from .socket import widget_socket

log = logging.getLogger("popin")
SWEEP_INTERVAL_SECONDS = 60.0
# Up to 10,000 visitors forgotten per site a minute: far more than a site gains.
FORGET_BATCHES_PER_SWEEP = 50
METRICS_SECONDS = 1.0

# How popin runs on uvicorn, for `popin serve`, the tests and the benchmarks alike.
UVICORN_OPTIONS: dict[str, Any] = {
    # The fastest Starlette configuration measured (PRODUCT.md), lighter per idle socket.
    "ws": WidgetProtocol,
    # Browsers offer permessage-deflate; our frames are tiny and it costs memory per socket.
    "ws_per_message_deflate": False,
    "ws_max_size": 16 * 1024,
    # Raw client addresses are never logged.
    "access_log": False,
    # A stop waits this long for open sockets to finish what they read, then cancels
    # them; the final flush runs after either way. Without it, one socket handler still
    # waiting on its peer held a stopping process (and a rolling restart) indefinitely.
    "timeout_graceful_shutdown": 5,
}


def uvicorn_options(settings: Settings) -> dict[str, Any]:
    """How popin runs on uvicorn. Forwarded headers count only from the proxies the owner
    trusts: uvicorn would otherwise believe any X-Forwarded-For from 127.0.0.1, and a
    client could pick the address the login limit sees."""
    trusted = settings.trusted_proxies
    return {**UVICORN_OPTIONS, "proxy_headers": bool(trusted),
            "forwarded_allow_ips": ",".join(trusted) if trusted else "",
            "http": slow_header_guard(settings.limits.header_seconds)}


class PopinApp:
    """The widget's socket goes straight to its endpoint, every other request to
    Starlette: a socket's frames need none of the HTTP machinery."""

    def __init__(self, app: Starlette, limits: Limits) -> None:
        self.app = app
        self.limits = limits
        self.gate = Admission(limits)

    @property
    def state(self) -> State:
        return self.app.state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket" and scope["path"] == "/ws":
            await widget_socket(self.app.state.hub, self.gate, self.limits, scope, receive, send)
        elif scope["type"] == "http":
            await receive_body_within(self.app, self.limits.body_seconds, scope, receive, send)
        else:
            await self.app(scope, receive, send)


def create_app(settings: Settings, store: Store | None = None,
               serving: bool = False) -> PopinApp:
    """Build the app; pass `store` to share one the caller owns (tests, benchmarks), and
    `serving` when it is the process's only app (`popin serve`): its heap is tuned."""

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        scrub_client_addresses()
        owned = store is None
        active = open_store(settings.store) if store is None else store
        if owned:
            await active.open()
        geo = Geo(settings.geoip) if settings.geoip else None
        secret = load_secret(settings)
        sites = {key: replace(site, assignment_key=_assignment_key(secret, key))
                 for key, site in settings.sites.items()}
        for key, site in sites.items():
            active.retention.keep(key, site.retention_days)
        hub = Hub(active, {}, sites, geo=geo, max_sessions=settings.limits.sessions)
        hub.links = Links(secret)
        hub.previews = PreviewLinks(secret)
        app.state.admin_sessions = Sessions(secret)
        app.state.login_guard = LoginGuard()
        app.state.password_checks = PasswordChecks()
        app.state.editor_locks = SaveLocks()
        # The campaign editor writes into these folders and reloads them as a change would.
        app.state.rule_folders, app.state.geo_available = settings.folders(), geo is not None
        app.state.allow_http_hosts = settings.webhooks.allow_http_hosts
        reload_rules(hub, settings.folders(), geo is not None, starting=True,
                     allow_http_hosts=settings.webhooks.allow_http_hosts)
        # Paused campaigns stay paused across restarts: known before the first visitor.
        await guard_all(hub)
        app.state.hub = hub
        relay = Relay.from_url(settings.store) if redis_url(settings.store) else None
        # The relay's Redis round trips that the hub waits for are timed as the store's.
        hub.peers = None if relay is None else timed(
            relay, hub.metrics.round_trip, "relay.",
            only=("arrive", "publish", "save_session", "load_session"))
        tasks = [asyncio.create_task(_sweep_forever(hub)),
                 asyncio.create_task(_metrics_forever(hub)),
                 asyncio.create_task(_guard_forever(hub)),
                 asyncio.create_task(_flush_forever(hub)),
                 asyncio.create_task(send_forever(hub.store, hub.sites, hub.counts,
                                                  settings.webhooks))]
        tasks.append(asyncio.create_task(
            watch_rules(hub, settings.folders(), geo is not None, files=settings.reload,
                        allow_http_hosts=settings.webhooks.allow_http_hosts)))
        if relay is not None:
            tasks.append(asyncio.create_task(relay.run(hub)))
        if serving:
            settle_heap()
        try:
            yield
        finally:
            # Other processes continue this one's sessions (nothing to do without them).
            await hub.save_sessions()
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            app.state.password_checks.close()
            await hub.flush()
            if owned:
                await active.close()
            if geo is not None:
                geo.close()

    widget = settings.static / "popin.min.js"

    async def widget_script(_request: Request) -> FileResponse:
        # Short cache: owners see rule-driven widget changes quickly, visitors still cache.
        return FileResponse(widget, media_type="text/javascript; charset=utf-8",
                            headers={"Cache-Control": "public, max-age=300"})

    consent_glue = settings.static / "popin-consent.min.js"

    async def consent_script(_request: Request) -> FileResponse:
        # Loaded by the widget only on pages that run a consent tool (TCF, Consent Mode).
        return FileResponse(consent_glue, media_type="text/javascript; charset=utf-8",
                            headers={"Cache-Control": "public, max-age=300"})

    async def admin_home(_request: Request) -> RedirectResponse:
        return RedirectResponse("/admin/")

    async def home(_request: Request) -> RedirectResponse:
        return RedirectResponse("/demo/")

    async def openapi(_request: Request) -> JSONResponse:
        return JSONResponse(document())

    routes = [
        *API_ROUTES,
        *AUDIENCE_ROUTES,
        *ADMIN_ROUTES,
        *APPOINTMENT_ROUTES,
        Route("/openapi.json", openapi),
        Route("/", home),
        Route("/admin", admin_home),
        Route("/popin.js", widget_script),
        Route("/popin-consent.js", consent_script),
        *health_routes(settings),
        Mount("/demo", StaticFiles(directory=settings.static / "demo", html=True), name="demo"),
    ]
    return PopinApp(Starlette(routes=routes, lifespan=lifespan,
                              middleware=[Middleware(SecurityHeaders)],
                              exception_handlers={ApiError: api_error,
                                                  HTTPException: http_error}),
                    settings.limits)


async def http_error(request: Request, error: Exception) -> Response:
    """JSON errors under /api (the backend reads them); plain ones elsewhere."""
    assert isinstance(error, HTTPException)
    if request.url.path.startswith("/api/"):
        code = {404: "not_found", 405: "method_not_allowed"}.get(error.status_code, "error")
        # Raised by the router, not a handler: no route took the path (a parameter
        # holding '/' included), so the path is what the caller has to change.
        field = {404: "path", 405: "method"}.get(error.status_code)
        response = ApiError(error.status_code, code, str(error.detail), field).response()
        # 405 must say which methods are allowed (RFC 9110).
        response.headers.update(error.headers or {})
        return response
    return PlainTextResponse(str(error.detail), status_code=error.status_code,
                             headers=error.headers)


async def _metrics_forever(hub: Hub) -> None:
    # With several workers, a scrape reads the others' figures from their files.
    while True:
        await asyncio.sleep(METRICS_SECONDS)
        sync_metrics(hub)


async def _flush_forever(hub: Hub) -> None:
    while True:
        await asyncio.sleep(FLUSH_SECONDS)
        await hub.flush()
        await hub.save_changed_sessions()


def _assignment_key(secret: str, site: str) -> str:
    """Per site, from the server's secret: stable across restarts, unknown to visitors."""
    return hmac.new(secret.encode(), f"assignment:{site}".encode(), "sha256").hexdigest()[:64]


async def _guard_forever(hub: Hub) -> None:
    while True:
        await asyncio.sleep(GUARD_SECONDS)
        # The counters it judges are the flushed ones.
        await hub.flush()
        await guard_all(hub)


async def _sweep_forever(hub: Hub) -> None:
    while True:
        await asyncio.sleep(SWEEP_INTERVAL_SECONDS)
        ended = hub.sweep()
        if ended:
            hub.counts["session.ended"] += ended
        # Memberships leave when their time is up, even with nobody exporting.
        for site in hub.sites:
            try:
                hub.counts["audience.expired"] += await hub.store.audience_expire(
                    site, hub.clock())
            except Exception:
                log.exception("audience expiry failed for site %s; retried next minute", site)
            try:
                hub.counts["visitor.forgotten"] += await _forget_unseen(hub, site)
            except Exception:
                log.exception("forgetting unseen visitors failed for site %s; retried next "
                              "minute", site)


async def _forget_unseen(hub: Hub, site: str) -> int:
    """Visitors past the site's retention, batch after batch: each is one short
    transaction, and other work runs between them."""
    forgotten = 0
    for _ in range(FORGET_BATCHES_PER_SWEEP):
        batch = await hub.store.forget_unseen(site, hub.clock(), FORGET_BATCH)
        forgotten += batch
        if batch < FORGET_BATCH:
            break
        await asyncio.sleep(0)
    return forgotten

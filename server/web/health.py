"""/healthz and /metrics. Anyone may ask whether the server is alive (a load balancer
does); what it runs (rule files and their errors, counts, live connections) is for the
operator: a request with the `metrics_token` as a bearer token, or from an address in
`metrics_allow` (loopback by default). /metrics is Prometheus's text format
(`live.metrics`); with several workers, any of them answers for all.

/healthz answers 503 with "ok": false, "status": "degraded" when the store does not
answer a read or take a write in time, or when the write-behind layer's writes are
failing: the process is up (sockets stay open, writes are retried) but what it
acknowledges could not be kept. The operator sees the reasons."""

from __future__ import annotations

import asyncio
import hmac
from ipaddress import ip_address, ip_network

from prometheus_client import CONTENT_TYPE_LATEST
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from ..config import Settings
from ..live.hub import Hub
from ..stores.contract import Store

STORE_TIMEOUT = 2.0
# A proxy in front on the same machine makes every client look like loopback; unless the
# owner named it in trusted_proxies (then uvicorn gives the real client), its requests are
# no one's in particular.
FORWARDING = ("forwarded", "x-forwarded-for", "x-real-ip")


def operator(request: Request, settings: Settings) -> bool:
    token = settings.metrics_token
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    if token and scheme.lower() == "bearer" and hmac.compare_digest(given.encode(),
                                                                    token.encode()):
        return True
    if not settings.trusted_proxies and any(name in request.headers for name in FORWARDING):
        return False
    try:
        address = ip_address(request.client.host if request.client else "")
    except ValueError:
        return False
    address = getattr(address, "ipv4_mapped", None) or address
    return any(address in ip_network(allowed, strict=False)
               for allowed in settings.metrics_allow)


async def store_error(store: Store) -> str | None:
    """Why the store cannot answer a read, or None when it does."""
    try:
        await asyncio.wait_for(store.setting_get("healthz"), STORE_TIMEOUT)
    except TimeoutError:
        return f"the store did not answer within {STORE_TIMEOUT:g} s"
    except Exception as error:
        return f"{type(error).__name__}: {error}"[:300]
    return None


async def store_write_error(store: Store, now: float) -> str | None:
    """Why the store refuses a small write (disk full, read-only), or None when it takes it."""
    try:
        await asyncio.wait_for(store.setting_put("healthz", f"{now:.0f}"), STORE_TIMEOUT)
    except TimeoutError:
        return f"the store did not take a write within {STORE_TIMEOUT:g} s"
    except Exception as error:
        return f"{type(error).__name__}: {error}"[:300]
    return None


async def degraded(hub: Hub) -> list[str]:
    """Why this process cannot keep what it acknowledges right now; empty when it can."""
    reasons = []
    now = hub.clock()
    read = await store_error(hub.store)
    if read is not None:
        reasons.append(f"store read failing: {read}")
    else:
        write = await store_write_error(hub.store, now)
        if write is not None:
            reasons.append(f"store write failing: {write}")
    pending = hub.pending
    if pending.failing_since is not None:
        reasons.append(f"write-behind failing for {max(0.0, now - pending.failing_since):.0f}"
                       f" s, {pending.waiting} writes waiting: {pending.last_error}")
    return reasons


def sync_metrics(hub: Hub) -> None:
    """The hub's counts and levels into its Prometheus metrics (once a second, and at
    each scrape)."""
    pending = hub.pending
    hub.metrics.sync(hub.counts, live_sockets=hub.live_connections,
                     live_sessions=hub.live_sessions,
                     pending_writes=pending.waiting,
                     pending_pushes=sum(len(pushes) for pushes in pending.outbox.values()),
                     write_behind_failing=pending.failing_since is not None,
                     rules=hub.rule_count, rule_errors=len(hub.rule_status.errors))
    # Only the Redis store merges (SQLite's writers take turns in a transaction).
    hub.metrics.merged(int(getattr(hub.store, "profile_merges", 0)))


def _refused(settings: Settings) -> Response:
    if settings.metrics_token:
        return PlainTextResponse("a bearer token is needed\n", status_code=401,
                                 headers={"WWW-Authenticate": 'Bearer realm="popin"'})
    return PlainTextResponse("only from the addresses in metrics_allow\n", status_code=403)


def routes(settings: Settings) -> list[Route]:
    async def health(request: Request) -> JSONResponse:
        hub: Hub = request.app.state.hub
        reasons = await degraded(hub)
        status = 503 if reasons else 200
        if not operator(request, settings):
            return JSONResponse({"ok": not reasons}, status_code=status)
        return JSONResponse({"ok": not reasons, "status": "degraded" if reasons else "ok",
                             "reasons": reasons,
                             "rules": hub.rule_count,
                             "rule_errors": hub.rule_status.errors,
                             "rules_loaded_at": hub.rule_status.loaded_at,
                             "sessions": hub.live_sessions,
                             "connections": hub.live_connections}, status_code=status)

    async def metrics(request: Request) -> Response:
        if not operator(request, settings):
            return _refused(settings)
        hub: Hub = request.app.state.hub
        sync_metrics(hub)
        return Response(hub.metrics.exposition(), media_type=CONTENT_TYPE_LATEST)

    return [Route("/healthz", health), Route("/metrics", metrics)]

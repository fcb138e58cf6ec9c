"""Retargeting audiences over the HTTP API, for keys with the `export` scope.

    GET /api/v1/audiences                        names, sizes and membership days
    GET /api/v1/audiences/{name}/export          ?format=&since=&until=&change=
    GET /api/v1/audiences/{name}/sizes           members per day
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, StreamingResponse
from starlette.routing import Route

from ...features.exports import ExportError, start_export
from ...live.hub import Hub
from .routes import ApiError, authorize, check_query

CURSOR_HEADER = "Popin-Cursor"


async def _audience(request: Request, site: str) -> str:
    hub: Hub = request.app.state.hub
    name: str = request.path_params["name"]
    if name not in await hub.audience_names(site):
        raise ApiError(404, "not_found", "no rule tags visitors into this audience and it "
                       "has no members", "name")
    return name


async def list_audiences(request: Request) -> JSONResponse:
    key = await authorize(request, "export")
    hub: Hub = request.app.state.hub
    check_query(request)
    sizes = {info.name: info.size for info in await hub.store.audience_list(key.site)}
    days = hub.rules_of(key.site).audience_days
    return JSONResponse({"audiences": [
        {"name": name, "size": sizes.get(name, 0), "days": days.get(name),
         "in_rules": name in days}
        for name in sorted(await hub.audience_names(key.site))]})


async def export_audience(request: Request) -> StreamingResponse:
    key = await authorize(request, "export")
    hub: Hub = request.app.state.hub
    check_query(request, ("format", "since", "until", "change"))
    name = await _audience(request, key.site)
    query = request.query_params
    try:
        export = await start_export(hub.store, key.site, name, query.get("format", "csv"),
                                    hub.clock(), query.get("since", ""), query.get("until", ""),
                                    query.get("change", ""))
    except ExportError as error:
        code = "cursor_expired" if error.status == 410 else "invalid"
        raise ApiError(error.status, code, str(error), error.field) from None
    hub.counts["audience.exports"] += 1
    return StreamingResponse(export.body, media_type=export.media_type, headers={
        CURSOR_HEADER: export.cursor,
        "Content-Disposition": f'attachment; filename="{export.filename}"',
        "Cache-Control": "no-store"})


async def audience_sizes(request: Request) -> JSONResponse:
    key = await authorize(request, "export")
    hub: Hub = request.app.state.hub
    check_query(request)
    name = await _audience(request, key.site)
    sizes = await hub.store.audience_sizes(key.site, name)
    return JSONResponse({"audience": name,
                         "sizes": [{"day": day, "size": size} for day, size in sizes]})


ROUTES = [
    Route("/api/v1/audiences", list_audiences, methods=["GET"]),
    Route("/api/v1/audiences/{name}/export", export_audience, methods=["GET"]),
    Route("/api/v1/audiences/{name}/sizes", audience_sizes, methods=["GET"]),
]

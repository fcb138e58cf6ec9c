"""The HTTP API for the site's backend: business events, identify, profile read and
erasure. Bearer API keys with scopes; every error is JSON naming the problem and field.

    POST   /api/v1/events              {"events": [{"name", "visitor"|"user_id", ...}]}
    POST   /api/v1/identify            {"visitor", "user_id", "traits"}
    GET    /api/v1/visitors/{visitor}  what is stored about a visitor (404: nothing)
    DELETE /api/v1/visitors/{visitor}  erase them everywhere (204, also when nothing was kept)
    GET    /api/v1/users/{user_id}     the same, by the site's own user id
    DELETE /api/v1/users/{user_id}

An unknown visitor and an unknown user get the same answers: 404 on a read, and 204 on an
erasure, which is idempotent (a retried erasure must not look like a failure).
    GET    /api/v1/webhooks?status=    deliveries (dead ones with their last error)
    GET    /api/v1/bookings?day=       one day's appointments
    GET    /api/v1/leads?since=        requests for help
"""

from __future__ import annotations

import hashlib
import logging
import math
import re
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ...core.visitor.identity import TraitError, public_profile
from ...core.wire.events import Custom, Scalar
from ...core.wire.protocol import EVENT_NAME, MAX_PROPS, USER_ID, VISITOR_ID, is_scalar
from ...live.hub import IDEMPOTENCY_TTL, Hub
from ...live.referral import Undecided
from ...stores.contract import ClaimOutcome
from ...stores.keys import ApiKey, digest_of

MAX_BODY_BYTES = 256 * 1024
MAX_BATCH = 100
# How long a claimed key waits for its event to be stored: a worker that dies in between
# never answered 2xx, and the backend's retry applies the event once this has passed. It
# outlasts a request's longest path (an event referred to another process: 5 s).
CLAIM_LEASE = 10.0
log = logging.getLogger("popin.api")
UNAVAILABLE_MESSAGE = "the store is not answering; nothing was applied, retry later"
EVENT_KEYS = frozenset({"name", "visitor", "user_id", "props", "time", "idempotency_key"})
# An event's time is told by the backend's clock: before 2000 or more than a day ahead of
# ours, it is a unit mistake (milliseconds, a date's digits) or garbage, not an event.
EARLIEST_EVENT_TIME = datetime(2000, 1, 1, tzinfo=UTC).timestamp()
EVENT_TIME_AHEAD = 86400.0


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.field = status, code, message, field

    def response(self) -> JSONResponse:
        error: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.field:
            error["field"] = self.field
        headers = {"WWW-Authenticate": "Bearer"} if self.status == 401 else None
        if self.code == "in_progress":
            headers = {"Retry-After": str(int(CLAIM_LEASE))}
        if self.status == 413:
            # The rest of the body is not wanted: closing stops the client sending it.
            headers = {"Connection": "close"}
        return JSONResponse({"error": error}, status_code=self.status, headers=headers)


def unavailable() -> ApiError:
    return ApiError(503, "unavailable", UNAVAILABLE_MESSAGE)


async def api_error(_request: Request, error: Exception) -> Response:
    assert isinstance(error, ApiError)
    return error.response()


async def authorize(request: Request, scope: str) -> ApiKey:
    hub: Hub = request.app.state.hub
    header = request.headers.get("authorization", "")
    if not header.lower().startswith("bearer ") or not header[7:].strip():
        raise ApiError(401, "unauthorized", "send an API key: 'Authorization: Bearer pk_...'",
                       "Authorization")
    try:
        key = await hub.store.key_by_digest(digest_of(header[7:].strip()))
    except Exception:
        log.exception("the store could not check an API key")
        raise unavailable() from None
    # One answer for unknown and revoked keys: nothing about other keys leaks.
    if key is None or key.revoked is not None or key.site not in hub.sites:
        raise ApiError(401, "unauthorized", "this API key is not valid", "Authorization")
    if not key.allows(scope):
        raise ApiError(403, "forbidden", f"this API key lacks the '{scope}' scope",
                       "Authorization")
    return key


def check_query(request: Request, allowed: tuple[str, ...] = ()) -> None:
    unknown = sorted(set(request.query_params) - set(allowed))
    if unknown:
        raise ApiError(400, "invalid", f"unknown query parameter '{unknown[0][:64]}'",
                       unknown[0][:64])
    names = [name for name, _value in request.query_params.multi_items()]
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise ApiError(400, "invalid", f"'{repeated[0]}' is given more than once", repeated[0])


async def body_of(request: Request) -> dict[str, Any]:
    check_query(request)
    too_large = ApiError(413, "too_large", f"the body is limited to {MAX_BODY_BYTES} bytes",
                         "body")
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        raise too_large
    # Read in chunks and stop at the limit: a body without a length (chunked) or lying
    # about it is never held whole in memory.
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise too_large
        chunks.append(chunk)
    raw = b"".join(chunks)
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise ApiError(400, "invalid_json", "the body is not valid JSON", "body") from None
    if not isinstance(body, dict):
        raise ApiError(400, "invalid", "the body must be a JSON object", "body")
    return body


def _text(item: dict[str, Any], key: str, where: str, pattern: re.Pattern[str] | None = None,
          limit: int = 128) -> str:
    value = item.get(key)
    if not isinstance(value, str) or not value or len(value) > limit or (
            pattern is not None and not pattern.match(value)):
        raise ApiError(400, "invalid", f"'{key}' must be text of 1-{limit} characters"
                       + (" (letters, digits, '-', '_')" if pattern is VISITOR_ID else "")
                       + (", no control characters" if pattern is USER_ID else ""),
                       f"{where}{key}")
    return value


def _props(value: Any, where: str) -> dict[str, Scalar]:
    if value is None:
        return {}
    if not isinstance(value, dict) or len(value) > MAX_PROPS:
        raise ApiError(400, "invalid", f"'props' must be an object of at most {MAX_PROPS} keys",
                       f"{where}props")
    for key, item in value.items():
        if not is_scalar(item) or len(key) > 64:
            raise ApiError(400, "invalid", "props are text, numbers, true/false or null",
                           f"{where}props.{key[:64]}")
    return value


def _event(item: Any, index: int, now: float) -> dict[str, Any]:
    where = f"events[{index}]."
    if not isinstance(item, dict):
        raise ApiError(400, "invalid", "each event must be an object", f"events[{index}]")
    unknown = sorted(set(item) - EVENT_KEYS)
    if unknown:
        raise ApiError(400, "invalid", f"unknown key '{unknown[0]}'", f"{where}{unknown[0]}")
    if ("visitor" in item) == ("user_id" in item):
        raise ApiError(400, "invalid", "give exactly one of 'visitor' and 'user_id'",
                       f"{where}visitor")
    checked: dict[str, Any] = {
        "name": _text(item, "name", where, EVENT_NAME, 64),
        "props": _props(item.get("props"), where),
    }
    if "visitor" in item:
        checked["visitor"] = _text(item, "visitor", where, VISITOR_ID, 64)
    else:
        checked["user_id"] = _text(item, "user_id", where, USER_ID)
    if "idempotency_key" in item:
        checked["idempotency_key"] = _text(item, "idempotency_key", where)
    if "time" in item:
        if isinstance(item["time"], bool) or not isinstance(item["time"], int | float):
            raise ApiError(400, "invalid", "'time' is seconds since the epoch", f"{where}time")
        # Written so that NaN, should a parser ever let it through, is refused as well.
        if not EARLIEST_EVENT_TIME <= item["time"] <= now + EVENT_TIME_AHEAD:
            raise ApiError(400, "invalid", "'time' is seconds since the epoch, from "
                           "2000-01-01 to a day ahead of the server's clock", f"{where}time")
        checked["time"] = item["time"]
    return checked


async def post_events(request: Request) -> JSONResponse:
    hub: Hub = request.app.state.hub
    # Push latency counts from here: key check and idempotency claims included.
    received = hub.metrics.now()
    key = await authorize(request, "events")
    body = await body_of(request)
    unknown = sorted(set(body) - {"events"})
    if unknown:
        raise ApiError(400, "invalid", f"unknown key '{unknown[0]}'", unknown[0])
    events = body.get("events")
    if not isinstance(events, list) or not 1 <= len(events) <= MAX_BATCH:
        raise ApiError(400, "invalid", f"'events' must be a list of 1-{MAX_BATCH} events",
                       "events")
    # All checked before any is applied: a batch with a bad event changes nothing.
    now = hub.clock()
    checked = [_event(item, index, now) for index, item in enumerate(events)]
    site = hub.sites[key.site]
    try:
        visitors = [event.get("visitor") or await hub.store.visitor_of_user(site.key,
                                                                            event["user_id"])
                    for event in checked]
        claims = await _claims(hub, site.key, checked, visitors)
    except ApiError:
        raise
    except Exception:
        log.exception("the store could not take a batch of events")
        raise unavailable() from None
    results = []
    for index, event in enumerate(checked):
        visitor = visitors[index]
        if visitor is None:
            results.append({"index": index, "status": "unknown_user"})
            continue
        if claims.get(index) == "duplicate":
            results.append({"index": index, "status": "duplicate", "visitor": visitor})
            continue
        try:
            # Committed once the event is stored, by whichever process stores it.
            claim = ((f"event:{event['idempotency_key']}", _digest(event))
                     if claims.get(index) == "claimed" else None)
            outcome = await hub.business_event(site, visitor, Custom(
                event["name"], event["props"], confirmed=True), received, claim)
        except Undecided:
            log.warning("a referred business event went unanswered; the answer is 503")
            # Perhaps applied: its key stays claimed, and the process that took it commits
            # it once stored (a retry is then a duplicate), or it lapses (then applied).
            await _release(hub, site.key, checked, claims, index + 1)
            raise ApiError(503, "unavailable", "the visitor's process did not answer; "
                           f"events before index {index} were applied, retry the batch with "
                           "the same idempotency keys", f"events[{index}]") from None
        except Exception:
            log.exception("a business event could not be stored; the answer is 503")
            # The events not applied may be retried with their keys: give those back.
            await _release(hub, site.key, checked, claims, index)
            raise ApiError(503, "unavailable", "the store could not keep this event; "
                           f"events before index {index} were applied, retry the batch with "
                           "the same idempotency keys", f"events[{index}]") from None
        hub.counts["api.event"] += 1
        results.append({"index": index, "status": "applied", "visitor": visitor,
                        "shown_live": outcome.shown_live, "queued": outcome.queued})
    return JSONResponse({"results": results})


async def _release(hub: Hub, site: str, checked: list[dict[str, Any]],
                   claims: dict[int, ClaimOutcome], first: int) -> None:
    keys = [f"event:{checked[index]['idempotency_key']}" for index, outcome in claims.items()
            if index >= first and outcome == "claimed"]
    try:
        await hub.store.release(site, keys)
    except Exception:
        log.exception("idempotency keys of a failed batch could not be released")


def _digest(event: dict[str, Any]) -> str:
    """The request an idempotency key stands for, whatever the order of its keys."""
    canonical = {name: value for name, value in event.items() if name != "idempotency_key"}
    return hashlib.sha256(orjson.dumps(canonical, option=orjson.OPT_SORT_KEYS)).hexdigest()


async def _claims(hub: Hub, site: str, checked: list[dict[str, Any]],
                  visitors: list[str | None]) -> dict[int, ClaimOutcome]:
    """Claim the batch's idempotency keys at once, so that a key reused for another event
    refuses the whole batch before any of it is applied (a retry must not be mistaken for
    the request it repeats, nor the other way round)."""
    keyed = [index for index, event in enumerate(checked)
             if "idempotency_key" in event and visitors[index] is not None]
    if not keyed:
        return {}
    outcomes = await hub.store.claim(
        site, [(f"event:{checked[index]['idempotency_key']}", _digest(checked[index]))
               for index in keyed], IDEMPOTENCY_TTL, CLAIM_LEASE)
    for index, outcome in zip(keyed, outcomes, strict=True):
        if outcome == "conflict":
            raise ApiError(409, "conflict", "this idempotency_key was used before with a "
                           "different event; use a new key for a new event",
                           f"events[{index}].idempotency_key")
    for index, outcome in zip(keyed, outcomes, strict=True):
        if outcome == "pending":
            raise ApiError(503, "in_progress", "an earlier request with this "
                           "idempotency_key is still being applied (or its worker stopped); "
                           f"nothing of the batch was applied, retry in {CLAIM_LEASE:g} s",
                           f"events[{index}].idempotency_key")
    return dict(zip(keyed, outcomes, strict=True))


async def post_identify(request: Request) -> JSONResponse:
    key = await authorize(request, "events")
    hub: Hub = request.app.state.hub
    body = await body_of(request)
    unknown = sorted(set(body) - {"visitor", "user_id", "traits"})
    if unknown:
        raise ApiError(400, "invalid", f"unknown key '{unknown[0]}'", unknown[0])
    user_id = _text(body, "user_id", "", USER_ID)
    traits = body.get("traits", {})
    if not isinstance(traits, dict):
        raise ApiError(400, "invalid", "'traits' must be an object", "traits")
    visitor = body.get("visitor")
    if visitor is None:
        visitor = await hub.store.visitor_of_user(key.site, user_id)
        if visitor is None:
            raise ApiError(404, "not_found", "this user is not linked to a visitor yet: "
                           "give 'visitor'", "visitor")
    else:
        visitor = _text(body, "visitor", "", VISITOR_ID, 64)
    # An id popin never met is not refused (the backend may link a visitor before its
    # first page is seen), but the answer says so: a copied placeholder shows at once.
    new_visitor = not await hub.knows(key.site, visitor)
    try:
        kept, stored = await hub.identify(hub.sites[key.site], visitor, user_id, traits)
    except TraitError as error:
        raise ApiError(400, "invalid", error.message, error.field) from None
    answer: dict[str, Any] = {"visitor": kept, "user_id": user_id, "stored": stored,
                              "new_visitor": new_visitor}
    if new_visitor:
        answer["note"] = (f"popin had never seen visitor '{visitor}': a profile was started "
                          "for it. The widget's id is in the page's localStorage (popin_v).")
    return JSONResponse(answer)


async def _visitor_of(request: Request, key: ApiKey) -> str | None:
    """The visitor the path names, by popin's id or by the site's user id (None: no
    visitor is linked to that user)."""
    hub: Hub = request.app.state.hub
    if "user_id" in request.path_params:
        user_id: str = request.path_params["user_id"]
        if not 1 <= len(user_id) <= 128 or not USER_ID.match(user_id):
            raise ApiError(400, "invalid", "a user id is 1-128 characters, no control "
                           "characters", "user_id")
        return await hub.store.visitor_of_user(key.site, user_id)
    visitor: str = request.path_params["visitor"]
    if not VISITOR_ID.match(visitor):
        raise ApiError(400, "invalid", "a visitor id is 8-64 letters, digits, '-' or '_'",
                       "visitor")
    return visitor


async def visitor_resource(request: Request) -> Response:
    """Read or erase; a visitor and a user popin knows nothing of are answered alike: 404
    on a read, 204 on an erasure (idempotent: a retry, or nothing kept, is no failure)."""
    key = await authorize(request, "profiles")
    hub: Hub = request.app.state.hub
    check_query(request)
    visitor = await _visitor_of(request, key)
    if request.method == "DELETE":
        if visitor is not None:
            await hub.forget(key.site, visitor)
        return Response(status_code=204)
    profile = None
    if visitor is not None:
        await hub.flush()
        profile = await hub.store.load_profile(key.site, visitor)
    if profile is None:
        field = "user_id" if "user_id" in request.path_params else "visitor"
        raise ApiError(404, "not_found", f"nothing is stored about this {field.split('_')[0]}",
                       field)
    return JSONResponse(public_profile(profile))


async def list_webhooks(request: Request) -> JSONResponse:
    key = await authorize(request, "events")
    hub: Hub = request.app.state.hub
    check_query(request, ("status",))
    status = request.query_params.get("status", "dead")
    if status not in ("pending", "delivered", "dead"):
        raise ApiError(400, "invalid", "'status' is pending, delivered or dead", "status")
    deliveries = await hub.store.list_deliveries(key.site, status)
    return JSONResponse({"deliveries": [
        {name: getattr(delivery, name) for name in ("id", "url", "status", "attempts",
                                                     "last_error", "created", "due")}
        for delivery in deliveries[:1000]]})


async def list_bookings(request: Request) -> JSONResponse:
    """One day of appointments, in the site's time zone."""
    key = await authorize(request, "profiles")
    hub: Hub = request.app.state.hub
    check_query(request, ("day",))
    site = hub.sites[key.site]
    try:
        day = date.fromisoformat(request.query_params.get("day", ""))
        start = datetime.combine(day, time(0), tzinfo=site.zone).timestamp()
        end = datetime.combine(day + timedelta(days=1), time(0), tzinfo=site.zone).timestamp()
    except (ValueError, OverflowError):
        raise ApiError(400, "invalid", "'day' must be a date, YYYY-MM-DD", "day") from None
    bookings = await hub.store.list_bookings(site.key, start, end)
    return JSONResponse({"bookings": [booking.to_dict() for booking in bookings]})


async def list_leads(request: Request) -> JSONResponse:
    key = await authorize(request, "profiles")
    hub: Hub = request.app.state.hub
    check_query(request, ("since",))
    try:
        since = float(request.query_params.get("since", "0"))
    except ValueError:
        raise ApiError(400, "invalid", "'since' is seconds since the epoch", "since") from None
    if not math.isfinite(since):
        raise ApiError(400, "invalid", "'since' is seconds since the epoch", "since")
    leads = await hub.store.list_leads(key.site, since)
    return JSONResponse({"leads": [lead.to_dict() for lead in leads[:1000]]})


ROUTES = [
    Route("/api/v1/bookings", list_bookings, methods=["GET"]),
    Route("/api/v1/leads", list_leads, methods=["GET"]),
    Route("/api/v1/webhooks", list_webhooks, methods=["GET"]),
    Route("/api/v1/events", post_events, methods=["POST"]),
    Route("/api/v1/identify", post_identify, methods=["POST"]),
    Route("/api/v1/visitors/{visitor}", visitor_resource, methods=["GET", "DELETE"]),
    Route("/api/v1/users/{user_id}", visitor_resource, methods=["GET", "DELETE"]),
]

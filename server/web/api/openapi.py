"""The OpenAPI description of the backend API, served at /openapi.json; the test suite
runs schemathesis against it, so the two cannot drift apart."""

from __future__ import annotations

from typing import Any

from ... import __version__

ID = {"type": "string", "pattern": "^[A-Za-z0-9_-]{8,64}$"}
TEXT = {"type": "string", "minLength": 1, "maxLength": 128}
SCALAR = {"oneOf": [{"type": "string", "maxLength": 512}, {"type": "number"},
                    {"type": "boolean"}, {"type": "null"}]}
ERROR = {"type": "object", "required": ["error"], "properties": {"error": {
    "type": "object", "required": ["code", "message"],
    "properties": {"code": {"type": "string"}, "message": {"type": "string"},
                   "field": {"type": "string"}}}}}
PROPS = {"type": "object", "nullable": True, "maxProperties": 32, "additionalProperties": SCALAR}
EVENT = {
    "type": "object", "required": ["name"], "additionalProperties": False,
    "properties": {
        "name": {"type": "string", "pattern": "^[A-Za-z0-9_.:-]{1,64}$"},
        "visitor": ID, "user_id": TEXT, "props": PROPS,
        "time": {"type": "number", "minimum": 946684800,
                 "description": "seconds since the epoch, from 2000-01-01 to a day ahead of "
                 "the server's clock"},
        "idempotency_key": {**TEXT, "description": "a retried request is applied once; the "
                            "same key with a different event is refused with 409"},
    },
    "oneOf": [{"required": ["visitor"]}, {"required": ["user_id"]}],
}
RESULT = {"type": "object", "required": ["index", "status"], "properties": {
    "index": {"type": "integer"},
    "status": {"enum": ["applied", "duplicate", "unknown_user"]},
    "visitor": {"type": "string"}, "shown_live": {"type": "integer"},
    "queued": {"type": "integer"}}}
IDENTIFIED = {"type": "object", "required": ["visitor", "user_id", "stored", "new_visitor"],
              "properties": {
                  "visitor": {"type": "string"}, "user_id": {"type": "string"},
                  "stored": {"type": "array", "items": {"type": "string"}},
                  "new_visitor": {"type": "boolean", "description": "popin had never seen "
                                  "this visitor id (no session, no profile): a profile was "
                                  "started for it; a copied placeholder shows this way"},
                  "note": {"type": "string", "description": "with new_visitor, in words"}}}
# A trait given as null or "" is left as it was.
TRAITS = {"type": "object", "additionalProperties": False, "properties": {
    "first_name": {"type": "string", "nullable": True, "maxLength": 100},
    "birthday": {"type": "string", "nullable": True, "description": "YYYY-MM-DD or MM-DD"},
    "email": {"type": "string", "nullable": True,
              "description": "stored only as a SHA-256 of its normal form"},
    "phone": {"type": "string", "nullable": True,
              "description": "stored only as a SHA-256 of its E.164 form"}}}


def _errors(*statuses: int) -> dict[str, Any]:
    words = {400: "Invalid input, naming the field", 401: "Missing or invalid API key",
             403: "The key lacks the scope", 404: "Not found", 413: "Body too large",
             409: "An idempotency_key used before with a different event (the field names "
                  "it); nothing of the batch was applied",
             410: "The cursor is too old: take a full export",
             503: "The store could not keep an event: the events before the index the "
                  "field names were applied; retry the batch with the same keys (code "
                  "in_progress: an earlier request with that key is still at work, or its "
                  "worker stopped; retry after Retry-After seconds)"}
    if 401 in statuses and 503 not in statuses:
        # Checking the key needs the store: when it is not answering, nothing is done.
        statuses = (*statuses, 503)
        words = {**words, 503: "The store is not answering: nothing was done; retry later"}
    return {str(status): {"description": words[status], "content": {
        "application/json": {"schema": ERROR}}} for status in statuses}


def _json(schema: dict[str, Any]) -> dict[str, Any]:
    return {"content": {"application/json": {"schema": schema}}}


def _profile_operations(parameter: str, schema: dict[str, Any]) -> dict[str, Any]:
    params = [{"name": parameter, "in": "path", "required": True, "schema": schema}]
    return {
        "get": {"summary": "What is stored about a visitor", "parameters": params,
                "security": [{"key": []}],
                "responses": {"200": {"description": "The profile",
                                      **_json({"type": "object"})},
                              **_errors(400, 401, 403, 404)},
                "description": "404 for an unknown visitor and an unknown user alike."},
        "delete": {"summary": "Erase a visitor everywhere (right to be forgotten)",
                   "description": "Idempotent: an unknown visitor or user gets 204 too, "
                                  "as a retried erasure does (a read of either gets 404).",
                   "parameters": params, "security": [{"key": []}],
                   "responses": {"204": {"description": "Erased, or nothing was kept"},
                                 **_errors(400, 401, 403)}},
    }


AUDIENCE = {"name": "name", "in": "path", "required": True,
            "schema": {"type": "string", "pattern": "^[a-z0-9][a-z0-9_.-]{0,63}$"}}
CURSOR = {"type": "string", "maxLength": 200,
          "description": "the Popin-Cursor header of an earlier export"}


def _audience_paths() -> dict[str, Any]:
    text = {"schema": {"type": "string"}}
    export_types = {media: text for media in ("text/csv", "application/x-ndjson", "text/plain")}
    query = [{"name": "format", "in": "query", "required": False,
              "schema": {"enum": ["csv", "jsonl", "meta", "google", "ids"]}},
             {"name": "since", "in": "query", "required": False, "schema": CURSOR},
             {"name": "until", "in": "query", "required": False, "schema": CURSOR},
             {"name": "change", "in": "query", "required": False,
              "schema": {"enum": ["joined", "left"]}}]
    return {
        "/api/v1/audiences": {"get": {
            "summary": "The site's retargeting audiences and their sizes",
            "security": [{"key": []}],
            "responses": {"200": {"description": "Audiences by name", **_json({
                "type": "object", "required": ["audiences"],
                "properties": {"audiences": {"type": "array", "items": {
                    "type": "object", "required": ["name", "size"]}}}})},
                **_errors(400, 401, 403)}}},
        "/api/v1/audiences/{name}/export": {"get": {
            "summary": "Stream an audience in a generic or ad-platform format, whole or "
                       "since a cursor",
            "security": [{"key": []}], "parameters": [AUDIENCE, *query],
            "responses": {"200": {"description": "The file; Popin-Cursor resumes after it",
                                  "headers": {"Popin-Cursor": {"schema": {"type": "string"}}},
                                  "content": export_types},
                          **_errors(400, 401, 403, 404, 410)}}},
        "/api/v1/audiences/{name}/sizes": {"get": {
            "summary": "Members at the end of each day with changes (UTC days)",
            "security": [{"key": []}], "parameters": [AUDIENCE],
            "responses": {"200": {"description": "Sizes, oldest first", **_json({
                "type": "object", "required": ["audience", "sizes"]})},
                **_errors(400, 401, 403, 404)}}},
    }


def document() -> dict[str, Any]:
    return {
        "openapi": "3.0.3",
        "info": {"title": "popin backend API", "version": __version__,
                 "description": "Business events, identity and privacy for one site. "
                                "Keys are per site with scopes: events, profiles, export."},
        "components": {"securitySchemes": {"key": {"type": "http", "scheme": "bearer"}}},
        "paths": {
            "/api/v1/events": {"post": {
                "summary": "Post business events (a batch of 1-100)",
                "security": [{"key": []}],
                "requestBody": {"required": True, **_json({
                    "type": "object", "required": ["events"], "additionalProperties": False,
                    "properties": {"events": {"type": "array", "minItems": 1, "maxItems": 100,
                                              "items": EVENT}}})},
                "responses": {"200": {"description": "One result per event", **_json({
                    "type": "object", "required": ["results"],
                    "properties": {"results": {"type": "array", "items": RESULT}}})},
                    **_errors(400, 401, 403, 409, 413, 503)}}},
            "/api/v1/identify": {"post": {
                "summary": "Link the site's user to a visitor, with traits",
                "security": [{"key": []}],
                "requestBody": {"required": True, **_json({
                    "type": "object", "required": ["user_id"], "additionalProperties": False,
                    "properties": {"visitor": ID, "user_id": TEXT, "traits": TRAITS}})},
                "responses": {"200": {"description": "The visitor id to use from now on",
                                      **_json(IDENTIFIED)},
                              **_errors(400, 401, 403, 404, 413)}}},
            "/api/v1/webhooks": {"get": {
                "summary": "Webhook deliveries by status; dead ones carry their last error",
                "security": [{"key": []}],
                "parameters": [{"name": "status", "in": "query", "required": False,
                                "schema": {"enum": ["pending", "delivered", "dead"]}}],
                "responses": {"200": {"description": "Deliveries, newest due last", **_json({
                    "type": "object", "required": ["deliveries"],
                    "properties": {"deliveries": {"type": "array", "items": {
                        "type": "object", "required": ["id", "url", "status", "attempts"]}}}})},
                    **_errors(400, 401, 403)}}},
            "/api/v1/bookings": {"get": {
                "summary": "One day's appointments (the day in the site's time zone)",
                "security": [{"key": []}],
                "parameters": [{"name": "day", "in": "query", "required": True,
                                "schema": {"type": "string", "format": "date"}}],
                "responses": {"200": {"description": "Bookings, by start", **_json({
                    "type": "object", "required": ["bookings"],
                    "properties": {"bookings": {"type": "array", "items": {"type": "object"}}}})},
                    **_errors(400, 401, 403)}}},
            "/api/v1/leads": {"get": {
                "summary": "Requests for help (call back, video, e-mail) since a time",
                "security": [{"key": []}],
                "parameters": [{"name": "since", "in": "query", "required": False,
                                "schema": {"type": "number"}}],
                "responses": {"200": {"description": "Leads, oldest first", **_json({
                    "type": "object", "required": ["leads"],
                    "properties": {"leads": {"type": "array", "items": {"type": "object"}}}})},
                    **_errors(400, 401, 403)}}},
            "/api/v1/visitors/{visitor}": _profile_operations("visitor", ID),
            "/api/v1/users/{user_id}": _profile_operations("user_id", TEXT),
            **_audience_paths(),
        },
    }

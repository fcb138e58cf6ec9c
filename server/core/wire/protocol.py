"""The widget's wire format: JSON text frames, decoded and checked here, without I/O.

Client to server: {"type": "hello"|"pageview"|"dwell"|"scroll"|"idle"|"exit"|"tab"|"typing"|
                   "consent"|"event"|"popin"|"identify"|"form"|"preview", ...}
                 A frame holds one message, or a list of them (what happened together).
Server to client: {"type": "config"|"show"|"update"|"identity"|"error", ...}

Anything malformed raises `ProtocolError`, which becomes an error frame; the
connection closes only when a client keeps misbehaving.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import orjson

from .events import (
    CONSENT_MODE_TYPES,
    CONSENT_STATES,
    POPIN_STATUSES,
    ClientMessage,
    Consent,
    ConsentModeSignal,
    Custom,
    Dwell,
    ExitIntent,
    FormSubmit,
    Hello,
    Identify,
    Idle,
    PageView,
    PopinStatus,
    Preview,
    Scalar,
    Scroll,
    TabReturn,
    TcfSignal,
    Typing,
)

MAX_MESSAGE_BYTES = 4096
# Messages in one frame, at most (a batch counts message by message against the rate).
# The widget's largest is the one it reconnects with: the hello, the consent tools' last
# word (one per tool) and up to 50 messages it queued meanwhile (review: 51 to 53 were
# refused, the hello with them, and the page's widget fell silent).
MAX_BATCH = 64
# Past this many bad messages on one connection, the client is broken or hostile.
MAX_ERRORS_PER_CONNECTION = 20
CLOSE_POLICY_VIOLATION = 1008
CLOSE_TOO_BIG = 1009
# Application close codes (4000-4999) so the widget knows not to retry.
CLOSE_UNKNOWN_SITE = 4004
CLOSE_FORBIDDEN_ORIGIN = 4003
# No message for `limits.idle_seconds`: the widget reconnects on the visitor's next action.
CLOSE_IDLE = 4001
# No hello within `limits.hello_seconds` of the handshake.
CLOSE_HELLO_TIMEOUT = 4008
# Messages kept coming faster than `limits.messages_per_second` allows.
CLOSE_RATE = 4029
# Too many sockets (in all or from one address): refused before the handshake completes.
CLOSE_TRY_LATER = 1013

# Shared with the HTTP API: one definition of what an id and an event name may be.
# `\Z`, not `$`: a trailing newline must not pass (it breaks line-based exports).
VISITOR_ID = re.compile(r"\A[A-Za-z0-9_-]{8,64}\Z")
EVENT_NAME = re.compile(r"\A[A-Za-z0-9_.:-]{1,64}\Z")
USER_HASH = re.compile(r"\A[0-9a-fA-F]{64}\Z")
# The site's own user ids: any text but control characters.
USER_ID = re.compile(r"\A[^\x00-\x1f\x7f]{1,128}\Z")
MAX_URL = 2048
MAX_PROPS = 32
MAX_PROP_TEXT = 512


class ProtocolError(Exception):
    def __init__(self, code: str, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.field = field

    def frame(self) -> dict[str, Any]:
        frame: dict[str, Any] = {"type": "error", "code": self.code, "message": self.message}
        if self.field:
            frame["field"] = self.field
        return frame


def encode(message: dict[str, Any]) -> str:
    return orjson.dumps(message).decode()


def decode(data: str | bytes) -> ClientMessage:
    return parse(load(data))


def load(data: str | bytes) -> Any:
    """The JSON of one frame: a message, or a batch (a list of messages)."""
    if len(data) > MAX_MESSAGE_BYTES:
        raise ProtocolError("too_big", f"messages are limited to {MAX_MESSAGE_BYTES} bytes")
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        raise ProtocolError("bad_json", "message is not valid JSON") from None


def messages_of(data: str | bytes) -> list[Any]:
    """The messages of one frame, each for `parse`: the widget sends what happened in
    the same moment as one frame, a list, to save frames."""
    loaded = load(data)
    if not isinstance(loaded, list):
        return [loaded]
    if not loaded or len(loaded) > MAX_BATCH:
        raise ProtocolError("bad_message", f"a batch holds 1 to {MAX_BATCH} messages")
    return loaded


def parse(message: Any) -> ClientMessage:
    if not isinstance(message, dict):
        raise ProtocolError("bad_message", "message must be a JSON object")
    kind = message.get("type")
    parse = _PARSERS.get(kind) if isinstance(kind, str) else None
    if parse is None:
        raise ProtocolError("unknown_type", f"unknown message type {kind!r}; expected one of "
                            f"{', '.join(_PARSERS)}", "type")
    return parse(message)


def _text(message: dict[str, Any], field: str, limit: int, required: bool = True) -> str:
    value = message.get(field, None if required else "")
    if not isinstance(value, str) or (required and not value):
        raise ProtocolError("bad_field", f"{field!r} must be non-empty text", field)
    if len(value) > limit:
        raise ProtocolError("bad_field", f"{field!r} is longer than {limit} characters", field)
    return value


def _identifier(message: dict[str, Any], field: str) -> str:
    value = message.get(field)
    if not isinstance(value, str) or not VISITOR_ID.match(value):
        raise ProtocolError("bad_field", f"{field!r} must be 8-64 letters, digits, '-' or '_'",
                            field)
    return value


def _url(message: dict[str, Any], field: str = "url") -> tuple[str, str]:
    url = _text(message, field, MAX_URL)
    try:
        parts = urlsplit(url)
        parts.hostname  # noqa: B018 - a broken host ("http://[::1") raises only here
    except ValueError:
        raise ProtocolError("bad_field", f"{field!r} is not a URL", field) from None
    if parts.scheme not in ("http", "https"):
        raise ProtocolError("bad_field", f"{field!r} must be an http(s) URL", field)
    return url, parts.path or "/"


def _referrer(message: dict[str, Any]) -> str:
    """Any scheme may refer (android-app://...), but one that cannot be parsed is dropped:
    the visit goes on as a direct one."""
    referrer = _text(message, "referrer", MAX_URL, required=False)
    try:
        urlsplit(referrer).hostname  # noqa: B018 - a broken host raises only here
    except ValueError:
        return ""
    return referrer


def _hello(message: dict[str, Any]) -> Hello:
    url, _path = _url(message)
    return Hello(
        visitor=_identifier(message, "visitor"),
        session=_identifier(message, "session"),
        url=url,
        referrer=_referrer(message),
        language=_text(message, "language", 35, required=False),
        timezone=_text(message, "timezone", 64, required=False),
        gpc=_flag(message, "gpc", required=False),
        consent=_choice(message, "consent", CONSENT_STATES, "unknown"),
        cmp=_flag(message, "cmp", required=False),
    )


def _choice(message: dict[str, Any], field: str, choices: tuple[str, ...], default: str) -> str:
    value = message.get(field, default)
    if value not in choices:
        raise ProtocolError("bad_field", f"{field!r} must be one of {', '.join(choices)}", field)
    return str(value)


def _flag(message: dict[str, Any], field: str, required: bool = True) -> bool:
    value = message.get(field, None if required else False)
    if not isinstance(value, bool):
        raise ProtocolError("bad_field", f"{field!r} must be true or false", field)
    return value


def _seconds(message: dict[str, Any], field: str = "seconds", limit: float = 86400) -> float:
    value = message.get(field)
    if (isinstance(value, bool) or not isinstance(value, int | float)
            or not math.isfinite(value) or not 0 < value <= limit):
        raise ProtocolError("bad_field", f"{field!r} must be a number, 0 < n <= {limit:g}",
                            field)
    return float(value)


def _pageview(message: dict[str, Any]) -> PageView:
    url, path = _url(message)
    return PageView(url=url, path=path, title=_text(message, "title", 300, required=False))


def _dwell(message: dict[str, Any]) -> Dwell:
    watch = _text(message, "keyword", 200).strip()
    # The name part is case-insensitive; a CSS selector after '@' is not.
    name, at, selector = watch.partition("@")
    return Dwell(keyword=name.lower() + at + selector, seconds=_seconds(message),
                 element=_text(message, "element", 120, required=False))


def _event(message: dict[str, Any]) -> Custom:
    name = message.get("name")
    if not isinstance(name, str) or not EVENT_NAME.match(name):
        raise ProtocolError("bad_field", "'name' must be 1-64 letters, digits or _.:-", "name")
    props = message.get("props", {})
    if props is None:
        props = {}
    if not isinstance(props, dict) or len(props) > MAX_PROPS:
        raise ProtocolError("bad_field", f"'props' must be an object of at most {MAX_PROPS} keys",
                            "props")
    checked: dict[str, Scalar] = {}
    for key, value in props.items():
        if len(key) > 64 or not is_scalar(value):
            raise ProtocolError("bad_field", f"'props.{key[:64]}' must be text (at most "
                                f"{MAX_PROP_TEXT} characters), a number, true/false or null",
                                f"props.{key[:64]}")
        checked[key] = value
    return Custom(name=name, props=checked)


def is_scalar(value: object) -> bool:
    """A property value popin keeps: short text, a finite number, true/false or null."""
    if isinstance(value, str):
        return len(value) <= MAX_PROP_TEXT
    if isinstance(value, float):
        return math.isfinite(value)
    return value is None or isinstance(value, bool | int)


def _identify(message: dict[str, Any]) -> Identify:
    traits = message.get("traits") or {}
    if not isinstance(traits, dict) or len(traits) > 8 or not all(
            isinstance(value, str | None) and len(value or "") <= 200 for value in traits.values()):
        raise ProtocolError("bad_field", "'traits' must be an object of at most 8 texts",
                            "traits")
    user_hash = _text(message, "user_hash", 128, required=False)
    if user_hash and not USER_HASH.match(user_hash):
        raise ProtocolError("bad_field", "'user_hash' must be the HMAC-SHA256 of the user id, "
                            "in hex", "user_hash")
    user_id = _text(message, "user_id", 128)
    if not USER_ID.match(user_id):
        raise ProtocolError("bad_field", "'user_id' must not hold control characters", "user_id")
    return Identify(user_id, traits, user_hash)


# IAB TCF encodes 24 purpose bits; v2.2 defines purposes 1-11.
MAX_TCF_PURPOSE = 24
CONSENT_SOURCES = ("page", "tcf", "gcm")
_CONSENT_FIELDS = {"page": ("granted",), "tcf": ("applies", "purposes", "publisher", "action"),
                   "gcm": ("states", "action")}
# A JavaScript timestamp in ms (integers are exact below 2**53).
MAX_ACTION = 2**53 - 1


def _consent(message: dict[str, Any]) -> Consent | TcfSignal | ConsentModeSignal:
    """{"type": "consent", "granted": bool}: the page's own choice (`popin.consent`);
    with "source": "tcf" or "gcm", what the page's consent tool says. Only the fields of
    that source: this message decides what is kept about a visitor."""
    source = _choice(message, "source", CONSENT_SOURCES, "page")
    allowed = {"type", "source", *_CONSENT_FIELDS[source]}
    unknown = sorted(str(key) for key in message if key not in allowed)
    if unknown:
        raise ProtocolError("bad_field", f"unknown field {unknown[0][:64]!r} in a {source} "
                            f"consent; known: {', '.join(sorted(allowed - {'type'}))}",
                            unknown[0][:64])
    if source == "page":
        return Consent(_flag(message, "granted"))
    if source == "tcf":
        return TcfSignal(_flag(message, "applies"), _purposes(message, "purposes"),
                         _purposes(message, "publisher"), _action(message))
    states = message.get("states")
    if not isinstance(states, dict) or not all(
            key in CONSENT_MODE_TYPES and value in ("granted", "denied")
            for key, value in states.items()):
        raise ProtocolError("bad_field", "'states' must map Consent Mode types ("
                            f"{', '.join(CONSENT_MODE_TYPES)}) to granted or denied", "states")
    return ConsentModeSignal({key: value == "granted" for key, value in states.items()},
                             _action(message))


def _action(message: dict[str, Any]) -> int:
    value = message.get("action", 0)
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= MAX_ACTION:
        raise ProtocolError("bad_field", "'action' must be a timestamp in ms, or 0", "action")
    return value


def _purposes(message: dict[str, Any], field: str) -> frozenset[int]:
    value = message.get(field, [])
    if not isinstance(value, list) or len(value) > MAX_TCF_PURPOSE or not all(
            isinstance(item, int) and not isinstance(item, bool)
            and 1 <= item <= MAX_TCF_PURPOSE for item in value):
        raise ProtocolError("bad_field", f"{field!r} must be a list of TCF purpose ids, "
                            f"1-{MAX_TCF_PURPOSE}", field)
    return frozenset(value)


def _form(message: dict[str, Any]) -> FormSubmit:
    fields = message.get("fields")
    if not isinstance(fields, dict) or len(fields) > 12 or not all(
            isinstance(key, str) and len(key) <= 32 and isinstance(value, str)
            and len(value) <= 1000 for key, value in fields.items()):
        raise ProtocolError("bad_field", "'fields' must be an object of at most 12 short texts",
                            "fields")
    form = message.get("form")
    if form not in ("lead", "book"):
        raise ProtocolError("bad_field", "'form' must be lead or book", "form")
    return FormSubmit(_text(message, "id", 64), form, fields)


def _popin(message: dict[str, Any]) -> PopinStatus:
    push_id = _text(message, "id", 64)
    status = message.get("status")
    for known in POPIN_STATUSES:
        if status == known:
            return PopinStatus(push_id=push_id, status=known)
    raise ProtocolError("bad_field", f"'status' must be one of {', '.join(POPIN_STATUSES)}",
                        "status")


_PARSERS: dict[str, Callable[[dict[str, Any]], ClientMessage]] = {
    "hello": _hello,
    "pageview": _pageview,
    "dwell": _dwell,
    "scroll": lambda message: Scroll(int(_seconds(message, "percent", 100))),
    "idle": lambda message: Idle(_seconds(message)),
    "exit": lambda _message: ExitIntent(),
    "tab": lambda message: TabReturn(_seconds(message)),
    "typing": lambda message: Typing(_flag(message, "active")),
    "consent": _consent,
    "event": _event,
    "popin": _popin,
    "identify": _identify,
    "preview": lambda message: Preview(_text(message, "token", 400)),
    "form": _form,
}

"""What a rule does: show something (a pop-in, an assistance offer, appointment slots),
tag the visitor into an audience, call a webhook.

    popin: {title: ..., body: ..., cta: {label: ..., url: ...}, placement: corner}
    assist: {title: ..., body: ..., channels: [callback, video, email], url: /contact}
    slots: {calendar: advisors, title: ..., body: ..., channels: [phone, video], url: /book}
    tag: {audience: cart-abandoners, days: 30}      # or tag: cart-abandoners
    webhook: {url: "https://crm.example/hooks/popin"}
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from .schema import Reader
from .templates import ENVIRONMENT, PopinTemplate, compile_popin, compile_template

VISUAL_ACTIONS = ("popin", "assist", "slots")
EFFECT_ACTIONS = ("tag", "webhook")
ACTIONS = (*VISUAL_ACTIONS, *EFFECT_ACTIONS)
ASSIST_CHANNELS = {"callback": "Call me back", "video": "Book a video call",
                   "email": "Answer me by e-mail", "chat": "Chat with us"}
SLOT_CHANNELS = {"phone": "by phone", "video": "by video", "store": "in store"}
DEFAULT_AUDIENCE_DAYS = 30
# What the big ad platforms accept as a membership duration.
MAX_AUDIENCE_DAYS = 540


@dataclass(frozen=True, slots=True)
class TagAction:
    audience: str
    days: int = DEFAULT_AUDIENCE_DAYS


@dataclass(frozen=True, slots=True)
class WebhookAction:
    url: str


def _channels(node: Any, reader: Reader, known: dict[str, str], what: str) -> list[str]:
    channels = node.get("channels", list(known)[:2])
    if not isinstance(channels, list) or not channels:
        reader.fail(node.line_of("channels"), f"'{what}.channels' must be a non-empty list")
    for channel in channels:
        if channel not in known:
            reader.fail(node.line_of("channels"), f"unknown {what} channel {channel!r}; "
                        f"expected one of {', '.join(known)}")
    return [str(channel) for channel in channels]


def _offer(value: Any, line: int, reader: Reader, kind: str) -> PopinTemplate:
    """An assistance offer or appointment slots: a card whose links lead to the channels.

    The booking and lead forms come with their own machinery; until then each channel
    links to the owner's page (`url`) with the channel named in the query.
    """
    known = ASSIST_CHANNELS if kind == "assist" else SLOT_CHANNELS
    extra = ["calendar"] if kind == "slots" else []
    node = reader.mapping(value, line, f"'{kind}'")
    reader.keys(node, f"'{kind}'", ["title", "body", "channels", "url", *extra],
                required=["title", "body", "url", *extra])
    channels = _channels(node, reader, known, kind)
    reader.text(node, "url", max_length=2048)
    base = node["url"]
    separator = "&" if "?" in base else "?"
    links = tuple(
        (ENVIRONMENT.from_string(known[channel] if kind == "assist" else
                                 f"Book {known[channel]}"),
         ENVIRONMENT.from_string(f"{base}{separator}channel={channel}"))
        for channel in channels)
    return PopinTemplate(compile_template(node, "title", reader),
                         compile_template(node, "body", reader), links, "corner", "", kind)


def compile_visual(kind: str, value: Any, line: int, reader: Reader) -> PopinTemplate:
    if kind == "popin":
        return compile_popin(value, line, reader)
    return _offer(value, line, reader, kind)


def compile_tag(value: Any, line: int, reader: Reader) -> TagAction:
    if isinstance(value, str):
        return TagAction(value.strip().lower())
    node = reader.mapping(value, line, "'tag'")
    reader.keys(node, "'tag'", ["audience", "days"], required=["audience"])
    days = DEFAULT_AUDIENCE_DAYS
    if "days" in node:
        days = reader.count(node["days"], node.line_of("days"), "'days'")
        if not 1 <= days <= MAX_AUDIENCE_DAYS:
            reader.fail(node.line_of("days"),
                        f"'days' must be between 1 and {MAX_AUDIENCE_DAYS}, not {days}")
    return TagAction(reader.text(node, "audience", max_length=64).strip().lower(), days)


def compile_webhook(value: Any, line: int, reader: Reader) -> WebhookAction:
    node = reader.mapping(value, line, "'webhook'")
    reader.keys(node, "'webhook'", ["url"], required=["url"])
    url = reader.text(node, "url", max_length=2048)
    if urlsplit(url).scheme not in ("http", "https") or not urlsplit(url).hostname:
        reader.fail(node.line_of("url"), f"'webhook.url' must be an http(s) URL, not {url!r}")
    return WebhookAction(url)

"""What a rule does: show something (a pop-in, an assistance offer, appointment slots),
tag the visitor into an audience, call a webhook.

    popin: {title: ..., body: ..., cta: {label: ..., url: ...}, placement: corner}
    assist: {title: ..., body: ..., channels: [callback, video, email]}   # a lead form
    slots: {calendar: advisers, title: ..., body: ..., channels: [phone, video]}  # a booking form
    tag: {audience: cart-abandoners, days: 30}      # or tag: cart-abandoners
    webhook: {url: "https://crm.example/hooks/popin"}
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from .forms import SLOTS_MARK, lead_form
from .schema import Reader, place
from .templates import PopinTemplate, compile_popin, compile_template

VISUAL_ACTIONS = ("popin", "assist", "slots")
EFFECT_ACTIONS = ("tag", "webhook")
ACTIONS = (*VISUAL_ACTIONS, *EFFECT_ACTIONS)
ASSIST_CHANNELS = ("callback", "video", "email", "chat")
SLOT_CHANNELS = ("phone", "video", "store")
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


def _offer(value: Any, line: int, reader: Reader, kind: str) -> PopinTemplate:
    """An assistance offer or appointment slots: the card holds their form."""
    known = ASSIST_CHANNELS if kind == "assist" else SLOT_CHANNELS
    extra = ["calendar"] if kind == "slots" else []
    node = reader.mapping(value, line, f"'{kind}'")
    reader.keys(node, f"'{kind}'", ["title", "body", "channels", *extra],
                required=["title", "body", *extra])
    channels = node.get("channels", list(known) if kind == "slots" else ["callback", "email"])
    if not isinstance(channels, list) or not channels:
        reader.fail(node.line_of("channels"), f"'{kind}.channels' is {channels!r}; expected a "
                    f"non-empty list of {', '.join(known)}")
    for channel in channels:
        if channel not in known:
            reader.fail(node.line_of("channels"), f"unknown {kind} channel {channel!r}; "
                        f"expected one of {', '.join(known)}")
    calendar = reader.text(node, "calendar", max_length=64) if kind == "slots" else ""
    offered = tuple(str(channel) for channel in channels)
    # Free slots need the store: the mark is filled in before the push leaves.
    form = lead_form(offered) if kind == "assist" else SLOTS_MARK
    return PopinTemplate(compile_template(node, "title", reader),
                         compile_template(node, "body", reader), (), "corner", "", kind,
                         offered, calendar, form)


def compile_visual(kind: str, value: Any, line: int, reader: Reader) -> PopinTemplate:
    if kind == "popin":
        return compile_popin(value, line, reader)
    return _offer(value, line, reader, kind)


# Audience names travel in URLs and file names.
AUDIENCE_NAME = re.compile(r"\A[a-z0-9][a-z0-9_.-]{0,63}\Z")


def _audience_name(name: str, line: int, reader: Reader) -> str:
    name = name.strip().lower()
    if not AUDIENCE_NAME.match(name):
        reader.fail(line, f"audience {name!r} is not a name; expected 1-64 letters, digits, "
                    "'-', '_' or '.'")
    return name


def compile_tag(value: Any, line: int, reader: Reader) -> TagAction:
    if isinstance(value, str):
        return TagAction(_audience_name(value, line, reader))
    node = reader.mapping(value, line, "'tag'")
    reader.keys(node, "'tag'", ["audience", "days"], required=["audience"])
    days = DEFAULT_AUDIENCE_DAYS
    if "days" in node:
        days = reader.count(node["days"], node.line_of("days"), "'days'")
        if not 1 <= days <= MAX_AUDIENCE_DAYS:
            reader.fail(node.line_of("days"),
                        f"'days' is {days}; expected 1 to {MAX_AUDIENCE_DAYS}")
    return TagAction(_audience_name(reader.text(node, "audience", max_length=64),
                                    node.line_of("audience"), reader), days)


def http_host_key(host: str) -> str | None:
    """`host` (an entry of allow_http_hosts, or a URL's host) in the one form both are
    compared in; None if no URL's host could be it. IP literals are canonical so that
    "0:0::1" listed matches http://[::1]/; a scope ("%eth0") is refused, as a URL spells it
    "%25eth0"."""
    host = host.lower()
    try:
        return str(ipaddress.ip_address(host)) if "%" not in host else None
    except ValueError:
        pass
    labels = host[:-1].split(".") if host.endswith(".") else host.split(".")
    if not all(label and all(c.isalnum() or c in "-_" for c in label) for label in labels):
        return None
    return host


def webhook_refusal(url: str, allow_http_hosts: Collection[str]) -> str | None:
    """Why popin never calls `url`, whatever its host resolves to; None if it may. The one
    decision for the sender (each call) and the loader (a rule whose every call would be
    refused)."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
    except ValueError:
        return f"{url!r} is not a URL"
    key = http_host_key(host)
    # Both sides made canonical here: a list given in code (not read by the loader) may
    # spell an address otherwise.
    listed = key is not None and any(http_host_key(entry) == key for entry in allow_http_hosts)
    if host and (parts.scheme == "https" or (parts.scheme == "http" and listed)):
        return None
    return (f"{url} is refused: webhooks go over https, or over http to a host listed in "
            "[webhooks] allow_http_hosts")


def compile_webhook(value: Any, line: int, reader: Reader,
                    allow_http_hosts: Collection[str] = ()) -> WebhookAction:
    """`allow_http_hosts`: popin.toml's [webhooks] allow_http_hosts, in effect where the
    rule runs."""
    node = reader.mapping(value, line, "'webhook'")
    reader.keys(node, "'webhook'", ["url"], required=["url"])
    url = reader.text(node, "url", max_length=2048)
    try:
        parts = urlsplit(url)
        valid = parts.scheme in ("http", "https") and bool(parts.hostname)
    except ValueError:
        valid = False
    if not valid:
        reader.fail(node.line_of("url"), f"'webhook.url' is {url!r}; expected an http(s) URL")
    if webhook_refusal(url, allow_http_hosts):
        host = urlsplit(url).hostname
        reader.fail(node.line_of("url"), f"'webhook.url' is {url!r}, plain http to {host!r}, "
                    "which is not listed in [webhooks] allow_http_hosts of popin.toml: every "
                    "call would be refused; expected an https URL, or the host listed in "
                    "[webhooks] allow_http_hosts")
    return WebhookAction(url)


# Where each key of an action goes, for "'channels' belongs inside 'assist'".
place("assist", ("title", "body", "channels"))
place("slots", ("title", "body", "channels", "calendar"))
place("tag", ("audience", "days"))
place("webhook", ("url",))

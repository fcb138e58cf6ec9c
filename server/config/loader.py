"""popin.toml read into `Settings`, every value checked at start. The file is found where
people look (`find_config`): --config, else $POPIN_CONFIG, else ./popin.toml, else the
defaults (the demo site). Relative paths in it are relative to its own folder.

    store = "sqlite:///popin.db"
    rules = "rules"

    geoip = "GeoLite2-City.mmdb"                 # optional: country/region/city conditions

    [[sites]]
    key = "demo"
    name = "Demo shop"
    origins = ["self", "https://shop.example"]   # "self": the page is served by popin
    timezone = "Europe/Paris"
    consent = "required"                         # or "implied" (the default): see Site
    fatigue = {per_session = 2, per_day = 3}     # pop-ins per visitor, all rules together
    holdout = 5                                  # percent kept out of marketing pop-ins (0: off)
    retention_days = 395                         # a visitor unseen this long is forgotten
    max_page_revenue = 10000                     # most one page-reported order counts for
    [sites.business_hours]
    mon = "09:00-12:00, 14:00-18:00"
    sat = "10:00-16:00"
    [sites.tcf]                                  # optional: what an IAB TCF CMP must grant
    audiences = [3, 4]
    [sites.consent_mode]                         # optional: ... and Google Consent Mode
    audiences = ["ad_user_data", "ad_personalization", "ad_storage"]
"""

from __future__ import annotations

import ipaddress
import os
import re
import tomllib
from dataclasses import fields, replace
from datetime import date
from pathlib import Path
from typing import Any, TypeVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from ..core.calendar import Calendar
from ..core.rules.actions import http_host_key
from ..core.rules.campaign import RULE_FILE_SUFFIXES
from ..core.rules.schema import did_you_mean
from ..core.site import (
    CONSENT_MODES,
    DEFAULT_HOLDOUT,
    DEFAULT_MAX_PAGE_REVENUE,
    DEFAULT_RETENTION_DAYS,
    DEMO_HOURS,
    GUARD_MODES,
    MAX_HOLDOUT,
    MAX_PAGE_REVENUE,
    MAX_RETENTION_DAYS,
    TCF_BASES,
    TCF_PURPOSES,
    UNSIGNED_IDENTIFY_MODES,
    WEEKDAY_KEYS,
    ConsentMap,
    Site,
    Spans,
)
from ..core.wire.events import CONSENT_MODE_TYPES
from .reader import Table
from .settings import ConfigError, Limits, Settings, WebhookSettings

T = TypeVar("T", Limits, WebhookSettings)
_LABEL = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
_ORIGIN = re.compile(rf"\A(https?)://({_LABEL}(?:\.{_LABEL})*|\[[0-9a-f:.]+\])(?::(\d{{1,5}}))?/?\Z",
                     re.IGNORECASE)
_SPAN = re.compile(r"\A\s*(\d{1,2}):(\d{2})\s*-\s*(\d{1,2}):(\d{2})\s*\Z")
TOP = ("store", "rules", "sites", "geoip", "webhooks", "secret", "trusted_proxies", "limits",
       "metrics_token", "metrics_allow")
SITE = ("key", "name", "origins", "timezone", "business_hours", "fatigue", "webhook_secret",
        "notify_url", "calendars", "consent", "identity_secret", "unsigned_identify", "holdout",
        "guard", "rules", "tcf", "consent_mode", "retention_days",
        "max_page_revenue")
CALENDAR = ("name", "timezone", "hours", "closed", "special", "slot_minutes", "buffer_minutes",
            "min_notice_minutes", "horizon_days", "capacity", "channels",
            "bookings_per_visitor_day", "bookings_per_address_day")
MEETING_CHANNELS = ("phone", "video", "store")
# Each limit's allowed range: outside it the config is refused at start.
LIMIT_RANGES: dict[str, tuple[float, float]] = {
    "hello_seconds": (1, 60), "idle_seconds": (30, 86_400), "connections": (1, 1_000_000),
    "connections_per_address": (1, 1_000_000), "messages_per_second": (1, 1000),
    "handshakes_per_minute": (1, 100_000), "handshake_burst": (1, 100_000),
    "message_burst": (1, 10_000), "dropped_before_close": (1, 1_000_000),
    "header_seconds": (1, 300), "body_seconds": (1, 600), "sessions": (2, 10_000_000),
}
WEBHOOK_RANGES: dict[str, tuple[float, float]] = {
    "timeout": (0.5, 120), "max_attempts": (1, 100), "backoff": (0.1, 3600),
    "poll_interval": (0.05, 60), "batch": (1, 1000),
}


CONFIG_FILE = "popin.toml"
CONFIG_VARIABLE = "POPIN_CONFIG"


def find_config(given: Path | None = None, environ: dict[str, str] | None = None,
                folder: Path | None = None) -> Path | None:
    """The settings file to read: the one given (--config), else $POPIN_CONFIG, else
    popin.toml in the current folder; None when there is none (the defaults apply). A file
    that is named but missing is a ConfigError, said in one line."""
    environ = dict(os.environ) if environ is None else environ
    if given is not None:
        if given.is_dir():
            raise ConfigError(f"--config {given}: is a folder, not a file; name the popin.toml "
                              "in it")
        if not given.is_file():
            raise ConfigError(f"--config {given}: no such file (popin init writes one)")
        return given
    named = environ.get(CONFIG_VARIABLE, "")
    if named:
        if Path(named).is_dir():
            raise ConfigError(f"{CONFIG_VARIABLE}={named}: is a folder, not a file; name the "
                              "popin.toml in it")
        if not Path(named).is_file():
            raise ConfigError(f"{CONFIG_VARIABLE}={named}: no such file")
        return Path(named)
    here = (folder or Path.cwd()) / CONFIG_FILE
    return here if here.is_file() else None


def _http_hosts(table: Table, key: str) -> tuple[str, ...]:
    """Each entry as the sender compares it with a URL's host (`webhook_refusal`); one that
    no URL's host could equal (a scheme, port, path, wildcard) is refused here rather than
    every webhook to it being refused later."""
    hosts = []
    for entry in table.texts(key):
        host = http_host_key(entry)
        if host is None:
            table.fail(key, f"{entry!r} must be a host name alone (no scheme, port, path or "
                       "wildcard), like \"crm.internal\", \"10.0.0.5\" or \"::1\"")
        hosts.append(host)
    return tuple(hosts)


def load_settings(path: Path | None, *, sites_required: bool = False) -> Settings:
    """`sites_required`: a file must configure its sites, for the commands that run on
    them (without one, a file only of [limits], say, is read as a fragment of settings)."""
    settings = Settings()
    if path is None:
        return settings
    try:
        raw: Any = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as error:
        raise ConfigError(f"{path}: {error}") from None
    top = Table(raw, str(path), TOP)
    settings.store = _beside(path, top.text("store", settings.store))
    # Relative to the file, as every path in it; `rules/` beside it when not said.
    settings.rules = (path.parent / top.text("rules", "rules")).resolve()
    if "geoip" in top:
        settings.geoip = (path.parent / top.text("geoip")).resolve()
    settings.secret = top.text("secret", min_length=16)
    settings.limits = _numbers(top.table("limits", LIMIT_RANGES), Limits, LIMIT_RANGES)
    webhooks = top.table("webhooks", (*WEBHOOK_RANGES, "allow_http_hosts", "allow_private"))
    settings.webhooks = replace(
        _numbers(webhooks, WebhookSettings, WEBHOOK_RANGES),
        allow_http_hosts=_http_hosts(webhooks, "allow_http_hosts"),
        allow_private=_networks(webhooks, "allow_private"))
    settings.trusted_proxies = _networks(top, "trusted_proxies")
    settings.metrics_token = top.text("metrics_token", min_length=16)
    if "metrics_allow" in top:
        settings.metrics_allow = _networks(top, "metrics_allow")
    if "sites" in top:
        settings.sites = {}
        tables: list[tuple[str, Table]] = []
        for number, entry in enumerate(top.tables("sites"), 1):
            table = Table(entry, f"{path}: [[sites]] #{number}", SITE)
            site = _site(table)
            if site.key in settings.sites:
                raise ConfigError(f"{path}: two sites have the key {site.key!r}")
            settings.sites[site.key] = site
            tables.append((site.key, table))
        for key, table in tables:
            if "rules" in table:
                settings.campaigns[key] = (path.parent / table.text("rules")).resolve()
            elif len(tables) > 1:
                # Campaigns belong to sites: with several, a shared default folder would
                # show one site's pop-ins on the other's pages.
                table.fail("rules", "is needed when there are several sites: each names "
                           f"its own campaign folder (rules = \"campaigns/{key}\")")
        _one_folder_each(path, settings)
    if sites_required and not ("sites" in top and settings.sites):
        # The demo is what runs without a file; a file that names no site is an install
        # half made, and serving the demo's pop-ins from it would hide that.
        raise ConfigError(f"{path}: no [[sites]] configured; add one (popin init does) or "
                          "remove the file to run the demo")
    for folder in {settings.rules, *settings.campaigns.values()}:
        if folder.is_file() and folder.suffix not in RULE_FILE_SUFFIXES:
            raise ConfigError(f"{path}: rules: {folder} is a file that is no rule file; "
                              "expected a folder of .yaml campaign files")
    for site in settings.sites.values():
        if site.notify_url and (refused := settings.webhooks.scheme_refusal(site.notify_url)):
            raise ConfigError(f"{path}: site {site.key!r}: notify_url: {refused}")
    return settings


def _one_folder_each(path: Path, settings: Settings) -> None:
    """No two sites share campaigns: not one folder, nor one inside the other (a folder's
    campaigns are every rule file below it)."""
    folders = list(settings.campaigns.items())
    for number, (key, folder) in enumerate(folders):
        for other, theirs in folders[:number]:
            if folder == theirs:
                raise ConfigError(f"{path}: sites {other!r} and {key!r} both use the "
                                  f"campaign folder {folder}; each site has its own")
            if folder in theirs.parents or theirs in folder.parents:
                inner, outer = (key, other) if theirs in folder.parents else (other, key)
                raise ConfigError(f"{path}: the campaign folder of site {inner!r} is inside "
                                  f"that of site {outer!r}, whose campaigns would then "
                                  "include it; give each site a folder of its own, side by "
                                  "side (campaigns/shop, campaigns/blog)")


def _beside(path: Path, store: str) -> str:
    """An embedded store named by a relative path lives beside the settings file, as the
    rules do, wherever popin is started from."""
    prefix = "sqlite:///"
    if store.startswith(prefix) and not Path(store.removeprefix(prefix)).is_absolute():
        return prefix + str((path.parent / store.removeprefix(prefix)).resolve())
    return store


def _numbers(table: Table, kind: type[T], ranges: dict[str, tuple[float, float]]) -> T:
    defaults = kind()
    values: dict[str, Any] = {}
    for found in fields(defaults):
        if found.name in table and found.name in ranges:
            default = getattr(defaults, found.name)
            low, high = ranges[found.name]
            values[found.name] = (table.whole(found.name, default, int(low), int(high))
                                  if isinstance(default, int)
                                  else table.number(found.name, default, low, high))
    return replace(defaults, **values)


def _origin_ok(origin: str) -> bool:
    """What a browser sends as Origin: a scheme, a host (labels, or [IPv6]), a port that
    exists and is not the scheme's default (browsers leave that one out)."""
    match = _ORIGIN.match(origin)
    if match is None:
        return False
    scheme, port = match[1].lower(), match[3]
    return port is None or (0 < int(port) <= 65535
                            and int(port) != {"http": 80, "https": 443}[scheme])


def _site(site: Table) -> Site:
    key = site.text("key")
    if not re.fullmatch(r"[A-Za-z0-9_-]{1,64}", key):
        site.fail("key", f"must be 1-64 letters, digits, '-' or '_', not {key!r}")
    site.where = f"{site.where.rsplit(':', 1)[0]}: site {key!r}"
    zone = _zone(site, "Europe/Paris")
    for origin in site.texts("origins", ("self",)):
        if origin != "self" and not _origin_ok(origin):
            site.fail("origins", f"holds {origin!r}; expected \"self\" or an origin as a "
                      "browser sends it: http(s)://host[:port], no path, no wildcard, no "
                      "default port")
    hours = DEMO_HOURS
    if "business_hours" in site:
        table = site.table("business_hours", WEEKDAY_KEYS)
        hours = {day: _spans(table, day) for day in table.raw}
    fatigue = site.table("fatigue", ("per_session", "per_day"))
    found = Site(
        key, site.text("name"), site.texts("origins", ("self",)), zone, hours,
        fatigue.whole("per_session", 2, 0, 100), fatigue.whole("per_day", 3, 0, 1000),
        site.text("webhook_secret"), site.text("notify_url"),
        site.choice("consent", CONSENT_MODES, "implied"),
        site.text("identity_secret", min_length=16),
        site.choice("unsigned_identify", UNSIGNED_IDENTIFY_MODES, "refuse"),
        holdout=site.number("holdout", DEFAULT_HOLDOUT, 0, MAX_HOLDOUT),
        guard=site.choice("guard", GUARD_MODES, "confirmed"),
        retention_days=site.whole("retention_days", DEFAULT_RETENTION_DAYS, 1,
                                  MAX_RETENTION_DAYS),
        max_page_revenue=site.number("max_page_revenue", DEFAULT_MAX_PAGE_REVENUE, 1,
                                     MAX_PAGE_REVENUE))
    found = replace(found, consent_map=_consent_map(site))
    if "calendars" not in site:
        return found
    calendars = {}
    for number, entry in enumerate(site.tables("calendars"), 1):
        calendar = _calendar(Table(entry, f"{site.where}: calendar #{number}", CALENDAR), zone)
        calendars[calendar.name] = calendar
    return replace(found, calendars=calendars)


def _calendar(calendar: Table, zone: ZoneInfo) -> Calendar:
    name = calendar.text("name")
    if not name:
        calendar.fail("name", "is needed")
    calendar.where = f"{calendar.where.rsplit(' #', 1)[0]} {name!r}"
    hours_table = calendar.table("hours", WEEKDAY_KEYS)
    special_table = calendar.table("special", calendar.raw.get("special", {}))
    channels = calendar.texts("channels", ("phone", "video"))
    for channel in channels:
        if channel not in MEETING_CHANNELS:
            calendar.fail("channels", f"holds {channel!r}; known: {', '.join(MEETING_CHANNELS)}")
    return Calendar(
        name, _zone(calendar, zone.key) if "timezone" in calendar else zone,
        {day: _spans(hours_table, day) for day in hours_table.raw} or dict(DEMO_HOURS),
        frozenset(_day(calendar, "closed", text) for text in calendar.texts("closed")),
        {_day(calendar, "special", day): _spans(special_table, day)
         for day in special_table.raw},
        # A slot shorter than 5 minutes would make thousands a day (and 0 never ends).
        slot_minutes=calendar.whole("slot_minutes", 30, 5, 24 * 60),
        buffer_minutes=calendar.whole("buffer_minutes", 0, 0, 24 * 60),
        min_notice_minutes=calendar.whole("min_notice_minutes", 120, 0, 90 * 24 * 60),
        horizon_days=calendar.whole("horizon_days", 14, 1, 365),
        capacity=calendar.whole("capacity", 1, 1, 1000),
        channels=channels,
        bookings_per_visitor_day=calendar.whole("bookings_per_visitor_day", 2, 0, 100),
        bookings_per_address_day=calendar.whole("bookings_per_address_day", 6, 0, 10_000))


def _consent_map(site: Table) -> ConsentMap:
    """[sites.tcf] and [sites.consent_mode]: what each consent level needs from the
    consent tools on the site's pages."""
    default = ConsentMap()
    tcf = site.table("tcf", ("basis", "storage", "personalisation", "audiences"))
    mode = site.table("consent_mode", ("storage", "personalisation", "audiences"))
    found = ConsentMap(
        tcf.choice("basis", TCF_BASES, default.tcf_basis),
        _purposes(tcf, "storage", default.tcf_storage),
        _purposes(tcf, "personalisation", default.tcf_personalisation),
        _purposes(tcf, "audiences", default.tcf_audiences),
        _consent_types(mode, "storage", default.mode_storage),
        _consent_types(mode, "personalisation", default.mode_personalisation),
        _consent_types(mode, "audiences", default.mode_audiences))
    if 1 not in found.tcf_storage:
        tcf.fail("storage", "must hold purpose 1 (store and/or access information on a "
                 "device): popin keeps an id there")
    missing = [kind for kind in default.mode_audiences if kind not in found.mode_audiences]
    if missing:
        mode.fail("audiences", f"must hold {' and '.join(missing)}: ad platforms take no "
                  "visitor without them")
    return found


def _purposes(table: Table, key: str, default: tuple[int, ...]) -> tuple[int, ...]:
    value = table.raw.get(key, list(default))
    if not isinstance(value, list) or not all(
            isinstance(item, int) and not isinstance(item, bool) and item in TCF_PURPOSES
            for item in value):
        table.fail(key, f"must be a list of TCF purposes, whole numbers from "
                   f"{TCF_PURPOSES.start} to {TCF_PURPOSES.stop - 1}, like [3, 4], "
                   f"not {value!r:.40}")
    return tuple(sorted(set(value)))


def _consent_types(table: Table, key: str, default: tuple[str, ...]) -> tuple[str, ...]:
    found = table.texts(key, default)
    for kind in found:
        if kind not in CONSENT_MODE_TYPES:
            table.fail(key, f"holds {kind!r}{did_you_mean(kind, CONSENT_MODE_TYPES)}; known: "
                       f"{', '.join(CONSENT_MODE_TYPES)}")
    return tuple(dict.fromkeys(found))


def _zone(table: Table, default: str) -> ZoneInfo:
    name = table.text("timezone", default)
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        table.fail("timezone", f"{name!r} is not a time zone, like \"Europe/Paris\"")


def _day(table: Table, key: str, text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        table.fail(key, f"holds {text!r}, not a day like \"2026-12-25\"")


def _spans(table: Table, key: str) -> Spans:
    spans = []
    for part in table.text(key).split(","):
        match = _SPAN.match(part)
        if match is None:
            table.fail(key, f"holds {part.strip()!r}, not a span like 09:00-18:00")
        h1, m1, h2, m2 = (int(group) for group in match.groups())
        start, end = h1 * 60 + m1, h2 * 60 + m2
        if not 0 <= start < end <= 24 * 60 or m1 > 59 or m2 > 59:
            table.fail(key, f"holds {part.strip()!r}: a span starts before it ends, "
                       "within the day")
        spans.append((start, end))
    return tuple(spans)


def _networks(top: Table, key: str) -> tuple[str, ...]:
    found = top.texts(key)
    for item in found:
        try:
            ipaddress.ip_network(item, strict=False)
        except ValueError:
            top.fail(key, f"holds {item!r}, which is not an IP address or network")
    return found

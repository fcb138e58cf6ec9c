"""Settings: where the store and rules are, and which sites may connect from where.

An optional `popin.toml`:

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
    [sites.business_hours]
    mon = "09:00-12:00, 14:00-18:00"
    sat = "10:00-16:00"
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import re
import secrets
import tempfile
import tomllib
from dataclasses import dataclass, field, replace
from datetime import date
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from .core.calendar import Calendar
from .core.site import (
    CONSENT_MODES,
    DEMO_HOURS,
    UNSIGNED_IDENTIFY_MODES,
    WEEKDAY_KEYS,
    Site,
    Spans,
)

# Where this checkout keeps what the server serves and the shipped playbook.
PROJECT_ROOT = Path(__file__).resolve().parent.parent
STATIC_DIR = PROJECT_ROOT / "static"
DEFAULT_RULES = PROJECT_ROOT / "rules"


@dataclass(frozen=True, slots=True)
class WebhookSettings:
    timeout: float = 5.0
    max_attempts: int = 8
    # Seconds before the 2nd attempt; doubled each time, capped at an hour, with jitter.
    backoff: float = 2.0
    poll_interval: float = 0.5
    batch: int = 20


class ConfigError(Exception):
    pass


_SPAN = re.compile(r"^\s*(\d{1,2}):(\d{2})\s*-\s*(\d{1,2}):(\d{2})\s*$")


@dataclass(slots=True)
class Settings:
    store: str = "sqlite:///popin.db"
    rules: Path = DEFAULT_RULES
    static: Path = STATIC_DIR
    sites: dict[str, Site] = field(default_factory=lambda: {"demo": Site("demo", "Demo shop")})
    geoip: Path | None = None
    # Watch the rules folder and reload on change (and on SIGHUP).
    reload: bool = True
    webhooks: WebhookSettings = field(default_factory=WebhookSettings)
    # Signs cancel/reschedule links; when empty, kept in `secret_file` (made on first start).
    secret: str = ""
    secret_file: Path = Path("popin.secret")
    # Proxies whose X-Forwarded-For / X-Forwarded-Proto are believed (addresses or
    # networks). None by default: a client's own headers never change its address.
    trusted_proxies: tuple[str, ...] = ()


def load_settings(path: Path | None) -> Settings:
    settings = Settings()
    if path is None:
        return settings
    try:
        raw: dict[str, Any] = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as error:
        raise ConfigError(f"{path}: {error}") from None
    unknown = set(raw) - {"store", "rules", "sites", "geoip", "webhooks", "secret",
                          "trusted_proxies"}
    if unknown:
        raise ConfigError(f"{path}: unknown setting(s) {', '.join(sorted(unknown))}")
    if "store" in raw:
        settings.store = str(raw["store"])
    if "rules" in raw:
        settings.rules = (path.parent / str(raw["rules"])).resolve()
    if "geoip" in raw:
        settings.geoip = (path.parent / str(raw["geoip"])).resolve()
    if "secret" in raw:
        settings.secret = str(raw["secret"])
    if "trusted_proxies" in raw:
        settings.trusted_proxies = _networks(raw["trusted_proxies"], f"{path}: trusted_proxies")
    if "webhooks" in raw:
        try:
            settings.webhooks = WebhookSettings(**raw["webhooks"])
        except TypeError as error:
            raise ConfigError(f"{path}: [webhooks]: {error}") from None
    if "sites" in raw:
        settings.sites = {}
        for entry in raw["sites"]:
            site = _site(entry, path)
            settings.sites[site.key] = site
    return settings


def _site(entry: Any, path: Path) -> Site:
    if not isinstance(entry, dict) or not isinstance(entry.get("key"), str):
        raise ConfigError(f"{path}: each [[sites]] needs a 'key'")
    where = f"{path}: site {entry['key']!r}"
    unknown = set(entry) - {"key", "name", "origins", "timezone", "business_hours", "fatigue",
                            "webhook_secret", "notify_url", "calendars", "consent",
                            "identity_secret", "unsigned_identify"}
    if unknown:
        raise ConfigError(f"{where}: unknown setting(s) {', '.join(sorted(unknown))}")
    origins = entry.get("origins", ["self"])
    if not isinstance(origins, list) or not all(isinstance(o, str) for o in origins):
        raise ConfigError(f"{where}: 'origins' must be a list of text")
    try:
        zone = ZoneInfo(str(entry.get("timezone", "Europe/Paris")))
    except (ZoneInfoNotFoundError, ValueError):
        raise ConfigError(f"{where}: unknown time zone {entry.get('timezone')!r}") from None
    hours = DEMO_HOURS
    if "business_hours" in entry:
        hours = {day: _spans(text, f"{where}: business_hours.{day}")
                 for day, text in entry["business_hours"].items()}
        for day in hours:
            if day not in WEEKDAY_KEYS:
                raise ConfigError(f"{where}: business_hours: unknown day {day!r}")
    fatigue = entry.get("fatigue", {})
    consent = entry.get("consent", "implied")
    if consent not in CONSENT_MODES:
        raise ConfigError(f"{where}: 'consent' is {' or '.join(map(repr, CONSENT_MODES))}, "
                          f"not {consent!r}")
    unsigned = entry.get("unsigned_identify", "refuse")
    if unsigned not in UNSIGNED_IDENTIFY_MODES:
        raise ConfigError(f"{where}: 'unsigned_identify' is "
                          f"{' or '.join(map(repr, UNSIGNED_IDENTIFY_MODES))}, not {unsigned!r}")
    identity_secret = entry.get("identity_secret", "")
    if not isinstance(identity_secret, str) or 0 < len(identity_secret) < 16:
        raise ConfigError(f"{where}: 'identity_secret' must be text of at least 16 characters")
    calendars = {item["name"]: _calendar(item, zone, f"{where}: calendar")
                 for item in entry.get("calendars", [])} if "calendars" in entry else None
    site = Site(entry["key"], str(entry.get("name", "")), tuple(origins), zone, hours,
                int(fatigue.get("per_session", 2)), int(fatigue.get("per_day", 3)),
                str(entry.get("webhook_secret", "")), str(entry.get("notify_url", "")), consent,
                identity_secret, unsigned)
    return site if calendars is None else replace(site, calendars=calendars)


def _calendar(entry: Any, zone: ZoneInfo, where: str) -> Calendar:
    if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
        raise ConfigError(f"{where}: each calendar needs a 'name'")
    where = f"{where} {entry['name']!r}"
    known = {"name", "timezone", "hours", "closed", "special", "slot_minutes", "buffer_minutes",
             "min_notice_minutes", "horizon_days", "capacity", "channels",
             "bookings_per_visitor_day"}
    unknown = set(entry) - known
    if unknown:
        raise ConfigError(f"{where}: unknown setting(s) {', '.join(sorted(unknown))}")
    try:
        own_zone = ZoneInfo(entry["timezone"]) if "timezone" in entry else zone
        hours = {day: _spans(text, f"{where}: hours.{day}")
                 for day, text in entry.get("hours", {}).items()}
        return Calendar(
            entry["name"], own_zone, hours or dict(DEMO_HOURS),
            frozenset(date.fromisoformat(day) for day in entry.get("closed", [])),
            {date.fromisoformat(day): _spans(text, f"{where}: special.{day}")
             for day, text in entry.get("special", {}).items()},
            **{key: int(entry[key]) for key in ("slot_minutes", "buffer_minutes",
                                                "min_notice_minutes", "horizon_days",
                                                "capacity", "bookings_per_visitor_day")
               if key in entry},
            channels=tuple(entry.get("channels", ("phone", "video"))))
    except (ValueError, KeyError, TypeError) as error:
        raise ConfigError(f"{where}: {error}") from None


def load_secret(settings: Settings) -> str:
    """The configured secret, else the one kept in secret_file (made once, owner-only)."""
    if settings.secret:
        return settings.secret
    path = settings.secret_file
    if not path.is_absolute() and settings.store.startswith("sqlite:///"):
        # Beside the embedded store: one folder holds the install's state.
        path = Path(settings.store.removeprefix("sqlite:///")).parent / path
    if not path.exists():
        _create_private(path, secrets.token_urlsafe(32))
    elif path.stat().st_mode & 0o077:
        path.chmod(0o600)
    return path.read_text().strip()


def _create_private(path: Path, text: str) -> None:
    """Write `text` to a new owner-only file, never readable by others even for a moment,
    and never half-written: it appears whole, or a process that got there first wins."""
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(descriptor, "w") as file:
            file.write(text)
        with contextlib.suppress(FileExistsError):
            os.link(temporary, path)
    finally:
        os.unlink(temporary)


def _spans(text: Any, where: str) -> Spans:
    spans = []
    for part in str(text).split(","):
        match = _SPAN.match(part)
        if match is None:
            raise ConfigError(f"{where}: {part.strip()!r} is not a span like 09:00-18:00")
        h1, m1, h2, m2 = (int(group) for group in match.groups())
        spans.append((h1 * 60 + m1, h2 * 60 + m2))
    return tuple(spans)


def _networks(value: Any, where: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise ConfigError(f"{where}: a list of addresses or networks, like [\"10.0.0.1\"]")
    for item in value:
        try:
            ipaddress.ip_network(item, strict=False)
        except ValueError:
            raise ConfigError(f"{where}: {item!r} is not an IP address or network") from None
    return tuple(value)

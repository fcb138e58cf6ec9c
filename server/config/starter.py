"""A first popin.toml, as `popin init` writes it: one site, fresh random secrets, every
setting said in a comment. What it cannot know it guesses (the site's key from the folder's
name, the time zone from this machine's clock), and says so."""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import secrets
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from .settings import ConfigError

SITE_KEY = re.compile(r"\A[A-Za-z0-9_-]{1,64}\Z")
DEFAULT_STORE = "sqlite:///popin.db"


@dataclass(frozen=True, slots=True)
class Starter:
    site: str
    name: str
    timezone: str
    origins: tuple[str, ...] = ()
    store: str = DEFAULT_STORE
    rules: str = "rules"
    # Fresh for every file: never the same two installs.
    secret: str = field(default_factory=lambda: secrets.token_urlsafe(32))
    metrics_token: str = field(default_factory=lambda: secrets.token_urlsafe(32))
    identity_secret: str = field(default_factory=lambda: secrets.token_urlsafe(32))
    webhook_secret: str = field(default_factory=lambda: secrets.token_urlsafe(32))


def site_key_from(folder: Path) -> str:
    """A site key guessed from a folder's name: "My Shop" gives "my-shop"."""
    key = re.sub(r"[^a-z0-9_-]+", "-", folder.resolve().name.lower()).strip("-_")[:64]
    return key or "site"


def site_name_from(key: str) -> str:
    return " ".join(word.capitalize() for word in re.split(r"[-_]+", key) if word) or key


def this_machines_zone() -> str:
    """The time zone of this machine's clock ($TZ, /etc/timezone, /etc/localtime), or
    UTC when none can be told."""
    candidates = [os.environ.get("TZ", "").lstrip(":")]
    with contextlib.suppress(OSError):
        candidates.append(Path("/etc/timezone").read_text(encoding="utf-8").strip())
    try:
        target = str(Path("/etc/localtime").resolve())
        if "zoneinfo/" in target:
            candidates.append(target.split("zoneinfo/", 1)[1])
    except OSError:
        pass
    for name in candidates:
        if name and zone_problem(name) is None:
            return name
    return "UTC"


def zone_problem(name: str) -> str | None:
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return f"{name!r} is not a time zone; expected a name such as Europe/Paris"
    return None


def check(starter: Starter) -> None:
    """Refuse, in one line naming the option, what would make a config that cannot load."""
    if not SITE_KEY.match(starter.site):
        raise ConfigError(f"--site {starter.site!r}: expected 1-64 letters, digits, '-' or '_'")
    if problem := zone_problem(starter.timezone):
        raise ConfigError(f"--timezone {problem}")
    for origin in starter.origins:
        parts = urlsplit(origin)
        if parts.scheme not in ("http", "https") or not parts.hostname or parts.path not in (
                "", "/") or parts.query:
            raise ConfigError(f"--origin {origin!r}: expected a site's origin, such as "
                              "https://www.example.com (no path)")


def origin_of(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def _quoted(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def starter_toml(starter: Starter) -> str:
    origins = ", ".join(_quoted(origin) for origin in ("self", *map(origin_of,
                                                                     starter.origins)))
    return f"""\
# popin.toml, written by `popin init`. Every setting is checked when popin starts: a wrong
# one stops it with one line naming it. Paths are relative to this file's folder. popin
# finds this file in the current folder, or where --config or $POPIN_CONFIG says.

# The embedded store: one file, nothing to install. Several processes or machines:
# store = "redis://127.0.0.1:6379/0"
# or "redis+sentinel://host:26379,host:26379/mastername", "redis+cluster://host:7000,..."
store = {_quoted(starter.store)}
# The campaigns: one YAML file each (`popin rules check` checks them).
rules = {_quoted(starter.rules)}
# A MaxMind-format database, for the country, region and city conditions.
# geoip = "GeoLite2-City.mmdb"

# Signs appointment links and dashboard sessions. Changing it signs everyone out.
secret = {_quoted(starter.secret)}
# Opens /metrics and the details of /healthz from elsewhere than this machine:
# curl -H "Authorization: Bearer <metrics_token>" https://popin.example.com/metrics
metrics_token = {_quoted(starter.metrics_token)}
# A reverse proxy in front of popin (its X-Forwarded-For is believed only then):
# trusted_proxies = ["10.0.0.2"]

[[sites]]
# The data-site of the script tag.
key = {_quoted(starter.site)}
name = {_quoted(starter.name)}
# The pages allowed to use this site: their origins ("self": pages popin serves itself).
origins = [{origins}]
# Business hours, birthdays and daily statistics follow this clock.
timezone = {_quoted(starter.timezone)}
# "implied": kept unless the visitor says no; "required": nothing kept before
# popin.consent(true).
consent = "implied"
# Signs popin.identify() from the page (see the README, "Identify from the page").
identity_secret = {_quoted(starter.identity_secret)}
# Signs the webhooks popin sends to your CRM, e-mail or SMS platform.
webhook_secret = {_quoted(starter.webhook_secret)}
# Where new leads and appointments are announced (a signed webhook):
# notify_url = "https://crm.example/hooks/popin"
# Pop-ins per visitor, all campaigns together.
fatigue = {{per_session = 2, per_day = 3}}

# Opening hours, for the business_hours condition:
# [sites.business_hours]
# mon = "09:00-12:00, 14:00-18:00"
# sat = "10:00-17:00"

# What one client may take; the defaults are in the README ("Limits"):
# [limits]
# connections = 10000
"""


# The playbook as shipped: `sha256sum`'s lines for each rule file, beside them. The
# demo's editor writes into the same folder, and `popin init` must not hand a new site the
# experiments someone made in the demo (tests/test_cli.py keeps the list fresh).
MANIFEST = "PLAYBOOK.sha256"


def shipped(playbook: Path) -> dict[str, str]:
    """Relative path -> SHA-256 of each playbook file as shipped."""
    listed = playbook / MANIFEST
    if not listed.is_file():
        return {}
    pairs = (line.split(maxsplit=1) for line in listed.read_text().splitlines() if line.strip())
    return {name.strip().lstrip("*"): digest for digest, name in pairs}


def copy_playbook(playbook: Path, files: list[Path], into: Path) -> tuple[int, list[str]]:
    """Copy the playbook's files as shipped into `into`; the names of those changed or
    added since (left out) come back with the count copied."""
    expected = shipped(playbook)
    copied, left_out = 0, []
    for source in files:
        name = source.relative_to(playbook).as_posix()
        if expected.get(name) != hashlib.sha256(source.read_bytes()).hexdigest():
            left_out.append(name)
            continue
        destination = into / name
        destination.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, destination)
        copied += 1
    return copied, left_out

"""Settings: where the store and rules are, and which sites may connect from where.

An optional `popin.toml`:

    store = "sqlite:///popin.db"
    rules = "rules"

    [[sites]]
    key = "demo"
    name = "Demo shop"
    origins = ["self", "https://shop.example"]   # "self": the page is served by popin
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

# Where this checkout keeps what the server serves and the shipped playbook.
PROJECT_ROOT = Path(__file__).resolve().parent.parent
STATIC_DIR = PROJECT_ROOT / "static"
DEFAULT_RULES = PROJECT_ROOT / "rules"


class ConfigError(Exception):
    pass


@dataclass(frozen=True, slots=True)
class Site:
    key: str
    name: str = ""
    origins: tuple[str, ...] = ("self",)

    def allows(self, origin: str | None, host: str | None) -> bool:
        """Is a WebSocket from a page at `origin` welcome? Browsers always send Origin."""
        if not origin:
            return False
        normalised = origin.rstrip("/").lower()
        for allowed in self.origins:
            if allowed == "self":
                if host and urlsplit(normalised).netloc == host.lower():
                    return True
            elif normalised == allowed.rstrip("/").lower():
                return True
        return False


@dataclass(slots=True)
class Settings:
    store: str = "sqlite:///popin.db"
    rules: Path = DEFAULT_RULES
    static: Path = STATIC_DIR
    sites: dict[str, Site] = field(default_factory=lambda: {"demo": Site("demo", "Demo shop")})


def load_settings(path: Path | None) -> Settings:
    settings = Settings()
    if path is None:
        return settings
    try:
        raw: dict[str, Any] = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as error:
        raise ConfigError(f"{path}: {error}") from None
    unknown = set(raw) - {"store", "rules", "sites"}
    if unknown:
        raise ConfigError(f"{path}: unknown setting(s) {', '.join(sorted(unknown))}")
    if "store" in raw:
        settings.store = str(raw["store"])
    if "rules" in raw:
        settings.rules = (path.parent / str(raw["rules"])).resolve()
    if "sites" in raw:
        settings.sites = {}
        for entry in raw["sites"]:
            if not isinstance(entry, dict) or not isinstance(entry.get("key"), str):
                raise ConfigError(f"{path}: each [[sites]] needs a 'key'")
            origins = entry.get("origins", ["self"])
            if not isinstance(origins, list) or not all(isinstance(o, str) for o in origins):
                raise ConfigError(f"{path}: site {entry['key']!r}: 'origins' must be a list")
            settings.sites[entry["key"]] = Site(entry["key"], str(entry.get("name", "")),
                                                tuple(origins))
    return settings

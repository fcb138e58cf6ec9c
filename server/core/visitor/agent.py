"""Who is calling: device, browser and OS from the User-Agent (`user-agents`), place from
a MaxMind-format database (`maxminddb`). The raw IP address is used here and dropped."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import maxminddb
from user_agents import parse


@dataclass(frozen=True, slots=True)
class Agent:
    device: str = "other"
    browser: str = ""
    os: str = ""

    @property
    def is_bot(self) -> bool:
        return self.device == "bot"


@lru_cache(maxsize=4096)
def agent_of(user_agent: str) -> Agent:
    """Parsing is slow and a site sees few distinct agents, hence the cache."""
    if not user_agent:
        return Agent()
    parsed = parse(user_agent)
    if parsed.is_bot:
        device = "bot"
    elif parsed.is_tablet:
        device = "tablet"
    elif parsed.is_mobile:
        device = "mobile"
    elif parsed.is_pc:
        device = "desktop"
    else:
        device = "other"
    return Agent(device, parsed.browser.family, parsed.os.family)


@dataclass(frozen=True, slots=True)
class Place:
    country: str = ""
    region: str = ""
    city: str = ""


class Geo:
    """Reads GeoLite2/GeoIP2 City or Country, DB-IP lite and ip-location-db layouts."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._reader = maxminddb.open_database(str(path))

    def locate(self, ip: str | None) -> Place:
        if not ip:
            return Place()
        try:
            record: Any = self._reader.get(ip)
        except ValueError:
            return Place()
        if not isinstance(record, dict):
            return Place()
        return Place(_country(record), _region(record), _city(record))

    def close(self) -> None:
        self._reader.close()


def _name(node: Any) -> str:
    if isinstance(node, dict):
        names = node.get("names")
        if isinstance(names, dict):
            return str(names.get("en", ""))
    return ""


def _country(record: dict[str, Any]) -> str:
    country = record.get("country")
    if isinstance(country, dict):
        return str(country.get("iso_code", "")).upper()
    return str(record.get("country_code", "")).upper()


def _region(record: dict[str, Any]) -> str:
    subdivisions = record.get("subdivisions")
    if isinstance(subdivisions, list) and subdivisions:
        return _name(subdivisions[0]) or str(subdivisions[0].get("iso_code", ""))
    return str(record.get("state1", "") or record.get("region", ""))


def _city(record: dict[str, Any]) -> str:
    return _name(record.get("city")) or (
        str(record["city"]) if isinstance(record.get("city"), str) else "")

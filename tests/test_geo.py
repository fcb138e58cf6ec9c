"""Country, region and city from a MaxMind-format database the tests build themselves."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest
from mmdb_writer import MMDBWriter
from netaddr import IPSet
from websockets.sync.client import connect

from conftest import LiveServer
from popin.cli import main
from popin.config import Settings
from popin.core.checks import rule_warnings
from popin.core.rules.campaign import load_rules
from popin.core.visitor.agent import Geo, Place

GEO_RULES = """
rules:
  - id: swiss-only
    trigger: {event: signup}
    when: {country: CH, city: Geneva}
    popin: {title: "Grüezi {{ visitor.city }}", body: b}
"""


def build(path: Path, networks: dict[str, dict[str, Any]], kind: str) -> Path:
    writer = MMDBWriter(ip_version=6, database_type=kind, languages=["en"],
                        description="popin tests", ipv4_compatible=True)
    for network, record in networks.items():
        writer.insert_network(IPSet([network]), record)
    writer.to_db_file(str(path))
    return path


@pytest.fixture
def city_db(tmp_path: Path) -> Path:
    return build(tmp_path / "city.mmdb", {
        "81.0.0.0/16": {"country": {"iso_code": "FR", "names": {"en": "France"}},
                        "subdivisions": [{"iso_code": "IDF", "names": {"en": "Île-de-France"}}],
                        "city": {"names": {"en": "Paris"}}},
        "127.0.0.0/8": {"country": {"iso_code": "CH"}, "city": {"names": {"en": "Geneva"}}},
    }, "GeoIP2-City")


def test_maxmind_city_layout(city_db: Path) -> None:
    geo = Geo(city_db)
    try:
        assert geo.locate("81.0.3.4") == Place("FR", "Île-de-France", "Paris")
        assert geo.locate("127.0.0.1") == Place("CH", "", "Geneva")
        assert geo.locate("8.8.8.8") == Place()
        assert geo.locate("not-an-ip") == Place()
        assert geo.locate(None) == Place()
    finally:
        geo.close()


def test_ip_location_db_layout(tmp_path: Path) -> None:
    path = build(tmp_path / "ild.mmdb", {
        "81.0.0.0/16": {"country_code": "fr", "state1": "Brittany", "city": "Rennes"}},
        "ip-location-db-city")
    geo = Geo(path)
    try:
        assert geo.locate("81.0.200.1") == Place("FR", "Brittany", "Rennes")
    finally:
        geo.close()


def test_geo_conditions_over_a_real_socket(tmp_path: Path, city_db: Path) -> None:
    (tmp_path / "rules").mkdir()
    (tmp_path / "rules" / "geo.yaml").write_text(GEO_RULES)
    settings = Settings(store=f"sqlite:///{tmp_path / 'popin.db'}", rules=tmp_path / "rules",
                        geoip=city_db)
    server = LiveServer(settings).start()
    try:
        origin = server.url
        with connect(f"ws://127.0.0.1:{server.port}/ws?site=demo", origin=origin) as ws:
            ws.send(orjson.dumps({"type": "hello", "visitor": "visitor-0001",
                                  "session": "session-0001", "url": f"{origin}/demo/"}))
            assert orjson.loads(ws.recv())["type"] == "config"
            ws.send(orjson.dumps({"type": "event", "name": "signup"}))
            shown = orjson.loads(ws.recv())
        assert shown["rule"] == "swiss-only"
        assert "Grüezi Geneva" in shown["html"]
    finally:
        server.stop()


def test_geo_conditions_are_reported_unavailable_without_a_database(
        tmp_path: Path, city_db: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "geo.yaml").write_text(GEO_RULES)
    rules = load_rules(tmp_path).rules
    (warning,) = rule_warnings(rules, geo_available=False)
    assert "geo conditions (city, country) are unavailable" in warning
    assert warning.startswith(f"{tmp_path / 'geo.yaml'}:3: rule 'swiss-only'")
    assert rule_warnings(rules, geo_available=True) == []
    assert main(["rules", "check", str(tmp_path)]) == 0
    assert "are unavailable" in capsys.readouterr().err
    assert main(["rules", "check", str(tmp_path), "--geoip", str(city_db)]) == 0
    assert "unavailable" not in capsys.readouterr().err

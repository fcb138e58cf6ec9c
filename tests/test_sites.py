"""Campaigns belong to sites: each site of popin.toml names its campaign folder, and a rule
of site A never fires, is watched for, or counts on site B; its dashboard, its widget's
config, `rules check` and reloads are per site."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
from starlette.testclient import TestClient

from conftest import LOOPBACK, run
from popin.cli import main
from popin.config import ConfigError, Settings, load_settings
from popin.web.app import create_app

SHOP = """
keywords:
  care: [waxing]
rules:
  - {id: shop-wax, trigger: {dwell: {keyword: care, seconds: 5}}, popin: {title: Wax, body: b}}
  - {id: shop-cart, trigger: {event: add_to_cart}, popin: {title: Cart, body: b}}
"""
BLOG = """
keywords:
  trails: [trail]
rules:
  - {id: blog-newsletter, trigger: {event: subscribe}, popin: {title: News, body: b}}
  - {id: blog-reader, trigger: {dwell: {keyword: trails, seconds: 5}}, tag: trail-readers}
"""
CONFIG = """
store = "sqlite:///popin.db"
[[sites]]
key = "shop"
origins = ["self"]
rules = "campaigns/shop"
holdout = 0
[[sites]]
key = "blog"
origins = ["self"]
rules = "campaigns/blog"
holdout = 0
"""


@pytest.fixture
def two_sites(tmp_path: Path) -> Settings:
    for name, text in (("shop", SHOP), ("blog", BLOG)):
        (tmp_path / "campaigns" / name).mkdir(parents=True)
        (tmp_path / "campaigns" / name / "rules.yaml").write_text(text)
    (tmp_path / "popin.toml").write_text(CONFIG)
    settings = load_settings(tmp_path / "popin.toml")
    settings.reload = False
    return settings


@pytest.fixture
def client(two_sites: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(two_sites), client=LOOPBACK) as test_client:
        yield test_client


def visit(client: TestClient, site: str, visitor: str,
          messages: list[dict[str, object]]) -> list[dict[str, object]]:
    """The frames a widget on `site` gets back for `messages` (config first)."""
    received = []
    with client.websocket_connect(f"/ws?site={site}", headers={"origin": "http://testserver"}) \
            as ws:
        ws.send_text(orjson.dumps({"type": "hello", "visitor": visitor,
                                   "session": f"{visitor}-session",
                                   "url": "http://testserver/"}).decode())
        received.append(ws.receive_json())
        for message in messages:
            ws.send_text(orjson.dumps(message).decode())
        ws.send_text("barrier")
        while (frame := ws.receive_json())["type"] != "error":
            received.append(frame)
    return received


def test_a_site_runs_its_own_campaigns_only(client: TestClient) -> None:
    shop = visit(client, "shop", "visitor-shop-01", [
        {"type": "dwell", "keyword": "care", "seconds": 5},
        {"type": "event", "name": "subscribe"}])
    blog = visit(client, "blog", "visitor-blog-01", [
        {"type": "dwell", "keyword": "care", "seconds": 5},
        {"type": "event", "name": "add_to_cart", "props": {"sku": "skis"}},
        {"type": "event", "name": "subscribe"}])
    # What each widget watches: its own site's keywords only.
    assert [watch["name"] for watch in shop[0]["watch"]] == ["care"]  # type: ignore[index]
    assert [watch["name"] for watch in blog[0]["watch"]] == ["trails"]  # type: ignore[index]
    # What fires: the shop's dwell on the shop, the blog's newsletter on the blog.
    assert [frame["rule"] for frame in shop[1:]] == ["shop-wax"]
    assert [frame["rule"] for frame in blog[1:]] == ["blog-newsletter"]
    hub = client.app.state.hub  # type: ignore[attr-defined]
    run(hub.flush())
    counted = {site: {rule for _day, rule, _metric, _value in
                      run(hub.store.stats_read(site, "2000-01-01", "2100-01-01"))}
               for site in ("shop", "blog")}
    assert counted == {"shop": {"shop-wax"}, "blog": {"blog-newsletter"}}
    assert hub.rule_count == 4


def test_each_dashboard_lists_its_own_campaigns(client: TestClient, two_sites: Settings,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    from test_dashboard import PASSWORD, log_in, set_password

    assert set_password(two_sites, monkeypatch, PASSWORD) == 0
    assert log_in(client) == 303
    for site, mine, theirs in (("shop", "shop-wax", "blog-newsletter"),
                               ("blog", "blog-newsletter", "shop-wax")):
        page = client.get(f"/admin/?site={site}").text
        assert f'data-rule="{mine}"' in page and f'data-rule="{theirs}"' not in page
        assert client.get(f"/admin/campaigns/{theirs}?site={site}").status_code == 404
    rules = client.get("/admin/rules?site=blog").text
    assert re.search(r"\b2 rules in force", rules)


def test_popin_toml_gives_each_site_its_own_folder(tmp_path: Path) -> None:
    path = tmp_path / "popin.toml"
    path.write_text('[[sites]]\nkey = "shop"\n[[sites]]\nkey = "blog"\nrules = "b"\n')
    with pytest.raises(ConfigError, match=r"site 'shop': rules is needed when there are "
                       r"several sites: each names its own campaign folder"):
        load_settings(path)
    path.write_text('[[sites]]\nkey = "shop"\nrules = "c"\n[[sites]]\nkey = "blog"\n'
                    'rules = "c"\n')
    with pytest.raises(ConfigError, match="sites 'shop' and 'blog' both use the campaign "
                       "folder"):
        load_settings(path)
    path.write_text('[[sites]]\nkey = "shop"\n')  # one site: the top-level folder
    only = load_settings(path)
    assert only.folders() == {"shop": only.rules}


def test_rules_check_reports_per_site(two_sites: Settings, tmp_path: Path,
                                      monkeypatch: pytest.MonkeyPatch,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "campaigns" / "blog" / "broken.yaml").write_text("rules:\n  - {id: x}\n")
    assert main(["rules", "check"]) == 1
    out = capsys.readouterr()
    assert "site shop: 2 valid rules in 1 file" in out.out
    assert "site blog: 2 valid rules in 1 of 2 files; " in out.out
    assert "campaigns/blog/broken.yaml:2:" in out.err
    assert main(["rules", "check", "--site", "shop"]) == 0
    assert "site blog" not in capsys.readouterr().out
    # --rules names one folder: refused with several sites.
    assert main(["serve", "--rules", "campaigns/shop"]) == 2
    assert "--rules names one campaign folder; with several sites" in capsys.readouterr().err


def test_rules_preview_prints_a_link_the_server_honours(
        two_sites: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["rules", "preview", "shop-cart", "--site", "shop",
                 "--server", "http://testserver"]) == 0
    link = capsys.readouterr().out.strip()
    assert link.startswith("http://testserver/demo/#popin-preview=")
    token = link.split("#popin-preview=")[1]
    # Another site's rule, a page elsewhere, a rule that shows nothing: refused in a line.
    assert main(["rules", "preview", "shop-cart", "--site", "blog"]) == 2
    assert main(["rules", "preview", "shop-cart", "--site", "shop",
                 "--url", "https://elsewhere.example/"]) == 2
    assert main(["rules", "preview", "blog-reader", "--site", "blog"]) == 2
    errors = capsys.readouterr().err
    assert "no rule 'shop-cart' in the campaigns of site blog" in errors
    assert "not a page of site shop" in errors and "shows nothing" in errors
    with TestClient(create_app(two_sites), client=LOOPBACK) as client:
        shown = visit(client, "shop", "visitor-preview-1", [{"type": "preview", "token": token}])
        assert [(frame["rule"], frame["preview"]) for frame in shown[1:]] == [
            ("shop-cart", True)]
        # The same link on the blog's socket: another site's, refused.
        with client.websocket_connect("/ws?site=blog",
                                      headers={"origin": "http://testserver"}) as ws:
            ws.send_text(orjson.dumps({"type": "hello", "visitor": "visitor-preview-2",
                                       "session": "preview-2", "url": "http://testserver/"
                                       }).decode())
            ws.receive_json()
            ws.send_text(orjson.dumps({"type": "preview", "token": token}).decode())
            assert ws.receive_json()["field"] == "token"

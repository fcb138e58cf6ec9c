"""The owner's dashboard in process: the login and what guards it, and the numbers the
pages show after a scripted session over the real socket."""

from __future__ import annotations

import base64
import csv
import io
import re
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
from starlette.testclient import TestClient

from conftest import make_key, run, settings_with_rules
from popin.cli import main
from popin.config import Settings
from popin.core.site import Site
from popin.stores.backends import open_store
from popin.web.admin.auth import MAX_FAILURES, PASSWORD_SETTING
from popin.web.app import create_app

RULES = """
campaign: Checkout offers
rules:
  - id: sale
    category: event
    trigger: {event: checkout_started}
    popin: {title: "-20% today", body: "<p>On the kit.</p>"}
    holdout: 30
    conversion: {event: order_placed, within: 1d, value: value}
  - id: wax-readers
    trigger: {event: read_wax}
    tag: {audience: wax-readers, days: 30}
"""
ORIGIN = {"origin": "http://testserver"}
PASSWORD = "correct horse battery"


@pytest.fixture
def settings_(tmp_path: Path) -> Settings:
    return settings_with_rules(tmp_path, RULES)


def set_password(settings_: Settings, monkeypatch: pytest.MonkeyPatch, password: str) -> int:
    monkeypatch.setattr("sys.stdin", io.StringIO(password + "\n"))
    return main(["admin", "--store", settings_.store, "set-password", "--password-stdin"])


@pytest.fixture
def client(settings_: Settings, monkeypatch: pytest.MonkeyPatch) -> Iterator[TestClient]:
    assert set_password(settings_, monkeypatch, PASSWORD) == 0
    with TestClient(create_app(settings_)) as test_client:
        yield test_client


def csrf_of(client: TestClient) -> str:
    page = client.get("/admin/login")
    found = re.search(r'name="csrf" value="([^"]+)"', page.text)
    assert found
    return found[1]


def log_in(client: TestClient, password: str = PASSWORD) -> int:
    response = client.post("/admin/login", data={"csrf": csrf_of(client), "password": password,
                                                 "next": "/admin/"}, follow_redirects=False)
    return response.status_code


def test_pages_need_the_owner_and_a_good_password(client: TestClient) -> None:
    for path in ("/admin/", "/admin/audiences", "/admin/bookings", "/admin/rules",
                 "/admin/campaigns/sale", "/admin/live"):
        response = client.get(path, follow_redirects=False)
        assert response.status_code == 303, path
        assert response.headers["location"].startswith("/admin/login?next=")
    assert log_in(client, "wrong password") == 401
    # Without the form's token, even the right password is refused.
    refused = client.post("/admin/login", data={"password": PASSWORD}, follow_redirects=False)
    assert refused.status_code == 403
    assert log_in(client) == 303
    for path in ("/admin/", "/admin/audiences", "/admin/bookings", "/admin/rules",
                 "/admin/campaigns/sale"):
        page = client.get(path)
        assert page.status_code == 200, path
        assert "default-src 'self'" in page.headers["content-security-policy"]
        # Nothing is loaded from anywhere else.
        # (Links to the site's own pages, like preview links, are not loads.)
        assert not re.search(r'(src|<link[^>]*href)="(https?:)?//', page.text), path
    assert client.get("/admin/campaigns/nothing-here").status_code == 404


def test_session_cookie_flags_and_logout(settings_: Settings,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    assert set_password(settings_, monkeypatch, PASSWORD) == 0
    with TestClient(create_app(settings_), base_url="https://testserver") as client:
        response = client.post("/admin/login", data={"csrf": csrf_of(client),
                                                     "password": PASSWORD},
                               follow_redirects=False)
        cookie = next(value for value in response.headers.get_list("set-cookie")
                      if value.startswith("popin_admin="))
        assert "HttpOnly" in cookie and "Secure" in cookie and "SameSite=strict" in cookie
        assert client.get("/admin/").status_code == 200
        # Logging out takes the form's token too.
        assert client.post("/admin/logout", data={}).status_code == 403
        client.post("/admin/logout", data={"csrf": csrf_of(client)})
        assert client.get("/admin/", follow_redirects=False).status_code == 303


def test_a_new_password_ends_every_session(client: TestClient, settings_: Settings,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    assert log_in(client) == 303
    assert client.get("/admin/", follow_redirects=False).status_code == 200
    assert set_password(settings_, monkeypatch, "too short") == 1, "refused: 10 characters"
    assert set_password(settings_, monkeypatch, "another long password") == 0
    assert client.get("/admin/", follow_redirects=False).status_code == 303


def test_a_cookie_replayed_after_logout_opens_nothing(client: TestClient) -> None:
    assert log_in(client) == 303
    stolen = client.cookies["popin_admin"]
    client.post("/admin/logout", data={"csrf": csrf_of(client)})
    client.cookies.set("popin_admin", stolen, path="/admin")
    replayed = client.get("/admin/", follow_redirects=False)
    assert replayed.status_code == 303
    assert replayed.headers["location"].startswith("/admin/login")


def test_logout_ends_the_sessions_of_every_device(settings_: Settings,
                                                  client: TestClient) -> None:
    with TestClient(create_app(settings_)) as phone:
        assert log_in(client) == 303 and log_in(phone) == 303
        phone.post("/admin/logout", data={"csrf": csrf_of(phone)})
        assert client.get("/admin/", follow_redirects=False).status_code == 303
        assert log_in(client) == 303, "a new login works at once"
        assert client.get("/admin/", follow_redirects=False).status_code == 200


def test_a_stranger_cannot_log_the_owner_out(settings_: Settings, client: TestClient) -> None:
    assert log_in(client) == 303
    with TestClient(create_app(settings_)) as stranger:
        # A form token of the stranger's own, and no session.
        stranger.post("/admin/logout", data={"csrf": csrf_of(stranger)})
    assert client.get("/admin/", follow_redirects=False).status_code == 200


def test_the_cookie_says_nothing_of_the_password_hash(client: TestClient,
                                                      settings_: Settings) -> None:
    async def stored() -> str | None:
        store = open_store(settings_.store)
        await store.open()
        try:
            return await store.setting_get(PASSWORD_SETTING)
        finally:
            await store.close()

    password_hash = run(stored())
    assert password_hash and log_in(client) == 303
    payload = client.cookies["popin_admin"].split(".")[0]
    decoded = base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)).decode()
    digest = password_hash.rsplit("$", 1)[1]
    assert not any(digest[i:i + 8] in decoded for i in range(len(digest) - 7))


def test_logins_are_rate_limited(client: TestClient) -> None:
    for _attempt in range(MAX_FAILURES):
        assert log_in(client, "not it at all") == 401
    response = client.post("/admin/login", data={"csrf": csrf_of(client), "password": PASSWORD},
                           follow_redirects=False)
    assert response.status_code == 429 and int(response.headers["retry-after"]) > 0


def visitor(client: TestClient, number: int, *events: dict[str, object]) -> list[str]:
    """A scripted widget: events in, and it reports every pop-in shown, as the real one
    does. Returns the rules whose pop-ins it saw."""
    seen = []
    with client.websocket_connect("/ws?site=demo", headers=ORIGIN) as ws:
        ws.send_text(orjson.dumps({"type": "hello", "visitor": f"dashboard-visitor-{number:03d}",
                                   "session": f"dashboard-session-{number:03d}",
                                   "url": "http://testserver/demo/"}).decode())
        assert ws.receive_json()["type"] == "config"
        for event in events:
            ws.send_text(orjson.dumps(event).decode())
        # Answered in order: everything before the error frame has been handled.
        ws.send_text("not json")
        while (message := ws.receive_json())["type"] != "error":
            if message["type"] == "show":
                seen.append(message["rule"])
                ws.send_text(orjson.dumps({"type": "popin", "id": message["id"],
                                           "status": "shown"}).decode())
        ws.send_text("not json")
        while ws.receive_json()["type"] != "error":
            pass
    return seen


def test_the_pages_show_the_exact_counts_and_the_lift(client: TestClient) -> None:
    checkout = {"type": "event", "name": "checkout_started"}
    order = {"type": "event", "name": "order_placed", "props": {"value": 50}}
    exposed = control = exposed_orders = control_orders = 0
    for number in range(40):
        saw = visitor(client, number, checkout)
        buys = number % 2 == 0
        if buys:
            visitor(client, number, order)
        if saw == ["sale"]:
            exposed += 1
            exposed_orders += buys
        else:
            control += 1
            control_orders += buys
    visitor(client, 99, {"type": "event", "name": "read_wax"})
    assert exposed >= 20 and control >= 5, (exposed, control)
    assert log_in(client) == 303
    page = client.get("/admin/").text
    row = re.search(r'<tr data-rule="sale">(.*?)</tr>', page, re.S)
    assert row
    cells = dict(re.findall(r'data-metric="(\w+)">(\d+)<', row[1]))
    assert cells == {"triggered": "40", "shown": str(exposed), "held_out": str(control),
                     "clicked": "0", "dismissed": "0", "converted": str(exposed_orders)}
    campaign = client.get("/admin/campaigns/sale").text
    assert f'data-metric="converted_control">{control_orders}<' in campaign
    assert f'data-metric="revenue">{exposed_orders * 50:.2f}<' in campaign
    assert (f"Converted: {exposed_orders} of {exposed} exposed" in
            " ".join(campaign.split()))
    verdict = re.search(r"<p class=\"verdict\" data-verdict>(.*?)</p>", campaign)
    assert verdict and verdict[1].startswith("Not enough data yet")
    daily = client.get("/admin/campaigns/sale/daily.csv")
    assert daily.headers["content-type"].startswith("text/csv")
    lines = list(csv.DictReader(io.StringIO(daily.text)))
    assert len(lines) == 30, "one row a day of the period"
    today = lines[-1]
    assert (today["triggered"], today["exposed"], today["held_out"]) == (
        "40", str(exposed), str(control))
    assert (today["converted"], today["converted_control"]) == (
        str(exposed_orders), str(control_orders))
    assert float(today["revenue"]) == exposed_orders * 50
    assert all(line["triggered"] == "0" for line in lines[:-1])
    assert "<svg" in campaign and "rules.yaml:" in campaign and "holdout: 30" in campaign
    audiences = client.get("/admin/audiences").text
    assert re.search(r'data-audience="wax-readers".*?data-size>1<', audiences, re.S)
    export = client.get("/admin/audiences/wax-readers/export?format=ids")
    assert export.text.split() == ["dashboard-visitor-099"]
    assert client.get("/admin/live").json() == {"visitors": 0, "shown": exposed}
    rules = client.get("/admin/rules").text
    assert "2 rules in force" in rules and "None." in rules



def test_the_owner_switches_site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    settings_ = settings_with_rules(tmp_path, RULES, sites={
        "demo": Site("demo", "Demo shop"), "blog": Site("blog", "The blog")})
    assert set_password(settings_, monkeypatch, PASSWORD) == 0
    with TestClient(create_app(settings_)) as client:
        assert log_in(client) == 303
        page = client.get("/admin/audiences?site=blog").text
        switch = re.findall(r'<a href="([^"]+)"( aria-current="true")? data-site="(\w+)">', page)
        assert switch == [("/admin/audiences?site=demo", "", "demo"),
                          ("/admin/audiences?site=blog", ' aria-current="true"', "blog")]
        (tmp_path / "one").mkdir()
        single = settings_with_rules(tmp_path / "one", RULES)
        assert set_password(single, monkeypatch, PASSWORD) == 0
    with TestClient(create_app(single)) as client:
        assert log_in(client) == 303
        assert "data-site=" not in client.get("/admin/").text, "one site: no switcher"


def test_a_planted_csrf_cookie_forges_no_form_of_the_signed_in_owner(
        client: TestClient) -> None:
    """Cookie tossing: a page on a sibling subdomain sets popin_csrf to a value it knows
    and posts it. Signed in, forms carry a token derived from the session cookie, which
    that page can neither read nor replace."""
    assert log_in(client) == 303
    client.cookies.set("popin_csrf", "tossed-token-123", path="/admin")
    forged = client.post("/admin/logout", data={"csrf": "tossed-token-123"},
                         follow_redirects=False)
    assert forged.status_code == 403
    assert client.get("/admin/", follow_redirects=False).status_code == 200
    good = client.post("/admin/logout", data={"csrf": csrf_of(client)}, follow_redirects=False)
    assert good.status_code == 303


def test_variants_have_their_funnel_lift_and_csv_columns(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    settings_ = settings_with_rules(tmp_path, """
rules:
  - id: offer
    trigger: {event: go}
    holdout: 0
    popin: {title: Plain, body: b}
    conversion: {event: bought, within: 1d}
    variants:
      - {id: calm}
      - {id: loud, title: LOUD}
""")
    assert set_password(settings_, monkeypatch, PASSWORD) == 0
    seen: dict[str, int] = {}
    with TestClient(create_app(settings_)) as client:
        for number in range(20):
            with client.websocket_connect("/ws?site=demo", headers=ORIGIN) as ws:
                ws.send_text(orjson.dumps({
                    "type": "hello", "visitor": f"variant-visitor-{number:03d}",
                    "session": f"variant-session-{number:03d}",
                    "url": "http://testserver/"}).decode())
                ws.receive_json()
                ws.send_text('{"type": "event", "name": "go"}')
                shown = ws.receive_json()
                seen[shown["variant"]] = seen.get(shown["variant"], 0) + 1
                ws.send_text(orjson.dumps({"type": "popin", "id": shown["id"],
                                           "status": "shown"}).decode())
                ws.send_text('{"type": "event", "name": "bought"}')
                ws.send_text("barrier")
                ws.receive_json()
        assert set(seen) == {"calm", "loud"}
        assert log_in(client) == 303
        page = client.get("/admin/campaigns/offer").text
        for name, count in seen.items():
            row = re.search(rf'<tr data-variant="{name}">(.*?)</tr>', page, re.S)
            assert row and f'data-metric="exposed">{count}<' in row[1]
            assert f'data-metric="converted">{count}<' in row[1]
        assert 'data-comparison="calm-loud"' in page
        daily = list(csv.DictReader(io.StringIO(
            client.get("/admin/campaigns/offer/daily.csv").text)))
        today = daily[-1]
        assert today["exposed"] == "20"
        assert (today["calm:exposed"], today["loud:shown"]) == (str(seen["calm"]),
                                                                str(seen["loud"]))


def test_revenue_a_page_reports_is_capped_and_unverified_and_the_backends_is_confirmed(
        client: TestClient, settings_: Settings) -> None:
    checkout = {"type": "event", "name": "checkout_started"}
    exposed = [number for number in range(20) if visitor(client, 200 + number, checkout)]
    assert len(exposed) >= 2, exposed
    forger, buyer = exposed[:2]
    # Anyone can script the widget socket: a forged order worth 9.99e15.
    visitor(client, 200 + forger,
            {"type": "event", "name": "order_placed", "props": {"value": 9.99e15}})
    assert log_in(client) == 303

    def funnel() -> dict[str, str]:
        page = client.get("/admin/campaigns/sale").text
        return dict(re.findall(r'data-metric="(revenue\w*)">([\d.]+)<', page))

    assert funnel() == {"revenue": "10000.00", "revenue_confirmed": "0.00",
                        "revenue_reported": "10000.00"}
    page = " ".join(client.get("/admin/campaigns/sale").text.split())
    assert "revenue (unverified)" in page
    assert "revenue confirmed by your backend" in page
    assert "revenue reported by pages (unverified)" in page
    assert re.search(r'<tr data-rule="sale">.*?10000.00 <small data-unverified>',
                     client.get("/admin/").text, re.S)
    # The site's backend posts the buyer's order with its API key: that one is confirmed,
    # and from then on it is the figure the summaries go by.
    token = make_key(settings_, "events")
    response = client.post("/api/v1/events", headers={"Authorization": f"Bearer {token}"},
                           json={"events": [{"name": "order_placed",
                                             "visitor": f"dashboard-visitor-{200 + buyer:03d}",
                                             "props": {"value": 80}}]})
    assert response.json()["results"][0]["status"] == "applied", response.text
    assert funnel() == {"revenue": "80.00", "revenue_confirmed": "80.00",
                        "revenue_reported": "10000.00"}
    assert "revenue (confirmed)" in client.get("/admin/campaigns/sale").text

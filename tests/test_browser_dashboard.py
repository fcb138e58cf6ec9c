"""The owner's dashboard in Debian's Chromium, after a scripted demo session on a server
with two sites and the default 5 % control group for marketing pop-ins:

- a visitor searches, dismisses the suggestion and buys wax (the suggestion converts);
- a visitor reads about waxing, dismisses the waxing offer, then puts skis in the cart:
  the waxing offer is not credited with the skis;
- a visitor puts skis in the cart: the cross-sell it triggers is not converted by that
  same add_to_cart, but by the poles added afterwards (a view-through conversion);
- forty scripted widgets check out with the sale offer (one in ten held out), half order.

The pages must show exactly those counts, a lift verdict for every marketing campaign, a
switch to the second site, and the phone view; a screenshot of each page goes to the test
output. The browser visitors' ids are pinned to ones outside the control groups of the
rules they meet (found with the server's own hash), so that the script is deterministic."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import orjson
import pytest
from websockets.sync.client import connect

from conftest import ROOT, LiveServer, run
from popin.config import Settings
from popin.core.rules.campaign import load_rules
from popin.core.site import DEFAULT_HOLDOUT, Site
from popin.core.visitor.facts import Facts
from popin.core.visitor.profile import Profile
from popin.stores.backends import open_store
from popin.web.admin.auth import PASSWORD_SETTING, hash_password

pytestmark = pytest.mark.browser
PASSWORD = "a demo password"
ORDER_VALUE = 120


def pinned_visitor(name: str, rules: list[str]) -> str:
    """The first id `name-N` outside the default control group of every rule named."""
    for number in range(1000):
        visitor = f"{name}-{number:04d}"
        facts = Facts(Profile(visitor))
        if all(facts.share(f"holdout:{rule}") >= DEFAULT_HOLDOUT for rule in rules):
            return visitor
    raise AssertionError("no visitor id outside the control groups")


def browser_visitor(browser: Any, visitor: str) -> Any:
    """A browser context whose widget uses `visitor` as its id from the first page on."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    context.add_init_script(f"localStorage.getItem('popin_v') || "
                            f"localStorage.setItem('popin_v', '{visitor}')")
    return context


@pytest.fixture
def two_sites(tmp_path: Path) -> Settings:
    return Settings(store=f"sqlite:///{tmp_path / 'popin.db'}", rules=ROOT / "rules", sites={
        "demo": Site("demo", "Demo shop"),
        "blog": Site("blog", "The owner's blog", origins=("https://blog.example",))})


@pytest.fixture
def two_site_server(two_sites: Settings) -> Any:
    server = LiveServer(two_sites).start()
    try:
        yield server
    finally:
        server.stop()


def set_password(settings: Settings) -> None:
    async def put() -> None:
        store = open_store(settings.store)
        await store.open()
        await store.setting_put(PASSWORD_SETTING, hash_password(PASSWORD))
        await store.close()

    run(put())


def scripted_checkout(server: LiveServer, number: int, orders: bool) -> bool:
    """One widget over a real socket: checkout, the offer reported shown if it came, an
    order for some. Returns whether the offer was shown."""
    url = server.url.replace("http", "ws") + "/ws?site=demo"
    shown = False
    with connect(url, origin=server.url, compression=None) as ws:  # type: ignore[arg-type]
        def send(message: dict[str, Any]) -> None:
            ws.send(orjson.dumps(message).decode())

        def settle() -> list[dict[str, Any]]:
            ws.send("not json")
            received = []
            while (message := orjson.loads(ws.recv()))["type"] != "error":
                received.append(message)
            return received

        send({"type": "hello", "visitor": f"checkout-visitor-{number:03d}",
              "session": f"checkout-session-{number:03d}", "url": f"{server.url}/demo/"})
        send({"type": "pageview", "url": f"{server.url}/demo/checkout.html"})
        send({"type": "event", "name": "checkout_started"})
        for message in settle():
            if message["type"] == "show" and message["rule"] == "sale-at-checkout":
                shown = True
                send({"type": "popin", "id": message["id"], "status": "shown"})
        if orders:
            send({"type": "event", "name": "order_placed", "props": {"value": ORDER_VALUE}})
        settle()
    return shown


def cells(page: Any, rule: str) -> dict[str, int]:
    row = page.locator(f'tr[data-rule="{rule}"] td[data-metric]')
    return {row.nth(i).get_attribute("data-metric"): int(row.nth(i).inner_text())
            for i in range(row.count())}


def test_the_dashboard_shows_a_scripted_demo_session(
        two_site_server: LiveServer, two_sites: Settings, browser: Any,
        screenshots: Path) -> None:
    server = two_site_server
    set_password(two_sites)

    # A visitor searches, dismisses the suggestion, adds wax to the cart, looks at skis.
    searcher = browser_visitor(browser, pinned_visitor("searcher", ["search-suggestions"]))
    page = searcher.new_page()
    page.goto(f"{server.url}/demo/")
    page.fill("input[name=q]", "classic skis")
    page.press("input[name=q]", "Enter")
    page.locator("[data-popin] .card").wait_for(timeout=10000)
    page.locator("[data-popin] .close").click()
    page.goto(f"{server.url}/demo/wax.html")
    page.click("text=Add to cart")
    page.goto(f"{server.url}/demo/skis.html")
    visitor = page.evaluate("localStorage.getItem('popin_v')")

    # A visitor reads about waxing, closes the offer, then buys the skis they came for.
    reader = browser_visitor(browser, pinned_visitor("reader", ["waxing-help"])).new_page()
    reader.goto(f"{server.url}/demo/wax.html")
    reader.locator('[data-popin="waxing-help"] .card').wait_for(timeout=15000)
    reader.locator("[data-popin] .close").click()
    reader.goto(f"{server.url}/demo/skis.html")
    reader.click("text=Add to cart")

    # A visitor puts skis in the cart (the cross-sell appears), then adds poles.
    buyer = browser_visitor(browser, pinned_visitor("buyer", ["skis-cross-sell"])).new_page()
    buyer.goto(f"{server.url}/demo/skis.html")
    buyer.click("text=Add to cart")
    buyer.locator('[data-popin="skis-cross-sell"] .card').wait_for(timeout=10000)
    buyer.screenshot(path=screenshots / "demo-cross-sell.png")
    buyer.goto(f"{server.url}/demo/poles.html")
    buyer.click("text=Add to cart")
    buyer.wait_for_timeout(300)

    # Forty scripted widgets at the checkout; every even one orders.
    exposed = control = exposed_orders = control_orders = 0
    for number in range(40):
        orders = number % 2 == 0
        if scripted_checkout(server, number, orders):
            exposed, exposed_orders = exposed + 1, exposed_orders + orders
        else:
            control, control_orders = control + 1, control_orders + orders
    assert exposed > 20 and control > 0, (exposed, control)

    # The owner logs in.
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    owner = context.new_page()
    owner.goto(f"{server.url}/admin/")
    assert "/admin/login" in owner.url
    owner.screenshot(path=screenshots / "dashboard-login.png")
    owner.fill("input[name=password]", "not the password")
    owner.click("text=Log in")
    assert owner.locator(".error").inner_text() == "Wrong password."
    owner.fill("input[name=password]", PASSWORD)
    owner.click("text=Log in")
    owner.wait_for_url(f"{server.url}/admin/")

    assert cells(owner, "search-suggestions") == {
        "triggered": 1, "shown": 1, "held_out": 0, "clicked": 0, "dismissed": 1,
        "converted": 1}
    # Dismissed, and the skis bought afterwards are not the waxing kit: no credit.
    assert cells(owner, "waxing-help") == {
        "triggered": 1, "shown": 1, "held_out": 0, "clicked": 0, "dismissed": 1,
        "converted": 0}
    # Triggered by adding the skis; converted by the poles only, not by the skis.
    assert cells(owner, "skis-cross-sell") == {
        "triggered": 1, "shown": 1, "held_out": 0, "clicked": 0, "dismissed": 0,
        "converted": 1}
    assert cells(owner, "sale-at-checkout") == {
        "triggered": 40, "shown": exposed, "held_out": control, "clicked": 0,
        "dismissed": 0, "converted": exposed_orders}
    verdict = owner.locator('tr[data-rule="sale-at-checkout"] td.verdict').inner_text()
    assert verdict == (f"Not enough data yet: {exposed} exposed and {control} held out so "
                       "far; at least 30 of each are needed.")
    # Every marketing campaign has a control group, so a lift verdict; answers do not.
    loaded = load_rules(ROOT / "rules")
    for rule in loaded.rules:
        text = owner.locator(f'tr[data-rule="{rule.id}"] td.verdict').inner_text()
        if rule.holdout_share(DEFAULT_HOLDOUT):
            assert text.startswith(("Not enough data yet", "It works", "It hurts")), rule.id
        else:
            assert rule.visual is None or rule.category in ("functional", "transactional"), \
                rule.id
            assert text.startswith("not measured"), rule.id
    assert owner.locator("svg.chart").count() >= 3
    owner.screenshot(path=screenshots / "dashboard-overview.png", full_page=True)

    owner.click('tr[data-rule="skis-cross-sell"] a')
    owner.wait_for_url(re.compile(r".*/admin/campaigns/skis-cross-sell"))
    funnel = {name: owner.locator(f'dd[data-metric="{name}"]').inner_text()
              for name in ("exposed", "converted", "converted_click", "revenue")}
    # View-through: converted without a click, worth the poles (119), not the skis (289).
    assert funnel == {"exposed": "1", "converted": "1", "converted_click": "0",
                      "revenue": "119.00"}
    assert "control group 5 %" in owner.locator(".where").inner_text()
    owner.goto(f"{server.url}/admin/campaigns/sale-at-checkout")
    funnel = {name: owner.locator(f'dd[data-metric="{name}"]').inner_text()
              for name in ("exposed", "held_out", "converted", "converted_control", "revenue")}
    assert funnel == {"exposed": str(exposed), "held_out": str(control),
                      "converted": str(exposed_orders), "converted_control": str(control_orders),
                      "revenue": f"{exposed_orders * ORDER_VALUE:.2f}"}
    rate = exposed_orders / exposed * 100
    assert f"({rate:.1f} %)" in owner.locator("main").inner_text()
    assert "cross-sell.yaml:" in owner.locator(".where").inner_text()
    owner.screenshot(path=screenshots / "dashboard-campaign.png", full_page=True)

    owner.click("nav >> text=Audiences")
    card = owner.locator('[data-audience="theme-classic-skiing"]')
    assert card.locator("[data-size]").inner_text() == "3"
    owner.screenshot(path=screenshots / "dashboard-audiences.png", full_page=True)
    with owner.expect_download() as download:
        card.locator("text=ids").click()
    exported = Path(download.value.path()).read_text()
    assert visitor in exported.split()

    owner.click("nav >> text=Bookings")
    assert "No appointment booked." in owner.locator("main").inner_text()
    owner.screenshot(path=screenshots / "dashboard-bookings.png", full_page=True)
    owner.click("nav >> text=Rules")
    assert re.search(r"\d+ rules in force, from 12 files", owner.locator("main").inner_text())
    owner.screenshot(path=screenshots / "dashboard-rules.png", full_page=True)

    # The second site: its own (empty) figures, and the way back.
    owner.goto(f"{server.url}/admin/")
    owner.click('nav.sites a[data-site="blog"]')
    owner.wait_for_url(re.compile(r".*/admin/\?site=blog"))
    assert owner.locator("h1").inner_text() == "The owner's blog"
    assert cells(owner, "sale-at-checkout")["triggered"] == 0
    owner.screenshot(path=screenshots / "dashboard-second-site.png", full_page=True)
    owner.click('nav.sites a[data-site="demo"]')
    assert cells(owner, "sale-at-checkout")["triggered"] == 40

    # Readable on a phone.
    phone = browser.new_context(viewport={"width": 390, "height": 844},
                                storage_state=context.storage_state())
    small = phone.new_page()
    small.goto(f"{server.url}/admin/")
    assert small.evaluate("document.documentElement.scrollWidth") <= 390
    # The key figures of every campaign in view, with no sideways scrolling of the table.
    table = small.locator("table.funnels")
    assert table.evaluate("t => t.parentElement.scrollWidth <= t.parentElement.clientWidth")
    for cell in ('[data-metric="shown"]', '[data-metric="converted"]', "td.verdict"):
        box = small.locator(f'tr[data-rule="sale-at-checkout"] {cell}').bounding_box()
        assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= 390, cell
    small.screenshot(path=screenshots / "dashboard-overview-phone.png", full_page=True)
    phone.close()
    context.close()

"""The owner's dashboard in Debian's Chromium, after a scripted demo session: a visitor in
the browser searches, dismisses the suggestion and buys; forty scripted widgets check out
with the sale offer (one in ten held out) and half of them order. The pages must show
exactly those counts and the lift; a screenshot of each page goes to the test output."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import orjson
import pytest
from websockets.sync.client import connect

from conftest import LiveServer, run
from popin.config import Settings
from popin.stores.backends import open_store
from popin.web.admin.auth import PASSWORD_SETTING, hash_password

pytestmark = pytest.mark.browser
PASSWORD = "a demo password"
ORDER_VALUE = 120


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
        live_server: LiveServer, live_settings: Settings, browser: Any,
        screenshots: Path) -> None:
    set_password(live_settings)
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()

    # A visitor in the browser: a search, its suggestion dismissed, wax in the cart, then
    # a look at the skis (a retargeting theme).
    page.goto(f"{live_server.url}/demo/")
    page.fill("input[name=q]", "classic skis")
    page.press("input[name=q]", "Enter")
    page.locator("[data-popin] .card").wait_for(timeout=10000)
    page.locator("[data-popin] .close").click()
    page.goto(f"{live_server.url}/demo/wax.html")
    page.click("text=Add to cart")
    page.goto(f"{live_server.url}/demo/skis.html")
    visitor = page.evaluate("localStorage.getItem('popin_v')")

    # Forty scripted widgets at the checkout; every even one orders.
    exposed = control = exposed_orders = control_orders = 0
    for number in range(40):
        orders = number % 2 == 0
        if scripted_checkout(live_server, number, orders):
            exposed, exposed_orders = exposed + 1, exposed_orders + orders
        else:
            control, control_orders = control + 1, control_orders + orders
    assert exposed > 20 and control > 0, (exposed, control)

    # The owner logs in.
    owner = context.new_page()
    owner.goto(f"{live_server.url}/admin/")
    assert "/admin/login" in owner.url
    owner.screenshot(path=screenshots / "dashboard-login.png")
    owner.fill("input[name=password]", "not the password")
    owner.click("text=Log in")
    assert owner.locator(".error").inner_text() == "Wrong password."
    owner.fill("input[name=password]", PASSWORD)
    owner.click("text=Log in")
    owner.wait_for_url(f"{live_server.url}/admin/")

    assert cells(owner, "search-suggestions") == {
        "triggered": 1, "shown": 1, "held_out": 0, "clicked": 0, "dismissed": 1,
        "converted": 1}
    assert cells(owner, "sale-at-checkout") == {
        "triggered": 40, "shown": exposed, "held_out": control, "clicked": 0,
        "dismissed": 0, "converted": exposed_orders}
    verdict = owner.locator('tr[data-rule="sale-at-checkout"] td.verdict').inner_text()
    assert verdict == (f"Not enough data yet: {exposed} exposed and {control} held out so "
                       "far; at least 30 of each are needed.")
    assert owner.locator("svg.chart").count() >= 3
    owner.screenshot(path=screenshots / "dashboard-overview.png", full_page=True)

    owner.click('tr[data-rule="sale-at-checkout"] a')
    owner.wait_for_url(re.compile(r".*/admin/campaigns/sale-at-checkout"))
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
    assert card.locator("[data-size]").inner_text() == "1"
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

    # Readable on a phone.
    phone = browser.new_context(viewport={"width": 390, "height": 844},
                                storage_state=context.storage_state())
    small = phone.new_page()
    small.goto(f"{live_server.url}/admin/")
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

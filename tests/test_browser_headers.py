"""The Content Security Policies in Debian's Chromium: the demo shop (inline snippets,
popin.js, its socket, the card's shadow styles), the dashboard and an appointment page
work under them, and the browser reports no violation anywhere."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from conftest import ROOT, LiveServer, run
from popin.config import Settings
from popin.features.appointments.links import Links
from popin.stores.backends import open_store
from popin.stores.bookings import Booking
from popin.web.admin.auth import PASSWORD_SETTING, hash_password

pytestmark = pytest.mark.browser
PASSWORD = "a demo password"
SECRET = "a secret for the browser headers test"
BOOKING = Booking("booking-1", "demo", "advisers", 4_102_444_800.0, 4_102_446_600.0, "phone",
                  "Léa", "+33612345678", "visitor-0001", 1.0, "key-1")
# Playwright's init scripts are exempt from the page's policy: this one hears every
# violation the browser reports, also those the console does not show.
LISTEN = """window.__violations = [];
document.addEventListener('securitypolicyviolation', (event) => window.__violations.push(
  event.violatedDirective + ' ' + (event.blockedURI || 'inline')));"""


@pytest.fixture
def server(tmp_path: Path) -> Iterator[LiveServer]:
    settings = Settings(store=f"sqlite:///{tmp_path / 'popin.db'}", rules=ROOT / "rules",
                        secret=SECRET)

    async def prepare() -> None:
        store = open_store(settings.store)
        await store.open()
        await store.setting_put(PASSWORD_SETTING, hash_password(PASSWORD))
        await store.book(BOOKING, 1)
        await store.close()

    run(prepare())
    live = LiveServer(settings).start()
    try:
        yield live
    finally:
        live.stop()


class Watched:
    """A browser page whose CSP reports, console errors and page errors are kept."""

    def __init__(self, browser: Any) -> None:
        self.context = browser.new_context(viewport={"width": 1280, "height": 800})
        self.context.add_init_script(LISTEN)
        self.page = self.context.new_page()
        self.problems: list[str] = []
        self.sockets: list[str] = []
        self.page.on("console", self._console)
        self.page.on("pageerror", lambda error: self.problems.append(f"error: {error}"))
        self.page.on("websocket", lambda ws: self.sockets.append(ws.url))

    def _console(self, message: Any) -> None:
        # A page without an icon link makes the browser ask for /favicon.ico: a 404.
        if message.type == "error" and not message.location["url"].endswith("/favicon.ico"):
            self.problems.append(f"console: {message.text} ({message.location['url']})")

    def visit(self, url: str) -> Any:
        self.page.goto(url)
        self.page.wait_for_load_state("load")
        return self.page

    def violations(self) -> list[str]:
        found: list[str] = self.page.evaluate("window.__violations")
        return found


def test_the_demo_shop_runs_under_its_policy(server: LiveServer, browser: Any) -> None:
    watched = Watched(browser)
    try:
        for page in sorted((ROOT / "static" / "demo").glob("*.html")):
            watched.visit(f"{server.url}/demo/{page.name}")
            watched.page.wait_for_function("typeof popin === 'function' && !popin.q",
                                           timeout=5000)
            assert watched.violations() == [], page.name
        # An inline handler calls popin(); the card it brings is styled in its shadow root.
        page = watched.visit(f"{server.url}/demo/cart.html")
        page.click("text=Talk to an adviser")
        card = page.locator("[data-popin] .card")
        card.wait_for(timeout=10000)
        # position: relative comes from the widget's own <style> only.
        assert card.evaluate("node => getComputedStyle(node).position") == "relative"
        assert watched.violations() == []
    finally:
        watched.context.close()
    assert watched.problems == []
    assert watched.sockets and all(url.startswith(server.url.replace("http", "ws"))
                                   for url in watched.sockets)


def test_the_dashboard_and_a_booking_page_run_under_theirs(server: LiveServer,
                                                          browser: Any) -> None:
    watched = Watched(browser)
    try:
        page = watched.visit(f"{server.url}/admin/")
        page.fill("input[name=password]", PASSWORD)
        page.click("text=Log in")
        page.wait_for_url(f"{server.url}/admin/")
        # admin.js refreshes the live numbers every 5 s: its fetch must be allowed.
        with page.expect_response(lambda response: "/admin/live" in response.url,
                                  timeout=10000) as live:
            pass
        assert live.value.status == 200
        assert page.locator("link[rel=stylesheet]").evaluate(
            "node => node.sheet.cssRules.length") > 0
        for path in ("/admin/audiences", "/admin/bookings", "/admin/rules"):
            watched.visit(f"{server.url}{path}")
            assert watched.violations() == [], path
        booking = watched.visit(f"{server.url}{Links(SECRET).manage(BOOKING)}")
        assert booking.locator("button.quiet").evaluate(
            "node => getComputedStyle(node).borderRadius") == "8px", "the inline styles apply"
        assert watched.violations() == []
    finally:
        watched.context.close()
    assert watched.problems == []

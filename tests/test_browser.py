"""End to end in Debian's headless Chromium: the demo shop, the widget, the server."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from conftest import ROOT, FixtureSite, LiveServer, make_key, run
from popin.config import Settings
from popin.core.visitor.profile import Profile
from popin.stores.backends import open_store

pytestmark = pytest.mark.browser
POPIN_CARD = "[data-popin] .card"  # Playwright's CSS pierces open shadow roots
DESKTOP = {"width": 1280, "height": 800}


def stored_profile(settings: Settings, visitor: str, site: str = "demo") -> Profile | None:
    async def load() -> Profile | None:
        store = open_store(settings.store)
        try:
            return await store.load_profile(site, visitor)
        finally:
            await store.close()

    return run(load())


def audience_members(settings: Settings, site: str, audience: str) -> list[str]:
    async def load() -> list[str]:
        store = open_store(settings.store)
        try:
            return [m.visitor for m in await store.audience_members(site, audience, "", 100)]
        finally:
            await store.close()

    return run(load())


def eventually(page: Any, check: Callable[[], Any], timeout: float = 5.0) -> Any:
    """Poll `check`, waiting through Playwright so the page's events keep arriving."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value or time.monotonic() > deadline:
            return value
        page.wait_for_timeout(100)


class SocketLog:
    """Every message the page's widget sends, decoded."""

    def __init__(self, page: Any) -> None:
        self.sent: list[dict[str, Any]] = []
        self.closed: list[str] = []
        page.on("websocket", self._attach)

    def _attach(self, ws: Any) -> None:
        ws.on("framesent", self._sent)
        ws.on("close", lambda socket: self.closed.append(socket.url))

    def _sent(self, payload: str | bytes) -> None:
        # What happened in one moment arrives as one frame holding a list.
        message = orjson.loads(payload)
        self.sent.extend(message if isinstance(message, list) else [message])

    def of_type(self, kind: str) -> list[dict[str, Any]]:
        return [message for message in self.sent if message["type"] == kind]


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    context = browser.new_context(viewport=DESKTOP)
    try:
        yield context.new_page()
    finally:
        context.close()


def test_keyword_dwell_shows_a_popin_and_the_dismissal_reaches_the_server(
        live_server: LiveServer, live_settings: Settings, page: Any, screenshots: Path) -> None:
    log = SocketLog(page)
    page.goto(f"{live_server.url}/demo/skis.html")
    # The waxing section is below the fold: time at the top of the page must not count.
    page.wait_for_timeout(6500)
    assert page.locator("[data-popin]").count() == 0
    assert [m for m in log.of_type("dwell") if m["keyword"] == "waxing"] == []
    heading = page.locator("#waxing h2")
    heading.scroll_into_view_if_needed()
    before = heading.bounding_box()
    card = page.locator(POPIN_CARD)
    card.wait_for(timeout=15000)
    page.wait_for_timeout(400)  # let the entrance animation finish for the screenshot
    page.screenshot(path=screenshots / "demo-keyword-popin.png")

    waxing = [m for m in log.of_type("dwell") if m["keyword"] == "waxing"]
    # Which element was read travels with the threshold, so the owner can see why.
    assert waxing == [{"type": "dwell", "keyword": "waxing", "seconds": 5,
                       "element": "section#waxing > h2"}]
    assert "Waxing made simple" in card.inner_text()
    in_shadow = page.evaluate(
        "() => !!document.querySelector('[data-popin]').shadowRoot.querySelector('.card')")
    assert in_shadow
    # A corner card, not centred over the content, and nothing on the page moved.
    box = card.bounding_box()
    assert box["x"] + box["width"] >= DESKTOP["width"] - 40
    assert box["y"] + box["height"] >= DESKTOP["height"] - 40
    assert box["x"] > DESKTOP["width"] / 2
    assert heading.bounding_box() == before

    page.locator("[data-popin] .close").click()
    assert page.locator("[data-popin]").count() == 0
    visitor = page.evaluate("localStorage.getItem('popin_v')")
    dismissed = eventually(page, lambda: (p := stored_profile(live_settings, visitor)) and
                           p.popins.get("waxing-help") and p.popins["waxing-help"].dismissed)
    assert dismissed, "the dismissal did not reach the server's store"
    statuses = [message["status"] for message in log.of_type("popin")]
    # Other campaigns (the sizing offer) may speak later on this page; ours came first.
    assert statuses[:2] == ["shown", "dismissed"]


def test_clicking_the_call_to_action_is_reported_before_navigating(
        live_server: LiveServer, live_settings: Settings, page: Any) -> None:
    page.goto(f"{live_server.url}/demo/skis.html")
    page.locator("button", has_text="Add to cart").click()
    cta = page.locator("[data-popin] .cta")
    cta.wait_for(timeout=10000)
    cta.click()
    page.wait_for_url("**/demo/poles.html")
    visitor = page.evaluate("localStorage.getItem('popin_v')")
    clicked = eventually(page, lambda: (p := stored_profile(live_settings, visitor)) and
                         p.popins.get("skis-cross-sell") and p.popins["skis-cross-sell"].clicked)
    assert clicked, "the click was lost with the page"


def test_on_a_phone_the_card_fits_the_screen(
        live_server: LiveServer, browser: Any, screenshots: Path) -> None:
    phone = {"width": 390, "height": 844}
    context = browser.new_context(
        viewport=phone, is_mobile=True, has_touch=True,
        user_agent="Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 "
                   "(KHTML, like Gecko) Version/17.0 Mobile/15E148 Safari/604.1")
    try:
        page = context.new_page()
        page.goto(f"{live_server.url}/demo/skis.html")
        page.locator("button", has_text="Add to cart").click()
        card = page.locator(POPIN_CARD)
        card.wait_for(timeout=10000)
        page.wait_for_timeout(400)
        page.screenshot(path=screenshots / "demo-phone-popin.png")
        box = card.bounding_box()
        assert box["x"] >= 0 and box["x"] + box["width"] <= phone["width"]
        assert box["y"] + box["height"] <= phone["height"]
    finally:
        context.close()


def test_queued_calls_spa_routes_and_one_global(
        fixture_site: tuple[FixtureSite, LiveServer], page: Any) -> None:
    site, _server = fixture_site
    page.goto(f"{site.url}/bare.html")
    bare_globals = set(page.evaluate("Object.keys(window)"))
    log = SocketLog(page)
    page.goto(f"{site.url}/spa.html")
    # popin('track', ...) called before the script loaded arrives through the queue stub.
    page.locator(POPIN_CARD, has_text="Queued call arrived").wait_for(timeout=10000)
    page.locator("[data-popin] .close").click()
    added = set(page.evaluate("Object.keys(window)")) - bare_globals
    assert added == {"popin"}
    page.locator("#to-settings").click()
    page.locator(POPIN_CARD, has_text="Settings help").wait_for(timeout=10000)
    page.locator("#to-home").click()
    page.go_back()
    urls = [message["url"] for message in log.of_type("pageview")]
    assert urls == [f"{site.url}/spa.html", f"{site.url}/app/settings",
                    f"{site.url}/app/home", f"{site.url}/app/settings"][:len(urls)]
    eventually(page, lambda: len(log.of_type("pageview")) == 4)
    assert len(log.of_type("pageview")) == 4
    assert len(log.of_type("hello")) == 1


def test_reconnects_after_a_server_restart_as_the_same_visitor_and_session(
        fixture_site: tuple[FixtureSite, LiveServer], page: Any) -> None:
    site, server = fixture_site
    log = SocketLog(page)
    page.goto(f"{site.url}/app/home")
    assert eventually(page, lambda: log.of_type("hello"))
    server.stop()
    server.start()
    assert eventually(page, lambda: len(log.of_type("hello")) >= 2, timeout=15)
    first, second = log.of_type("hello")[:2]
    assert (first["visitor"], first["session"]) == (second["visitor"], second["session"])
    # The page's route did not change, so no second pageview.
    assert len(log.of_type("pageview")) == 1


STORED_IDS = "['popin_v', 'popin_s', 'popin_seen', 'popin_c'].map(k => localStorage.getItem(k))"


def test_consent_required_keeps_nothing_on_the_device_or_the_server_until_opt_in(
        fixture_site: tuple[FixtureSite, LiveServer], browser: Any, screenshots: Path) -> None:
    site, server = fixture_site
    context = browser.new_context(viewport=DESKTOP)
    page = context.new_page()
    log = SocketLog(page)
    page.goto(f"{site.url}/consent.html")
    # In-session rules still run on the live socket.
    page.locator(POPIN_CARD, has_text="Help without memory").wait_for(timeout=10000)
    page.wait_for_timeout(400)  # the entrance animation
    page.screenshot(path=screenshots / "consent-required-before-opt-in.png")
    [hello] = log.of_type("hello")
    assert hello["consent"] == "unknown"
    page.click("#subscribe")
    page.wait_for_timeout(500)
    assert page.evaluate(STORED_IDS) == [None, None, None, None], "nothing on the device"
    assert stored_profile(server.settings, hello["visitor"], "private") is None
    assert audience_members(server.settings, "private", "newsletter-readers") == []

    page.click("#accept")
    assert eventually(page, lambda: page.evaluate("localStorage.getItem('popin_v')"))
    visitor, session, _seen, choice = page.evaluate(STORED_IDS)
    assert (visitor, choice) == (hello["visitor"], "1") and session.startswith(hello["session"])
    page.click("#subscribe")
    assert eventually(page, lambda: audience_members(server.settings, "private",
                                                     "newsletter-readers") == [visitor])
    # The next page remembers the choice.
    page.reload()
    assert eventually(page, lambda: len(log.of_type("hello")) == 2)
    assert log.of_type("hello")[1]["consent"] == "granted"
    assert log.of_type("hello")[1]["visitor"] == visitor
    # Changing one's mind: the device forgets the ids, the visitor leaves the audiences.
    page.click("#refuse")
    assert eventually(page, lambda: audience_members(server.settings, "private",
                                                     "newsletter-readers") == [])
    assert page.evaluate(STORED_IDS) == [None, None, None, "0"]
    context.close()


def test_a_foreign_origin_is_refused_and_the_widget_gives_up_quietly(
        fixture_site: tuple[FixtureSite, LiveServer], page: Any) -> None:
    site, server = fixture_site
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.goto(f"{site.url}/foreign.html")
    counted = eventually(page, lambda: 'refused.origin"}' in _metrics(server))
    assert counted
    page.wait_for_timeout(500)
    assert page.locator("[data-popin]").count() == 0
    assert errors == []


def _metrics(server: LiveServer) -> str:
    import httpx2

    return httpx2.get(f"{server.url}/metrics").text


def test_demo_pages_all_carry_the_tag() -> None:
    for page in (ROOT / "static" / "demo").glob("*.html"):
        assert '<script async src="/popin.js" data-site="demo"></script>' in page.read_text()


def test_playbook_campaigns_run_in_the_demo(
        live_server: LiveServer, live_settings: Settings, page: Any, screenshots: Path) -> None:
    page.goto(f"{live_server.url}/demo/")
    page.fill("input[name=q]", "classic skis")
    page.press("input[name=q]", "Enter")
    card = page.locator(POPIN_CARD)
    card.wait_for(timeout=10000)
    assert 'Going further with "classic skis"' in card.inner_text()
    page.wait_for_timeout(400)  # the entrance animation
    page.screenshot(path=screenshots / "demo-search-suggestions.png")
    page.locator("[data-popin] .close").click()

    page.goto(f"{live_server.url}/demo/boots.html")
    card.wait_for(timeout=10000)
    assert "Classic touring boots is out of stock" in card.inner_text()
    assert "Classic Pro boots" in card.inner_text()
    page.wait_for_timeout(400)  # the entrance animation
    page.screenshot(path=screenshots / "demo-out-of-stock.png")
    page.locator("[data-popin] .close").click()

    page.goto(f"{live_server.url}/demo/signup.html")
    page.fill("input[name=first_name]", "Léa")
    page.fill("input[name=email]", "lea@example.com")
    page.click("text=Create my account")
    card.wait_for(timeout=10000)
    assert "Welcome, Léa!" in card.inner_text()
    page.wait_for_timeout(400)  # the entrance animation
    page.screenshot(path=screenshots / "demo-welcome-after-signup.png")

    visitor = page.evaluate("localStorage.getItem('popin_v')")
    # Both tags, not just the first: the signup page's own tag reaches the store with the
    # next write-behind flush, up to a second after the card shows.
    profile = eventually(page, lambda: (p := stored_profile(live_settings, visitor)) and
                         {"waiting-for-stock", "theme-equipment"} <= set(p.audiences) and p)
    assert {"waiting-for-stock", "theme-equipment"} <= set(profile.audiences)
    # And the ad platforms can take them: the audience's export lists this visitor.
    import httpx2

    token = make_key(live_settings, "export")
    exported = httpx2.get(f"{live_server.url}/api/v1/audiences/theme-equipment/export",
                          params={"format": "ids"}, headers={"Authorization": f"Bearer {token}"})
    assert exported.status_code == 200 and visitor in exported.text.split()
    assert exported.headers["popin-cursor"]


def test_the_widget_measures_scroll_idle_exit_tab_typing_and_scoped_dwell(
        fixture_site: tuple[FixtureSite, LiveServer], browser: Any) -> None:
    site, _server = fixture_site
    context = browser.new_context(viewport={"width": 1000, "height": 700})
    page = context.new_page()
    try:
        log = SocketLog(page)
        page.goto(f"{site.url}/behaviour.html")
        assert eventually(page, lambda: log.of_type("pageview"))
        page.wait_for_timeout(400)  # the config arrives and the page is scanned

        page.locator("#name").click()
        page.keyboard.type("Anna")
        page.locator("h1").click()
        typing = [message["active"] for message in log.of_type("typing")]
        assert eventually(page, lambda: [m["active"] for m in log.of_type("typing")] ==
                          [True, False]), typing

        # "avalanche" in #aside does not count: only the #guide section is watched.
        page.locator("#aside p").scroll_into_view_if_needed()
        page.wait_for_timeout(2500)
        assert log.of_type("dwell") == []
        page.locator("#guide p").scroll_into_view_if_needed()
        assert eventually(page, lambda: log.of_type("dwell"), timeout=6)
        assert log.of_type("dwell") == [{"type": "dwell", "keyword": "avalanche@#guide",
                                         "seconds": 2, "element": "section#guide > p"}]
        assert log.of_type("scroll") == [{"type": "scroll", "percent": 50}]

        # No input at all for five seconds.
        assert eventually(page, lambda: log.of_type("idle"), timeout=9)
        assert log.of_type("idle") == [{"type": "idle", "seconds": 5}]

        # The pointer leaves through the top of the window, twice: reported once.
        for _ in range(2):
            page.evaluate("document.dispatchEvent(new MouseEvent('mouseout', "
                          "{clientY: -2, relatedTarget: null, bubbles: true}))")
        assert eventually(page, lambda: log.of_type("exit"))
        page.wait_for_timeout(200)
        assert len(log.of_type("exit")) == 1

        # The tab is hidden for six seconds, then shown again.
        page.evaluate("""() => {
            const set = (hidden) => {
                Object.defineProperty(document, 'hidden', {value: hidden, configurable: true});
                Object.defineProperty(document, 'visibilityState',
                    {value: hidden ? 'hidden' : 'visible', configurable: true});
                document.dispatchEvent(new Event('visibilitychange'));
            };
            set(true);
            const now = Date.now;
            Date.now = () => now() + 6000;
            set(false);
        }""")
        tab = eventually(page, lambda: log.of_type("tab"))
        assert tab and tab[0]["seconds"] >= 5
    finally:
        context.close()


def test_bar_and_inline_placements(
        fixture_site: tuple[FixtureSite, LiveServer], page: Any, screenshots: Path) -> None:
    site, _server = fixture_site
    log = SocketLog(page)
    page.goto(f"{site.url}/behaviour.html")
    assert eventually(page, lambda: log.of_type("pageview"))
    page.evaluate("popin.track('show_bar')")
    bar = page.locator(POPIN_CARD, has_text="A top bar")
    bar.wait_for(timeout=10000)
    page.wait_for_timeout(400)
    page.screenshot(path=screenshots / "fixture-top-bar.png")
    box = bar.bounding_box()
    assert box["y"] == 0 and box["x"] == 0 and box["width"] == DESKTOP["width"]
    page.locator("[data-popin] .close").click()

    page.evaluate("popin.track('show_inline')")
    inline = page.locator("#offers [data-popin] .card")
    inline.wait_for(timeout=10000)
    assert "In the page's slot" in inline.inner_text()
    page.locator("[data-popin] .close").click()

    page.evaluate("popin.track('show_missing')")
    assert eventually(page, lambda: [m for m in log.of_type("popin") if m["status"] == "failed"])
    assert page.locator("[data-popin]").count() == 0


def test_backend_events_reach_the_browser_live_and_at_the_next_visit(
        live_server: LiveServer, live_settings: Settings, browser: Any,
        screenshots: Path) -> None:
    import httpx2

    api = {"Authorization": f"Bearer {make_key(live_settings, 'events')}"}
    context = browser.new_context(viewport=DESKTOP)
    try:
        page = context.new_page()
        page.goto(f"{live_server.url}/demo/")
        # Kept on the device once the server's config says the site allows it.
        visitor = eventually(page, lambda: page.evaluate("localStorage.getItem('popin_v')"))
        eventually(page, lambda: httpx2.get(f"{live_server.url}/healthz").json()["sessions"])
        # A purchase recorded by the backend while the visitor is on the site: live.
        httpx2.post(f"{live_server.url}/api/v1/events", headers=api, json={"events": [
            {"name": "purchase", "visitor": visitor, "props": {"value": 289}}]})
        card = page.locator(POPIN_CARD, has_text="How did we do?")
        card.wait_for(timeout=5000)
        page.wait_for_timeout(400)
        page.screenshot(path=screenshots / "backend-purchase-live.png")
        page.close()
        # Once the server has seen the page go, the visitor is away.
        health = f"{live_server.url}/healthz"
        deadline = time.monotonic() + 10
        while httpx2.get(health).json()["connections"]:
            assert time.monotonic() < deadline
            time.sleep(0.05)

        # The visitor has left; the backend records their signup (e.g. by e-mail link).
        response = httpx2.post(f"{live_server.url}/api/v1/events", headers=api, json={
            "events": [{"name": "signup", "visitor": visitor,
                        "props": {"first_name": "Noé"}}]})
        assert response.json()["results"][0]["queued"] == 1
        page = context.new_page()
        page.goto(f"{live_server.url}/demo/")
        welcome = page.locator(POPIN_CARD, has_text="Welcome, Noé!")
        welcome.wait_for(timeout=10000)
        page.wait_for_timeout(300)
        page.reload()
        page.wait_for_timeout(2000)
        assert page.locator(POPIN_CARD, has_text="Welcome").count() == 0, "shown twice"
    finally:
        context.close()


def test_a_visitor_books_a_call_from_the_cart_and_gets_the_ics(
        live_server: LiveServer, browser: Any, screenshots: Path) -> None:
    context = browser.new_context(viewport={"width": 1280, "height": 900},
                                  timezone_id="America/New_York", accept_downloads=True)
    try:
        page = context.new_page()
        page.goto(f"{live_server.url}/demo/skis.html")
        page.locator("button", has_text="Add to cart").click()
        page.locator(POPIN_CARD).wait_for(timeout=10000)
        page.locator("[data-popin] .close").click()
        page.goto(f"{live_server.url}/demo/cart.html")
        page.locator("button", has_text="Talk to an adviser").click()
        card = page.locator(POPIN_CARD, has_text="Book a call with an adviser")
        card.wait_for(timeout=10000)
        page.wait_for_timeout(400)
        page.screenshot(path=screenshots / "demo-slots-to-pick.png")
        page.locator("[data-popin] input[name=slot]").first.check()
        page.locator("[data-popin] input[value=video]").check()
        page.locator("[data-popin] input[name=name]").fill("Léa Martin")
        page.locator("[data-popin] input[name=contact]").fill("lea@example.com")
        page.locator("[data-popin] input[name=consent]").check()
        page.locator("[data-popin] button", has_text="Book this time").click()
        confirmation = page.locator("[data-popin] .done")
        confirmation.wait_for(timeout=10000)
        assert "Booked:" in confirmation.inner_text()
        assert "(EST)" in confirmation.inner_text(), "shown in the visitor's own time zone"
        page.screenshot(path=screenshots / "demo-booking-confirmed.png")
        with page.expect_download() as download_info:
            page.locator("[data-popin] a", has_text="Add to my calendar").click()
        invitation = Path(download_info.value.path()).read_text()
        assert invitation.startswith("BEGIN:VCALENDAR") and "STATUS:CONFIRMED" in invitation
        assert page.locator(POPIN_CARD).count() == 1, "the card stays after the download"
    finally:
        context.close()


def test_the_demo_does_what_the_readme_says(live_server: LiveServer, page: Any,
                                            screenshots: Path) -> None:
    """README, "Try it": open the skis page, scroll to *Waxing your skis* and keep reading
    for five seconds: a pop-in slides into the corner. Add the skis to your cart for
    another one."""
    readme = " ".join((ROOT / "README.md").read_text().split())
    steps = ("Open the skis page, scroll to *Waxing your skis* and keep reading for five "
             "seconds: a pop-in slides into the corner. Add the skis to your cart for "
             "another one.")
    assert steps in readme, "the README's demo steps changed: change this test with them"
    page.goto(f"{live_server.url}/demo/skis.html")
    page.get_by_role("heading", name="Waxing your skis").scroll_into_view_if_needed()
    for _ in range(8):
        page.mouse.move(400, 300)  # reading, not away
        page.wait_for_timeout(800)
        if page.locator('[data-popin="waxing-help"]').count():
            break
    card = page.locator('[data-popin="waxing-help"] .card')
    card.wait_for(timeout=5000)
    box = card.bounding_box()
    assert box["x"] > DESKTOP["width"] / 2 and box["y"] > DESKTOP["height"] / 2  # the corner
    page.get_by_role("button", name="Add to cart").click()
    cross_sell = page.locator('[data-popin="skis-cross-sell"] .card')
    cross_sell.wait_for(timeout=5000)
    assert page.locator("[data-popin]").count() == 1  # it took the waxing card's place
    page.wait_for_timeout(400)
    page.screenshot(path=screenshots / "demo-second-step.png")

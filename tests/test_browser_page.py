"""The widget on a customer's own page, in Debian's Chromium: keyword dwell counts reading
(not menus, sidebars, banners, nor a word inside a longer one), the card keeps its design
under a strict Content-Security-Policy, and a corner card keeps clear of the page's own
corner button and of the field the visitor types in."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from test_browser import POPIN_CARD, SocketLog, eventually

from conftest import FixtureSite, LiveServer

pytestmark = pytest.mark.browser
VIEWPORT = {"width": 1000, "height": 700}


def test_dwell_counts_reading_not_pinned_elements_nor_parts_of_words(
        fixture_site: tuple[FixtureSite, LiveServer], browser: Any, screenshots: Path) -> None:
    site, _server = fixture_site
    context = browser.new_context(viewport=VIEWPORT)
    page = context.new_page()
    try:
        log = SocketLog(page)
        page.goto(f"{site.url}/reading.html")
        assert eventually(page, lambda: log.of_type("pageview"))
        # "waterproof" is on screen the whole time in the fixed header, the sticky
        # sidebar and the cookie banner, and "Waterproofing" in the first paragraph: none
        # of it is reading about waterproofing, so 3 s (and more) count nothing.
        for _ in range(5):
            page.mouse.move(300, 300)  # an active visitor
            page.wait_for_timeout(1000)
        assert log.of_type("dwell") == []
        page.screenshot(path=screenshots / "page-reading-top.png")
        page.locator("#body p").scroll_into_view_if_needed()
        for _ in range(6):
            page.mouse.move(320, 320)
            page.wait_for_timeout(700)
            if log.of_type("dwell"):
                break
        assert log.of_type("dwell") == [{"type": "dwell", "keyword": "waterproof",
                                         "seconds": 3, "element": "section#body > p"}]
    finally:
        context.close()


def test_the_card_keeps_its_design_under_a_strict_policy(
        fixture_site: tuple[FixtureSite, LiveServer], browser: Any, screenshots: Path) -> None:
    site, _server = fixture_site
    context = browser.new_context(viewport=VIEWPORT)
    page = context.new_page()
    console: list[str] = []
    page.on("console", lambda message: console.append(f"{message.type}: {message.text}"))
    page.add_init_script("window.__violations = [];"
                         "document.addEventListener('securitypolicyviolation', e =>"
                         " window.__violations.push(e.violatedDirective + ' ' + e.blockedURI));")
    try:
        response = page.goto(f"{site.url}/strict.html")
        assert "style-src 'self'" in response.headers["content-security-policy"]
        card = page.locator(POPIN_CARD)
        card.wait_for(timeout=10000)
        page.wait_for_timeout(400)
        style = card.evaluate("e => { const s = getComputedStyle(e); return [s.borderRadius,"
                              " s.backgroundColor, s.boxShadow !== 'none', s.fontSize] }")
        assert style == ["12px", "rgb(255, 255, 255)", True, "14px"]
        cta = page.locator("[data-popin] .cta").evaluate(
            "e => [getComputedStyle(e).backgroundColor, getComputedStyle(e).color]")
        assert cta == ["rgb(11, 87, 208)", "rgb(255, 255, 255)"]
        host = page.locator("[data-popin]").evaluate(
            "e => [getComputedStyle(e).position, getComputedStyle(e).right]")
        assert host == ["fixed", "16px"]
        assert page.evaluate("window.__violations") == []
        assert not [line for line in console if "Content Security Policy" in line], console
        page.screenshot(path=screenshots / "page-strict-csp.png")
    finally:
        context.close()


def test_a_corner_card_keeps_clear_of_the_page_and_of_the_field_in_use(
        fixture_site: tuple[FixtureSite, LiveServer], browser: Any, screenshots: Path) -> None:
    site, _server = fixture_site
    context = browser.new_context(viewport=VIEWPORT)
    page = context.new_page()
    try:
        page.goto(f"{site.url}/placement.html")
        page.evaluate("popin('track', 'show_corner')")
        card = page.locator('[data-popin="corner-right"]')
        card.locator(".card").wait_for(timeout=10000)
        page.wait_for_timeout(400)
        button = page.locator("#to-top").bounding_box()
        box = card.bounding_box()
        # Above the page's "Top" button (data-keep-clear), still in the right corner.
        assert box["y"] + box["height"] <= button["y"], (box, button)
        assert box["x"] + box["width"] == pytest.approx(VIEWPORT["width"] - 16, abs=1)
        page.screenshot(path=screenshots / "page-corner-keeps-clear.png")

        # The visitor types in a field the card would cover: the card moves to the top.
        page.locator("#chat").focus()
        page.wait_for_timeout(100)
        box = card.bounding_box()
        chat = page.locator("#chat").bounding_box()
        assert box["y"] == pytest.approx(16, abs=1)
        assert box["y"] + box["height"] <= chat["y"], (box, chat)
        page.screenshot(path=screenshots / "page-corner-clear-of-typing.png")
        page.locator("h1").click()
        page.wait_for_timeout(100)
        assert card.bounding_box()["y"] > VIEWPORT["height"] / 2  # back in its corner

        # Bottom left, moved by the rule's offset; the page can add what to keep clear of.
        page.locator("[data-popin] .close").click()
        page.evaluate("popin('track', 'show_left')")
        left = page.locator('[data-popin="corner-left"]')
        left.locator(".card").wait_for(timeout=10000)
        page.wait_for_timeout(400)
        box = left.bounding_box()
        assert box["x"] == pytest.approx(40, abs=1)
        assert box["y"] + box["height"] == pytest.approx(VIEWPORT["height"] - 60, abs=1)
        page.evaluate("popin('keepClear', 'h1')")  # nothing in the way: no move
        assert left.bounding_box()["y"] == box["y"]
    finally:
        context.close()


def test_the_owner_previews_a_pop_in_on_their_own_page(
        fixture_site: tuple[FixtureSite, LiveServer], browser: Any, screenshots: Path) -> None:
    from test_browser_dashboard import PASSWORD, set_password

    site, server = fixture_site
    set_password(server.settings)
    owner = browser.new_context(viewport=VIEWPORT)
    page = owner.new_page()
    try:
        page.goto(f"{server.url}/admin/campaigns/corner-left?site=fixture")
        page.fill("input[name=password]", PASSWORD)
        page.click("text=Log in")
        page.wait_for_url("**/admin/campaigns/corner-left?site=fixture")
        page.screenshot(path=screenshots / "dashboard-preview-form.png", full_page=True)
        page.fill("input[name=preview_url]", f"{site.url}/placement.html")
        page.click("text=Make a preview link")
        link = page.locator("a[data-preview]")
        assert link.count() == 1 and link.inner_text() == f"{site.url}/placement.html"
        logs: list[SocketLog] = []
        owner.on("page", lambda opened: logs.append(SocketLog(opened)))
        with owner.expect_page() as opened:
            link.click()
        preview = opened.value
        # The rule's trigger (a custom event) never happened: the preview shows it anyway.
        card = preview.locator('[data-popin="corner-left"] .card')
        card.wait_for(timeout=10000)
        assert "#popin-preview=" in preview.url
        preview.wait_for_timeout(400)
        preview.screenshot(path=screenshots / "page-preview.png")
        preview.locator("[data-popin] .close").click()
        preview.wait_for_timeout(300)
        # The preview's page says nothing else: no pageview, no status, no visit's rules.
        assert [message["type"] for message in logs[-1].sent] == ["hello", "preview"]
        # Counted nowhere.
        page.goto(f"{server.url}/admin/?site=fixture")
        metrics = page.locator('tr[data-rule="corner-left"] td[data-metric]')
        assert {metrics.nth(i).get_attribute("data-metric"): metrics.nth(i).inner_text()
                for i in range(metrics.count())} == {
            "shown": "0", "converted": "0", "held_out": "0", "triggered": "0", "clicked": "0",
            "dismissed": "0"}
        # Only the site's own pages: never a way to send someone elsewhere.
        refused = page.goto(f"{server.url}/admin/campaigns/corner-left?site=fixture"
                            "&preview_url=https://elsewhere.example/")
        assert refused.status == 400
        assert "elsewhere.example" not in page.locator("section.preview").inner_html()
        assert "only:" in page.locator("section.preview .error").inner_text()
    finally:
        owner.close()

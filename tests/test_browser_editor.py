"""The campaign editor in Debian's Chromium: a marketer builds a keyword-dwell campaign from
scratch through the form, watches the card change in the preview as they type, saves, and
a visitor in another browser gets that pop-in on the demo shop; a hand-commented file
edited through the form keeps its comments. Screenshots of the editor at desktop and
phone widths go to the test output; the dashboard's strict CSP refuses nothing on it."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from conftest import LiveServer, run
from popin.config import Settings
from popin.core.site import Site
from popin.stores.backends import open_store
from popin.web.admin.auth import PASSWORD_SETTING, hash_password

pytestmark = pytest.mark.browser
PASSWORD = "a marketer's password"
COMMENTED = """\
# Hand-written: the dashboard must keep every comment of this file.
campaign: Sizing
rules:
  - id: sizing-help   # the sizing guide
    # Twelve seconds on the guide means unsure of the length.
    trigger: {dwell: {keyword: sizing, seconds: 12, selector: "#sizing"}}
    popin:
      title: "Not sure about the length?"   # short on purpose
      body: <p>Tell us your weight and height.</p>
    cap: {per_session: 1, per_visitor: 2, window: 30d}
"""


@pytest.fixture
def editor_settings(tmp_path: Path) -> Settings:
    (tmp_path / "rules").mkdir()
    settings = Settings(store=f"sqlite:///{tmp_path / 'popin.db'}", rules=tmp_path / "rules",
                        # No watcher: what goes live does so through the editor's reload.
                        reload=False, sites={"demo": Site("demo", "Demo shop", holdout=0)})

    async def put() -> None:
        store = open_store(settings.store)
        await store.open()
        await store.setting_put(PASSWORD_SETTING, hash_password(PASSWORD))
        await store.close()

    run(put())
    return settings


@pytest.fixture
def editor_server(editor_settings: Settings) -> Iterator[LiveServer]:
    server = LiveServer(editor_settings).start()
    try:
        yield server
    finally:
        server.stop()


def owner_page(browser: Any, server: LiveServer, width: int = 1280,
               height: int = 900) -> tuple[Any, Any, list[str]]:
    context = browser.new_context(viewport={"width": width, "height": height})
    page = context.new_page()
    refused: list[str] = []
    page.on("console", lambda message: refused.append(message.text)
            if "Content Security Policy" in message.text else None)
    page.goto(f"{server.url}/admin/")
    page.fill("input[name=password]", PASSWORD)
    page.click("text=Log in")
    page.wait_for_url(f"{server.url}/admin/")
    return context, page, refused


def card_title(page: Any, device: str) -> Any:
    # Playwright's CSS locators go through open shadow roots, as the card's is.
    return page.locator(f'[data-device="{device}"] .card-host .title')


def test_a_marketer_builds_a_campaign_and_a_visitor_gets_it(
        editor_server: LiveServer, editor_settings: Settings, browser: Any,
        screenshots: Path) -> None:
    server = editor_server
    context, owner, refused = owner_page(browser, server)
    owner.click("[data-new-campaign]")
    owner.wait_for_url(re.compile(r".*/admin/editor/new"))
    # The form opens on a keyword dwell; only its fields are in view.
    assert owner.locator("select[name=trigger]").input_value() == "dwell"
    assert owner.locator('[data-field="trigger.scroll"]').is_hidden()
    owner.fill("input[name=campaign]", "Grip wax")
    owner.fill("input[name=id]", "grip-help")
    owner.fill('input[name="trigger.dwell.keyword"]', "grip")
    owner.fill('input[name="trigger.dwell.seconds"]', "2")
    owner.fill('input[name="popin.title"]', "Grip wax, {{ visitor.first_name }}?")
    owner.fill('textarea[name="popin.body"]', "<p>Thin layers, corked smooth.</p>")
    card_title(owner, "desktop").filter(has_text="Grip wax, Alex?").wait_for(timeout=10000)
    # What most visitors see: a first visit, no name.
    owner.select_option("[data-visitor]", "first")
    card_title(owner, "desktop").filter(has_text=re.compile(r"^Grip wax, \?$")).wait_for(
        timeout=10000)
    owner.select_option("[data-visitor]", "known")
    # Typing changes the card in both frames.
    owner.fill('input[name="popin.title"]', "Grip wax in thin layers")
    for device in ("desktop", "phone"):
        card_title(owner, device).filter(has_text="Grip wax in thin layers").wait_for(
            timeout=10000)
    owner.fill('input[name="popin.cta.label"]', "See the kit")
    owner.fill('input[name="popin.cta.url"]', "/demo/wax.html")
    owner.locator('[data-device="desktop"] .card-host .cta').filter(
        has_text="See the kit").wait_for(timeout=10000)
    sentence = owner.locator("[data-sentence]")
    sentence.filter(has_text="When a visitor reads about grip for 2 seconds").wait_for()
    # An error is told beside its field while typing, and goes when fixed.
    owner.fill('input[name="trigger.dwell.seconds"]', "soon")
    owner.locator('[data-live-error="trigger.dwell.seconds"]').filter(
        has_text="expected a number").wait_for(timeout=10000)
    owner.fill('input[name="trigger.dwell.seconds"]', "2")
    owner.locator('[data-live-error="trigger.dwell.seconds"]').wait_for(state="hidden")
    owner.screenshot(path=screenshots / "editor-desktop.png", full_page=True)

    # The same form on a phone: one column, nothing wider than the screen; the preview,
    # else below the long form, opens from a bar at the foot of the screen as a sheet at
    # the top, with the field being typed in just below it.
    phone = browser.new_context(viewport={"width": 390, "height": 844},
                                storage_state=context.storage_state())
    small = phone.new_page()
    small.goto(f"{server.url}/admin/editor/new")
    small.fill('input[name="trigger.dwell.keyword"]', "grip")
    assert small.locator(".live-preview").is_hidden()
    small.screenshot(path=screenshots / "editor-phone.png", full_page=True)
    small.click("[data-preview-toggle]")
    small.click('textarea[name="popin.body"]')
    small.keyboard.type("<p>Thin layers, corked smooth.</p>")
    small.click('input[name="popin.title"]')
    small.keyboard.type("Grip wax in thin layers")
    card = card_title(small, "phone").filter(has_text="Grip wax in thin layers")
    card.wait_for(timeout=10000)
    title = small.locator('input[name="popin.title"]').bounding_box()
    shown = card.bounding_box()
    assert shown and title and shown["y"] >= 0 and shown["y"] + shown["height"] <= title["y"]
    assert title["y"] + title["height"] <= 844 - small.locator(
        "[data-preview-toggle]").bounding_box()["height"]
    assert small.evaluate("document.documentElement.scrollWidth") <= 390
    small.screenshot(path=screenshots / "editor-phone-preview.png")
    phone.close()

    owner.click("text=Save and put live")
    owner.wait_for_url(re.compile(r".*/admin/campaigns/grip-help$"))
    written = (editor_settings.rules / "grip-help.yaml").read_text()
    assert "trigger: {dwell: {keyword: grip, seconds: 2}}" in written
    assert "title: Grip wax in thin layers" in written

    # A visitor, in a browser of their own, reads about grip wax on the demo shop.
    visitor = browser.new_context(viewport={"width": 1280, "height": 900}).new_page()
    visitor.goto(f"{server.url}/demo/wax.html")
    card = visitor.locator('[data-popin="grip-help"] .card')
    card.wait_for(timeout=15000)
    assert card.locator(".title").inner_text() == "Grip wax in thin layers"
    visitor.screenshot(path=screenshots / "editor-campaign-live.png")
    assert refused == []
    context.close()


def test_a_hand_commented_file_edited_in_the_form_keeps_its_comments(
        editor_settings: Settings, browser: Any, screenshots: Path) -> None:
    path = editor_settings.rules / "sizing.yaml"
    path.write_text(COMMENTED)
    server = LiveServer(editor_settings).start()
    try:
        context, owner, refused = owner_page(browser, server)
        owner.goto(f"{server.url}/admin/campaigns/sizing-help")
        owner.click("[data-edit]")
        assert owner.locator('input[name="trigger.dwell.selector"]').input_value() == "#sizing"
        owner.fill('input[name="popin.title"]', "Which length for you?")
        owner.fill('input[name="trigger.dwell.seconds"]', "10")
        card_title(owner, "desktop").filter(has_text="Which length for you?").wait_for(
            timeout=10000)
        owner.click("text=Save and put live")
        owner.wait_for_url(re.compile(r".*/admin/campaigns/sizing-help$"))
        # Every line as written but the two changed; a comment after a shorter value
        # keeps its column.
        expected = COMMENTED.replace('"Not sure about the length?"', '"Which length for you?"'
                                     ).replace("seconds: 12", "seconds: 10")
        assert re.sub(r" +#", " #", path.read_text()) == re.sub(r" +#", " #", expected)
        # The history shows the change, line by line, with a way back.
        owner.click("text=History")
        assert owner.locator(".diff .del").filter(has_text="seconds: 12").count() == 1
        assert owner.locator(".diff .add").filter(has_text="seconds: 10").count() == 1
        assert owner.locator("[data-restore]").count() == 1
        owner.screenshot(path=screenshots / "editor-history.png", full_page=True)
        assert refused == []
        context.close()
    finally:
        server.stop()

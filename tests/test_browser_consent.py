"""The consent tools sites already run, in Debian's headless Chromium: a real IAB TCF v2.2
CMP API (the IAB Tech Lab's @iabtechlabtcf/cmpapi and core, from the npm registry, bundled
in tests/fixtures/tcf/ by its build.sh) making real TC strings, and Google Consent Mode
v2 through gtag's dataLayer. Each case checks the browser's storage, the store and the
audiences; nothing is loaded from anywhere but the two local servers."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx2
import pytest
from test_browser import DESKTOP, POPIN_CARD, SocketLog, audience_members, eventually
from test_browser import stored_profile as profile_of

from conftest import FIXTURES, FixtureSite, LiveServer, free_port, make_key
from popin.config import Settings
from popin.core.site import Site
from popin.core.visitor.profile import Profile

pytestmark = pytest.mark.browser
AUDIENCE = "newsletter-readers"
ALL_PURPOSES = list(range(1, 12))
# What popin may keep on the device: nothing else of ours may appear there.
POPIN_KEYS = "Object.keys(localStorage).filter(key => key.startsWith('popin_')).sort()"


@pytest.fixture
def shop(tmp_path: Path) -> Iterator[tuple[FixtureSite, LiveServer]]:
    port = free_port()
    site = FixtureSite(f"http://127.0.0.1:{port}")
    shop_url = site.url
    settings = Settings(store=f"sqlite:///{tmp_path / 'popin.db'}", rules=FIXTURES / "rules",
                        sites={"tcf": Site("tcf", origins=(shop_url,), consent="required"),
                               # Consent Mode on an "implied" site: the page's state decides.
                               "demo": Site("demo", origins=(shop_url,))})
    server = LiveServer(settings, port).start()
    try:
        yield site, server
    finally:
        server.stop()
        site.close()


@pytest.fixture
def page(browser: Any, shop: tuple[FixtureSite, LiveServer]) -> Iterator[Any]:
    context = browser.new_context(viewport=DESKTOP)
    local = {urlsplit(shop[0].url).netloc, urlsplit(shop[1].url).netloc}
    outside: list[str] = []

    def only_local(route: Any) -> None:
        if urlsplit(route.request.url).netloc in local:
            route.continue_()
        else:
            outside.append(route.request.url)
            route.abort()

    context.route("**/*", only_local)
    try:
        yield context.new_page()
    finally:
        context.close()
    assert outside == [], f"the page reached outside: {outside}"


def tcf_signals(log: SocketLog) -> list[dict[str, Any]]:
    return [message for message in log.of_type("consent") if message.get("source") == "tcf"]


def nothing_kept(page: Any, server: LiveServer, site: str, visitor: str,
                 refusal: bool = False) -> None:
    """Neither the device nor the store holds anything of popin's about the visitor; with
    `refusal`, the store holds the refusal alone (on an "implied" site, so that the
    site's backend never acts for the visitor)."""
    page.wait_for_timeout(1300)  # past a write-behind flush (1 s)
    assert page.evaluate(POPIN_KEYS) == [], "popin kept something on the device"
    expected = Profile(visitor, withheld=["storage", "personalisation", "audiences"])
    assert profile_of(server.settings, visitor, site) == (expected if refusal else None), \
        "a profile was stored"
    assert audience_members(server.settings, site, AUDIENCE) == []


def test_tcf_all_purposes_granted_keeps_and_tags_the_visitor(
        shop: tuple[FixtureSite, LiveServer], page: Any, screenshots: Path) -> None:
    site, server = shop
    log = SocketLog(page)
    page.goto(f"{site.url}/tcf.html")
    # popin.js saw __tcfapi and fetched its glue, from popin's own server.
    page.locator(POPIN_CARD, has_text="Help before any consent").wait_for(timeout=10000)
    assert page.evaluate("[...document.scripts].some(s => s.src.endsWith('/popin-consent.js'))")
    [hello] = log.of_type("hello")
    assert hello["cmp"] is True and hello["consent"] == "unknown"
    # The banner is up ('cmpuishown'): the visitor has not answered, so popin tells the
    # server nothing and keeps waiting.
    page.click("#subscribe")
    nothing_kept(page, server, "tcf", hello["visitor"])
    page.screenshot(path=screenshots / "consent-tcf-banner.png")

    page.click("#accept-all")
    # A real TC string, encoded by the IAB's library; decoded back, it says purposes 1-11.
    [string] = page.evaluate("fixtureCmp.strings")
    assert string.startswith("C") and page.evaluate(f"fixtureCmp.decode('{string}')") == \
        ALL_PURPOSES
    assert eventually(page, lambda: len(tcf_signals(log)) == 1)
    assert tcf_signals(log)[0]["purposes"] == ALL_PURPOSES and tcf_signals(log)[0]["action"]
    visitor = eventually(page, lambda: page.evaluate("localStorage.getItem('popin_v')"))
    assert visitor == hello["visitor"]
    page.click("#subscribe")
    assert eventually(page, lambda: audience_members(server.settings, "tcf", AUDIENCE)
                      == [visitor])
    # The profile is written a moment later (write-behind), with the membership.
    profile = eventually(page, lambda: (p := profile_of(server.settings, visitor, "tcf"))
                         and AUDIENCE in p.audiences and p)
    assert profile and profile.withheld == []
    # The next page: the CMP answers from its cookie, popin remembers the same visitor.
    page.reload()
    assert eventually(page, lambda: len(log.of_type("hello")) == 2)
    assert log.of_type("hello")[1]["visitor"] == visitor
    assert eventually(page, lambda: tcf_signals(log)[-1]["purposes"] == ALL_PURPOSES)
    assert {"popin_s", "popin_v"} <= set(page.evaluate(POPIN_KEYS))


def test_tcf_purpose_1_refused_keeps_nothing_whatever_else_is_granted(
        shop: tuple[FixtureSite, LiveServer], page: Any) -> None:
    site, server = shop
    log = SocketLog(page)
    page.goto(f"{site.url}/tcf.html")
    page.locator(POPIN_CARD, has_text="Help before any consent").wait_for(timeout=10000)
    [hello] = log.of_type("hello")
    page.click("#refuse-storage")
    [string] = page.evaluate("fixtureCmp.strings")
    assert page.evaluate(f"fixtureCmp.decode('{string}')") == ALL_PURPOSES[1:]
    assert eventually(page, lambda: len(tcf_signals(log)) == 1)
    page.click("#subscribe")
    nothing_kept(page, server, "tcf", hello["visitor"])
    # Nor on the next page, where the CMP answers from its cookie at once.
    page.reload()
    assert eventually(page, lambda: len(tcf_signals(log)) == 2)
    assert tcf_signals(log)[1]["purposes"] == ALL_PURPOSES[1:]
    page.click("#subscribe")
    nothing_kept(page, server, "tcf", log.of_type("hello")[1]["visitor"])


def test_tcf_consent_withdrawn_after_the_fact(
        shop: tuple[FixtureSite, LiveServer], page: Any, screenshots: Path) -> None:
    site, server = shop
    log = SocketLog(page)
    page.goto(f"{site.url}/tcf.html")
    page.locator(POPIN_CARD, has_text="Help before any consent").wait_for(timeout=10000)
    page.click("#accept-all")
    visitor = eventually(page, lambda: page.evaluate("localStorage.getItem('popin_v')"))
    page.click("#subscribe")
    assert eventually(page, lambda: audience_members(server.settings, "tcf", AUDIENCE)
                      == [visitor])

    # The visitor reopens the CMP and withdraws: at once, out of the audience, and the
    # device forgets popin's ids (the CMP keeps its own record of the choice).
    page.click("#withdraw")
    assert page.evaluate("fixtureCmp.decode(fixtureCmp.strings[1])") == []
    assert eventually(page, lambda: audience_members(server.settings, "tcf", AUDIENCE) == [])
    assert eventually(page, lambda: page.evaluate(POPIN_KEYS) == [])
    assert "euconsent-v2=" in page.evaluate("document.cookie")
    page.screenshot(path=screenshots / "consent-tcf-withdrawn.png")
    # The withdrawal is what the store keeps: the profile's audiences stay empty, and the
    # backend may not tag the visitor while they are away.
    profile = eventually(page, lambda: (p := profile_of(server.settings, visitor, "tcf"))
                         and p.withheld and p)
    assert profile.audiences == {}
    assert profile.withheld == ["storage", "personalisation", "audiences"]
    page.click("#subscribe")
    page.wait_for_timeout(1300)
    assert audience_members(server.settings, "tcf", AUDIENCE) == []
    assert tcf_signals(log)[-1]["purposes"] == []


def _export(server: LiveServer, token: str, **query: str) -> httpx2.Response:
    return httpx2.get(f"{server.url}/api/v1/audiences/{AUDIENCE}/export",
                      params={"format": "ids", **query},
                      headers={"Authorization": f"Bearer {token}"})


def test_consent_mode_storage_then_ads_then_ad_data_refused(
        shop: tuple[FixtureSite, LiveServer], page: Any) -> None:
    site, server = shop
    token = make_key(server.settings, "export")
    log = SocketLog(page)
    page.goto(f"{site.url}/consent-mode.html")
    [hello] = log.of_type("hello")
    assert hello["cmp"] is True
    gcm = eventually(page, lambda: [m for m in log.of_type("consent") if m.get("source") == "gcm"])
    assert gcm[0]["states"] == {"ad_storage": "denied", "ad_user_data": "denied",
                                "ad_personalization": "denied", "analytics_storage": "denied"}
    # Defaults denied: on an "implied" site too, nothing is kept but the refusal.
    page.click("#subscribe")
    nothing_kept(page, server, "demo", hello["visitor"], refusal=True)

    # Statistics only: popin may keep the visitor, but no ad platform gets them.
    page.click("#analytics")
    visitor = eventually(page, lambda: page.evaluate("localStorage.getItem('popin_v')"))
    page.click("#subscribe")
    profile = eventually(page, lambda: (p := profile_of(server.settings, visitor, "demo"))
                         and p.visits and p)
    assert profile.withheld == ["audiences"]
    page.wait_for_timeout(1300)
    assert audience_members(server.settings, "demo", AUDIENCE) == []

    page.click("#accept-all")
    page.wait_for_timeout(300)
    page.click("#subscribe")
    assert eventually(page, lambda: audience_members(server.settings, "demo", AUDIENCE)
                      == [visitor])
    joined = _export(server, token)
    assert joined.status_code == 200 and joined.text.split() == [visitor]

    # ad_user_data withdrawn: the visitor leaves, and the next exports say so.
    page.click("#no-ad-data")
    assert eventually(page, lambda: audience_members(server.settings, "demo", AUDIENCE) == [])
    assert _export(server, token).text.split() == []
    left = _export(server, token, since=joined.headers["Popin-Cursor"], change="left")
    assert left.text.split() == [visitor]
    assert eventually(page, lambda: profile_of(server.settings, visitor, "demo").withheld
                      == ["audiences"])
    # Storage is still granted: the device keeps the id.
    assert page.evaluate("localStorage.getItem('popin_v')") == visitor


def test_the_page_own_choice_wins_over_the_cmp(
        shop: tuple[FixtureSite, LiveServer], page: Any) -> None:
    site, server = shop
    log = SocketLog(page)
    page.goto(f"{site.url}/tcf.html")
    page.locator(POPIN_CARD, has_text="Help before any consent").wait_for(timeout=10000)
    [hello] = log.of_type("hello")
    page.evaluate("popin.consent(false)")
    page.click("#accept-all")
    assert eventually(page, lambda: len(tcf_signals(log)) == 1)
    page.click("#subscribe")
    page.wait_for_timeout(1300)
    assert page.evaluate(POPIN_KEYS) == ["popin_c"]
    assert profile_of(server.settings, hello["visitor"], "tcf") is None
    assert audience_members(server.settings, "tcf", AUDIENCE) == []


def test_an_empty_data_layer_does_not_answer_for_a_late_tcf_cmp(
        shop: tuple[FixtureSite, LiveServer], page: Any) -> None:
    """On an "implied" site, a dataLayer without any Consent Mode command says nothing:
    popin waits for the page's TCF CMP, however late it answers, and keeps nothing
    meanwhile; the CMP's refusal of purpose 1 then leaves only the refusal in the store."""
    site, server = shop
    log = SocketLog(page)
    page.goto(f"{site.url}/tcf-late.html")
    [hello] = eventually(page, lambda: log.of_type("hello"))
    assert hello["cmp"] is True
    page.click("#add")
    page.click("#subscribe")
    page.wait_for_timeout(1300)  # the glue is loaded and past a write-behind flush (1 s)
    assert page.evaluate("[...document.scripts].some(s => s.src.endsWith('/popin-consent.js'))")
    assert log.of_type("consent") == []
    assert page.evaluate(POPIN_KEYS) == []
    assert profile_of(server.settings, hello["visitor"], "demo") is None
    assert audience_members(server.settings, "demo", AUDIENCE) == []

    page.click("#refuse")
    assert eventually(page, lambda: len(tcf_signals(log)) == 1)
    profile = eventually(page, lambda: profile_of(server.settings, hello["visitor"], "demo"))
    # Purposes 2-11 granted: the other levels are, but without storage nothing is kept.
    assert profile.withheld == ["storage"]
    assert profile.cart == {} and profile.visits == 0
    assert [m for m in log.of_type("consent") if m.get("source") == "gcm"] == []
    page.wait_for_timeout(300)
    assert page.evaluate(POPIN_KEYS) == []
    assert audience_members(server.settings, "demo", AUDIENCE) == []


def test_what_the_visitor_did_before_a_late_cmp_granted_counts_once_it_does(
        shop: tuple[FixtureSite, LiveServer], page: Any) -> None:
    """The landing page's tag, the newsletter sign-up and a pop-in with a tag happened
    while the CMP had not answered: the pop-in shows (it needs no consent), nothing is kept
    then; the CMP's grant seconds later tags for all three (the landing pageview does not
    come again, the pop-in is not shown again)."""
    site, server = shop
    log = SocketLog(page)
    page.goto(f"{site.url}/tcf-late.html")
    [hello] = eventually(page, lambda: log.of_type("hello"))
    page.click("#subscribe")
    page.click("#offer")
    page.locator(POPIN_CARD, has_text="An offer before any consent").wait_for(timeout=10000)
    page.wait_for_timeout(1300)  # past a write-behind flush (1 s)
    assert profile_of(server.settings, hello["visitor"], "demo") is None
    for audience in ("late-cmp-landers", AUDIENCE, "offer-seen"):
        assert audience_members(server.settings, "demo", audience) == []

    page.click("#accept")
    visitor = hello["visitor"]
    assert eventually(page, lambda: audience_members(server.settings, "demo",
                                                     "late-cmp-landers") == [visitor])
    assert audience_members(server.settings, "demo", AUDIENCE) == [visitor]
    assert audience_members(server.settings, "demo", "offer-seen") == [visitor]
    assert page.locator(POPIN_CARD).count() == 1
    profile = eventually(page, lambda: (p := profile_of(server.settings, visitor, "demo"))
                         and "late-cmp-landers" in p.audiences and p)
    assert profile and AUDIENCE in profile.audiences
    assert eventually(page, lambda: page.evaluate("localStorage.getItem('popin_v')")) == visitor


def test_a_preview_sends_no_consent_signal(shop: tuple[FixtureSite, LiveServer], page: Any) -> None:
    """The owner's preview link shows its pop-in and sends nothing else: not the consent
    tools' word either (the glue stays out of the page)."""
    site, _server = shop
    log = SocketLog(page)
    page.goto(f"{site.url}/consent-mode.html#popin-preview=not-a-real-token")
    page.wait_for_function("performance.getEntriesByType('resource')"
                           ".some(entry => entry.name.endsWith('/popin-consent.js'))")
    page.wait_for_timeout(500)
    # The glue did not hook the dataLayer, and no consent signal left the page.
    assert page.evaluate("dataLayer.push === Array.prototype.push")
    assert [message["type"] for message in log.sent] == ["hello", "preview"]
    page.click("#accept-all")
    page.wait_for_timeout(300)
    assert log.of_type("consent") == []


def test_a_refusal_in_the_cmp_after_the_page_own_grant_wins(
        shop: tuple[FixtureSite, LiveServer], page: Any) -> None:
    """popin.consent(true) wins while the CMP's banner is up (nothing chosen, nothing said
    to popin); the visitor then refusing everything in the CMP has the latest word: out of
    the audience, the device forgets popin's ids, and the next page does not keep them
    again on the strength of the page's earlier grant."""
    site, server = shop
    log = SocketLog(page)
    page.goto(f"{site.url}/tcf.html")
    page.locator(POPIN_CARD, has_text="Help before any consent").wait_for(timeout=10000)
    page.evaluate("popin.consent(true)")
    visitor = eventually(page, lambda: page.evaluate("localStorage.getItem('popin_v')"))
    page.click("#subscribe")
    assert eventually(page, lambda: audience_members(server.settings, "tcf", AUDIENCE)
                      == [visitor])

    assert tcf_signals(log) == []
    page.click("#withdraw")
    assert eventually(page, lambda: len(tcf_signals(log)) == 1)
    assert tcf_signals(log)[0]["purposes"] == [] and tcf_signals(log)[0]["action"] > 0
    assert eventually(page, lambda: audience_members(server.settings, "tcf", AUDIENCE) == [])
    assert eventually(page, lambda: page.evaluate(POPIN_KEYS) == ["popin_c"])
    page.click("#subscribe")
    assert eventually(page, lambda: profile_of(server.settings, visitor, "tcf") == Profile(
        visitor, withheld=["storage", "personalisation", "audiences"]))
    assert audience_members(server.settings, "tcf", AUDIENCE) == []

    # The next page: the widget still holds the page's grant, the CMP its refusal.
    page.reload()
    assert eventually(page, lambda: len(log.of_type("hello")) == 2)
    assert log.of_type("hello")[1]["consent"] == "granted"
    assert eventually(page, lambda: len(tcf_signals(log)) == 2)
    page.click("#subscribe")
    page.wait_for_timeout(1300)
    assert page.evaluate(POPIN_KEYS) == ["popin_c"]
    assert audience_members(server.settings, "tcf", AUDIENCE) == []

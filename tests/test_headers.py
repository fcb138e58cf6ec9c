"""Security headers: every GET route of the app and every demo page is walked, signed in,
and each answer is checked against what its part of the site needs. A new route without
a sample for its path parameters fails here until it has one."""

from __future__ import annotations

import io
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from starlette.routing import Mount, Route
from starlette.testclient import TestClient

from conftest import ROOT, run, settings_with_rules
from popin.cli import main
from popin.config import Settings
from popin.features.appointments.links import Links
from popin.stores.backends import open_store
from popin.stores.bookings import Booking
from popin.web.app import create_app

PASSWORD = "correct horse battery"
SECRET = "a secret for the headers test"
RULES = """
rules:
  - id: sale
    trigger: {event: checkout_started}
    popin: {title: "-20% today", body: "<p>On the kit.</p>"}
"""
BOOKING = Booking("booking-1", "demo", "advisers", 4_102_444_800.0, 4_102_446_600.0, "phone",
                  "Léa", "+33612345678", "visitor-0001", 1.0, "key-1")
PRIVATE_REFERRERS = {"no-referrer", "same-origin", "strict-origin-when-cross-origin"}


@pytest.fixture
def settings_(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    settings = settings_with_rules(tmp_path, RULES, secret=SECRET)
    monkeypatch.setattr("sys.stdin", io.StringIO(PASSWORD + "\n"))
    assert main(["admin", "--store", settings.store, "set-password", "--password-stdin"]) == 0

    async def book() -> None:
        store = open_store(settings.store)
        await store.open()
        await store.book(BOOKING, 1)
        await store.close()

    run(book())
    return settings


@pytest.fixture
def client(settings_: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings_)) as test_client:
        page = test_client.get("/admin/login").text
        csrf = re.search(r'name="csrf" value="([^"]+)"', page)
        assert csrf
        signed_in = test_client.post("/admin/login", follow_redirects=False,
                                     data={"csrf": csrf[1], "password": PASSWORD})
        assert signed_in.status_code == 303
        yield test_client


def every_page(client: TestClient) -> list[tuple[str, str]]:
    """(method, path) of every route, the GETs first: a POST may cancel the booking."""
    samples = {"rule": "sale", "name": "nobody-yet", "visitor": "visitor-0001",
               "user_id": "user-42",
               "token": Links(SECRET).manage(BOOKING).removeprefix("/bookings/")}
    pages = []
    for route in client.app.app.routes:  # type: ignore[attr-defined]
        if isinstance(route, Route):
            path = re.sub(r"{(\w+)}", lambda m: samples[m[1]], route.path)
            pages += [(method, path) for method in sorted(route.methods or ())
                      if method in ("GET", "POST")]
        elif isinstance(route, Mount) and route.path == "/demo":
            pages += [("GET", "/demo/"), *(("GET", f"/demo/{page.name}") for page in
                                           sorted((ROOT / "static" / "demo").glob("*.html")))]
        else:
            raise AssertionError(f"walk {route!r} too")
    return sorted(pages, key=lambda page: page[0] != "GET")


def directives(policy: str) -> dict[str, list[str]]:
    return {name: values for name, *values in (part.split() for part in policy.split(";"))}


def allows_what_it_holds(html: str, policy: dict[str, list[str]]) -> None:
    """Inline scripts and styles in the page need 'unsafe-inline' (the page holds no hash
    or nonce), and whatever is forbidden must really be absent."""
    scripts = policy.get("script-src", policy["default-src"])
    styles = policy.get("style-src", policy["default-src"])
    if re.search(r"<script(?![^>]*\ssrc=)[^>]*>|\son[a-z]+=", html):
        assert "'unsafe-inline'" in scripts
    if re.search(r"<script[^>]*\ssrc=", html):
        assert "'self'" in scripts
    if "<style" in html or re.search(r"\sstyle=", html):
        assert "'unsafe-inline'" in styles


def test_every_page_carries_the_headers_of_its_part(client: TestClient) -> None:
    walked: set[str] = set()
    for method, path in every_page(client):
        response = client.request(method, path, follow_redirects=False)
        headers = response.headers
        assert headers["x-content-type-options"] == "nosniff", path
        assert "cross-origin-resource-policy" not in headers, path
        html = headers.get("content-type", "").startswith("text/html")
        if not html:
            continue
        walked.add(f"{method} /{path.split('/')[1]}")
        policy = directives(headers["content-security-policy"])
        assert policy["frame-ancestors"], path
        allows_what_it_holds(response.text, policy)
        if path.startswith(("/admin", "/bookings")):
            assert response.status_code < 500, path
            assert headers["cache-control"] == "no-store", path
            assert policy["frame-ancestors"] == ["'none'"], path
            assert headers["referrer-policy"] == "no-referrer", path
            assert "'unsafe-inline'" not in policy.get("script-src", policy["default-src"])
        else:
            assert headers["referrer-policy"] in PRIVATE_REFERRERS, path
    assert walked == {"GET /admin", "POST /admin", "GET /bookings", "POST /bookings",
                      "GET /demo"}


def test_the_booking_page_walked_is_the_real_one(client: TestClient) -> None:
    page = client.get(Links(SECRET).manage(BOOKING))
    assert page.status_code == 200 and "Cancel this appointment" in page.text
    assert "script-src" not in page.headers["content-security-policy"]
    assert page.headers["content-security-policy"].startswith("default-src 'none'")


def test_the_admin_policy_allows_no_inline_script_or_style(client: TestClient) -> None:
    page = client.get("/admin/")
    policy = directives(page.headers["content-security-policy"])
    assert policy["script-src"] == ["'self'"] and policy["style-src"] == ["'self'"]
    assert policy["default-src"] == ["'self'"]
    assert not re.search(r"<script(?![^>]*\ssrc=)[^>]*>|<style|\son[a-z]+=|\sstyle=",
                         page.text)
    for private in ("/admin/live", "/admin/audiences/nobody-yet/export?format=ids"):
        assert client.get(private).headers["cache-control"] == "no-store", private


def test_the_widget_script_stays_loadable_from_other_sites(client: TestClient) -> None:
    script = client.get("/popin.js", headers={"origin": "https://shop.example"})
    assert script.status_code == 200
    assert script.headers["content-type"].startswith("text/javascript")
    assert script.headers["cache-control"] == "public, max-age=300"
    assert script.headers["x-content-type-options"] == "nosniff"
    for header in ("cross-origin-resource-policy", "cross-origin-embedder-policy",
                   "content-security-policy"):
        assert header not in script.headers


def test_errors_and_the_api_get_the_baseline_too(client: TestClient) -> None:
    for path in ("/nothing-here", "/api/v1/webhooks", "/openapi.json"):
        headers = client.get(path).headers
        assert headers["x-content-type-options"] == "nosniff", path
        assert headers["referrer-policy"] == "strict-origin-when-cross-origin", path


def test_the_socket_still_opens_through_the_middleware(client: TestClient) -> None:
    with client.websocket_connect("/ws?site=demo",
                                  headers={"origin": "http://testserver"}) as ws:
        ws.send_text('{"type": "hello", "visitor": "visitor-0001", "session": "session-0001",'
                     ' "url": "http://testserver/demo/"}')
        assert ws.receive_json()["type"] == "config"

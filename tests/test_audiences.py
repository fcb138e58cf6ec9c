"""Retargeting audiences end to end: rules tag visitors over the socket, consent, GPC and
bots keep people out, and exports come out in each platform's published format."""

from __future__ import annotations

import csv
import hashlib
import io
import time
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
from starlette.testclient import TestClient

from conftest import make_key, run, settings_with_rules
from popin.cli import main
from popin.config import Settings
from popin.core.site import Site
from popin.core.visitor.identity import google_email, normal_email, normal_phone
from popin.core.visitor.profile import Profile
from popin.stores.audiences import DAY, RETENTION_SECONDS, Cursor, Tagging, meta_name
from popin.stores.backends import open_store

RULES = """
rules:
  - id: theme-skis
    trigger: {pageview: "/demo/skis.html"}
    tag: {audience: skiers, days: 90}
  - id: buyers
    trigger: {event: purchase}
    tag: {audience: purchasers, days: 180}
"""
ORIGIN = {"origin": "http://testserver"}
BOT = {**ORIGIN, "user-agent": "Mozilla/5.0 (compatible; Googlebot/2.1; "
       "+http://www.google.com/bot.html)"}


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def settings_for(tmp_path: Path, consent: str = "implied") -> Settings:
    return settings_with_rules(tmp_path, RULES, sites={"demo": Site("demo", consent=consent)})


@pytest.fixture
def settings_(tmp_path: Path) -> Settings:
    return settings_for(tmp_path)


@pytest.fixture
def client(settings_: Settings) -> Iterator[TestClient]:
    from popin.web.app import create_app

    with TestClient(create_app(settings_)) as test_client:
        yield test_client


def visit(client: TestClient, visitor: str, *messages: dict[str, object],
          headers: dict[str, str] | None = None, **hello: object) -> None:
    """One page of a visit: hello, the skis page, then `messages`; returns once the server
    has handled (and stored) them all."""
    with client.websocket_connect("/ws?site=demo", headers=headers or ORIGIN) as ws:
        ws.send_text(orjson.dumps({"type": "hello", "visitor": visitor,
                                   "session": f"s-{visitor}", "url": "http://testserver/",
                                   **hello}).decode())
        assert ws.receive_json()["type"] == "config"
        for message in ({"type": "pageview", "url": "http://testserver/demo/skis.html"},
                        *messages):
            ws.send_text(orjson.dumps(message).decode())
        # Messages are handled in order and this one is answered: once the answer is
        # here, so is everything before it.
        ws.send_text("not json")
        assert ws.receive_json()["code"] == "bad_json"
    # Profiles and counters are written with the next flush; do it now.
    assert client.portal is not None
    client.portal.call(client.app.state.hub.flush)


def export(client: TestClient, token: str, audience: str = "skiers",
           **query: str) -> tuple[str, str]:
    response = client.get(f"/api/v1/audiences/{audience}/export", params=query,
                          headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 200, response.text
    return response.text, response.headers["popin-cursor"]


def csv_rows(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text)))


# -- each platform's published rules ----------------------------------------------------

def test_contacts_are_normalised_as_each_platform_documents() -> None:
    # Google Customer Match: trimmed, lower case, Gmail without the dots before the @;
    # this address's SHA-256 is the one published as the example of a hashed e-mail.
    email = normal_email("  Jane.Doe@Gmail.com ")
    assert email == "jane.doe@gmail.com"
    assert sha(google_email(email)) == (
        "d6117306485ed0e50afab3ac871e98f81699151f30281527d63ff5f233656c69")
    assert google_email("jane.doe@example.com") == "jane.doe@example.com"
    # Phones: E.164 for Google, digits with the country code and no "+" for Meta; the
    # documentation's own examples.
    assert normal_phone("(657) 777-0000", "US") == "+16577770000"
    assert normal_phone("+44 844 412 4653", "FR").lstrip("+") == "448444124653"
    assert normal_phone("1-234-567-8910", "US").lstrip("+") == "12345678910"
    # Meta's names: lower case, no punctuation, accents kept as UTF-8.
    assert meta_name("Émilie") == "émilie" and meta_name("Mary-Jane.") == "maryjane"


def test_exports_in_every_format(client: TestClient, settings_: Settings) -> None:
    visit(client, "visitor-anna-01")
    visit(client, "visitor-bob-002")
    token = make_key(settings_, "events", "export")
    identified = client.post("/api/v1/identify", headers={"Authorization": f"Bearer {token}"},
                             json={"visitor": "visitor-anna-01", "user_id": "anna",
                                   "traits": {"email": " Jane.Doe@Gmail.com",
                                              "phone": "06 12 34 56 78",
                                              "first_name": "Émilie"}})
    assert identified.status_code == 200

    text, _cursor = export(client, token, format="csv")
    rows = csv_rows(text)
    assert list(rows[0]) == ["visitor_id", "user_id", "joined", "expires", "email_sha256",
                             "phone_sha256"]
    anna = next(row for row in rows if row["visitor_id"] == "visitor-anna-01")
    assert anna["user_id"] == "anna" and anna["email_sha256"] == sha("jane.doe@gmail.com")
    assert anna["phone_sha256"] == sha("+33612345678")
    joined = time.strptime(anna["joined"], "%Y-%m-%dT%H:%M:%SZ")
    expires = time.strptime(anna["expires"], "%Y-%m-%dT%H:%M:%SZ")
    assert round((time.mktime(expires) - time.mktime(joined)) / DAY) == 90
    assert sorted(row["visitor_id"] for row in rows) == ["visitor-anna-01", "visitor-bob-002"]

    lines = export(client, token, format="jsonl")[0].splitlines()
    assert {orjson.loads(line)["visitor_id"] for line in lines} == {
        "visitor-anna-01", "visitor-bob-002"}

    meta = export(client, token, format="meta")[0]
    assert meta.splitlines() == [
        "email,phone,fn,extern_id",
        f"{sha('jane.doe@gmail.com')},{sha('33612345678')},{sha('émilie')},anna"], (
        "bob has no identifier Meta can match: left out")

    google = export(client, token, format="google")[0]
    assert google.splitlines() == ["Email,Phone",
                                   f"{sha('janedoe@gmail.com')},{sha('+33612345678')}"]
    for line in meta.splitlines()[1:] + google.splitlines()[1:]:
        assert all(len(value) == 64 and value == value.lower()
                   for value in line.split(",")[:2]), "SHA-256, lower-case hex"

    assert export(client, token, format="ids")[0].split() == ["visitor-anna-01",
                                                              "visitor-bob-002"]


def test_incremental_exports_return_exactly_the_delta(client: TestClient,
                                                      settings_: Settings) -> None:
    token = make_key(settings_, "export", "profiles")
    visit(client, "visitor-early-1")
    visit(client, "visitor-early-2")
    full, cursor = export(client, token)
    assert len(csv_rows(full)) == 2
    # Nothing happened: an empty delta, and the same cursor back.
    empty, same = export(client, token, since=cursor)
    assert csv_rows(empty) == [] and same == cursor

    visit(client, "visitor-later-1")
    gone = client.delete("/api/v1/visitors/visitor-early-1",
                         headers={"Authorization": f"Bearer {token}"})
    assert gone.status_code == 204
    visit(client, "visitor-early-2")  # tagged again: a refresh, not a change
    delta, next_cursor = export(client, token, since=cursor)
    changes = {(row["change"], row["visitor_id"][:7]) for row in csv_rows(delta)}
    assert changes == {("joined", "visitor"), ("left", "erased-")}
    assert next(row for row in csv_rows(delta)
                if row["change"] == "joined")["visitor_id"] == "visitor-later-1"
    # The platform files split the delta into an upload and a removal over one range.
    ids_joined = export(client, token, format="ids", since=cursor, until=next_cursor,
                        change="joined")[0]
    assert ids_joined.split() == ["visitor-later-1"]
    left = export(client, token, format="jsonl", since=cursor, until=next_cursor,
                  change="left")[0]
    assert [orjson.loads(line)["change"] for line in left.splitlines()] == ["left"]
    assert csv_rows(export(client, token, since=next_cursor)[0]) == []


def test_bad_export_requests_name_the_field(client: TestClient, settings_: Settings) -> None:
    token = make_key(settings_, "export")
    headers = {"Authorization": f"Bearer {token}"}
    # Someone who joined and left long ago: their changes are past retention.
    long_ago = time.time() - RETENTION_SECONDS - 2 * DAY

    async def old_history() -> None:
        store = open_store(settings_.store)
        await store.open()
        await store.audience_tag("demo", [Tagging("visitor-old-one", "skiers", long_ago + DAY,
                                                  {})], long_ago)
        await store.audience_leave("demo", "visitor-old-one", long_ago + 60)
        await store.close()

    run(old_history())
    visit(client, "visitor-anna-01")
    _text, cursor = export(client, token)
    assert Cursor("skiers", 3).encode() == cursor, "the same position, the same cursor"
    for query, status, field in [({"format": "xls"}, 400, "format"),
                                 ({"since": "garbage"}, 400, "since"),
                                 ({"since": Cursor("purchasers", 0).encode()}, 400, "since"),
                                 ({"since": Cursor("skiers", 99).encode()}, 400, "since"),
                                 ({"since": Cursor("skiers", 1).encode()}, 410, "since"),
                                 ({"since": cursor, "format": "meta"}, 400, "change"),
                                 ({"change": "joined"}, 400, "change"),
                                 ({"colour": "red"}, 400, "colour")]:
        response = client.get("/api/v1/audiences/skiers/export", params=query, headers=headers)
        assert response.status_code == status, query
        assert response.json()["error"]["field"] == field
    assert client.get("/api/v1/audiences/nobody/export", headers=headers).status_code == 404
    events_only = make_key(settings_, "events")
    refused = client.get("/api/v1/audiences", headers={"Authorization": f"Bearer {events_only}"})
    assert refused.status_code == 403
    listing = client.get("/api/v1/audiences", headers=headers).json()["audiences"]
    assert listing == [
        {"name": "purchasers", "size": 0, "days": 180, "in_rules": True},
        {"name": "skiers", "size": 1, "days": 90, "in_rules": True}]
    sizes = client.get("/api/v1/audiences/skiers/sizes", headers=headers).json()
    assert [entry["size"] for entry in sizes["sizes"]] == [0, 1]


# -- who is never tagged ----------------------------------------------------------------

def members(settings_: Settings, audience: str = "skiers") -> list[str]:
    async def read() -> list[str]:
        store = open_store(settings_.store)
        await store.open()
        try:
            return [m.visitor for m in await store.audience_members("demo", audience, "", 100)]
        finally:
            await store.close()

    return run(read())


def profile_of(settings_: Settings, visitor: str) -> Profile | None:
    async def read() -> Profile | None:
        store = open_store(settings_.store)
        await store.open()
        try:
            return await store.load_profile("demo", visitor)
        finally:
            await store.close()

    return run(read())


def test_consent_required_keeps_nothing_until_the_visitor_opts_in(tmp_path: Path) -> None:
    from popin.web.app import create_app

    settings_ = settings_for(tmp_path, consent="required")
    with TestClient(create_app(settings_)) as client:
        visit(client, "visitor-undecided")
        assert members(settings_) == [] and profile_of(settings_, "visitor-undecided") is None
        visit(client, "visitor-opts-in", {"type": "consent", "granted": True},
              {"type": "event", "name": "purchase"})
        assert members(settings_, "purchasers") == ["visitor-opts-in"]
        assert profile_of(settings_, "visitor-opts-in") is not None
        # The skis page's tag, met before the opt-in on the same page, joins with it.
        assert members(settings_) == ["visitor-opts-in"]
        # A later page remembers the choice (the widget sends it in its hello).
        visit(client, "visitor-opted-before", consent="granted")
        assert sorted(members(settings_)) == ["visitor-opted-before", "visitor-opts-in"]


def tool_visit(client: TestClient, visitor: str, signal: dict[str, object]) -> None:
    """A page whose consent tool speaks: hello (with cmp), the tool's signal, the skis page."""
    with client.websocket_connect("/ws?site=demo", headers=ORIGIN) as ws:
        ws.send_text(orjson.dumps({"type": "hello", "visitor": visitor, "session": f"s-{visitor}",
                                   "url": "http://testserver/", "cmp": True}).decode())
        assert ws.receive_json()["remember"] is False
        ws.send_text(orjson.dumps(signal).decode())
        assert ws.receive_json()["type"] == "consent"
        ws.send_text(orjson.dumps({"type": "pageview",
                                   "url": "http://testserver/demo/skis.html"}).decode())
        ws.send_text("not json")
        assert ws.receive_json()["code"] == "bad_json"
    assert client.portal is not None
    client.portal.call(client.app.state.hub.flush)


def test_consent_tools_decide_audiences_also_for_backend_events(tmp_path: Path) -> None:
    """Without the advertising purposes (TCF 3, 4) or Consent Mode's ad_user_data and
    ad_personalization, a visitor joins no audience: not from the page, not from a backend
    event while they are away, and so no export lists them."""
    from popin.web.app import create_app

    settings_ = settings_for(tmp_path, consent="required")
    token = make_key(settings_, "events", "export")
    with TestClient(create_app(settings_)) as client:
        tool_visit(client, "visitor-tcf-no-ads", {"type": "consent", "source": "tcf",
                                                  "applies": True, "purposes": [1, 5, 6]})
        tool_visit(client, "visitor-tcf-all", {"type": "consent", "source": "tcf",
                                               "applies": True, "purposes": [1, 3, 4, 5, 6]})
        tool_visit(client, "visitor-gcm-no-pers", {"type": "consent", "source": "gcm", "states": {
            "analytics_storage": "granted", "ad_user_data": "granted",
            "ad_personalization": "denied", "ad_storage": "granted"}})
        tool_visit(client, "visitor-gcm-all", {"type": "consent", "source": "gcm", "states": {
            "analytics_storage": "granted", "ad_user_data": "granted",
            "ad_personalization": "granted"}})
        tool_visit(client, "visitor-no-storage", {"type": "consent", "source": "tcf",
                                                  "applies": True, "purposes": [3, 4, 5, 6]})
        assert members(settings_) == ["visitor-gcm-all", "visitor-tcf-all"]
        assert profile_of(settings_, "visitor-tcf-no-ads").withheld == ["audiences"]
        assert profile_of(settings_, "visitor-gcm-no-pers").withheld == ["audiences"]
        assert profile_of(settings_, "visitor-no-storage") is None
    # Another process, which never saw them: only their stored profiles speak for them.
    with TestClient(create_app(settings_)) as client:
        response = client.post("/api/v1/events", headers={"Authorization": f"Bearer {token}"},
                               json={"events": [{"name": "purchase", "visitor": visitor}
                                                for visitor in ("visitor-tcf-no-ads",
                                                                "visitor-tcf-all",
                                                                "visitor-gcm-no-pers",
                                                                "visitor-gcm-all")]})
        assert response.status_code == 200, response.text
        client.portal.call(client.app.state.hub.flush)  # type: ignore[union-attr]
        assert members(settings_, "purchasers") == ["visitor-gcm-all", "visitor-tcf-all"]
        for audience in ("skiers", "purchasers"):
            text, _cursor = export(client, token, audience, format="ids")
            assert sorted(text.split()) == ["visitor-gcm-all", "visitor-tcf-all"]


def cmp_page(client: TestClient, visitor: str, session: str,
             *messages: dict[str, object]) -> None:
    """One page whose consent tool is still to speak: hello (with cmp), then `messages`."""
    with client.websocket_connect("/ws?site=demo", headers=ORIGIN) as ws:
        ws.send_text(orjson.dumps({"type": "hello", "visitor": visitor, "session": session,
                                   "url": "http://testserver/", "cmp": True}).decode())
        config = ws.receive_json()
        assert config["type"] == "config" and config["remember"] is False, config
        for message in messages:
            ws.send_text(orjson.dumps(message).decode())
        ws.send_text("not json")
        while ws.receive_json().get("code") != "bad_json":
            pass
    assert client.portal is not None
    client.portal.call(client.app.state.hub.flush)


TCF_ALL = {"type": "consent", "source": "tcf", "applies": True, "purposes": list(range(1, 12))}
TCF_NONE = {"type": "consent", "source": "tcf", "applies": True, "purposes": []}
REFUSAL = ["storage", "personalisation", "audiences"]


def test_a_withdrawal_outside_any_audience_still_keeps_backend_events_away(
        tmp_path: Path) -> None:
    """A visitor who withdraws everything in the CMP while in no audience yet: the store
    keeps the refusal, so a backend event after the session ended (here, a restart)
    neither tags them, nor lists them in an export, nor queues a pop-in for them."""
    from popin.web.app import create_app

    settings_ = settings_with_rules(tmp_path, RULES + """
  - id: thanks
    trigger: {event: purchase}
    popin: {title: "Thank you", body: "<p>See you soon.</p>"}
""", sites={"demo": Site("demo")})
    token = make_key(settings_, "events", "export")
    with TestClient(create_app(settings_)) as client:
        cmp_page(client, "visitor-withdraws", "session-1", TCF_ALL,
                 {"type": "pageview", "url": "http://testserver/"})
        assert profile_of(settings_, "visitor-withdraws").visits == 1  # type: ignore[union-attr]
        cmp_page(client, "visitor-withdraws", "session-1", TCF_ALL, TCF_NONE)
        assert profile_of(settings_, "visitor-withdraws") == Profile(
            "visitor-withdraws", withheld=REFUSAL)
    with TestClient(create_app(settings_)) as client:
        response = client.post("/api/v1/events", headers={"Authorization": f"Bearer {token}"},
                               json={"events": [{"name": "purchase",
                                                 "visitor": "visitor-withdraws"}]})
        assert response.status_code == 200, response.text
        [result] = response.json()["results"]
        assert result["status"] == "applied" and result["queued"] == 0
        client.portal.call(client.app.state.hub.flush)  # type: ignore[union-attr]
        assert members(settings_, "purchasers") == []
        text, _cursor = export(client, token, "purchasers", format="ids")
        assert text.split() == []
        assert profile_of(settings_, "visitor-withdraws") == Profile(
            "visitor-withdraws", withheld=REFUSAL)


def test_a_refusal_writes_nothing_learnt_before_the_cmp_answered(tmp_path: Path) -> None:
    """A member comes back; before the CMP answers, the page adds to the cart; the CMP then
    refuses purpose 1: they leave every audience and the store keeps the refusal alone,
    not the cart or the visit learnt without consent."""
    from popin.web.app import create_app

    settings_ = settings_for(tmp_path)
    with TestClient(create_app(settings_)) as client:
        cmp_page(client, "visitor-member", "session-1", TCF_ALL,
                 {"type": "pageview", "url": "http://testserver/demo/skis.html"})
        assert members(settings_) == ["visitor-member"]
        cmp_page(client, "visitor-member", "session-2",
                 {"type": "event", "name": "add_to_cart",
                  "props": {"sku": "boots", "name": "Boots", "price": 120}},
                 {"type": "consent", "source": "tcf", "applies": True,
                  "purposes": list(range(2, 12))})
        assert members(settings_) == []
        assert profile_of(settings_, "visitor-member") == Profile(
            "visitor-member", withheld=["storage"])


def test_gpc_keeps_backend_events_from_tagging_the_visitor(tmp_path: Path) -> None:
    """A browser sending Global Privacy Control: the kept profile says so, and a backend
    event after the session ended (a restart) does not put them in an audience."""
    from popin.web.app import create_app

    settings_ = settings_for(tmp_path)
    token = make_key(settings_, "events")
    with TestClient(create_app(settings_)) as client:
        visit(client, "visitor-with-gpc", gpc=True)
        assert profile_of(settings_, "visitor-with-gpc").withheld == [  # type: ignore[union-attr]
            "audiences"]
    with TestClient(create_app(settings_)) as client:
        response = client.post("/api/v1/events", headers={"Authorization": f"Bearer {token}"},
                               json={"events": [{"name": "purchase",
                                                 "visitor": "visitor-with-gpc"}]})
        assert response.status_code == 200, response.text
        client.portal.call(client.app.state.hub.flush)  # type: ignore[union-attr]
        assert members(settings_, "purchasers") == []


def test_gpc_bots_and_withdrawal_keep_visitors_out(client: TestClient,
                                                   settings_: Settings) -> None:
    visit(client, "visitor-with-gpc", gpc=True)
    visit(client, "visitor-is-a-bot", headers=BOT)
    visit(client, "visitor-changes-mind")
    visit(client, "visitor-turns-gpc-on")
    assert members(settings_) == ["visitor-changes-mind", "visitor-turns-gpc-on"]
    # Refusing consent later, or a browser that now sends GPC: out of every audience.
    visit(client, "visitor-changes-mind", {"type": "consent", "granted": False})
    visit(client, "visitor-turns-gpc-on", gpc=True)
    assert members(settings_) == []
    withdrawn = profile_of(settings_, "visitor-changes-mind")
    assert withdrawn is not None and withdrawn.audiences == {}
    # The widget remembers the refusal: nothing is tagged on later pages either.
    visit(client, "visitor-changes-mind", consent="denied")
    assert members(settings_) == []


def test_cli_lists_and_exports(client: TestClient, settings_: Settings, tmp_path: Path,
                               capsys: pytest.CaptureFixture[str]) -> None:
    visit(client, "visitor-anna-01")
    common = ["audiences", "--store", settings_.store, "--rules", str(settings_.rules)]
    assert main([*common, "list"]) == 0
    listed = capsys.readouterr().out.splitlines()
    assert listed[1].split()[:3] == ["skiers", "1", "member"]
    out = tmp_path / "skiers.csv"
    assert main([*common, "export", "skiers", "--format", "ids", "-o", str(out)]) == 0
    assert out.read_text().split() == ["visitor-anna-01"]
    cursor = capsys.readouterr().err.split("next cursor: ")[1].strip()
    assert main([*common, "export", "skiers", "--since", cursor]) == 0
    assert capsys.readouterr().out == ("change,visitor_id,user_id,joined,expires,"
                                       "email_sha256,phone_sha256\n")
    assert main([*common, "export", "skiers", "--since", "nonsense"]) == 2
    assert "since:" in capsys.readouterr().err


def test_a_second_device_brings_its_audiences_to_the_kept_visitor(
        client: TestClient, settings_: Settings) -> None:
    token = make_key(settings_, "events", "export")
    headers = {"Authorization": f"Bearer {token}"}
    visit(client, "visitor-laptop-1")
    client.post("/api/v1/identify", headers=headers, json={
        "visitor": "visitor-laptop-1", "user_id": "user-7", "traits": {"email": "a@b.example"}})
    visit(client, "visitor-phone-01", {"type": "event", "name": "purchase"})
    _text, cursor = export(client, token, "purchasers")
    merged = client.post("/api/v1/identify", headers=headers, json={
        "visitor": "visitor-phone-01", "user_id": "user-7", "traits": {}})
    assert merged.json()["visitor"] == "visitor-laptop-1"
    assert members(settings_, "purchasers") == ["visitor-laptop-1"]
    assert sorted(members(settings_)) == ["visitor-laptop-1"], "the phone left skiers too"
    delta = csv_rows(export(client, token, "purchasers", since=cursor)[0])
    assert sorted((row["change"], row["visitor_id"][:7]) for row in delta) == [
        ("joined", "visitor"), ("left", "erased-")]
    joined = next(row for row in delta if row["change"] == "joined")
    assert joined["email_sha256"] == sha("a@b.example"), "with the kept profile's contacts"

"""The campaign editor over HTTP: the file stays the truth (a person's comments and layout
survive an edit), saves are checked as `popin rules check` checks, a stale form is
refused, history restores, and what must be refused is refused with the field named."""

from __future__ import annotations

import html
import io
import re
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx2
import pytest
from starlette.testclient import TestClient

from conftest import ROOT, free_port, serve
from popin.cli import main
from popin.config import Settings, WebhookSettings
from popin.core.site import Site
from popin.live.reload import reload_rules
from popin.stores.pauses import PAUSED, Pause, save_pauses
from popin.web.admin import drafts
from popin.web.admin.changes import apply
from popin.web.admin.forms import values
from popin.web.admin.sentence import sentence
from popin.web.app import create_app

PASSWORD = "an editor's password"
COMMENTED = """\
# Written by hand: these comments must survive the dashboard.
campaign: Waxing help   # the campaign's name
rules:
  # The first rule: a keyword dwell.
  - id: waxing-help
    category: behavioural
    trigger: {dwell: {keyword: waxing, seconds: 5}}   # five seconds is enough
    popin:
      title: "Waxing made simple"
      body: |
        <p>Our kit holds the two waxes.</p>
    # At most once a visit.
    cap: {per_session: 1}

  - id: sizing-help
    trigger: {dwell: {keyword: sizing, seconds: 12, selector: "#sizing"}}
    popin: {title: "Not sure about the length?", body: "<p>Ask us.</p>"}
"""
BLOG = """\
campaign: Blog
rules:
  - id: blog-hello
    trigger: {pageview: /}
    popin: {title: Hello, body: <p>Welcome.</p>}
"""


@pytest.fixture
def folders(tmp_path: Path) -> dict[str, Path]:
    found = {"demo": tmp_path / "demo", "blog": tmp_path / "blog"}
    for folder in found.values():
        folder.mkdir()
    (found["demo"] / "waxing.yaml").write_text(COMMENTED)
    (found["blog"] / "blog.yaml").write_text(BLOG)
    return found


@pytest.fixture
def client(tmp_path: Path, folders: dict[str, Path],
           monkeypatch: pytest.MonkeyPatch) -> Iterator[TestClient]:
    settings = settings_of(tmp_path, folders)
    monkeypatch.setattr("sys.stdin", io.StringIO(PASSWORD + "\n"))
    assert main(["admin", "--store", settings.store, "set-password", "--password-stdin"]) == 0
    with TestClient(create_app(settings)) as test_client:
        log_in(test_client)
        yield test_client


def settings_of(tmp_path: Path, folders: dict[str, Path]) -> Settings:
    return Settings(store=f"sqlite:///{tmp_path / 'popin.db'}", rules=folders["demo"],
                    reload=False, campaigns=dict(folders), sites={
                        "demo": Site("demo", "Demo shop"),
                        "blog": Site("blog", "Blog", origins=("https://blog.example",))})


def log_in(test_client: TestClient) -> None:
    page = test_client.get("/admin/login")
    token = re.search(r'name="csrf" value="([^"]+)"', page.text)
    assert token
    answer = test_client.post("/admin/login", data={
        "csrf": token[1], "password": PASSWORD, "next": "/admin/"}, follow_redirects=False)
    assert answer.status_code == 303


def form_of(page: str) -> dict[str, str]:
    """The fields of the editor's form as a browser would send them."""
    start = page.index('class="campaign-form"')
    form = page[start:page.index("</form>", start)]
    found = {name: html.unescape(value) for name, value in re.findall(
        r'<input[^>]*?name="([^"]+)" value="([^"]*)"', form)}
    for name, options in re.findall(r'<select[^>]*name="([^"]+)"[^>]*>(.*?)</select>', form,
                                    re.S):
        chosen = re.search(r'<option(?: value="([^"]*)")? selected>([^<]*)<', options)
        found[name] = ((chosen[1] if chosen[1] is not None else chosen[2]) if chosen else "")
    for name, text in re.findall(r'<textarea[^>]*name="([^"]+)"[^>]*>(.*?)</textarea>', form,
                                 re.S):
        found[name] = html.unescape(text)
    return found


def opened(client: TestClient, rule: str, site: str = "") -> dict[str, str]:
    page = client.get(f"/admin/campaigns/{rule}/edit{site}")
    assert page.status_code == 200, page.text
    return form_of(page.text)


def test_an_edit_through_the_form_keeps_the_comments_and_changes_only_its_value(
        client: TestClient, folders: dict[str, Path]) -> None:
    form = opened(client, "waxing-help")
    assert form["trigger.dwell.keyword"] == "waxing" and form["popin.title"] == \
        "Waxing made simple"
    form["popin.title"] = "Waxing, simply"
    saved = client.post("/admin/campaigns/waxing-help/edit", data=form, follow_redirects=False)
    assert saved.status_code == 303, saved.text
    assert COMMENTED.replace('"Waxing made simple"', '"Waxing, simply"') == (
        folders["demo"] / "waxing.yaml").read_text()
    # Live at once, as after a change to the file.
    page = client.get("/admin/campaigns/waxing-help")
    assert "Waxing, simply" in page.text
    assert "When a visitor reads about waxing for 5 seconds, show “Waxing, simply”" in page.text


def test_every_shipped_campaign_reads_into_the_form_and_back_unchanged() -> None:
    for path in sorted((ROOT / "rules").glob("*.yaml")):
        text = path.read_text()
        yaml = drafts.loader(text)
        document = drafts.load(yaml, text)
        for rule in document.get("rules", []):
            apply(rule, values(rule))
        assert drafts.dump(yaml, document) == text, path


def test_a_campaign_reads_as_a_sentence() -> None:
    text = (ROOT / "rules" / "keyword-interest.yaml").read_text()
    rule = drafts.find(drafts.load(drafts.loader(text), text), "waxing-help")
    assert rule is not None
    rule["when"] = {"device": "mobile"}
    assert sentence(rule) == (
        "When a visitor reads about waxing for 5 seconds, on a phone, show “Waxing made "
        "simple” in the bottom right corner, tag them into interest-ski-care, at most once "
        "per visit and twice per visitor every 30d.")


def test_errors_are_told_beside_their_field_and_nothing_is_written(
        client: TestClient, folders: dict[str, Path]) -> None:
    form = opened(client, "waxing-help")
    form["trigger.dwell.seconds"] = "soon"
    form["popin.placement"] = "middle"
    refused = client.post("/admin/campaigns/waxing-help/edit", data=form)
    assert refused.status_code == 400
    beside = dict(re.findall(r'data-error-for="([^"]+)">([^<]+)<', refused.text))
    assert "expected a number" in html.unescape(beside["trigger.dwell.seconds"])
    assert "unknown placement" in html.unescape(beside["popin.placement"])
    assert (folders["demo"] / "waxing.yaml").read_text() == COMMENTED
    # The preview says the same, as JSON, while the owner types.
    preview = client.post("/admin/editor/preview", data=form).json()
    assert {error["field"] for error in preview["errors"]} >= {"trigger.dwell.seconds"}


def test_a_form_opened_before_another_save_is_refused(
        client: TestClient, folders: dict[str, Path]) -> None:
    first, second = opened(client, "waxing-help"), opened(client, "waxing-help")
    first["popin.title"] = "First owner's title"
    assert client.post("/admin/campaigns/waxing-help/edit", data=first,
                       follow_redirects=False).status_code == 303
    second["popin.title"] = "Second owner's title"
    refused = client.post("/admin/campaigns/waxing-help/edit", data=second)
    assert refused.status_code == 409
    assert "changed since you opened it" in refused.text
    assert "First owner" in (folders["demo"] / "waxing.yaml").read_text()


def _slow_check(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each save's check takes long enough for the other save to read the file meanwhile:
    without turns, both would pass the version comparison."""
    check = drafts.check

    def slow(folder: Path, path: Path, text: str,
             allow_http_hosts: tuple[str, ...] = ()) -> drafts.Checked:
        time.sleep(0.3)
        return check(folder, path, text, allow_http_hosts)

    monkeypatch.setattr(drafts, "check", slow)


def _race(posts: list[Callable[[], int]]) -> list[int]:
    start = threading.Barrier(len(posts))

    def post(send: Callable[[], int]) -> int:
        start.wait()
        return send()

    with ThreadPoolExecutor(len(posts)) as pool:
        return sorted(pool.map(post, posts))


def test_two_saves_at_once_in_one_process_one_wins_the_other_is_refused(
        client: TestClient, folders: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    first, second = opened(client, "waxing-help"), opened(client, "waxing-help")
    first["popin.title"], second["popin.title"] = "Owner A", "Owner B"
    _slow_check(monkeypatch)
    codes = _race([lambda form=form: client.post(  # type: ignore[misc]
        "/admin/campaigns/waxing-help/edit", data=form, follow_redirects=False).status_code
        for form in (first, second)])
    assert codes == [303, 409]
    text = (folders["demo"] / "waxing.yaml").read_text()
    assert ("Owner A" in text) != ("Owner B" in text)


def test_two_servers_on_one_store_take_turns_to_save(
        client: TestClient, folders: dict[str, Path], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A second app, with its own locks and its own connection to the store, stands for a
    second process of `popin serve --workers 2`: only the claim in the store is shared."""
    with TestClient(create_app(settings_of(tmp_path, folders))) as other:
        log_in(other)
        first, second = opened(client, "waxing-help"), opened(other, "waxing-help")
        first["popin.title"], second["popin.title"] = "Process A", "Process B"
        _slow_check(monkeypatch)
        codes = _race([
            lambda: client.post("/admin/campaigns/waxing-help/edit", data=first,
                                follow_redirects=False).status_code,
            lambda: other.post("/admin/campaigns/waxing-help/edit", data=second,
                               follow_redirects=False).status_code])
    assert codes == [303, 409]
    text = (folders["demo"] / "waxing.yaml").read_text()
    assert ("Process A" in text) != ("Process B" in text)


@pytest.mark.redis
def test_two_popin_processes_on_one_redis_take_turns_to_save(
        tmp_path: Path, redis_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two real `popin serve` processes, as `--workers 2` runs them, on one Redis and one
    rules folder: the same form saved to both at once is written once and refused once."""
    (tmp_path / "rules").mkdir()
    (tmp_path / "rules" / "waxing.yaml").write_text(COMMENTED)
    config = tmp_path / "popin.toml"
    config.write_text(f'store = "{redis_url}?prefix=editor-{uuid.uuid4().hex}"\n'
                      'rules = "rules"\n[[sites]]\nkey = "demo"\n')
    monkeypatch.setattr("sys.stdin", io.StringIO(PASSWORD + "\n"))
    assert main(["--config", str(config), "admin", "set-password", "--password-stdin"]) == 0
    ports = [free_port(), free_port()]
    processes = [serve(config, port) for port in ports]
    try:
        clients = [httpx2.Client(base_url=f"http://127.0.0.1:{port}") for port in ports]
        forms = []
        for number, owner in enumerate(clients):
            page = owner.get("/admin/login")
            token = re.search(r'name="csrf" value="([^"]+)"', page.text)
            assert token
            assert owner.post("/admin/login", data={"csrf": token[1], "password": PASSWORD,
                                                    "next": "/admin/"}).status_code == 303
            form = form_of(owner.get("/admin/campaigns/waxing-help/edit").text)
            form["popin.title"] = f"Process {number}"
            forms.append(form)
        codes = _race([lambda owner=owner, form=form: owner.post(  # type: ignore[misc]
            "/admin/campaigns/waxing-help/edit", data=form).status_code
            for owner, form in zip(clients, forms, strict=True)])
        for owner in clients:
            owner.close()
    finally:
        for process in processes:
            process.terminate()
            process.wait(timeout=30)
    assert codes == [303, 409]
    text = (tmp_path / "rules" / "waxing.yaml").read_text()
    assert ("Process 0" in text) != ("Process 1" in text)


def test_history_shows_who_changed_what_and_restores_a_version(
        client: TestClient, folders: dict[str, Path]) -> None:
    form = opened(client, "waxing-help")
    form.update({"popin.title": "Version two", "author": "Camille"})
    assert client.post("/admin/campaigns/waxing-help/edit", data=form,
                       follow_redirects=False).status_code == 303
    page = client.get("/admin/campaigns/waxing-help/history")
    assert "Camille" in page.text and "the file as it was" in page.text
    assert re.search(r'class="del">- +title: &#34;Waxing made simple&#34;', page.text)
    assert re.search(r'class="add">\+ +title: &#34;Version two&#34;', page.text)
    token = re.search(r'name="csrf" value="([^"]+)"', page.text)
    version = re.search(r'name="version" value="([^"]+)"', page.text)
    assert token and version
    restored = client.post("/admin/campaigns/waxing-help/restore", data={
        "csrf": token[1], "version": version[1], "number": "0"}, follow_redirects=False)
    assert restored.status_code == 303, restored.text
    assert (folders["demo"] / "waxing.yaml").read_text() == COMMENTED
    assert "restored the version 1" in client.get("/admin/campaigns/waxing-help/history").text


def test_a_new_campaign_gets_its_own_file_and_is_live(
        client: TestClient, folders: dict[str, Path]) -> None:
    form = form_of(client.get("/admin/editor/new").text)
    form.update({"campaign": "Grip wax", "id": "grip-help", "trigger.dwell.keyword": "grip",
                 "trigger.dwell.seconds": "3", "popin.title": "Grip wax, {{ visitor.first_name }}?",
                 "popin.body": "<p>Thin layers.</p>", "when.0.name": "device",
                 "when.0.value": "mobile, desktop"})
    preview = client.post("/admin/editor/preview", data=form).json()
    assert preview["errors"] == [] and "Grip wax, Alex?" in preview["html"]
    saved = client.post("/admin/editor/new", data=form, follow_redirects=False)
    assert saved.status_code == 303, saved.text
    written = (folders["demo"] / "grip-help.yaml").read_text()
    assert "trigger: {dwell: {keyword: grip, seconds: 3}}" in written
    assert client.get("/admin/campaigns/grip-help").status_code == 200
    # Duplicate, pause, delete.
    page = client.get("/admin/campaigns/grip-help").text
    token = re.search(r'name="csrf" value="([^"]+)"', page)
    assert token
    copied = client.post("/admin/campaigns/grip-help/duplicate", data={"csrf": token[1]},
                         follow_redirects=False)
    assert copied.headers["location"] == "/admin/campaigns/grip-help-copy/edit?copy=1"
    assert "id: grip-help-copy" in (folders["demo"] / "grip-help.yaml").read_text()
    client.post("/admin/campaigns/grip-help/pause", data={"csrf": token[1]})
    assert "Paused by you" in client.get("/admin/campaigns/grip-help").text
    page = client.get("/admin/campaigns/grip-help-copy").text
    version = re.search(r'name="version" value="([^"]+)"', page)
    assert version
    client.post("/admin/campaigns/grip-help-copy/delete",
                data={"csrf": token[1], "version": version[1]})
    assert "grip-help-copy" not in (folders["demo"] / "grip-help.yaml").read_text()
    assert client.get("/admin/campaigns/grip-help-copy/edit").status_code == 404


def _deleted(client: TestClient, rule: str, query: str = "") -> tuple[str, str] | None:
    """The token and the restore form's id of a deleted campaign on the overview."""
    page = client.get(f"/admin/{query}").text
    found = re.search(rf'data-deleted="{re.escape(rule)}">.*?name="csrf" value="([^"]+)">'
                      r'<input type="hidden" name="deleted" value="([^"]+)"', page, re.S)
    return (found[1], found[2]) if found else None


def _delete(client: TestClient, rule: str, query: str = "") -> None:
    page = client.get(f"/admin/campaigns/{rule}{query}").text
    token = re.search(r'name="csrf" value="([^"]+)"', page)
    version = re.search(r'name="version" value="([^"]+)"', page)
    assert token and version
    assert client.post(f"/admin/campaigns/{rule}/delete{query}", data={
        "csrf": token[1], "version": version[1]}, follow_redirects=False).status_code == 303


def test_a_deleted_campaign_is_listed_and_restored_with_its_comments(
        client: TestClient, folders: dict[str, Path]) -> None:
    _delete(client, "waxing-help")
    assert "waxing-help" not in (folders["demo"] / "waxing.yaml").read_text()
    listed = _deleted(client, "waxing-help")
    assert listed is not None
    token, deleted = listed
    assert client.post("/admin/deleted/restore", data={"csrf": "forged", "deleted": deleted},
                       follow_redirects=False).status_code == 403
    restored = client.post("/admin/deleted/restore", data={"csrf": token, "deleted": deleted},
                           follow_redirects=False)
    assert restored.status_code == 303, restored.text
    assert restored.headers["location"] == "/admin/campaigns/waxing-help"
    text = (folders["demo"] / "waxing.yaml").read_text()
    # Back at the end of its file, with the comments it carried.
    assert text.index("id: sizing-help") < text.index("id: waxing-help")
    assert "# five seconds is enough" in text and "# At most once a visit." in text
    assert "Waxing made simple" in client.get("/admin/campaigns/waxing-help").text
    assert _deleted(client, "waxing-help") is None
    assert client.post("/admin/deleted/restore", data={"csrf": token, "deleted": deleted},
                       follow_redirects=False).status_code == 404
    assert "restored waxing-help after its deletion" in client.get(
        "/admin/campaigns/waxing-help/history").text


def test_a_deleted_campaign_that_took_its_file_brings_the_file_back(
        client: TestClient, folders: dict[str, Path]) -> None:
    _delete(client, "blog-hello", "?site=blog")
    assert not (folders["blog"] / "blog.yaml").exists()
    assert _deleted(client, "blog-hello") is None  # another site's
    listed = _deleted(client, "blog-hello", "?site=blog")
    assert listed is not None
    assert client.post("/admin/deleted/restore", data={"csrf": listed[0], "deleted": listed[1]},
                       follow_redirects=False).status_code == 404
    restored = client.post("/admin/deleted/restore?site=blog", data={
        "csrf": listed[0], "deleted": listed[1]}, follow_redirects=False)
    assert restored.status_code == 303, restored.text
    assert (folders["blog"] / "blog.yaml").read_text() == BLOG
    assert client.get("/admin/campaigns/blog-hello?site=blog").status_code == 200


def test_a_deleted_campaign_whose_name_was_taken_again_is_not_restored_over_it(
        client: TestClient, folders: dict[str, Path]) -> None:
    _delete(client, "sizing-help")
    listed = _deleted(client, "sizing-help")
    assert listed is not None
    # A new campaign takes the name: the overview stops offering the old one, and a stale
    # form is refused rather than making two campaigns of one name.
    form = form_of(client.get("/admin/editor/new").text)
    form.update({"id": "sizing-help", "trigger.dwell.keyword": "sizing",
                 "popin.title": "New sizing help", "popin.body": "<p>Hi</p>"})
    assert client.post("/admin/editor/new", data=form,
                       follow_redirects=False).status_code == 303
    assert _deleted(client, "sizing-help") is None
    refused = client.post("/admin/deleted/restore", data={"csrf": listed[0],
                                                          "deleted": listed[1]})
    assert refused.status_code == 409 and "in force again" in refused.text


def test_forms_without_the_session_token_are_refused(
        client: TestClient, folders: dict[str, Path]) -> None:
    form = opened(client, "waxing-help")
    form["csrf"] = "forged"
    form["popin.title"] = "Forged"
    for path in ("/admin/campaigns/waxing-help/edit", "/admin/campaigns/waxing-help/delete",
                 "/admin/campaigns/waxing-help/pause", "/admin/campaigns/waxing-help/duplicate",
                 "/admin/campaigns/waxing-help/restore", "/admin/editor/new"):
        assert client.post(path, data=form).status_code == 403, path
    assert client.post("/admin/editor/preview", data=form).json()["error"]["field"] == "csrf"
    assert (folders["demo"] / "waxing.yaml").read_text() == COMMENTED


def test_another_sites_campaign_is_refused(client: TestClient,
                                           folders: dict[str, Path]) -> None:
    assert client.get("/admin/campaigns/blog-hello/edit").status_code == 404
    assert client.get("/admin/campaigns/waxing-help/edit?site=blog").status_code == 404
    form = opened(client, "blog-hello", "?site=blog")
    form["popin.title"] = "From the demo's form"
    assert client.post("/admin/campaigns/blog-hello/edit", data=form).status_code == 404
    assert "From the demo" not in (folders["blog"] / "blog.yaml").read_text()


def test_campaign_names_cannot_reach_outside_the_folder(
        client: TestClient, folders: dict[str, Path], tmp_path: Path) -> None:
    form = form_of(client.get("/admin/editor/new").text)
    form.update({"trigger.dwell.keyword": "grip", "trigger.dwell.seconds": "3",
                 "popin.title": "Hi", "popin.body": "<p>Hi</p>"})
    for name in ("../outside", "..", "/etc/passwd", "a/../../b", "Upper"):
        form["id"] = name
        refused = client.post("/admin/editor/new", data=form)
        assert refused.status_code == 400, name
        assert 'data-error-for="id"' in refused.text
    for name in ("..%2F..%2Fpopin.db", "%2e%2e", "..%2Fblog%2Fblog-hello"):
        assert client.get(f"/admin/campaigns/{name}/edit").status_code == 404, name
    assert sorted(path.name for path in tmp_path.rglob("*.yaml")) == ["blog.yaml",
                                                                      "waxing.yaml"]


def test_oversized_input_is_refused_naming_the_field(
        client: TestClient, folders: dict[str, Path]) -> None:
    form = opened(client, "waxing-help")
    form["popin.body"] = "x" * 20_000
    refused = client.post("/admin/campaigns/waxing-help/edit", data=form)
    assert refused.status_code == 413 and "Text" in refused.text and "popin.body" in \
        refused.text
    answer = client.post("/admin/editor/preview", data=form)
    assert answer.status_code == 413 and answer.json()["error"]["field"] == "popin.body"
    huge = client.post("/admin/editor/preview", content=b"a=" + b"x" * 300_000,
                       headers={"content-type": "application/x-www-form-urlencoded"})
    assert huge.status_code == 413 and "expected at most 256 KB" in huge.text
    assert (folders["demo"] / "waxing.yaml").read_text() == COMMENTED


BOMB = ("[&a [x,x,x,x,x,x,x,x,x], " + ", ".join(
    f"&{name} [{', '.join([f'*{before}'] * 9)}]" for before, name in zip("abcdefg", "bcdefgh",
                                                                         strict=True)) + "]")


@pytest.mark.timeout(30)
@pytest.mark.parametrize("value", [BOMB, "[" * 5000 + "]" * 5000])
def test_a_value_that_expands_beyond_reason_is_refused_at_once(
        client: TestClient, folders: dict[str, Path], value: str) -> None:
    """Aliases standing for billions of values, or thousands of nested lists, in one field:
    a short error, answered at once, nothing written (it once froze the server)."""
    form = opened(client, "waxing-help")
    form["when.0.name"], form["when.0.value"] = "country", value
    for path in ("/admin/campaigns/waxing-help/edit", "/admin/editor/preview"):
        answer = client.post(path, data=form)
        assert answer.status_code == 400 or answer.json()["errors"], path
        assert len(answer.text) < 100_000
        assert "values" in html.unescape(answer.text) and "expected" in answer.text
    assert (folders["demo"] / "waxing.yaml").read_text() == COMMENTED


def test_the_preview_uses_the_widgets_own_card_styles(client: TestClient) -> None:
    styles = client.get("/admin/card.css")
    assert styles.headers["content-type"].startswith("text/css")
    source = (ROOT / "widget" / "popin.js").read_text()
    for rule in (":host{all:initial}", ".card{box-sizing:border-box",
                 "@media (prefers-reduced-motion:reduce){.card{animation:none}}"):
        assert rule in styles.text and rule in source
    script = client.get("/admin/editor.js")
    assert script.status_code == 200 and "attachShadow" in script.text


REQUIRED = {"dwell": {"trigger.dwell.keyword": "grip"}, "event": {"trigger.event.name": "signup"},
            "after": {"trigger.after.event": "add_to_cart",
                      "trigger.after.without": "checkout_started"}}


def test_every_trigger_and_action_kind_works_from_the_form_defaults(
        client: TestClient) -> None:
    from popin.web.admin.fields import SHOW, TRIGGER

    start = form_of(client.get("/admin/editor/new").text)
    start.update({"id": "every-kind", "popin.title": "Hello", "popin.body": "<p>Hi</p>"})
    for kind in TRIGGER.choices:
        answer = client.post("/admin/editor/preview", data={
            **start, "trigger": kind, **REQUIRED.get(kind, {})}).json()
        assert answer["errors"] == [] and "Hello" in answer["html"], (kind, answer)
    offers = {"assist": {"assist.title": "Call us?", "assist.body": "<p>We call back.</p>"},
              "slots": {"slots.title": "Book", "slots.body": "<p>Pick a time.</p>",
                        "slots.calendar": "advisers"},
              "nothing": {"tag.0.audience": "grip-readers", "tag.0.days": "30"}}
    for show in SHOW.choices:
        answer = client.post("/admin/editor/preview", data={
            **start, **REQUIRED["dwell"], "show": show, **offers.get(show, {})}).json()
        assert answer["errors"] == [], (show, answer)
        assert answer["html"] or show == "nothing", (show, answer)
    assert "tag them into grip-readers" in answer["sentence"]


def test_a_save_that_could_not_go_live_is_refused_naming_the_broken_file(
        client: TestClient, folders: dict[str, Path]) -> None:
    form = opened(client, "waxing-help")
    (folders["demo"] / "broken.yaml").write_text("rules:\n  - id: broken\n")
    form["popin.title"] = "Not live while another file is broken"
    refused = client.post("/admin/campaigns/waxing-help/edit", data=form)
    assert refused.status_code == 400
    assert "broken.yaml:2: " in refused.text and "no change to this site" in refused.text
    assert (folders["demo"] / "waxing.yaml").read_text() == COMMENTED


def test_the_form_covers_the_rule_language_but_for_what_it_says() -> None:
    """A key added to the language shows up here: in the form's table, or in this list of
    what stays for the file alone (kept as written by every save)."""
    from popin.core.rules.campaign import CAP_KEYS, CONVERSION_KEYS, RULE_KEYS
    from popin.core.rules.schema import PLACES
    from popin.core.rules.templates import POPIN_KEYS
    from popin.core.rules.triggers import COMPILERS
    from popin.core.rules.variants import VARIANT_KEYS
    from popin.web.admin.fields import BY_NAME, FLAG_TRIGGERS
    from popin.web.admin.rows import TAG_KEYS
    from popin.web.admin.rows import VARIANT_KEYS as FORM_VARIANT_KEYS

    file_only = {"popin.offset", "variants.offset"}
    for kind in COMPILERS:
        assert kind in FLAG_TRIGGERS or any(
            name == f"trigger.{kind}" or name.startswith(f"trigger.{kind}.")
            for name in BY_NAME), kind
    for name in ([f"cap.{key}" for key in CAP_KEYS]
                 + [f"conversion.{key}" for key in CONVERSION_KEYS]
                 + [f"popin.{key}" for key in POPIN_KEYS if key != "cta"]
                 + ["popin.cta.label", "popin.cta.url",
                    "webhook.url", "assist.channels", "slots.calendar"]):
        assert name in BY_NAME or name in file_only, name
    # Each variant's keys, its button's two as the pop-in's; every key of a tag.
    for key in VARIANT_KEYS:
        keys = ["cta.label", "cta.url"] if key == "cta" else [key]
        assert all(name in FORM_VARIANT_KEYS or f"variants.{name}" in file_only
                   for name in keys), key
    assert set(PLACES["tag"]) == set(TAG_KEYS)
    grouped = {"trigger", "when", "popin", "assist", "slots", "tag", "webhook", "cap",
               "conversion", "variants"}
    assert set(RULE_KEYS) - grouped <= set(BY_NAME)


VARIANTS_AND_TAGS = """\
campaign: Wax test
rules:
  - id: wax-test
    trigger: {dwell: {keyword: waxing, seconds: 5}}
    popin: {title: Waxing, body: <p>Kit.</p>}
    tag: interest-wax   # the audience alone: the language's default days
    variants:
      - {id: plain, weight: 1}   # the control
      - id: loud
        title: WAXING!
"""


def test_variants_and_several_audiences_are_edited_in_full() -> None:
    rule = drafts.find(drafts.load(drafts.loader(VARIANTS_AND_TAGS), VARIANTS_AND_TAGS),
                       "wax-test")
    assert rule is not None
    shown = values(rule)
    assert shown["tag.0.audience"] == "interest-wax" and shown["tag.0.days"] == ""
    assert shown["variants.0.id"] == "plain" and shown["variants.1.title"] == "WAXING!"
    edited = {**shown, "variants.1.cta.label": "See the kit",
              "variants.1.cta.url": "/demo/wax.html", "variants.1.placement": "bottom_bar",
              "variants.1.delay": "3s", "tag.1.audience": "wax-buyers", "tag.1.days": "30"}
    apply(rule, edited)
    yaml = drafts.loader(VARIANTS_AND_TAGS)
    document = drafts.load(yaml, VARIANTS_AND_TAGS)
    document["rules"][0] = rule
    text = drafts.dump(yaml, document)
    assert "- {id: plain, weight: 1}   # the control" in text
    # A second audience turns the one written alone into a list; its comment stays.
    assert ("    tag:                # the audience alone: the language's default days\n"
            "      - interest-wax\n      - {audience: wax-buyers, days: 30}\n") in text
    assert "cta: {label: See the kit, url: /demo/wax.html}" in text
    assert "placement: bottom_bar" in text and "delay: 3s" in text
    assert values(rule) == {**edited}
    assert "tag them into interest-wax and wax-buyers" in sentence(rule)
    # Emptied again, what they wrote goes.
    apply(rule, {**edited, "variants.1.cta.label": "", "variants.1.cta.url": "",
                 "variants.1.placement": "", "variants.1.delay": "", "tag.1.audience": "",
                 "tag.1.days": ""})
    text = drafts.dump(yaml, document)
    assert "cta" not in text and "placement" not in text and "wax-buyers" not in text


def test_variants_and_audiences_saved_through_the_form_go_live(
        client: TestClient, folders: dict[str, Path]) -> None:
    form = opened(client, "waxing-help")
    form.update({"variants.0.id": "plain", "variants.1.id": "bold",
                 "variants.1.title": "Bold waxing", "variants.1.cta.label": "Kit",
                 "variants.1.cta.url": "/demo/wax.html", "variants.1.placement": "corner_left",
                 "variants.1.delay": "2s", "tag.0.audience": "wax-readers",
                 "tag.0.days": "45", "tag.1.audience": "ski-care"})
    saved = client.post("/admin/campaigns/waxing-help/edit", data=form, follow_redirects=False)
    assert saved.status_code == 303, saved.text
    text = (folders["demo"] / "waxing.yaml").read_text()
    assert "# five seconds is enough" in text
    again = opened(client, "waxing-help")
    assert {key: again[key] for key in form if key.startswith(("variants.", "tag."))} == {
        key: form[key] for key in form if key.startswith(("variants.", "tag."))}
    preview = client.post("/admin/editor/preview", data={
        **again, "rule": "waxing-help", "preview_variant": "bold"}).json()
    assert preview["errors"] == [] and "Bold waxing" in preview["html"]
    assert preview["placement"] == "corner_left"
    # A row of the language's own errors lands beside the audiences' table.
    again["tag.2.audience"] = "not a name!"
    refused = client.post("/admin/campaigns/waxing-help/edit", data=again)
    assert refused.status_code == 400 and 'data-error-for="tag"' in refused.text


def _token(client: TestClient, page: str) -> str:
    token = re.search(r'name="csrf" value="([^"]+)"', client.get(page).text)
    assert token
    return token[1]


def test_a_duplicate_starts_paused_by_the_owner_and_apart_from_its_original(
        client: TestClient, folders: dict[str, Path]) -> None:
    copied = client.post("/admin/campaigns/sizing-help/duplicate", data={
        "csrf": _token(client, "/admin/campaigns/sizing-help")}, follow_redirects=False)
    assert copied.status_code == 303, copied.text
    form = client.get(copied.headers["location"]).text
    assert "This copy is paused until you resume it" in form
    assert "Paused by you" in client.get("/admin/campaigns/sizing-help-copy").text
    app_hub = client.app.state.hub  # type: ignore[attr-defined]
    assert app_hub.paused_for("demo") == {"sizing-help-copy"}
    text = (folders["demo"] / "waxing.yaml").read_text()
    assert '<p>Ask us.</p>"}\n\n  - id: sizing-help-copy\n' in text
    # The original is untouched and live.
    assert "Paused" not in client.get("/admin/campaigns/sizing-help").text


def test_an_owners_pause_survives_an_edit_and_a_rename_the_form_says_so(
        client: TestClient, folders: dict[str, Path]) -> None:
    client.post("/admin/campaigns/waxing-help/pause", data={
        "csrf": _token(client, "/admin/campaigns/waxing-help")})
    page = client.get("/admin/campaigns/waxing-help/edit").text
    assert "Paused by you" in page and "saving keeps it paused" in page
    form = form_of(page)
    form.update({"popin.title": "Waxing, paused", "id": "waxing-paused"})
    saved = client.post("/admin/campaigns/waxing-help/edit", data=form, follow_redirects=False)
    assert saved.status_code == 303, saved.text
    assert "Waxing, paused" in (folders["demo"] / "waxing.yaml").read_text()
    assert "Paused by you" in client.get("/admin/campaigns/waxing-paused").text
    app_hub = client.app.state.hub  # type: ignore[attr-defined]
    assert "waxing-paused" in app_hub.paused_for("demo")
    form = opened(client, "waxing-paused")
    form["popin.title"] = "Waxing, still paused"
    assert client.post("/admin/campaigns/waxing-paused/edit", data=form,
                       follow_redirects=False).status_code == 303
    assert "Paused by you" in client.get("/admin/campaigns/waxing-paused").text


def test_the_guards_pause_still_ends_on_a_change(
        client: TestClient, folders: dict[str, Path]) -> None:
    app_hub = client.app.state.hub  # type: ignore[attr-defined]
    rule = app_hub.rules_of("demo").by_id["waxing-help"]

    async def guard_pause() -> None:
        await save_pauses(app_hub.store, "demo", {"waxing-help": Pause(
            "waxing-help", PAUSED, 1.0, rule.fingerprint, difference=-0.05)})
        app_hub.paused_for("demo").add("waxing-help")

    client.portal.call(guard_pause)  # type: ignore[union-attr]
    page = client.get("/admin/campaigns/waxing-help/edit").text
    assert "Paused automatically" in page and "saving a change puts it live" in page
    form = form_of(page)
    form["popin.title"] = "Waxing, judged afresh"
    assert client.post("/admin/campaigns/waxing-help/edit", data=form,
                       follow_redirects=False).status_code == 303
    assert "waxing-help" not in app_hub.paused_for("demo")
    assert "Paused" not in client.get("/admin/campaigns/waxing-help").text


def test_errors_name_the_sites_file_never_the_scratch_copy(
        client: TestClient, folders: dict[str, Path]) -> None:
    form = opened(client, "sizing-help")
    form["id"] = "waxing-help"
    refused = client.post("/admin/campaigns/sizing-help/edit", data=form)
    assert refused.status_code == 400
    said = html.unescape(refused.text)
    assert "rule id 'waxing-help' is already used at demo/waxing.yaml:5" in said
    assert "popin-editor-" not in said


def test_a_linked_campaign_file_is_not_offered_for_editing_and_says_why(
        client: TestClient, folders: dict[str, Path], tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere.yaml"
    elsewhere.write_text("campaign: Linked\nrules:\n  - id: linked-rule\n"
                         "    trigger: {pageview: /}\n    popin: {title: Hi, body: <p>Hi</p>}\n")
    (folders["demo"] / "linked.yaml").symlink_to(elsewhere)
    reload_rules(client.app.state.hub, client.app.state.rule_folders,  # type: ignore[attr-defined]
                 False)
    page = client.get("/admin/campaigns/linked-rule").text
    assert "its file is a link outside the folder; edit it where it lives" in page
    assert "data-edit" not in page and "data-duplicate" not in page and "data-pause" in page
    token = _token(client, "/admin/campaigns/linked-rule")
    for answer in (client.get("/admin/campaigns/linked-rule/edit"),
                   client.post("/admin/campaigns/linked-rule/duplicate", data={"csrf": token})):
        assert answer.status_code == 409
        assert "its file is a link outside the folder; edit it where it lives" in answer.text
    assert elsewhere.read_text().count("id:") == 1


def test_history_labels_one_version_as_the_file_now(
        client: TestClient, folders: dict[str, Path]) -> None:
    _delete(client, "sizing-help")
    listed = _deleted(client, "sizing-help")
    assert listed is not None
    assert client.post("/admin/deleted/restore", data={"csrf": listed[0], "deleted": listed[1]},
                       follow_redirects=False).status_code == 303
    form = opened(client, "waxing-help")
    form["popin.title"] = "Version three"
    assert client.post("/admin/campaigns/waxing-help/edit", data=form,
                       follow_redirects=False).status_code == 303
    page = client.get("/admin/campaigns/waxing-help/history").text
    version = re.search(r'name="version" value="([^"]+)"', page)
    assert version
    assert client.post("/admin/campaigns/waxing-help/restore", data={
        "csrf": _token(client, "/admin/campaigns/waxing-help/history"), "version": version[1],
        "number": "0"}, follow_redirects=False).status_code == 303
    page = client.get("/admin/campaigns/waxing-help/history").text
    # The first version and the restore of it hold the same text: the restore is the file.
    assert page.count("This is the file as it is now.") == 1
    newest = re.search(r'data-version="(\d+)">.*?</section>', page, re.S)
    assert newest and "data-current" in newest[0]


@pytest.mark.parametrize(("number", "code"), [
    ("\u0660", 400), (" 0", 400), ("0 ", 400), ("+0", 400), ("", 400), ("1234567890", 400),
    ("\uff10", 400), ("7", 404)])
def test_restore_takes_a_version_number_in_ascii_digits_only(
        client: TestClient, folders: dict[str, Path], number: str, code: int) -> None:
    form = opened(client, "waxing-help")
    form["popin.title"] = "Version two"
    assert client.post("/admin/campaigns/waxing-help/edit", data=form,
                       follow_redirects=False).status_code == 303
    page = client.get("/admin/campaigns/waxing-help/history").text
    version = re.search(r'name="version" value="([^"]+)"', page)
    assert version
    refused = client.post("/admin/campaigns/waxing-help/restore", data={
        "csrf": _token(client, "/admin/campaigns/waxing-help/history"), "version": version[1],
        "number": number}, follow_redirects=False)
    assert refused.status_code == code
    assert "&#39;number&#39; is" in refused.text
    assert "Version two" in (folders["demo"] / "waxing.yaml").read_text()


def test_the_preview_shows_a_first_time_visitor_with_no_name_too(client: TestClient) -> None:
    page = client.get("/admin/editor/new").text
    assert 'data-visitor' in page and "a first-time visitor, no name known" in page
    form = form_of(page)
    form.update({"id": "hello", "trigger.dwell.keyword": "grip",
                 "popin.title": "Hello {{ visitor.first_name }}", "popin.body": "<p>Hi.</p>"})
    known = client.post("/admin/editor/preview", data=form).json()
    assert "Hello Alex" in known["html"]
    first = client.post("/admin/editor/preview", data={**form, "preview_visitor": "first"}).json()
    assert first["errors"] == [] and "Alex" not in first["html"] and "Hello" in first["html"]
    # Either way the owner is warned that most visitors read a title with a gap.
    for answer in (known, first):
        assert "A first-time visitor, whose name is not known, sees the title \u201cHello\u201d" \
            in answer["warning"]
    form["popin.title"] = "Hello {{ visitor.first_name or 'there' }}"
    fixed = client.post("/admin/editor/preview", data=form).json()
    assert fixed["warning"] == "", fixed


def test_a_new_campaign_deleted_comes_back_from_its_own_page_and_the_list(
        client: TestClient, folders: dict[str, Path]) -> None:
    form = form_of(client.get("/admin/editor/new").text)
    form.update({"id": "grip-help", "trigger.dwell.keyword": "grip",
                 "popin.title": "Grip wax", "popin.body": "<p>Thin layers.</p>"})
    assert client.post("/admin/editor/new", data=form, follow_redirects=False).status_code == 303
    written = (folders["demo"] / "grip-help.yaml").read_text()
    _delete(client, "grip-help")
    assert not (folders["demo"] / "grip-help.yaml").exists()
    overview = client.get("/admin/").text
    assert 'id="deleted"' in overview and _deleted(client, "grip-help") is not None
    # Never shown, so no numbers: its page still says where it went and how to get it back.
    page = client.get("/admin/campaigns/grip-help")
    assert page.status_code == 404
    assert 'data-deleted-campaign="grip-help"' in page.text
    assert 'href="/admin/#deleted"' in page.text
    found = re.search(r'action="/admin/deleted/restore".*?name="csrf" value="([^"]+)">'
                      r'<input type="hidden" name="deleted" value="([^"]+)"', page.text, re.S)
    assert found
    restored = client.post("/admin/deleted/restore", data={"csrf": found[1],
                                                           "deleted": found[2]},
                           follow_redirects=False)
    assert restored.status_code == 303, restored.text
    assert (folders["demo"] / "grip-help.yaml").read_text() == written
    assert client.get("/admin/campaigns/grip-help").status_code == 200
    assert _deleted(client, "grip-help") is None


@pytest.mark.parametrize(("field", "value", "said"), [
    ("popin.cta.url", "javascript:alert(1)", "a javascript: link"),
    ("popin.cta.url", " JaVa\tscript:alert(1)", "a javascript: link"),
    ("popin.cta.url", "data:text/html,<script>alert(1)</script>", "a data: link"),
    ("popin.cta.url", "{{ 'javascript:alert(1)' }}", "a javascript: link"),
    ("popin.body", "{{ self.__init__ }}", "may not read names starting with '_'"),
    ("popin.body", "{{ range(1000) }}", "the sandbox refuses it"),
])
def test_a_campaign_that_could_never_show_is_not_saved(
        client: TestClient, folders: dict[str, Path], field: str, value: str,
        said: str) -> None:
    """The server would drop such a pop-in at every render: the editor says why, beside
    the field, and writes nothing."""
    form = form_of(client.get("/admin/editor/new").text)
    form.update({"campaign": "Never", "id": "never", "trigger.dwell.keyword": "grip",
                 "trigger.dwell.seconds": "3", "popin.title": "Hi", "popin.body": "<p>Hi</p>",
                 "popin.cta.label": "Go", "popin.cta.url": "/ok", field: value})
    refused = client.post("/admin/editor/new", data=form, follow_redirects=False)
    assert refused.status_code == 400, refused.text
    beside = re.search(rf'data-error-for="{re.escape(field)}">([^<]*)<', refused.text)
    assert beside and said in html.unescape(beside[1]), refused.text
    assert not (folders["demo"] / "never.yaml").exists()
    preview = client.post("/admin/editor/preview", data=form).json()
    assert [error["field"] for error in preview["errors"]] == [field]


def test_a_webhook_over_http_is_judged_by_the_allow_list_in_effect(
        tmp_path: Path, folders: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    settings = settings_of(tmp_path, folders)
    monkeypatch.setattr("sys.stdin", io.StringIO(PASSWORD + "\n"))
    assert main(["admin", "--store", settings.store, "set-password", "--password-stdin"]) == 0
    for allowed, code in (((), 400), (("127.0.0.1",), 303)):
        settings.webhooks = WebhookSettings(allow_http_hosts=allowed)
        with TestClient(create_app(settings)) as test_client:
            log_in(test_client)
            form = form_of(test_client.get("/admin/editor/new").text)
            form.update({"campaign": "Hook", "id": "hook", "trigger": "event",
                         "trigger.event.name": "signup", "show": "nothing",
                         "webhook.url": "http://127.0.0.1:8101/hook"})
            answer = test_client.post("/admin/editor/new", data=form, follow_redirects=False)
        assert answer.status_code == code, answer.text
        if code == 400:
            beside = re.search(r'data-error-for="webhook.url">([^<]*)<', answer.text)
            assert beside and "[webhooks] allow_http_hosts" in beside[1], answer.text
        assert (folders["demo"] / "hook.yaml").exists() == (code == 303)

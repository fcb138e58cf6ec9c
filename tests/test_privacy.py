"""What an install keeps on disk about visitors: files only their owner reads, and an
erased visitor gone from the raw bytes, not only from the answers."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from conftest import make_key, settings_with_rules
from popin.config import Settings
from popin.web.app import create_app

RULES = """
rules:
  - id: welcome
    category: transactional
    trigger: {event: signup}
    popin: {title: "Welcome!", body: "<p>Hello.</p>"}
"""


@pytest.fixture
def umask() -> Iterator[None]:
    """The usual umask, under which a file made with the defaults is world-readable."""
    previous = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(previous)


def mode(path: Path) -> str:
    return oct(stat.S_IMODE(path.stat().st_mode))


@pytest.mark.usefixtures("umask")
def test_the_store_and_the_secret_are_readable_by_their_owner_only(tmp_path: Path) -> None:
    settings = settings_with_rules(tmp_path, RULES)
    token = make_key(settings, "events")
    with TestClient(create_app(settings)) as client:
        for number in range(3):
            response = client.post("/api/v1/events", headers={"Authorization": f"Bearer {token}"},
                                   json={"events": [{"name": "signup",
                                                     "visitor": f"visitor-mode-{number}"}]})
            assert response.status_code == 200
        files = {name: tmp_path / name for name in ("popin.db", "popin.db-wal", "popin.db-shm",
                                                    "popin.secret")}
        assert {name: mode(path) for name, path in files.items()} == dict.fromkeys(files, "0o600")


@pytest.mark.usefixtures("umask")
def test_files_of_an_older_install_are_narrowed_at_start(tmp_path: Path) -> None:
    settings = settings_with_rules(tmp_path, RULES)
    make_key(settings, "events")
    secret = tmp_path / "popin.secret"
    secret.write_text("an older install's secret, kept as it was")
    for path in (tmp_path / "popin.db", secret):
        path.chmod(0o644)
    with TestClient(create_app(settings)):
        assert (mode(tmp_path / "popin.db"), mode(secret)) == ("0o600", "0o600")
    assert secret.read_text() == "an older install's secret, kept as it was"


@pytest.mark.usefixtures("umask")
def test_the_secret_is_private_from_its_first_byte(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """Made owner-only, not narrowed after it was written: in between, anyone could read it."""
    from popin.config import load_secret

    monkeypatch.setattr(Path, "chmod", lambda *_args, **_kwargs: None)
    load_secret(Settings(store=f"sqlite:///{tmp_path / 'popin.db'}"))
    assert mode(tmp_path / "popin.secret") == "0o600"


def test_two_first_starts_agree_on_one_secret(tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """Two processes starting at once both find no secret; the second to finish must not
    replace the first one's, whose links are already out."""
    import itertools
    import secrets
    import threading
    import time
    from concurrent.futures import ThreadPoolExecutor

    from popin.config import load_secret

    made = secrets.token_urlsafe
    both_looked = threading.Barrier(2)
    order = itertools.count()

    def token(length: int) -> str:
        late = next(order)
        both_looked.wait(timeout=5)
        time.sleep(0.2 * late)
        return made(length)

    monkeypatch.setattr(secrets, "token_urlsafe", token)
    settings = Settings(store=f"sqlite:///{tmp_path / 'popin.db'}")
    with ThreadPoolExecutor(max_workers=2) as pool:
        first, second = pool.map(lambda _n: load_secret(settings), range(2))
    assert first == second == (tmp_path / "popin.secret").read_text()
    assert [path.name for path in tmp_path.iterdir()] == ["popin.secret"]

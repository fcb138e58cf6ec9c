"""The `popin` command as a newcomer meets it: one grammar everywhere, an example in every
--help, settings found where people look, `popin init` for a first site, and counts in
words ("1 member", "2 members")."""

from __future__ import annotations

import argparse
import hashlib
import os
import shlex
import stat
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import ROOT
from popin.cli import main, parser
from popin.config import load_settings
from popin.config.starter import copy_playbook, shipped
from popin.core.rules.campaign import load_rules, rule_files

SHOP = '[[sites]]\nkey = "shop"\nname = "Shop"\n'
# What a leaf command needs besides the common options, to parse.
REQUIRED = {("rules", "explain"): ["events.jsonl"], ("rules", "preview"): ["waxing-help"],
            ("keys", "create"): ["--scope", "events"],
            ("keys", "revoke"): ["abc"], ("bookings", "list"): ["--day", "2026-11-24"],
            ("leads", "list"): ["--since", "2026-11-01"], ("audiences", "sizes"): ["x"],
            ("audiences", "export"): ["x"]}


def commands(command: argparse.ArgumentParser | None = None,
             path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...],
                                                          argparse.ArgumentParser]]:
    """Every parser of the command tree, with the words that reach it."""
    command = command or parser()
    yield path, command
    for action in command._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                yield from commands(child, (*path, name))


def leaves() -> list[tuple[str, ...]]:
    return [path for path, command in commands() if path and not any(
        isinstance(action, argparse._SubParsersAction) for action in command._actions)]


def popin(*args: str, cwd: Path, env: dict[str, str] | None = None,
          stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "popin", *args], cwd=cwd, input=stdin,
                          capture_output=True, text=True, timeout=60,
                          env={**os.environ, "POPIN_CONFIG": "", **(env or {})})


@pytest.mark.parametrize("path", leaves(), ids=" ".join)
def test_site_and_config_go_after_the_command_as_well_as_before(path: tuple[str, ...]) -> None:
    needed = REQUIRED.get(path, [])
    common = ["--site", "shop", "--config", "shop.toml"]
    for argv in ([*path, *common, *needed], [*common, *path, *needed],
                 [path[0], *common, *path[1:], *needed]):
        args = parser().parse_args(argv)
        assert (args.site, args.config) == ("shop", Path("shop.toml")), argv


def test_the_store_option_is_not_lost_between_a_group_and_its_command() -> None:
    args = parser().parse_args(["keys", "--store", "sqlite:///a.db", "list"])
    assert args.store == "sqlite:///a.db"
    args = parser().parse_args(["keys", "list", "--store", "sqlite:///b.db"])
    assert args.store == "sqlite:///b.db"


@pytest.mark.parametrize("path", [path for path, _ in commands()], ids=lambda p: " ".join(p)
                         or "popin")
def test_every_help_ends_with_an_example_that_parses(path: tuple[str, ...]) -> None:
    command = dict(commands())[path]
    shown = command.format_help()
    assert "example:\n" in shown, f"popin {' '.join(path)} --help shows no example"
    examples = shown.split("example:\n", 1)[1].split("\n\n")[0].splitlines()
    assert examples
    for example in examples:
        words = shlex.split(example.split("| ")[-1])
        assert words[0] == "popin", example
        parser().parse_args(words[1:])  # exits on an unknown command or option


def test_popin_toml_of_the_current_folder_is_read_by_default(tmp_path: Path) -> None:
    (tmp_path / "popin.toml").write_text(SHOP)
    listed = popin("keys", "create", "--scope", "events", cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.startswith("key ") and "for site shop, scope events\n" in listed.stdout
    assert (tmp_path / "popin.db").is_file()


def test_popin_config_and_config_anywhere_find_the_file(tmp_path: Path) -> None:
    folder = tmp_path / "etc"
    folder.mkdir()
    (folder / "popin.toml").write_text('store = "sqlite:///popin.db"\n' + SHOP)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    by_variable = popin("keys", "create", "--scope", "events", cwd=elsewhere,
                        env={"POPIN_CONFIG": str(folder / "popin.toml")})
    assert by_variable.returncode == 0, by_variable.stderr
    # The store named in the file lives beside it, wherever popin runs from.
    assert (folder / "popin.db").is_file() and not (elsewhere / "popin.db").exists()
    by_option = popin("keys", "list", "--config", str(folder / "popin.toml"), cwd=elsewhere)
    assert by_option.returncode == 0 and by_option.stdout.count("active") == 1
    missing = popin("keys", "list", cwd=elsewhere, env={"POPIN_CONFIG": "nowhere.toml"})
    assert missing.returncode == 2
    assert missing.stderr == "popin: POPIN_CONFIG=nowhere.toml: no such file\n"
    unknown = popin("keys", "list", "--site", "demo", cwd=folder)
    assert unknown.returncode == 2 and unknown.stderr.count("\n") == 1
    assert "--site demo: no such site" in unknown.stderr and "configured: shop" in unknown.stderr


def test_serve_takes_config_after_its_name(tmp_path: Path) -> None:
    (tmp_path / "popin.toml").write_text(SHOP + "fatigue = 3\n")
    refused = popin("serve", "--config", "popin.toml", "--port", "1", cwd=tmp_path)
    # Read, and its error told in one line: the option itself was accepted.
    assert refused.returncode == 2
    assert refused.stderr == ("popin: popin.toml: site 'shop': fatigue must be a table, not a "
                              "number (3)\n")
    assert "unrecognized arguments" not in refused.stderr


def test_scripts_serve_passes_its_arguments_and_runs_where_it_was_started(
        tmp_path: Path) -> None:
    """scripts/serve, with the install stubbed: the arguments reach `popin serve`, run in
    the caller's folder (where a popin.toml would be found)."""
    repo = tmp_path / "clone"
    (repo / "scripts").mkdir(parents=True)
    (repo / "scripts" / "serve").write_text((ROOT / "scripts" / "serve").read_text())
    bin_folder = repo / ".venv" / "bin"
    bin_folder.mkdir(parents=True)
    (bin_folder / "python").write_text("#!/bin/sh\nexit 0\n")
    (bin_folder / "popin").write_text('#!/bin/sh\necho "popin $* in $(pwd)"\n')
    for stub in ("python", "popin"):
        (bin_folder / stub).chmod(0o755)
    caller = tmp_path / "site"
    caller.mkdir()
    ran = subprocess.run(["bash", str(repo / "scripts" / "serve"), "--config", "popin.toml",
                          "--port", "9000"], cwd=caller, capture_output=True, text=True,
                         timeout=60)
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout == f"popin serve --config popin.toml --port 9000 in {caller}\n"
    assert f". {repo}/.venv/bin/activate" in ran.stderr


def test_init_writes_a_commented_config_with_fresh_secrets_and_the_playbook(
        tmp_path: Path) -> None:
    first, second = tmp_path / "one", tmp_path / "two"
    for folder in (first, second):
        folder.mkdir()
        made = popin("init", "--site", "shop", "--name", "Nordic Trail", "--origin",
                     "https://www.nordic-trail.example", "--timezone", "Europe/Paris",
                     cwd=folder)
        assert made.returncode == 0, made.stderr
    config = first / "popin.toml"
    assert stat.S_IMODE(config.stat().st_mode) == 0o600, "it holds secrets"
    text = config.read_text()
    assert text.count("\n#") > 15, "every setting is said in a comment"
    settings = load_settings(config)
    site = settings.sites["shop"]
    assert (site.name, site.zone.key) == ("Nordic Trail", "Europe/Paris")
    assert site.origins == ("self", "https://www.nordic-trail.example")
    assert settings.rules == first / "rules"
    secrets = {name: tomllib.loads(text)[name] for name in ("secret", "metrics_token")}
    secrets |= {name: tomllib.loads(text)["sites"][0][name]
                for name in ("identity_secret", "webhook_secret")}
    others = tomllib.loads((second / "popin.toml").read_text())
    assert all(len(value) >= 32 for value in secrets.values())
    assert len(set(secrets.values())) == 4 and secrets["secret"] != others["secret"]
    copied = {path.name for path in rule_files(first / "rules")}
    assert copied == {path.name for path in rule_files(ROOT / "rules")}
    assert load_rules(first / "rules").errors == []
    output = made.stdout
    # Said once, and only what happened: an else once told a fresh folder it held 0 files.
    assert (f"Copied the playbook into rules/: {len(copied)} rule files to adapt or delete."
            in output)
    assert "Left rules/" not in output and "left out" not in output
    assert ('<script async src="http://127.0.0.1:8000/popin.js" data-site="shop"></script>'
            in output)
    for command in ("popin rules check", "popin serve", "popin admin set-password",
                    "popin keys create --site shop --scope events"):
        assert f"\n  {command} " in output, command
    checked = popin("rules", "check", cwd=second)
    assert checked.returncode == 0, checked.stderr
    (second / "rules" / "typo.yaml").write_text("rules:\n  - {id: a, trigger: {evnt: go}}\n")
    broken = popin("rules", "check", cwd=second)
    # Said from the folder popin runs in, as a compiler says it.
    assert broken.returncode == 1
    assert broken.stderr.startswith("rules/typo.yaml:2:5: rule 'a' does nothing; ")
    assert "\nrules/typo.yaml:2:23: unknown key 'evnt' in 'trigger'" in broken.stderr


def test_the_playbook_manifest_lists_the_playbook_as_shipped() -> None:
    listed = shipped(ROOT / "rules")
    actual = {path.relative_to(ROOT / "rules").as_posix():
              hashlib.sha256(path.read_bytes()).hexdigest() for path in rule_files(ROOT / "rules")}
    assert listed == actual, ("rules/PLAYBOOK.sha256 is stale: after changing the playbook "
                              "on purpose, run 'cd rules && sha256sum *.yaml > PLAYBOOK.sha256'")


def test_init_leaves_out_what_the_demo_changed_in_the_playbook(tmp_path: Path) -> None:
    playbook = tmp_path / "playbook"
    playbook.mkdir()
    for name in ("kept.yaml", "edited.yaml"):
        (playbook / name).write_text(f"# {name}\nrules: []\n")
    (playbook / "PLAYBOOK.sha256").write_text("".join(
        f"{hashlib.sha256((playbook / name).read_bytes()).hexdigest()}  {name}\n"
        for name in ("kept.yaml", "edited.yaml")))
    (playbook / "edited.yaml").write_text("# someone's demo experiment\nrules: []\n")
    (playbook / "added.yaml").write_text("rules: []\n")
    site = tmp_path / "site"
    copied, left_out = copy_playbook(playbook, rule_files(playbook), site)
    assert (copied, sorted(left_out)) == (1, ["added.yaml", "edited.yaml"])
    assert [path.name for path in site.iterdir()] == ["kept.yaml"]


def test_init_guesses_what_it_is_not_told_and_says_so(tmp_path: Path) -> None:
    folder = tmp_path / "My Ski Shop"
    folder.mkdir()
    made = popin("init", cwd=folder, env={"TZ": "America/Montreal"})
    assert made.returncode == 0, made.stderr
    assert "guessed the site's key 'my-ski-shop' from the folder's name (--site KEY)" in (
        made.stdout)
    assert "guessed the time zone America/Montreal from this machine's clock" in made.stdout
    assert "Pages of other sites are refused until their origin is listed" in made.stdout
    site = load_settings(folder / "popin.toml").sites["my-ski-shop"]
    assert (site.name, site.zone.key, site.origins) == ("My Ski Shop", "America/Montreal",
                                                        ("self",))


def test_init_never_overwrites_and_refuses_bad_options_in_one_line(tmp_path: Path) -> None:
    assert popin("init", "--site", "shop", "--timezone", "UTC", cwd=tmp_path).returncode == 0
    before = (tmp_path / "popin.toml").read_text()
    again = popin("init", "--site", "other", "--timezone", "UTC", cwd=tmp_path)
    assert again.returncode == 1 and "already exists; nothing was written" in again.stderr
    assert (tmp_path / "popin.toml").read_text() == before
    for option, complaint in ((["--timezone", "Mars/Olympus"], "--timezone 'Mars/Olympus' is "
                               "not a time zone"),
                              (["--site", "a b"], "--site 'a b': expected 1-64 letters"),
                              (["--origin", "www.shop.example"], "--origin 'www.shop.example'")):
        folder = tmp_path / option[0].strip("-")
        folder.mkdir()
        refused = popin("init", *option, cwd=folder)
        assert refused.returncode == 2 and refused.stderr.count("\n") == 1, refused.stderr
        assert complaint in refused.stderr
        assert not (folder / "popin.toml").exists()


def test_init_leaves_an_existing_rules_folder_alone(tmp_path: Path) -> None:
    (tmp_path / "rules").mkdir()
    (tmp_path / "rules" / "mine.yaml").write_text("rules: []\n")
    made = popin("init", "--site", "shop", "--timezone", "UTC", cwd=tmp_path)
    assert made.returncode == 0
    assert "Left rules/ as it is: it already holds 1 rule file." in made.stdout
    assert "Copied the playbook" not in made.stdout
    assert [path.name for path in (tmp_path / "rules").iterdir()] == ["mine.yaml"]


def test_counts_are_said_in_words(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    store = ["--store", f"sqlite:///{tmp_path / 'popin.db'}"]
    assert main(["keys", "create", *store, "--scope", "events"]) == 0
    assert ", scope events\n" in capsys.readouterr().out
    assert main(["keys", "create", *store, "--scope", "events", "--scope", "export"]) == 0
    assert ", scopes events, export\n" in capsys.readouterr().out
    assert main(["audiences", "list", *store]) == 0
    listed = capsys.readouterr().out
    assert "0 members" in listed and " 1 days" not in listed and "(s)" not in listed


def test_no_count_is_left_to_a_bracketed_s() -> None:
    """"1 error(s)" and the like: counts are said with the right word (schema.plural)."""
    for path in (ROOT / "server").rglob("*.py"):
        text = path.read_text().replace("http(s)", "")
        assert "(s)" not in text, f"{path.relative_to(ROOT)} writes a count with '(s)'"

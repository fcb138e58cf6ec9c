"""The README's examples and claims, kept honest."""

from __future__ import annotations

import re
from pathlib import Path

from conftest import ROOT
from popin.cli import parser
from popin.config import load_settings
from popin.core.rules.campaign import parse_document
from popin.core.rules.yamlsource import load
from popin.web.widget import BUILT, size_of

README = (ROOT / "README.md").read_text()


def blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", README, re.DOTALL)


def test_rule_example_is_valid() -> None:
    (example,) = blocks("yaml")
    rules = parse_document(load(example, "README.md"), "README.md")
    assert [rule.id for rule in rules] == ["waxing-help"]


def test_config_examples_load(tmp_path: Path) -> None:
    first, several, tcf, consent_mode, calendars = [
        block for block in blocks("toml") if not block.startswith('store = "redis')]
    path = tmp_path / "popin.toml"
    path.write_text(first)
    settings = load_settings(path)
    assert settings.sites["nordic-trail"].origins == ("https://www.nordic-trail.example",)
    path.write_text(several)
    assert load_settings(path).folders() == {
        "nordic-trail": tmp_path / "campaigns" / "nordic-trail",
        "trail-blog": tmp_path / "campaigns" / "trail-blog"}
    path.write_text(calendars)
    calendar = load_settings(path).sites["demo"].calendars["advisers"]
    assert (calendar.capacity, calendar.buffer_minutes) == (2, 10)
    assert calendar.hours["sat"] == ((600, 960),)
    path.write_text(tcf)
    mapping = load_settings(path).sites["nordic-trail"].consent_map
    assert (mapping.tcf_storage, mapping.tcf_personalisation, mapping.tcf_audiences) == (
        (1,), (5, 6), (3, 4))
    path.write_text(consent_mode)
    mapping = load_settings(path).sites["nordic-trail"].consent_map
    assert mapping.mode_audiences == ("ad_user_data", "ad_personalization")


def test_each_redis_url_of_the_readme_loads_and_names_what_it_says(tmp_path: Path) -> None:
    from popin.stores.connection import parse

    single, sentinel, cluster = [block for block in blocks("toml")
                                 if block.startswith('store = "redis')]
    path = tmp_path / "popin.toml"
    found = []
    for block in (single, sentinel, cluster):
        path.write_text(block)
        found.append(parse(load_settings(path).store))
    assert [(target.scheme, len(target.hosts), target.master, target.password)
            for target in found] == [("redis", 1, "", "s3cret"),
                                     ("redis+sentinel", 3, "popin-master", "s3cret"),
                                     ("redis+cluster", 3, "", "s3cret")]


def test_consent_tool_defaults_are_the_documented_ones() -> None:
    from popin.core.site import ConsentMap

    table = README[README.index("### Consent tools"):README.index("**IAB TCF v2.2.**")]
    default = ConsentMap()
    for level, purposes, types in (
            ("storage", default.tcf_storage, default.mode_storage),
            ("personalisation", default.tcf_personalisation, default.mode_personalisation),
            ("audiences", default.tcf_audiences, default.mode_audiences)):
        row = next(line for line in table.splitlines() if line.startswith(f"| `{level}` |"))
        cells = [cell.strip() for cell in row.split("|")]
        assert cells[3] == ", ".join(map(str, purposes)), row
        assert cells[4] == ", ".join(f"`{kind}`" for kind in types), row


def test_the_two_commands_and_ci_agree() -> None:
    commands = [block.strip() for block in blocks("sh")]
    assert "bash scripts/serve" in commands and "bash scripts/test" in commands
    assert "exec bash scripts/test" in (ROOT / ".ci" / "run").read_text()
    assert "popin serve" in (ROOT / "scripts" / "serve").read_text()


def test_every_documented_command_exists() -> None:
    documented = set(re.findall(r"^\| `popin ([a-z]+(?: [a-z-]+)?)", README, re.MULTILINE))
    assert documented == {"init", "serve", "rules check", "rules explain", "rules preview",
                          "keys create",
                          "bookings list", "audiences list", "admin set-password",
                          "widget build"}
    examples = {"rules explain": ["events.jsonl"], "rules check": ["rules"],
                "rules preview": ["waxing-help"],
                "keys create": ["--scope", "events"], "bookings list": ["--day", "2026-11-24"]}
    for command in documented:
        # parse_args raises SystemExit on an unknown command or option.
        parser().parse_args([*command.split(), *examples.get(command, [])])


def test_documented_widget_size_is_true() -> None:
    claimed = re.search(r"weighs about (\d+) KB gzipped", README)
    assert claimed
    assert round(size_of(BUILT.read_text()).gzipped / 1024) == int(claimed[1])


def test_every_trigger_condition_and_action_is_documented() -> None:
    from popin.core.rules.actions import ACTIONS
    from popin.core.rules.conditions import FIELDS
    from popin.core.rules.triggers import COMPILERS

    for name in [*COMPILERS, *ACTIONS]:
        assert f"`{name}:" in README, f"trigger/action {name!r} is not in the README"
    for name in FIELDS:
        assert f"`{name}`" in README or f"`{name}:" in README, f"condition {name!r} undocumented"


def test_every_api_path_has_a_curl_example() -> None:
    from popin.web.api.openapi import document

    curls = [line for line in README.splitlines() if line.startswith("curl")]
    for path, operations in document()["paths"].items():
        prefix = path.split("{")[0]
        for method in operations:
            wanted = [line for line in curls if prefix in line
                      and (("-X DELETE" in line) == (method == "delete"))]
            assert wanted, f"no curl example for {method.upper()} {path}"


def test_layout_names_every_folder_and_module_of_the_package() -> None:
    layout = README[README.index("## Layout"):]
    server = ROOT / "server"
    for entry in server.iterdir():
        if entry.is_dir() and (entry / "__init__.py").exists():
            assert f"`{entry.name}/`" in layout, f"server/{entry.name}/ is not in the Layout"
        elif entry.suffix == ".py" and entry.stem not in ("__init__", "__main__"):
            assert f"`{entry.name}`" in layout, f"server/{entry.name} is not in the Layout"
    for entry in (server / "core").iterdir():
        name = f"{entry.name}/" if entry.is_dir() else entry.name
        if entry.name != "__init__.py" and entry.name != "__pycache__":
            assert f"`{name}`" in layout, f"server/core/{name} is not in the Layout"


def test_every_limit_is_documented_with_its_default() -> None:
    from dataclasses import fields

    from popin.config import Limits

    for limit in fields(Limits):
        row = next((line for line in README.splitlines()
                    if line.startswith("|") and f"`{limit.name}`" in line), None)
        assert row is not None, f"limit {limit.name!r} is not in the README's table"
        default = getattr(Limits(), limit.name)
        assert f"{default:g}" in row, f"{limit.name}: the README's default is not {default}"

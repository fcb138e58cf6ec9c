"""Rule files: every error case in cases/rule_errors/ names its line and reason."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from popin.cli import main
from popin.core.rules.campaign import (
    DEFAULT_CAP_PER_SESSION,
    DEFAULT_QUIET_AFTER_DISMISS,
    load_rules,
)
from popin.core.rules.triggers import DwellTrigger, PageviewTrigger
from popin.core.visitor.facts import Facts
from popin.core.visitor.profile import Profile

ROOT = Path(__file__).resolve().parent.parent
ERROR_CASES = sorted((Path(__file__).parent / "cases" / "rule_errors").glob("*.yaml"))
EXPECTED = re.compile(r"^# error: (\d+): (.*)$")


@pytest.mark.parametrize("path", ERROR_CASES, ids=[case.stem for case in ERROR_CASES])
def test_rule_error_names_file_line_and_reason(path: Path) -> None:
    expected = EXPECTED.match(path.read_text().splitlines()[0])
    assert expected, f"{path.name} must start with '# error: LINE: REASON'"
    loaded = load_rules(path)
    assert loaded.rules == []
    assert len(loaded.errors) == 1
    error = loaded.errors[0]
    assert (error.file, error.line) == (str(path), int(expected[1]))
    assert expected[2].strip() in error.reason
    assert str(error).startswith(f"{path}:{expected[1]}: ")


def test_shipped_playbook_is_valid() -> None:
    loaded = load_rules(ROOT / "rules")
    assert loaded.errors == []
    assert len(loaded.rules) >= 5


def test_broken_file_is_left_out_and_the_others_load(tmp_path: Path) -> None:
    (tmp_path / "good.yaml").write_text(
        "rules:\n  - {id: good, trigger: {event: go}, popin: {title: t, body: b}}\n")
    (tmp_path / "bad.yml").write_text("rules:\n  - {id: bad, trigger: {event: go}}\n")
    (tmp_path / "notes.txt").write_text("not a rule file")
    loaded = load_rules(tmp_path)
    assert [rule.id for rule in loaded.rules] == ["good"]
    assert [Path(error.file).name for error in loaded.errors] == ["bad.yml"]
    assert len(loaded.files) == 2


def test_rule_id_clash_across_files_keeps_the_first(tmp_path: Path) -> None:
    rule = "rules:\n  - {id: same, trigger: {event: go}, popin: {title: t, body: b}}\n"
    (tmp_path / "a.yaml").write_text(rule)
    (tmp_path / "b.yaml").write_text(rule)
    loaded = load_rules(tmp_path)
    assert [rule.file for rule in loaded.rules] == [str(tmp_path / "a.yaml")]
    assert "already used at" in loaded.errors[0].reason


def test_defaults_are_polite_and_triggers_compile(tmp_path: Path) -> None:
    (tmp_path / "r.yaml").write_text(
        "rules:\n"
        "  - id: d\n    trigger: {dwell: {keyword: ' Waxing ', seconds: 8}}\n"
        "    popin: {title: t, body: b}\n"
        "  - id: p\n    trigger: {pageview: /a/*/c}\n    when: {visits: {min: 2, max: 3}}\n"
        "    quiet_after_dismiss: 90m\n    popin: {title: t, body: b}\n")
    dwell, page = load_rules(tmp_path).rules
    assert dwell.trigger == DwellTrigger("waxing", 8.0, ("waxing",))
    assert dwell.cap_per_session == DEFAULT_CAP_PER_SESSION
    assert dwell.quiet_after_dismiss == DEFAULT_QUIET_AFTER_DISMISS
    assert isinstance(page.trigger, PageviewTrigger)
    assert page.trigger.regex.match("/a/b/c") and not page.trigger.regex.match("/a/b/b/c")
    assert page.quiet_after_dismiss == 5400
    visits = [page.condition(Facts(Profile("v", visits=n))) for n in (1, 2, 3, 4)]
    assert visits == [False, True, True, False]


def test_rules_check_command_reports_file_line_reason(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("rules:\n  - id: a\n    trigger: {event: go}\n    popin: {title: t}\n")
    assert main(["rules", "check", str(tmp_path)]) == 1
    captured = capsys.readouterr()
    assert f"{bad}:4: 'popin' needs 'body'" in captured.err
    assert "1 error(s)" in captured.out
    assert main(["rules", "check", str(ROOT / "rules")]) == 0
    assert "files are valid" in capsys.readouterr().out
    assert main(["rules", "check", str(tmp_path / "missing")]) == 2


def test_rules_check_dry_renders_templates(tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "r.yaml").write_text(
        "rules:\n  - id: loop\n    trigger: {event: signup}\n"
        "    popin: {title: t, body: '{% for i in cart.items %}{{ i }}{% endfor %}'}\n")
    assert main(["rules", "check", str(tmp_path)]) == 0
    err = capsys.readouterr().err
    assert f"{tmp_path / 'r.yaml'}:2: rule 'loop': its template fails with a sample visitor" in err


def test_shipped_playbook_has_no_warnings(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["rules", "check", str(ROOT / "rules")]) == 0
    assert "warning" not in capsys.readouterr().err


def test_unknown_events_warn_unless_declared(tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    rule = "rules:\n  - {id: r, trigger: {event: add_to_kart}, tag: t}\n"
    (tmp_path / "r.yaml").write_text(rule)
    assert main(["rules", "check", str(tmp_path)]) == 0
    err = capsys.readouterr().err
    assert "event 'add_to_kart' is not a known event (did you mean 'add_to_cart'?)" in err
    (tmp_path / "r.yaml").write_text("events: [add_to_kart]\n" + rule)
    assert main(["rules", "check", str(tmp_path)]) == 0
    assert "warning" not in capsys.readouterr().err


def test_a_conversion_on_an_unknown_event_warns(tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "r.yaml").write_text("rules:\n  - {id: r, trigger: {event: signup}, tag: t, "
                                     "conversion: order_plcaed}\n")
    assert main(["rules", "check", str(tmp_path)]) == 0
    assert ("event 'order_plcaed' is not a known event (did you mean 'order_placed'?)"
            in capsys.readouterr().err)


@pytest.mark.parametrize(("conversion", "warns"), [
    ("add_to_cart", True),
    ("{event: add_to_cart, where: {sku: skis}}", True),    # the trigger's own product
    ("{event: add_to_cart, where: {sku: [wax, poles]}}", False),
    ("order_placed", False),
])
def test_a_conversion_on_its_own_trigger_warns(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                               conversion: str, warns: bool) -> None:
    (tmp_path / "r.yaml").write_text(
        "rules:\n  - {id: r, trigger: {event: {name: add_to_cart, props: {sku: skis}}}, "
        f"popin: {{title: t, body: b}}, conversion: {conversion}}}\n")
    assert main(["rules", "check", str(tmp_path)]) == 0
    err = capsys.readouterr().err
    assert ("its conversion is its own trigger event 'add_to_cart'" in err) is warns, err


def test_a_conversion_where_must_hold_values(tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "r.yaml").write_text(
        "rules:\n  - id: r\n    trigger: {event: signup}\n    tag: t\n"
        "    conversion: {event: order_placed, where: {sku: {deep: 1}}}\n")
    assert main(["rules", "check", str(tmp_path)]) == 1
    assert "r.yaml:5: 'where.sku' must be a value or a list of values" in capsys.readouterr().err

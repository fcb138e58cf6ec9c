"""Rule files: every error case in cases/rule_errors/ names its line, column and reason,
and `popin rules check` reports them the way a compiler does."""

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
# One line per error the file must give, in order: "# error: LINE:COLUMN: REASON" (FILE in
# the reason stands for the case's own path).
EXPECTED = re.compile(r"^# error: (\d+):(\d+): (.*)$")


@pytest.mark.parametrize("path", ERROR_CASES, ids=[case.stem for case in ERROR_CASES])
def test_rule_error_names_file_line_column_and_reason(path: Path) -> None:
    header = [EXPECTED.match(line) for line in path.read_text().splitlines()
              if line.startswith("# error:")]
    assert header and all(header), f"{path.name} must start with '# error: LINE:COLUMN: REASON'"
    expected = [(int(match[1]), int(match[2]), match[3].replace("FILE", str(path)))
                for match in header if match]
    loaded = load_rules(path)
    assert loaded.rules == []
    found = [(error.line, error.column, error.reason) for error in loaded.errors]
    assert found == expected
    for error, (line, column, reason) in zip(loaded.errors, expected, strict=True):
        assert str(error) == f"{path}:{line}:{column}: {reason}"
        # What is wrong; what was expected.
        assert re.search(r".; expected .", reason), reason


def test_shipped_playbook_is_valid() -> None:
    loaded = load_rules(ROOT / "rules")
    assert loaded.errors == []
    assert len(loaded.rules) >= 5


def test_broken_file_is_left_out_and_the_others_load(tmp_path: Path) -> None:
    (tmp_path / "good.yaml").write_text(
        "rules:\n  - {id: good, trigger: {event: signup}, popin: {title: t, body: b}}\n")
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
    assert (f"{bad}:4:12: 'popin' has no 'body'; expected 'title' and 'body'\n"
            "  4 |     popin: {title: t}\n"
            "    |            ^\n") in captured.err
    assert captured.out == ("0 valid rules in 0 of 1 file; 1 error in 1 file (left out until "
                            "fixed)\n")
    assert main(["rules", "check", str(ROOT / "rules")]) == 0
    assert re.fullmatch(r"\d+ valid rules in \d+ files\n", capsys.readouterr().out)
    assert main(["rules", "check", str(tmp_path / "missing")]) == 2


def test_rules_check_reports_every_error_of_every_file_in_one_run(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Four typos in one file and a YAML slip in another: one run tells all five, in
    order, each at its line and column with the line shown, and the good file loads."""
    (tmp_path / "a.yaml").write_text(
        "rules:\n"
        "  - id: a\n    trigger: {dwel: {keyword: wax, seconds: 5}}\n"
        "    when: {devise: mobile}\n    popin: {title: t, bdy: b}\n"
        "  - id: b\n    trigger: {event: go}\n    popin: {title: t, body: b}\n"
        "    cta: {label: Go, url: /x}\n")
    (tmp_path / "b.yaml").write_text(
        "rules:\n  - id: c\n    trigger: {event: go}\n    popin:\n      title: t\n"
        "      body: b\n     cta: {label: Go, url: /x}\n")
    (tmp_path / "c.yaml").write_text(
        "rules:\n  - {id: good, trigger: {event: signup}, popin: {title: t, body: b}}\n")
    assert main(["rules", "check", str(tmp_path)]) == 1
    captured = capsys.readouterr()
    located = re.findall(r"^(\S+\.yaml):(\d+):(\d+): (.*)$", captured.err, re.MULTILINE)
    assert [(Path(file).name, int(line), int(column)) for file, line, column, _ in located] == [
        ("a.yaml", 3, 15), ("a.yaml", 4, 12), ("a.yaml", 5, 23), ("a.yaml", 9, 5),
        ("b.yaml", 7, 6)]
    reasons = [reason for *_, reason in located]
    assert "'cta' belongs inside 'popin', not in the rule itself" in reasons[3]
    assert reasons[4].startswith("'cta' is indented 5 spaces, which lines up with nothing")
    assert "expected 6 like 'body' on line 6 or 4 like 'popin' on line 4" in reasons[4]
    for parser_word in ("block mapping", "<block end>", "while parsing", "did you mean 'tag'"):
        assert parser_word not in captured.err
    assert "  7 |      cta: {label: Go, url: /x}\n    |      ^\n" in captured.err
    assert captured.out == ("1 valid rule in 1 of 3 files; 5 errors in 2 files (left out "
                            "until fixed)\n")


@pytest.mark.parametrize(("counts", "said"), [
    ((1, 1, 0, 0, 0), "1 valid rule in 1 file"),
    ((2, 2, 0, 0, 1), "2 valid rules in 2 files; 1 warning"),
    ((0, 1, 1, 1, 0), "0 valid rules in 0 of 1 file; 1 error in 1 file (left out until fixed)"),
    ((3, 4, 1, 2, 2), "3 valid rules in 3 of 4 files; 2 errors in 1 file (left out until "
                      "fixed); 2 warnings"),
])
def test_rules_check_counts_in_words(counts: tuple[int, int, int, int, int], said: str) -> None:
    from popin.cli import check_summary

    assert check_summary(*counts) == said


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
    assert ("r.yaml:5:47: 'where.sku' holds a mapping or nothing; expected a value or a list "
            "of values") in capsys.readouterr().err


def test_rules_check_judges_a_webhook_by_the_allow_list_in_popin_toml(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Plain http to a host popin.toml does not list is refused at every call: the check
    says so where the URL is written; listed, the same rule is valid."""
    rules = tmp_path / "rules"
    rules.mkdir()
    hook = rules / "hook.yaml"
    hook.write_text("rules:\n  - id: crm\n    trigger: {event: signup}\n"
                    "    webhook: {url: \"http://127.0.0.1:8101/hook\"}\n")
    config = tmp_path / "popin.toml"
    site = '[[sites]]\nkey = "shop"\norigins = ["https://shop.example"]\n'
    config.write_text(f'rules = "{rules}"\n{site}')
    assert main(["--config", str(config), "rules", "check"]) == 1
    captured = capsys.readouterr()
    assert (f"{hook}:4:15: 'webhook.url' is 'http://127.0.0.1:8101/hook', plain http to "
            "'127.0.0.1', which is not listed in [webhooks] allow_http_hosts") in captured.err
    assert "0 valid rules" in captured.out
    config.write_text(f'rules = "{rules}"\n[webhooks]\nallow_http_hosts = ["127.0.0.1"]\n'
                      f'{site}')
    assert main(["--config", str(config), "rules", "check"]) == 0
    assert capsys.readouterr().out == "1 valid rule in 1 file\n"


@pytest.mark.parametrize("url", ["javascript:alert(1)", " JaVa\tscript:alert(1)",
                                 "\x01java\nscript:alert(1)", "data:text/html,<b>x</b>",
                                 "JAVASCRIPT&colon;alert(1)", "vbscript:x"])
def test_a_link_the_browser_reads_as_script_or_data_is_refused(url: str) -> None:
    from markupsafe import Markup

    from popin.core.rules.templates import link_refusal, link_url

    assert link_refusal(link_url(Markup(url))) is not None


@pytest.mark.parametrize("url", ["/demo/contact.html", "https://shop.example/x",
                                 "mailto:a@shop.example", "tel:+3312345678", "?page=2",
                                 "//shop.example/x", "HTTPS://shop.example/"])
def test_links_to_pages_mail_and_phone_are_kept(url: str) -> None:
    from markupsafe import Markup

    from popin.core.rules.templates import link_refusal, link_url

    assert link_refusal(link_url(Markup(url))) is None

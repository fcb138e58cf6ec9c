"""Campaign files: one YAML file per campaign in `rules/`, parsed and compiled once.

    campaign: Help with waxing
    rules:
      - id: waxing-help
        trigger: {dwell: {keyword: waxing, seconds: 6}}
        when: {device: [desktop, tablet]}
        popin:
          title: Need a hand with waxing?
          body: <p>Our team answers in minutes.</p>
          cta: {label: Ask us, url: /demo/contact.html}
        cap: {per_session: 1, per_visitor: 3}
        quiet_after_dismiss: 7d
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .conditions import Condition, always, compile_condition
from .schema import Reader
from .templates import PopinTemplate, compile_popin
from .triggers import Trigger, compile_trigger
from .yamlsource import Mapping, SourceError, load_file

FILE_KEYS = ("campaign", "description", "rules")
RULE_KEYS = ("id", "description", "trigger", "when", "popin", "cap", "quiet_after_dismiss",
             "priority")
RULE_ID = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,63}$")
RULE_FILE_SUFFIXES = (".yaml", ".yml")

# Defaults that keep a campaign polite when its author says nothing.
DEFAULT_CAP_PER_SESSION = 1
DEFAULT_QUIET_AFTER_DISMISS = 7 * 86400.0


@dataclass(frozen=True, slots=True)
class Rule:
    id: str
    trigger: Trigger
    popin: PopinTemplate
    condition: Condition = always
    cap_per_session: int = DEFAULT_CAP_PER_SESSION
    cap_per_visitor: int | None = None
    quiet_after_dismiss: float = DEFAULT_QUIET_AFTER_DISMISS
    priority: int = 0
    campaign: str = ""
    file: str = ""
    line: int = 0


@dataclass(slots=True)
class Loaded:
    rules: list[Rule] = field(default_factory=list)
    errors: list[SourceError] = field(default_factory=list)
    files: list[str] = field(default_factory=list)


def parse_rule(node: Mapping, reader: Reader, campaign: str) -> Rule:
    reader.keys(node, "rule", RULE_KEYS, required=["id", "trigger", "popin"])
    rule_id = node["id"]
    if not isinstance(rule_id, str) or not RULE_ID.match(rule_id):
        reader.fail(node.line_of("id"), f"rule id {rule_id!r} must be lower-case letters, "
                    "digits, '-', '_' or '.', at most 64")
    cap_per_session, cap_per_visitor = DEFAULT_CAP_PER_SESSION, None
    if "cap" in node:
        cap = reader.mapping(node["cap"], node.line_of("cap"), "'cap'")
        reader.keys(cap, "'cap'", ["per_session", "per_visitor"])
        if "per_session" in cap:
            cap_per_session = reader.count(cap["per_session"], cap.line_of("per_session"),
                                           "'per_session'")
        if "per_visitor" in cap:
            cap_per_visitor = reader.count(cap["per_visitor"], cap.line_of("per_visitor"),
                                           "'per_visitor'")
    quiet = DEFAULT_QUIET_AFTER_DISMISS
    if "quiet_after_dismiss" in node:
        quiet = reader.duration(node["quiet_after_dismiss"], node.line_of("quiet_after_dismiss"),
                                "'quiet_after_dismiss'")
    priority = node.get("priority", 0)
    if isinstance(priority, bool) or not isinstance(priority, int):
        reader.fail(node.line_of("priority"),
                    f"'priority' must be a whole number, not {priority!r}")
    return Rule(
        id=rule_id,
        trigger=compile_trigger(node["trigger"], node.line_of("trigger"), reader),
        popin=compile_popin(node["popin"], node.line_of("popin"), reader),
        condition=(compile_condition(node["when"], node.line_of("when"), reader)
                   if "when" in node else always),
        cap_per_session=cap_per_session,
        cap_per_visitor=cap_per_visitor,
        quiet_after_dismiss=quiet,
        priority=priority,
        campaign=campaign,
        file=reader.file,
        line=node.line,
    )


def parse_document(document: Any, file: str) -> list[Rule]:
    reader = Reader(file)
    if document is None:
        reader.fail(1, "the file is empty; expected 'rules:' with a list of rules")
    top = reader.mapping(document, 1, "a rule file")
    reader.keys(top, "the file", FILE_KEYS, required=["rules"])
    campaign = top.get("campaign", Path(file).stem)
    if not isinstance(campaign, str):
        reader.fail(top.line_of("campaign"), "'campaign' must be text")
    items = reader.sequence(top["rules"], top.line_of("rules"), "'rules'")
    return [parse_rule(reader.mapping(item, line, "each rule"), reader, campaign)
            for item, line in zip(items, items.item_lines, strict=True)]


def rule_files(folder: Path) -> list[Path]:
    if folder.is_file():
        return [folder]
    return sorted(p for p in folder.rglob("*") if p.suffix in RULE_FILE_SUFFIXES and p.is_file())


def load_rules(folder: Path) -> Loaded:
    """Parse every rule file; a broken file is reported and left out, the others load."""
    loaded = Loaded()
    seen: dict[str, Rule] = {}
    for path in rule_files(folder):
        loaded.files.append(str(path))
        try:
            rules = parse_document(load_file(path), str(path))
            _check_unique_ids(rules, seen)
        except SourceError as error:
            loaded.errors.append(error)
            continue
        except (OSError, UnicodeDecodeError) as error:
            loaded.errors.append(SourceError(str(path), 1, f"cannot read: {error}"))
            continue
        seen.update((rule.id, rule) for rule in rules)
        loaded.rules.extend(rules)
    return loaded


def _check_unique_ids(rules: list[Rule], seen: dict[str, Rule]) -> None:
    here: dict[str, Rule] = {}
    for rule in rules:
        first = seen.get(rule.id) or here.get(rule.id)
        if first is not None:
            raise SourceError(rule.file, rule.line,
                              f"rule id {rule.id!r} is already used at {first.file}:{first.line}")
        here[rule.id] = rule

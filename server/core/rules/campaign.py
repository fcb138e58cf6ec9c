"""Campaign files: one YAML file per campaign in `rules/`, parsed and compiled once.

    campaign: Help with waxing
    events: [newsletter_opened]     # custom events this site sends
    keywords:                       # groups, usable by dwell, search and interest
      ski-care: [waxing, wax, glide]
    catalog:                        # for cross-sell and out-of-stock personalisation
      skis: {name: Nordic Glide skis, url: /demo/skis.html, complements: [wax, poles]}
    rules:
      - id: waxing-help
        category: behavioural       # functional, transactional, event, behavioural
        trigger: {dwell: {keyword: ski-care, seconds: 6}}
        when: {device: [desktop, tablet]}
        popin:
          title: Need a hand with waxing?
          body: <p>Our team answers in minutes.</p>
          cta: {label: Ask us, url: /demo/contact.html}
        tag: ski-care
        cap: {per_session: 1, per_visitor: 3, window: 30d}
        quiet_after_dismiss: 7d
        priority: 0
        exclusive: care-offers      # at most one rule of this group per session
        holdout: 10                 # percent kept out, to measure lift (default: the site's)
        expires: 7d                 # a pop-in for an absent visitor waits this long
        conversion: {event: order_placed, within: 7d, value: total}   # what success is
        variants:                   # an experiment: versions of the pop-in, stable per visitor
          - {id: plain, weight: 50}
          - {id: direct, weight: 50, title: Waxing in five minutes, delay: 3s}
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..wire.events import Scalar
from ..wire.protocol import EVENT_NAME
from .actions import (
    ACTIONS,
    VISUAL_ACTIONS,
    TagAction,
    WebhookAction,
    compile_tag,
    compile_visual,
    compile_webhook,
)
from .conditions import Condition, Scope, always, compile_condition
from .schema import PLACES, Reader, closest, did_you_mean, listing, place
from .templates import PopinTemplate
from .triggers import Keywords, Trigger, compile_trigger
from .variants import Variant, compile_variants
from .yamlsource import Mapping, SourceError, read

FILE_KEYS = ("campaign", "description", "keywords", "catalog", "events", "rules")
RULE_KEYS = ("id", "description", "category", "trigger", "when", *ACTIONS, "cap",
             "quiet_after_dismiss", "priority", "exclusive", "holdout", "expires", "conversion",
             "variants")
CATEGORIES = ("functional", "transactional", "event", "behavioural")
CAP_KEYS = ("per_session", "per_visitor", "window")
CONVERSION_KEYS = ("event", "within", "value", "where")
CATALOG_KEYS = ("name", "url", "price", "complements", "alternatives")
# Expected answers, not marketing: they do not spend the visitor's fatigue budget.
BUDGET_EXEMPT = frozenset({"functional", "transactional"})
RULE_ID = re.compile(r"\A[a-z0-9][a-z0-9_.-]{0,63}\Z")
RULE_FILE_SUFFIXES = (".yaml", ".yml")

# Defaults that keep a campaign polite when its author says nothing.
DEFAULT_CAP_PER_SESSION = 1
DEFAULT_QUIET_AFTER_DISMISS = 7 * 86400.0
# How long a pop-in for an absent visitor waits in their outbox for the next visit.
DEFAULT_EXPIRES = 7 * 86400.0
# A conversion counts for the exposure (or hold-out) before it, this long at most.
# Short on purpose: the longer the window, the more a campaign is credited for sales it
# had nothing to do with.
DEFAULT_CONVERSION_WINDOW = 86400.0
# The dashboard judges 30 days: a longer window would credit what it cannot show.
MAX_CONVERSION_WINDOW = 30 * 86400.0


@dataclass(frozen=True, slots=True)
class Conversion:
    """What counts as success for a rule: an event (widget or backend) soon after, with
    the properties `where` asks for (a value, or a list of allowed values)."""

    event: str
    within: float = DEFAULT_CONVERSION_WINDOW
    # The event property that carries revenue, when there is one.
    value: str = "value"
    where: tuple[tuple[str, tuple[Scalar, ...]], ...] = ()

    def matches(self, props: dict[str, Scalar]) -> bool:
        return all(props.get(key) in allowed for key, allowed in self.where)


@dataclass(frozen=True, slots=True)
class CatalogItem:
    name: str
    url: str = ""
    price: float | None = None
    complements: tuple[str, ...] = ()
    alternatives: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Rule:
    id: str
    trigger: Trigger
    visual: PopinTemplate | None = None
    tags: tuple[TagAction, ...] = ()
    webhooks: tuple[WebhookAction, ...] = ()
    condition: Condition = always
    category: str = "behavioural"
    cap_per_session: int = DEFAULT_CAP_PER_SESSION
    cap_per_visitor: int | None = None
    cap_window: float | None = None
    quiet_after_dismiss: float = DEFAULT_QUIET_AFTER_DISMISS
    priority: int = 0
    exclusive: str = ""
    # Percent kept out as a control group; None: the site's default for marketing rules.
    holdout: float | None = None
    expires: float = DEFAULT_EXPIRES
    conversion: Conversion | None = None
    variants: tuple[Variant, ...] = ()
    campaign: str = ""
    file: str = ""
    line: int = 0
    # Condition names used, for `popin rules check` (geo without a database, ...).
    uses: frozenset[str] = frozenset()
    # What the rule says, hashed: a paused rule resumes when its owner changes it.
    fingerprint: str = ""

    def holdout_share(self, site_default: float) -> float:
        """Percent of visitors kept out. Functional and transactional messages are answers
        a visitor expects: never held out. Marketing pop-ins (behavioural, and event:
        launches, invitations, promotions) follow the site's default."""
        if self.holdout is not None:
            return self.holdout
        if self.category not in BUDGET_EXEMPT and self.visual is not None:
            return site_default
        return 0.0


@dataclass(slots=True)
class Loaded:
    rules: list[Rule] = field(default_factory=list)
    errors: list[SourceError] = field(default_factory=list)
    files: list[str] = field(default_factory=list)
    keywords: Keywords = field(default_factory=dict)
    catalog: dict[str, CatalogItem] = field(default_factory=dict)
    # Custom event names the site says it sends (so `rules check` does not warn).
    events: set[str] = field(default_factory=set)
    # Where each catalog item is defined (file, line), for errors about it.
    catalog_places: dict[str, tuple[str, int]] = field(default_factory=dict)


def parse_rule(node: Mapping, reader: Reader, campaign: str, keywords: Keywords,
               allow_http_hosts: tuple[str, ...] = ()) -> Rule:
    """One rule. Each of its parts is checked even after an error in another, so that all
    are reported at once; a rule with any error raises them (already recorded).
    `allow_http_hosts`: popin.toml's [webhooks] allow_http_hosts."""
    errors = len(reader.errors)
    reader.keys(node, "rule", RULE_KEYS, go_on=True)
    # A key misspelt, or written outside the place it belongs to, is already reported.
    told = {closest(key, RULE_KEYS) for key in node if key not in RULE_KEYS} | {
        name for key in node if key not in RULE_KEYS
        for name, keys in PLACES.items() if key in keys}
    missing = [key for key in ("id", "trigger") if key not in node and key not in told]
    if missing:
        reader.note(node.line, f"the rule has no {' and no '.join(map(repr, missing))}; "
                    "expected 'id' and 'trigger'")
    rule_id = node.get("id", "")
    if "id" in node and (not isinstance(rule_id, str) or not RULE_ID.match(rule_id)):
        reader.note(node.line_of("id"), f"rule id {rule_id!r} is not a name; expected "
                    "lower-case letters, digits, '-', '_' or '.', at most 64")
    visual_keys = [key for key in VISUAL_ACTIONS if key in node]
    if len(visual_keys) > 1:
        reader.note(node.line_of(visual_keys[1]), f"{' and '.join(visual_keys)} cannot go "
                    "together; expected one of them (a rule shows one thing at a time)")
    if not any(key in node or key in told for key in ACTIONS):
        reader.note(node.line, f"rule {rule_id!r} does nothing; expected one of "
                    f"{listing(ACTIONS)}")
    category = node.get("category", "behavioural")
    if category not in CATEGORIES:
        reader.note(node.line_of("category"), f"unknown category {category!r}"
                    f"{did_you_mean(str(category), CATEGORIES)}; expected one of "
                    f"{', '.join(CATEGORIES)}")
    scope = Scope(str(rule_id), keywords)
    condition = (reader.attempt(compile_condition, node["when"], node.line_of("when"),
                                reader, scope) if "when" in node else always)
    trigger = (reader.attempt(compile_trigger, node["trigger"], node.line_of("trigger"),
                              reader, keywords) if "trigger" in node else None)
    visual = (reader.attempt(compile_visual, visual_keys[0], node[visual_keys[0]],
                             node.line_of(visual_keys[0]), reader) if visual_keys else None)
    tags = node.get("tag", [])
    tag_list = tags if isinstance(tags, list) else [tags]
    tag_actions = [reader.attempt(compile_tag, tag, node.line_of("tag"), reader)
                   for tag in tag_list]
    webhook = (reader.attempt(compile_webhook, node["webhook"], node.line_of("webhook"),
                              reader, allow_http_hosts) if "webhook" in node else None)
    variants = (reader.attempt(compile_variants, node["variants"], node.line_of("variants"),
                               reader, visual, visual_keys[0] if visual_keys else "")
                if "variants" in node else ())
    guards = _guards(node, reader, str(category))
    reader.check(errors)
    assert trigger is not None and condition is not None
    return Rule(
        id=rule_id,
        trigger=trigger,
        visual=visual,
        tags=tuple(tag for tag in tag_actions if tag is not None),
        webhooks=(webhook,) if webhook is not None else (),
        condition=condition,
        category=category,
        **guards,
        variants=variants or (),
        campaign=campaign,
        file=reader.file,
        line=node.line,
        uses=frozenset(scope.used),
        fingerprint=_fingerprint(node),
    )


def _fingerprint(node: Mapping) -> str:
    text = json.dumps(node, sort_keys=True, default=str, ensure_ascii=False)
    return hashlib.blake2b(text.encode(), digest_size=8).hexdigest()


def _guards(node: Mapping, reader: Reader, category: str) -> dict[str, Any]:
    """The rule's guards; each one's error is recorded and the others still checked."""
    guards: dict[str, Any] = {}
    if "cap" in node:
        reader.attempt(_cap, node, reader, guards)
    for key in ("quiet_after_dismiss", "expires"):
        if key in node:
            guards[key] = reader.attempt(reader.duration, node[key], node.line_of(key),
                                         f"{key!r}")
    if "priority" in node:
        priority = node["priority"]
        if isinstance(priority, bool) or not isinstance(priority, int):
            reader.note(node.line_of("priority"),
                        f"'priority' is {priority!r}; expected a whole number")
        guards["priority"] = priority
    if "exclusive" in node:
        guards["exclusive"] = reader.attempt(reader.text, node, "exclusive", max_length=64)
    if "holdout" in node:
        holdout = reader.attempt(reader.number, node["holdout"], node.line_of("holdout"),
                                 "'holdout'", minimum=0)
        if holdout is not None and holdout >= 100:
            reader.note(node.line_of("holdout"), f"'holdout' is {holdout:g}; expected the "
                        "percent kept out, below 100")
        if holdout and category in BUDGET_EXEMPT:
            reader.note(node.line_of("holdout"), f"a {category} rule has a holdout; expected "
                        "none: it answers what the visitor asked for and is never held out")
        guards["holdout"] = holdout
    if "conversion" in node:
        guards["conversion"] = reader.attempt(_conversion, node["conversion"],
                                              node.line_of("conversion"), reader)
    return guards


def _cap(node: Mapping, reader: Reader, guards: dict[str, Any]) -> None:
    cap = reader.mapping(node["cap"], node.line_of("cap"), "'cap'")
    reader.keys(cap, "'cap'", CAP_KEYS)
    for key in ("per_session", "per_visitor"):
        if key in cap:
            guards[f"cap_{key}"] = reader.count(cap[key], cap.line_of(key), f"'{key}'")
    if "window" in cap:
        if "per_visitor" not in cap:
            reader.fail(cap.line_of("window"), "'window' without 'per_visitor'; expected "
                        "'per_visitor' beside it, the cap the window applies to")
        guards["cap_window"] = reader.duration(cap["window"], cap.line_of("window"),
                                               "'window'")


def _conversion(value: Any, line: int, reader: Reader) -> Conversion:
    """conversion: order_placed, or {event: order_placed, within: 7d, value: total}"""
    if isinstance(value, str):
        if not EVENT_NAME.match(value):
            reader.fail(line, f"'conversion' is {value!r}; expected an event name")
        return Conversion(value)
    node = reader.mapping(value, line, "'conversion'")
    reader.keys(node, "'conversion'", CONVERSION_KEYS, required=["event"])
    event = reader.text(node, "event", max_length=64)
    if not EVENT_NAME.match(event):
        reader.fail(node.line_of("event"), f"'conversion.event' is {event!r}; expected an "
                    "event name")
    within = (reader.duration(node["within"], node.line_of("within"), "'within'")
              if "within" in node else DEFAULT_CONVERSION_WINDOW)
    if not 0 < within <= MAX_CONVERSION_WINDOW:
        reader.fail(node.line_of("within"), f"'within' is {within:g} seconds; expected a "
                    f"window after the pop-in of more than 0 and at most "
                    f"{MAX_CONVERSION_WINDOW / 86400:g} days")
    where: list[tuple[str, tuple[Scalar, ...]]] = []
    if "where" in node:
        wanted = reader.mapping(node["where"], node.line_of("where"), "'where'")
        for key, allowed in wanted.items():
            values = tuple(allowed) if isinstance(allowed, list) else (allowed,)
            if not values or not all(isinstance(item, str | int | float | bool)
                                     for item in values):
                reader.fail(wanted.line_of(key), f"'where.{key}' holds a mapping or nothing; "
                            "expected a value or a list of values")
            where.append((str(key), values))
    return Conversion(event, within, reader.text(node, "value", max_length=64)
                      if "value" in node else "value", tuple(where))


def _top(document: Any, file: str) -> tuple[Reader, Mapping]:
    reader = Reader(file)
    if document is None:
        reader.fail(1, "the file is empty; expected 'rules:' with a list of rules")
    top = reader.mapping(document, 1, "a rule file")
    reader.keys(top, "the file", FILE_KEYS, required=["rules"], go_on=True)
    return reader, top


def parse_shared(document: Any, file: str, loaded: Loaded) -> None:
    """First pass: keyword groups, catalog entries and declared events, for every file.
    Raises every error found in them at once."""
    reader, top = _top(document, file)
    if "events" in top:
        reader.attempt(_events, top, reader, loaded)
    if "keywords" in top:
        groups = reader.attempt(reader.mapping, top["keywords"], top.line_of("keywords"),
                                "'keywords'")
        for name, words in (groups or Mapping()).items():
            reader.attempt(_keyword_group, groups or Mapping(), name, words, reader, loaded)
    if "catalog" in top:
        catalog = reader.attempt(reader.mapping, top["catalog"], top.line_of("catalog"),
                                 "'catalog'")
        for sku, entry in (catalog or Mapping()).items():
            reader.attempt(_catalog_item, catalog or Mapping(), sku, entry, reader, loaded)
    reader.check()


def _events(top: Mapping, reader: Reader, loaded: Loaded) -> None:
    names = reader.sequence(top["events"], top.line_of("events"), "'events'")
    if not all(isinstance(name, str) for name in names):
        reader.fail(top.line_of("events"), "'events' holds something else than names; "
                    "expected a list of event names")
    loaded.events.update(names)


def _keyword_group(groups: Mapping, name: str, words: Any, reader: Reader,
                   loaded: Loaded) -> None:
    items = words if isinstance(words, list) else None
    if not items or not all(isinstance(word, str) and word.strip() for word in items):
        reader.fail(groups.line_of(name), f"keyword group {name!r} is not a list of words; "
                    "expected a list such as [waxing, wax, glide]")
    for word in items:
        if not word.strip().rstrip("*") or "*" in word.strip()[:-1]:
            reader.fail(groups.line_of(name), f"keyword {word!r} is neither a word nor a stem; "
                        "expected a word, or a stem ending in '*' (wax*)")
    key = name.strip().lower()
    if key in loaded.keywords:
        reader.fail(groups.line_of(name), f"keyword group {name!r} is defined twice; "
                    "expected each group once, in one file")
    loaded.keywords[key] = tuple(word.strip().lower() for word in items)


def _catalog_item(catalog: Mapping, sku: str, entry: Any, reader: Reader,
                  loaded: Loaded) -> None:
    item = reader.mapping(entry, catalog.line_of(sku), f"catalog item {sku!r}")
    reader.keys(item, f"catalog item {sku!r}", CATALOG_KEYS, required=["name"])
    price = item.get("price")
    loaded.catalog[sku] = CatalogItem(
        reader.text(item, "name", max_length=200), str(item.get("url", "")),
        None if price is None else reader.number(price, item.line_of("price"), "'price'"),
        tuple(item.get("complements", ())), tuple(item.get("alternatives", ())))
    loaded.catalog_places[sku] = (reader.file, catalog.line_of(sku))


def parse_document(document: Any, file: str, keywords: Keywords | None = None,
                   allow_http_hosts: tuple[str, ...] = ()) -> list[Rule]:
    """The rules of one file; raises every error found in it at once."""
    reader, top = _top(document, file)
    campaign = top.get("campaign", Path(file).stem)
    if not isinstance(campaign, str):
        reader.note(top.line_of("campaign"), f"'campaign' is {campaign!r}; expected the "
                    "campaign's name, as text")
    if keywords is None:
        shared = Loaded()
        parse_shared(document, file, shared)
        keywords = shared.keywords
    items = reader.sequence(top["rules"], top.line_of("rules"), "'rules'")
    rules = [reader.attempt(_parse_item, item, line, reader, str(campaign), keywords,
                            allow_http_hosts)
             for item, line in zip(items, items.item_lines, strict=True)]
    reader.check()
    return [rule for rule in rules if rule is not None]


def _parse_item(item: Any, line: int, reader: Reader, campaign: str,
                keywords: Keywords, allow_http_hosts: tuple[str, ...]) -> Rule:
    return parse_rule(reader.mapping(item, line, "each rule"), reader, campaign, keywords,
                      allow_http_hosts)


def rule_files(folder: Path) -> list[Path]:
    if folder.is_file():
        return [folder]
    return sorted(p for p in folder.rglob("*") if p.suffix in RULE_FILE_SUFFIXES and p.is_file())


def load_rules(folder: Path, allow_http_hosts: tuple[str, ...] = ()) -> Loaded:
    """Parse every rule file and report every error of every file; a file with an error
    is left out, the others load. `allow_http_hosts`: popin.toml's [webhooks]
    allow_http_hosts where the rules run (none by default, as there)."""
    loaded = Loaded()
    documents: list[tuple[Path, Any]] = []
    yaml_problems: list[SourceError] = []
    for path in rule_files(folder):
        loaded.files.append(str(path))
        try:
            document, problems = read(path.read_text(encoding="utf-8"), str(path))
        except (OSError, UnicodeDecodeError) as error:
            loaded.errors.append(SourceError(str(path), 1, f"cannot be read ({error}); "
                                             "expected a UTF-8 text file", 1))
            continue
        loaded.errors.extend(problems)
        yaml_problems.extend(problems)
        if document is None and problems:
            continue  # not YAML: nothing more can be read from it
        try:
            parse_shared(document, str(path), loaded)
        except SourceError as error:
            _record(loaded, error)
        documents.append((path, document))
    seen: dict[str, Rule] = {}
    for path, document in documents:
        try:
            rules = parse_document(document, str(path), loaded.keywords, allow_http_hosts)
        except SourceError as error:
            _record(loaded, error)
            continue
        clashes = _check_unique_ids(rules, seen)
        loaded.errors.extend(clashes)
        if clashes or any(error.file == str(path) for error in loaded.errors):
            continue
        seen.update((rule.id, rule) for rule in rules)
        loaded.rules.extend(rules)
    _check_catalog(loaded)
    # What YAML could not read (`title: {{ name }}`) leaves a value of another shape: the
    # YAML error says it all, not a second one on the same line.
    unread = {(error.file, error.line) for error in yaml_problems}
    loaded.errors = [error for error in loaded.errors
                     if error in yaml_problems or (error.file, error.line) not in unread]
    order = {file: index for index, file in enumerate(loaded.files)}
    loaded.errors.sort(key=lambda error: (order.get(error.file, len(order)), error.line,
                                          error.column))
    return loaded


def _record(loaded: Loaded, error: SourceError) -> None:
    """Every error `error` stands for, once (a file's top is read by both passes)."""
    known = {str(found) for found in loaded.errors}
    for each in error.errors:
        if str(each) not in known:
            known.add(str(each))
            loaded.errors.append(each)


def _check_catalog(loaded: Loaded) -> None:
    for sku, item in loaded.catalog.items():
        for other in (*item.complements, *item.alternatives):
            if other not in loaded.catalog:
                file, line = loaded.catalog_places.get(sku, ("catalog", 1))
                loaded.errors.append(SourceError(
                    file, line, f"catalog item {sku!r} refers to {other!r}, which is not in "
                    f"the catalog{did_you_mean(other, loaded.catalog)}; expected one of "
                    f"{', '.join(loaded.catalog)}"))


def _check_unique_ids(rules: list[Rule], seen: dict[str, Rule]) -> list[SourceError]:
    here: dict[str, Rule] = {}
    clashes = []
    for rule in rules:
        first = seen.get(rule.id) or here.get(rule.id)
        if first is not None:
            clashes.append(SourceError(
                rule.file, rule.line, f"rule id {rule.id!r} is already used at "
                f"{first.file}:{first.line}; expected a name of its own"))
        else:
            here[rule.id] = rule
    return clashes


# Where each key of a rule file goes, for "'cta' belongs inside 'popin'".
place("file", FILE_KEYS)
place("rule", RULE_KEYS)
place("cap", CAP_KEYS)
place("conversion", CONVERSION_KEYS)

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
from .schema import Reader, did_you_mean
from .templates import PopinTemplate
from .triggers import Keywords, Trigger, compile_trigger
from .variants import Variant, compile_variants
from .yamlsource import Mapping, SourceError, load_file

FILE_KEYS = ("campaign", "description", "keywords", "catalog", "events", "rules")
RULE_KEYS = ("id", "description", "category", "trigger", "when", *ACTIONS, "cap",
             "quiet_after_dismiss", "priority", "exclusive", "holdout", "expires", "conversion",
             "variants")
CATEGORIES = ("functional", "transactional", "event", "behavioural")
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


def parse_rule(node: Mapping, reader: Reader, campaign: str, keywords: Keywords) -> Rule:
    reader.keys(node, "rule", RULE_KEYS, required=["id", "trigger"])
    rule_id = node["id"]
    if not isinstance(rule_id, str) or not RULE_ID.match(rule_id):
        reader.fail(node.line_of("id"), f"rule id {rule_id!r} must be lower-case letters, "
                    "digits, '-', '_' or '.', at most 64")
    visual_keys = [key for key in VISUAL_ACTIONS if key in node]
    if len(visual_keys) > 1:
        reader.fail(node.line_of(visual_keys[1]), f"a rule shows one thing at a time: "
                    f"{' and '.join(visual_keys)} cannot go together")
    if not any(key in node for key in ACTIONS):
        reader.fail(node.line, f"rule {rule_id!r} does nothing: add one of {', '.join(ACTIONS)}")
    category = node.get("category", "behavioural")
    if category not in CATEGORIES:
        reader.fail(node.line_of("category"), f"unknown category {category!r}"
                    f"{did_you_mean(str(category), CATEGORIES)}; expected one of "
                    f"{', '.join(CATEGORIES)}")
    scope = Scope(rule_id, keywords)
    condition = (compile_condition(node["when"], node.line_of("when"), reader, scope)
                 if "when" in node else always)
    tags = node.get("tag", [])
    tag_list = tags if isinstance(tags, list) else [tags]
    visual = (compile_visual(visual_keys[0], node[visual_keys[0]], node.line_of(visual_keys[0]),
                             reader) if visual_keys else None)
    variants = (compile_variants(node["variants"], node.line_of("variants"), reader, visual,
                                 visual_keys[0] if visual_keys else "")
                if "variants" in node else ())
    return Rule(
        id=rule_id,
        trigger=compile_trigger(node["trigger"], node.line_of("trigger"), reader, keywords),
        visual=visual,
        tags=tuple(compile_tag(tag, node.line_of("tag"), reader) for tag in tag_list),
        webhooks=((compile_webhook(node["webhook"], node.line_of("webhook"), reader),)
                  if "webhook" in node else ()),
        condition=condition,
        category=category,
        **_guards(node, reader, category),
        variants=variants,
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
    guards: dict[str, Any] = {}
    if "cap" in node:
        cap = reader.mapping(node["cap"], node.line_of("cap"), "'cap'")
        reader.keys(cap, "'cap'", ["per_session", "per_visitor", "window"])
        for key in ("per_session", "per_visitor"):
            if key in cap:
                guards[f"cap_{key}"] = reader.count(cap[key], cap.line_of(key), f"'{key}'")
        if "window" in cap:
            if "per_visitor" not in cap:
                reader.fail(cap.line_of("window"), "'window' applies to 'per_visitor': add it")
            guards["cap_window"] = reader.duration(cap["window"], cap.line_of("window"),
                                                   "'window'")
    if "quiet_after_dismiss" in node:
        guards["quiet_after_dismiss"] = reader.duration(
            node["quiet_after_dismiss"], node.line_of("quiet_after_dismiss"),
            "'quiet_after_dismiss'")
    if "priority" in node:
        priority = node["priority"]
        if isinstance(priority, bool) or not isinstance(priority, int):
            reader.fail(node.line_of("priority"),
                        f"'priority' must be a whole number, not {priority!r}")
        guards["priority"] = priority
    if "exclusive" in node:
        guards["exclusive"] = reader.text(node, "exclusive", max_length=64)
    if "expires" in node:
        guards["expires"] = reader.duration(node["expires"], node.line_of("expires"), "'expires'")
    if "holdout" in node:
        holdout = reader.number(node["holdout"], node.line_of("holdout"), "'holdout'", minimum=0)
        if holdout >= 100:
            reader.fail(node.line_of("holdout"), "'holdout' is the percent kept out, below 100")
        if holdout and category in BUDGET_EXEMPT:
            reader.fail(node.line_of("holdout"), f"a {category} rule answers what the visitor "
                        "asked for and is never held out: remove 'holdout'")
        guards["holdout"] = holdout
    if "conversion" in node:
        guards["conversion"] = _conversion(node["conversion"], node.line_of("conversion"),
                                           reader)
    return guards


def _conversion(value: Any, line: int, reader: Reader) -> Conversion:
    """conversion: order_placed, or {event: order_placed, within: 7d, value: total}"""
    if isinstance(value, str):
        if not EVENT_NAME.match(value):
            reader.fail(line, f"'conversion' {value!r} is not an event name")
        return Conversion(value)
    node = reader.mapping(value, line, "'conversion'")
    reader.keys(node, "'conversion'", ["event", "within", "value", "where"], required=["event"])
    event = reader.text(node, "event", max_length=64)
    if not EVENT_NAME.match(event):
        reader.fail(node.line_of("event"), f"'conversion.event' {event!r} is not an event name")
    within = (reader.duration(node["within"], node.line_of("within"), "'within'")
              if "within" in node else DEFAULT_CONVERSION_WINDOW)
    if not 0 < within <= MAX_CONVERSION_WINDOW:
        reader.fail(node.line_of("within"), f"'within' is a window after the pop-in, more "
                    f"than 0 and at most {MAX_CONVERSION_WINDOW / 86400:g} days")
    where: list[tuple[str, tuple[Scalar, ...]]] = []
    if "where" in node:
        wanted = reader.mapping(node["where"], node.line_of("where"), "'where'")
        for key, allowed in wanted.items():
            values = tuple(allowed) if isinstance(allowed, list) else (allowed,)
            if not values or not all(isinstance(item, str | int | float | bool)
                                     for item in values):
                reader.fail(wanted.line_of(key), f"'where.{key}' must be a value or a list "
                            "of values")
            where.append((str(key), values))
    return Conversion(event, within, reader.text(node, "value", max_length=64)
                      if "value" in node else "value", tuple(where))


def _top(document: Any, file: str) -> tuple[Reader, Mapping]:
    reader = Reader(file)
    if document is None:
        reader.fail(1, "the file is empty; expected 'rules:' with a list of rules")
    top = reader.mapping(document, 1, "a rule file")
    reader.keys(top, "the file", FILE_KEYS, required=["rules"])
    return reader, top


def parse_shared(document: Any, file: str, loaded: Loaded) -> None:
    """First pass: keyword groups, catalog entries and declared events, for every file."""
    reader, top = _top(document, file)
    if "events" in top:
        names = reader.sequence(top["events"], top.line_of("events"), "'events'")
        if not all(isinstance(name, str) for name in names):
            reader.fail(top.line_of("events"), "'events' must be a list of event names")
        loaded.events.update(names)
    if "keywords" in top:
        groups = reader.mapping(top["keywords"], top.line_of("keywords"), "'keywords'")
        for name, words in groups.items():
            items = words if isinstance(words, list) else None
            if not items or not all(isinstance(word, str) and word.strip() for word in items):
                reader.fail(groups.line_of(name), f"keyword group {name!r} must be a list of "
                            "words")
            for word in items:
                if not word.strip().rstrip("*") or "*" in word.strip()[:-1]:
                    reader.fail(groups.line_of(name), f"keyword {word!r}: a trailing '*' "
                                "matches every word starting so (wax*), nothing else")
            key = name.strip().lower()
            if key in loaded.keywords:
                reader.fail(groups.line_of(name), f"keyword group {name!r} is defined twice")
            loaded.keywords[key] = tuple(word.strip().lower() for word in items)
    if "catalog" in top:
        catalog = reader.mapping(top["catalog"], top.line_of("catalog"), "'catalog'")
        for sku, entry in catalog.items():
            item = reader.mapping(entry, catalog.line_of(sku), f"catalog item {sku!r}")
            reader.keys(item, f"catalog item {sku!r}",
                        ["name", "url", "price", "complements", "alternatives"],
                        required=["name"])
            price = item.get("price")
            loaded.catalog[sku] = CatalogItem(
                reader.text(item, "name", max_length=200), str(item.get("url", "")),
                None if price is None else reader.number(price, item.line_of("price"), "'price'"),
                tuple(item.get("complements", ())), tuple(item.get("alternatives", ())))


def parse_document(document: Any, file: str, keywords: Keywords | None = None) -> list[Rule]:
    reader, top = _top(document, file)
    campaign = top.get("campaign", Path(file).stem)
    if not isinstance(campaign, str):
        reader.fail(top.line_of("campaign"), "'campaign' must be text")
    if keywords is None:
        shared = Loaded()
        parse_shared(document, file, shared)
        keywords = shared.keywords
    items = reader.sequence(top["rules"], top.line_of("rules"), "'rules'")
    return [parse_rule(reader.mapping(item, line, "each rule"), reader, campaign, keywords)
            for item, line in zip(items, items.item_lines, strict=True)]


def rule_files(folder: Path) -> list[Path]:
    if folder.is_file():
        return [folder]
    return sorted(p for p in folder.rglob("*") if p.suffix in RULE_FILE_SUFFIXES and p.is_file())


def load_rules(folder: Path) -> Loaded:
    """Parse every rule file; a broken file is reported and left out, the others load."""
    loaded = Loaded()
    documents: list[tuple[Path, Any]] = []
    for path in rule_files(folder):
        loaded.files.append(str(path))
        try:
            document = load_file(path)
            parse_shared(document, str(path), loaded)
            documents.append((path, document))
        except SourceError as error:
            loaded.errors.append(error)
        except (OSError, UnicodeDecodeError) as error:
            loaded.errors.append(SourceError(str(path), 1, f"cannot read: {error}"))
    seen: dict[str, Rule] = {}
    for path, document in documents:
        try:
            rules = parse_document(document, str(path), loaded.keywords)
            _check_unique_ids(rules, seen)
        except SourceError as error:
            loaded.errors.append(error)
            continue
        seen.update((rule.id, rule) for rule in rules)
        loaded.rules.extend(rules)
    _check_catalog(loaded)
    return loaded


def _check_catalog(loaded: Loaded) -> None:
    for sku, item in loaded.catalog.items():
        for other in (*item.complements, *item.alternatives):
            if other not in loaded.catalog:
                loaded.errors.append(SourceError(
                    "catalog", 1, f"item {sku!r} refers to unknown item {other!r}"
                    f"{did_you_mean(other, loaded.catalog)}"))


def _check_unique_ids(rules: list[Rule], seen: dict[str, Rule]) -> None:
    here: dict[str, Rule] = {}
    for rule in rules:
        first = seen.get(rule.id) or here.get(rule.id)
        if first is not None:
            raise SourceError(rule.file, rule.line,
                              f"rule id {rule.id!r} is already used at {first.file}:{first.line}")
        here[rule.id] = rule

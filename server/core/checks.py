"""Warnings about rules that load but will not behave as their author expects."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable

from .context import template_context
from .rules.campaign import Rule
from .rules.conditions import GEO_FIELDS
from .rules.engine import RuleSet
from .rules.schema import did_you_mean
from .rules.templates import RenderError
from .rules.triggers import AfterTrigger, DwellTrigger, EventTrigger, PageviewTrigger
from .visitor.facts import Facts
from .visitor.profile import CartLine, Profile
from .wire.events import Custom, PageView

# Events popin itself, the demo shop and the site's backend conventionally send.
KNOWN_EVENTS = frozenset({
    "add_to_cart", "remove_from_cart", "checkout_started", "order_placed", "search",
    "signup", "login", "purchase", "shipped", "delivered", "out_of_stock", "back_in_stock",
    "support_ticket", "newsletter_signup", "contact_request", "survey_answered",
})


def _where(rule: Rule) -> str:
    return f"{rule.file}:{rule.line}: rule {rule.id!r}"


def _trigger_key(rule: Rule) -> str | None:
    trigger = rule.trigger
    if isinstance(trigger, PageviewTrigger):
        return f"pageview {trigger.pattern}" if trigger.count == 1 else None
    if isinstance(trigger, DwellTrigger):
        return f"dwell {trigger.watch} {trigger.seconds:g}s"
    if isinstance(trigger, EventTrigger):
        return f"event {trigger.name} {sorted(trigger.props)}"
    return None


def _converts_on_its_own_trigger(rule: Rule) -> bool:
    conversion, trigger = rule.conversion, rule.trigger
    if conversion is None or not isinstance(trigger, EventTrigger) or (
            trigger.name != conversion.event):
        return False
    # Told apart when the conversion asks for a property value the trigger's event lacks.
    return conversion.matches(dict(trigger.props))


def render_warnings(ruleset: RuleSet) -> list[str]:
    """Render every template once with a sample visitor, so that template errors which
    only show at run time (a missing filter, `cart.items` being a method) show now."""
    sku = next(iter(ruleset.catalog), "sample")
    profile = Profile("sample-visitor", visits=2, first_name="Sam", birthday="1990-01-01",
                      interests={"sample": 10.0}, cart={sku: CartLine("Sample", 10.0, 1)})
    facts = Facts(profile, now=1.8e9)
    page = PageView("https://shop.example/sample?q=sample", "/sample", "Sample page")
    event = Custom("add_to_cart", {"sku": sku, "price": 10, "name": "Sample", "query": "s"})
    warnings = []
    for rule in ruleset.rules:
        if rule.visual is None:
            continue
        try:
            rule.visual.render(template_context(event, facts, page, "sample", ruleset))
        except RenderError as error:
            warnings.append(f"{_where(rule)}: its template fails with a sample visitor: {error}")
    return warnings


def rule_warnings(rules: Iterable[Rule], geo_available: bool,
                  declared_events: Iterable[str] = ()) -> list[str]:
    rules = list(rules)
    warnings: list[str] = []
    events = KNOWN_EVENTS | set(declared_events)
    for rule in rules:
        geo = sorted(set(GEO_FIELDS) & rule.uses)
        if geo and not geo_available:
            warnings.append(f"{_where(rule)}: geo conditions ({', '.join(geo)}) are unavailable: "
                            "no MaxMind-format database is configured (geoip in popin.toml or "
                            "--geoip); they will never hold")
        if rule.cap_per_session == 0 or rule.cap_per_visitor == 0:
            warnings.append(f"{_where(rule)}: a cap of 0 means it can never fire")
        names = []
        if isinstance(rule.trigger, EventTrigger):
            names = [rule.trigger.name]
        elif isinstance(rule.trigger, AfterTrigger):
            names = [rule.trigger.event, *rule.trigger.without]
        if rule.conversion is not None:
            names.append(rule.conversion.event)
        if rule.conversion is not None and _converts_on_its_own_trigger(rule):
            warnings.append(f"{_where(rule)}: its conversion is its own trigger event "
                            f"{rule.conversion.event!r} (a conversion after the pop-in)"
                            " with nothing to tell them apart: every later one counts, even "
                            "more of what the visitor came for; add 'where:' to the "
                            "conversion, e.g. where: {sku: wax}")
        for name in names:
            if name not in events:
                warnings.append(f"{_where(rule)}: event {name!r} is not a known event"
                                f"{did_you_mean(name, events)}; if the site sends it, list it "
                                "under 'events:' in a rule file")
    overlapping: defaultdict[tuple[str, int], list[Rule]] = defaultdict(list)
    for rule in rules:
        key = _trigger_key(rule)
        if key is not None and rule.visual is not None:
            overlapping[(key, rule.priority)].append(rule)
    for (key, priority), group in overlapping.items():
        if len(group) > 1:
            listed = ", ".join(f"{r.id} ({r.file}:{r.line})" for r in group)
            warnings.append(f"rules {listed} all show something on {key} with the same priority "
                            f"{priority}; set 'priority' to say which wins")
    return warnings

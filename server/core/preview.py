"""A rule's pop-in shown on the owner's own page before it goes live: rendered as a
visitor would get it, whatever its trigger, with a sample of what would trigger it, and
counted nowhere (no statistics, no history, no caps). The signed link that asks for it is
checked outside the core; here only what to show."""

from __future__ import annotations

from typing import Any

from .context import template_context
from .rules.campaign import Rule
from .rules.engine import RuleSet
from .rules.templates import DEFAULT_OFFSET, RenderError
from .rules.triggers import (
    DwellTrigger,
    EventTrigger,
    IdleTrigger,
    ScrollTrigger,
    SearchTrigger,
    TabReturnTrigger,
)
from .visitor.facts import Facts
from .wire.events import Custom, Dwell, Event, Idle, PageView, Scroll, TabReturn

# Pushes of previews carry this prefix: the session ignores the widget's reports of them.
PREVIEW_PREFIX = "preview."


class PreviewError(Exception):
    """Nothing to show: the rule shows nothing, or its template fails."""


def sample_event(rule: Rule, page: PageView | None) -> tuple[Event, str]:
    """What would have triggered the rule, as a template sees it; and the search text."""
    trigger = rule.trigger
    if isinstance(trigger, DwellTrigger):
        return Dwell(trigger.keyword, trigger.seconds), ""
    if isinstance(trigger, EventTrigger):
        return Custom(trigger.name, dict(trigger.props)), ""
    if isinstance(trigger, SearchTrigger):
        query = trigger.words[0].rstrip("*") if trigger.words else "skis"
        return Custom("search", {"query": query}), query
    if isinstance(trigger, ScrollTrigger):
        return Scroll(trigger.percent), ""
    if isinstance(trigger, IdleTrigger):
        return Idle(trigger.seconds), ""
    if isinstance(trigger, TabReturnTrigger):
        return TabReturn(trigger.seconds), ""
    return page or PageView("", "/"), ""


def preview_message(rule: Rule, variant: str, facts: Facts, page: PageView | None,
                    rules: RuleSet, unique: str) -> dict[str, Any]:
    visual = rule.visual
    for candidate in rule.variants:
        if candidate.id == variant:
            visual = candidate.visual
    if visual is None:
        raise PreviewError(f"rule {rule.id!r} shows nothing (it only tags or calls webhooks)")
    event, search = sample_event(rule, page)
    try:
        html = visual.render(template_context(event, facts, page, search, rules))
    except RenderError as error:
        raise PreviewError(f"rule {rule.id!r} does not render: {error}") from None
    message: dict[str, Any] = {
        "type": "show", "id": f"{PREVIEW_PREFIX}{unique}", "rule": rule.id, "preview": True,
        "kind": visual.kind, "placement": visual.placement, "html": html}
    if visual.slot:
        message["slot"] = visual.slot
    if visual.offset != DEFAULT_OFFSET:
        message["offset"] = list(visual.offset)
    return message

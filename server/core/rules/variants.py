"""Experiments: a rule's pop-in in several versions, each shown to a stable share of
visitors, so the numbers say which one works.

    popin: {title: Need a hand with waxing?, body: ..., cta: {label: Ask us, url: ...}}
    variants:
      - {id: plain, weight: 50}                                    # the pop-in as written
      - {id: direct, weight: 50, title: "Waxing in 5 minutes", delay: 3s}

A variant changes any of title, body, cta, placement (and slot, offset) and delay; what it does
not name stays as the rule's pop-in has it. A visitor keeps their variant for good: the
assignment is a hash of the visitor and the rule, as for the holdout (with its own salt,
so that who is held out and who sees which variant are independent).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace

from .schema import Reader
from .templates import (
    PLACEMENTS,
    PopinTemplate,
    compile_delay,
    compile_link,
    compile_offset,
    compile_template,
)
from .yamlsource import Mapping

VARIANT_KEYS = ("id", "weight", "title", "body", "cta", "placement", "slot", "delay", "offset")
VARIANT_ID = re.compile(r"\A[a-z0-9][a-z0-9_-]{0,31}\Z")
# Enough to compare a handful of ideas; more splits the traffic too thin to learn anything.
MAX_VARIANTS = 8


@dataclass(frozen=True, slots=True)
class Variant:
    id: str
    weight: float
    visual: PopinTemplate


def stats_key(rule_id: str, variant: str) -> str:
    """The statistics key of one variant: rule ids never hold ':'."""
    return f"{rule_id}:{variant}"


def split_key(key: str) -> tuple[str, str]:
    """(rule id, variant or '') from a statistics key."""
    rule_id, _, variant = key.partition(":")
    return rule_id, variant


def assign(variants: tuple[Variant, ...], share: float) -> Variant:
    """The variant for a visitor whose stable share (0 <= share < 1) is `share`."""
    total = sum(variant.weight for variant in variants)
    point = share * total
    for variant in variants:
        if point < variant.weight:
            return variant
        point -= variant.weight
    return variants[-1]


def compile_variants(value: object, line: int, reader: Reader,
                     base: PopinTemplate | None, base_kind: str) -> tuple[Variant, ...]:
    if base is None or base_kind != "popin":
        reader.fail(line, "'variants' without a 'popin'; expected a 'popin' whose versions "
                    "they are")
    items = reader.sequence(value, line, "'variants'")
    if not 2 <= len(items) <= MAX_VARIANTS:
        reader.fail(line, f"'variants' lists {len(items)}; expected 2 to {MAX_VARIANTS} "
                    "versions to compare")
    found: list[Variant] = []
    for item, item_line in zip(items, items.item_lines, strict=True):
        node = reader.mapping(item, item_line, "each variant")
        found.append(_variant(node, reader, base))
    seen: set[str] = set()
    for variant, item_line in zip(found, items.item_lines, strict=True):
        if variant.id in seen:
            reader.fail(item_line, f"variant id {variant.id!r} is used twice; expected each "
                        "once")
        seen.add(variant.id)
    if not any(variant.weight for variant in found):
        reader.fail(line, "every variant has weight 0; expected a weight above 0 for one "
                    "at least (else none would ever be shown)")
    return tuple(found)


def _variant(node: Mapping, reader: Reader, base: PopinTemplate) -> Variant:
    reader.keys(node, "each variant", VARIANT_KEYS, required=["id"])
    variant_id = node["id"]
    if not isinstance(variant_id, str) or not VARIANT_ID.match(variant_id):
        reader.fail(node.line_of("id"), f"variant id {variant_id!r} is not a name; expected "
                    "1-32 lower-case letters, digits, '-' or '_'")
    weight = (reader.number(node["weight"], node.line_of("weight"), "'weight'", minimum=0)
              if "weight" in node else 1.0)
    visual = base
    if "title" in node:
        visual = replace(visual, title=compile_template(node, "title", reader))
    if "body" in node:
        visual = replace(visual, body=compile_template(node, "body", reader))
    if "cta" in node:
        cta = reader.mapping(node["cta"], node.line_of("cta"), "'cta'")
        reader.keys(cta, "'cta'", ["label", "url"], required=["label", "url"])
        visual = replace(visual, links=(compile_link(cta, reader),))
    if "placement" in node:
        placement = node["placement"]
        if placement not in PLACEMENTS:
            reader.fail(node.line_of("placement"), f"unknown placement {placement!r}; "
                        f"expected one of {', '.join(PLACEMENTS)}")
        slot = reader.text(node, "slot", max_length=120) if placement == "inline" else ""
        if placement == "inline" and not slot:
            reader.fail(node.line_of("placement"), "placement 'inline' has no 'slot'; expected "
                        "'slot', the CSS selector of the page's reserved element")
        visual = replace(visual, placement=placement, slot=slot)
    elif "slot" in node:
        reader.fail(node.line_of("slot"), "'slot' without placement: inline; expected "
                    "placement: inline beside it, or no slot")
    if "delay" in node:
        visual = replace(visual, delay=compile_delay(node, reader))
    if "offset" in node:
        visual = replace(visual, offset=compile_offset(node, reader, visual.placement))
    return Variant(variant_id, weight, visual)

"""The editor's form written into a rule: each value that differs from what the form showed
is set (or removed when emptied); whatever the owner did not touch stays as written."""

from __future__ import annotations

from typing import Any

from ruamel.yaml.comments import CommentedMap, CommentedSeq

from ...core.rules.actions import VISUAL_ACTIONS
from .fields import ALL_FIELDS, CONDITION_ROWS, FLAG_TRIGGERS, TRIGGER
from .forms import applies, conditions, convert, drop, put, values
from .rows import apply_tags, apply_variants
from .texts import parse


def apply(rule: CommentedMap, form: dict[str, str]) -> None:
    """Change `rule` in place to say what `form` says."""
    shown = values(rule)
    trigger = form.get("trigger", "") or shown["trigger"]
    show = form.get("show", "") or shown["show"] or "popin"
    if trigger != shown["trigger"] and trigger in TRIGGER.choices:
        fresh = CommentedMap({trigger: True} if trigger in FLAG_TRIGGERS else {})
        fresh.fa.set_flow_style()
        _keep_place(rule, "trigger", fresh, after="category")
        shown = {**shown, **{field.name: "" for field in ALL_FIELDS
                             if field.only == f"trigger:{trigger}"}}
    if show != shown["show"]:
        old = shown["show"] if shown["show"] in VISUAL_ACTIONS else ""
        if show in VISUAL_ACTIONS:
            _keep_place(rule, show, CommentedMap(), after="trigger", instead=old)
        elif old:
            del rule[old]
        shown = {**shown, **{field.name: "" for field in ALL_FIELDS
                             if field.only == f"show:{show}"}}
    for field in ALL_FIELDS:
        if field.name in ("trigger", "show") or not applies(field, trigger, show):
            continue
        wanted = form.get(field.name)
        wanted = None if wanted is None else wanted.replace("\r\n", "\n")
        if wanted is None or wanted.strip() == shown.get(field.name, "").strip():
            continue
        if wanted.strip():
            put(rule, field.path, convert(field, wanted))
        else:
            drop(rule, field.path)
    _conditions(rule, form, shown)
    apply_variants(rule, form, shown)
    apply_tags(rule, form, shown, after=show if show in rule else "trigger")


def _keep_place(rule: CommentedMap, key: str, value: Any, after: str,
                instead: str = "") -> None:
    """Put `key` where `instead` was (or where it already is), else after `after`."""
    keys = list(rule)
    if key in rule:
        rule[key] = value
        return
    if instead and instead in rule:
        position = keys.index(instead)
        del rule[instead]
    else:
        position = keys.index(after) + 1 if after in rule else len(keys)
    rule.insert(position, key, value)


def _conditions(rule: CommentedMap, form: dict[str, str], shown: dict[str, str]) -> None:
    names = [f"when.{number}.{part}" for number in range(CONDITION_ROWS)
             for part in ("name", "value")]
    if all(form.get(name, shown[name]) == shown[name] for name in [*names, "when.mode"]):
        return
    mode = form.get("when.mode", "all")
    rows = [(form.get(f"when.{n}.name", "").strip(), form.get(f"when.{n}.value", ""))
            for n in range(CONDITION_ROWS)]
    # Rows the form has no room for stay as they are.
    _mode, kept = conditions(rule.get("when"))
    entries = [(name, parse(text)) for name, text in rows if name] + [
        (name, parse(text)) for name, text in kept[CONDITION_ROWS:]]
    if not entries:
        drop(rule, ("when",))
        return
    if mode == "any":
        items = CommentedSeq()
        for name, value in entries:
            item = CommentedMap({name: value})
            item.fa.set_flow_style()
            items.append(item)
        when = CommentedMap({"any": items})
    else:
        when = CommentedMap(entries)
        if mode == "not":
            when = CommentedMap({"not": when})
    _keep_place(rule, "when", when, after="trigger")


def new_rule(form: dict[str, str]) -> CommentedMap:
    """A rule from scratch: the form's values, in the order of the table."""
    rule = CommentedMap()
    for key in ("id", "description", "category"):
        if form.get(key, "").strip():
            rule[key] = form[key].strip()
    apply(rule, form)
    return rule

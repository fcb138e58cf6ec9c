"""The form's repeated rows: a pop-in's variants (each with its own title, text, button,
placement and delay) and the audiences a campaign tags visitors into. Each row is read from
the rule and written back only when the owner changed it, so a row left alone keeps its
style and comments; rows beyond the form's room stay as the file has them."""

from __future__ import annotations

from typing import Any

from ruamel.yaml.comments import CommentedMap, CommentedSeq

from ...core.rules.templates import PLACEMENTS
from .fields import TAG_ROWS, VARIANT_ROWS
from .texts import flow, parse

# Each variant's columns: the key in the file ("cta.label" is `cta: {label: ...}`), the
# column's heading; the variant's offset stays for the file alone, as the pop-in's does.
VARIANT_COLUMNS = (("id", "Version"), ("weight", "Weight"), ("title", "Title"),
                   ("body", "Text"), ("cta.label", "Button"), ("cta.url", "Button link"),
                   ("placement", "Placement"), ("slot", "Inside"), ("delay", "Delay"))
VARIANT_KEYS = tuple(key for key, _heading in VARIANT_COLUMNS)
VARIANT_PLACEMENTS = ("", *PLACEMENTS)
TAG_KEYS = ("audience", "days")
# Typed values, as YAML reads them; the rest is text.
_TYPED = ("weight", "days")


def _items(found: Any) -> list[Any]:
    return list(found) if isinstance(found, list) else ([] if found is None else [found])


def _get(item: Any, key: str) -> Any:
    for part in key.split("."):
        item = item.get(part) if isinstance(item, dict) else None
    return item


def row_values(rule: dict[str, Any]) -> dict[str, str]:
    """The variants' and the audiences' rows as the form opens on this rule."""
    found: dict[str, str] = {}
    variants = _items(rule.get("variants")) if isinstance(rule.get("variants"), list) else []
    for number in range(VARIANT_ROWS):
        item = variants[number] if number < len(variants) else {}
        for key in VARIANT_KEYS:
            found[f"variants.{number}.{key}"] = flow(_get(item, key))
    tags = _items(rule.get("tag"))
    for number in range(TAG_ROWS):
        item = tags[number] if number < len(tags) else None
        # `tag: name` is the audience alone, kept for the language's default days.
        found[f"tag.{number}.audience"] = flow(item if isinstance(item, str)
                                               else _get(item, "audience"))
        found[f"tag.{number}.days"] = flow(_get(item, "days"))
    return found


def _changed(form: dict[str, str], shown: dict[str, str], names: list[str]) -> bool:
    return any(form.get(name, shown[name]).strip() != shown[name].strip() for name in names)


def _flow_map() -> CommentedMap:
    fresh = CommentedMap()
    fresh.fa.set_flow_style()
    return fresh


def _set(item: CommentedMap, key: str, text: str) -> None:
    *parents, last = key.split(".")
    for part in parents:
        child = item.get(part)
        if not isinstance(child, CommentedMap):
            item[part] = child = _flow_map()
        item = child
    if text:
        item[last] = parse(text) if last in _TYPED else text
    else:
        item.pop(last, None)


def _drop_empty(item: CommentedMap) -> None:
    for key in [key for key, value in item.items() if isinstance(value, dict) and not value]:
        del item[key]


def apply_variants(rule: CommentedMap, form: dict[str, str], shown: dict[str, str]) -> None:
    names = [f"variants.{n}.{key}" for n in range(VARIANT_ROWS) for key in VARIANT_KEYS]
    if not _changed(form, shown, names):
        return
    found = rule.get("variants")
    items = found if isinstance(found, list) else CommentedSeq()
    gone = []
    for number in range(VARIANT_ROWS):
        row = {key: form.get(f"variants.{number}.{key}", "").strip() for key in VARIANT_KEYS}
        if not row["id"]:
            if number < len(items):
                gone.append(number)
            continue
        if number >= len(items):
            items.append(_flow_map())
        item = items[number]
        for key, text in row.items():
            if text != shown[f"variants.{number}.{key}"].strip():
                _set(item, key, text)
        _drop_empty(item)
    for number in reversed(gone):
        del items[number]
    if items:
        rule["variants"] = items
    else:
        rule.pop("variants", None)


def apply_tags(rule: CommentedMap, form: dict[str, str], shown: dict[str, str],
               after: str) -> None:
    """The audiences: one is written as the file had it (`tag: name` or a mapping), several
    as a list; a row the owner did not touch keeps its entry as written."""
    names = [f"tag.{n}.{key}" for n in range(TAG_ROWS) for key in TAG_KEYS]
    if not _changed(form, shown, names):
        return
    found = rule.get("tag")
    old = _items(found)
    wanted: list[Any] = []
    for number in range(max(TAG_ROWS, len(old))):
        entry = old[number] if number < len(old) else None
        if number >= TAG_ROWS:
            wanted.append(entry)
            continue
        audience, days = (form.get(f"tag.{number}.{key}", "").strip() for key in TAG_KEYS)
        if not audience:
            continue
        if entry is not None and not _changed(form, shown, [f"tag.{number}.{key}"
                                                           for key in TAG_KEYS]):
            wanted.append(entry)
        elif isinstance(entry, CommentedMap) or days:
            item = entry if isinstance(entry, CommentedMap) else _flow_map()
            _set(item, "audience", audience)
            _set(item, "days", days)
            wanted.append(item)
        else:
            wanted.append(audience)
    if not wanted:
        rule.pop("tag", None)
    elif len(wanted) == 1 and not isinstance(found, list):
        _place(rule, "tag", wanted[0], after)
    else:
        items = found if isinstance(found, CommentedSeq) else CommentedSeq()
        del items[:]
        items.extend(wanted)
        _place(rule, "tag", items, after)


def _place(rule: CommentedMap, key: str, value: Any, after: str) -> None:
    if key in rule:
        rule[key] = value
    else:
        keys = list(rule)
        rule.insert(keys.index(after) + 1 if after in rule else len(keys), key, value)

"""A rule (as ruamel reads it, comments and all) into the editor's form values, and the
form back into that rule. Only what the owner changed is written: a value left as shown
keeps its quoting, its flow or block style and the comments around it."""

from __future__ import annotations

from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import YAMLError
from ruamel.yaml.scalarstring import LiteralScalarString

from ...core.rules.actions import VISUAL_ACTIONS
from .fields import (
    ALL_FIELDS,
    CONDITION_ROWS,
    SHORTHANDS,
    VARIANT_ROWS,
    Field,
)

# New mappings under these keys are written {on: one line}, as the shipped playbook does.
FLOW_KEYS = ("trigger", "cap", "cta", "conversion", "tag", "webhook", "offset", "where",
             "props")
VARIANT_KEYS = ("id", "weight", "title", "body")
_SAFE = YAML(typ="safe", pure=True)


def flow(value: Any, nested: bool = False, bare: bool = False) -> str:
    """A value as a person types it in one field: `mobile, tablet`, `{min: 2}`; `bare`: a
    mapping without its braces (`sku: wax`)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, dict):
        inner = ", ".join(f"{key}: {flow(item, True)}" for key, item in value.items())
        return inner if bare else f"{{{inner}}}"
    if isinstance(value, list):
        inner = ", ".join(flow(item, True) for item in value)
        return f"[{inner}]" if nested else inner
    return "" if value is None else str(value)


def parse(text: str) -> Any:
    """What a person typed in one field, as YAML would read it; plain text otherwise."""
    text = text.strip()
    if "," in text and text[:1] not in "{[":
        return _styled([parse(part) for part in text.split(",") if part.strip()])
    try:
        value = _SAFE.load(text)
    except YAMLError:
        return text
    return _styled(value) if isinstance(value, dict | list) else (
        text if value is None else value)


def _styled(value: Any) -> Any:
    if isinstance(value, dict):
        node = CommentedMap((key, _styled(item)) for key, item in value.items())
        node.fa.set_flow_style()
        return node
    if isinstance(value, list):
        seq = CommentedSeq(_styled(item) for item in value)
        seq.fa.set_flow_style()
        return seq
    return value


def convert(field: Field, text: str) -> Any:
    text = text.replace("\r\n", "\n")
    if field.kind in ("number", "count", "duration", "value"):
        value = parse(text)
        return value if not isinstance(value, list) else text.strip()
    if field.kind == "list":
        return _styled([str(parse(part)) for part in text.split(",") if part.strip()])
    if field.kind == "map":
        return parse("{" + text + "}")
    if field.kind == "long" and "\n" in text.strip():
        return LiteralScalarString(text.strip() + "\n")
    return text.strip()


def get(node: Any, path: tuple[str, ...]) -> Any:
    for number, key in enumerate(path):
        if isinstance(node, list):
            node = node[0] if node else None
        if isinstance(node, str) and number and SHORTHANDS.get(path[number - 1]) == key:
            return node
        if not isinstance(node, dict):
            return None
        node = node.get(key)
    return node


def put(node: CommentedMap, path: tuple[str, ...], value: Any) -> None:
    *parents, last = path
    for number, key in enumerate(parents):
        child = node.get(key)
        if isinstance(child, list) and child:
            child = child[0]
        if isinstance(child, str) and SHORTHANDS.get(key) == path[number + 1] and (
                number + 1 == len(parents)):
            node[key] = value
            return
        if not isinstance(child, dict):
            fresh = CommentedMap()
            if key in FLOW_KEYS or node.fa.flow_style():
                fresh.fa.set_flow_style()
            if isinstance(child, str) and key in SHORTHANDS:
                fresh[SHORTHANDS[key]] = child
            node[key] = child = fresh
        node = child
    node[last] = value


def drop(node: Any, path: tuple[str, ...]) -> None:
    if not isinstance(node, dict) or path[0] not in node:
        return
    if len(path) == 1:
        del node[path[0]]
        return
    child = node[path[0]]
    if isinstance(child, list) and child:
        child = child[0]
    if isinstance(child, str) and SHORTHANDS.get(path[0]) == path[1]:
        del node[path[0]]
        return
    drop(child, path[1:])
    if isinstance(child, dict) and not child and node.get(path[0]) is child:
        del node[path[0]]


def trigger_kind(rule: dict[str, Any]) -> str:
    trigger = rule.get("trigger")
    return next(iter(trigger), "") if isinstance(trigger, dict) and trigger else ""


def show_kind(rule: dict[str, Any]) -> str:
    found = [key for key in VISUAL_ACTIONS if key in rule]
    return found[0] if found else ("nothing" if rule else "")


def applies(field: Field, trigger: str, show: str) -> bool:
    if not field.only:
        return True
    kind, name = field.only.split(":")
    return name == (trigger if kind == "trigger" else show)


def values(rule: dict[str, Any]) -> dict[str, str]:
    """The form as it opens on this rule."""
    found = {"trigger": trigger_kind(rule), "show": show_kind(rule)}
    for field in ALL_FIELDS:
        if field.name not in found:
            value = get(rule, field.path)
            # What the language assumes when the key is absent: left as is, stays absent.
            found[field.name] = (field.default if value is None
                                 else flow(value, bare=field.kind == "map"))
    mode, rows = conditions(rule.get("when"))
    found["when.mode"] = mode
    for number in range(CONDITION_ROWS):
        name, text = rows[number] if number < len(rows) else ("", "")
        found[f"when.{number}.name"], found[f"when.{number}.value"] = name, text
    found_variants = rule.get("variants")
    variants: list[Any] = found_variants if isinstance(found_variants, list) else []
    for number in range(VARIANT_ROWS):
        item = variants[number] if number < len(variants) else {}
        for key in VARIANT_KEYS:
            found[f"variants.{number}.{key}"] = flow(item.get(key) if isinstance(
                item, dict) else None)
    return found


def conditions(when: Any) -> tuple[str, list[tuple[str, str]]]:
    if not isinstance(when, dict):
        return "all", []
    mode, items = "all", dict(when)
    if len(when) == 1 and isinstance(when.get("not"), dict):
        mode, items = "not", dict(when["not"])
    elif (len(when) == 1 and isinstance(when.get("any"), list)
          and all(isinstance(item, dict) and len(item) == 1 for item in when["any"])):
        mode = "any"
        return mode, [(next(iter(item)), flow(next(iter(item.values()))))
                      for item in when["any"]]
    return mode, [(str(key), flow(value)) for key, value in items.items()]

"""A rule (as ruamel reads it, comments and all) into the editor's form values, and the
form back into that rule. Only what the owner changed is written: a value left as shown
keeps its quoting, its flow or block style and the comments around it."""

from __future__ import annotations

from typing import Any

from ruamel.yaml.comments import CommentedMap
from ruamel.yaml.scalarstring import LiteralScalarString

from ...core.rules.actions import VISUAL_ACTIONS
from .fields import ALL_FIELDS, CONDITION_ROWS, SHORTHANDS, Field
from .rows import row_values
from .texts import flow, parse, styled

# New mappings under these keys are written {on: one line}, as the shipped playbook does.
FLOW_KEYS = ("trigger", "cap", "cta", "conversion", "tag", "webhook", "offset", "where",
             "props")


def convert(field: Field, text: str) -> Any:
    text = text.replace("\r\n", "\n")
    if field.kind in ("number", "count", "duration", "value"):
        value = parse(text)
        return value if not isinstance(value, list) else text.strip()
    if field.kind == "list":
        return styled([str(parse(part)) for part in text.split(",") if part.strip()])
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
    found.update(row_values(rule))
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

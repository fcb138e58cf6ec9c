"""A value as a person types it in one field of the editor's form (`mobile, tablet`,
`{min: 2}`), and what they typed read back as YAML would read it."""

from __future__ import annotations

from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import YAMLError

_SAFE = YAML(typ="safe", pure=True)
# As for rule files (core.rules.yamlsource): a few characters of aliases can stand for
# billions of values, which building the form's value would expand.
MAX_VALUES = 2_000


class Unreadable(ValueError):
    """A field's value that stands for too much to be read; `text` is what was typed."""

    def __init__(self, text: str, message: str) -> None:
        super().__init__(message)
        self.text = text


def _expanded(value: Any, sizes: dict[int, int]) -> int:
    known = sizes.get(id(value))
    if known is not None:
        return known
    total = 1
    if isinstance(value, dict):
        total += sum(_expanded(item, sizes) for item in value.values())
    elif isinstance(value, list):
        total += sum(_expanded(item, sizes) for item in value)
    if total > MAX_VALUES:
        raise ValueError
    sizes[id(value)] = total
    return total


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
        return styled([parse(part) for part in text.split(",") if part.strip()])
    try:
        value = _SAFE.load(text)
        _expanded(value, {})
    except YAMLError:
        return text
    except (RecursionError, ValueError):
        raise Unreadable(text, f"this value stands for more than {MAX_VALUES:,} values or "
                         "nests too deep; expected a few words, numbers or a short list") from None
    return styled(value) if isinstance(value, dict | list) else (
        text if value is None else value)


def styled(value: Any) -> Any:
    if isinstance(value, dict):
        node = CommentedMap((key, styled(item)) for key, item in value.items())
        node.fa.set_flow_style()
        return node
    if isinstance(value, list):
        seq = CommentedSeq(styled(item) for item in value)
        seq.fa.set_flow_style()
        return seq
    return value

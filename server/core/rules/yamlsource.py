"""YAML that remembers where each value came from, so errors can say file:line."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml


class SourceError(Exception):
    """A problem in a rule file, located at file:line."""

    def __init__(self, file: str, line: int, reason: str) -> None:
        super().__init__(f"{file}:{line}: {reason}")
        self.file = file
        self.line = line
        self.reason = reason


class Mapping(dict[str, Any]):
    """A YAML mapping with the line of itself and of each key (1-based)."""

    line: int = 0
    key_lines: dict[str, int]

    def line_of(self, key: str) -> int:
        return self.key_lines.get(key, self.line)


class Sequence(list[Any]):
    line: int = 0
    item_lines: list[int]


class _Loader(yaml.SafeLoader):
    pass


def _mapping(loader: _Loader, node: yaml.MappingNode) -> Mapping:
    loader.flatten_mapping(node)
    result = Mapping()
    result.line = node.start_mark.line + 1
    result.key_lines = {}
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        line = key_node.start_mark.line + 1
        if not isinstance(key, str):
            raise yaml.MarkedYAMLError(problem=f"keys must be text, not {key!r}",
                                       problem_mark=key_node.start_mark)
        if key in result:
            raise yaml.MarkedYAMLError(
                problem=f"duplicate key {key!r} (first on line {result.key_lines[key]})",
                problem_mark=key_node.start_mark,
            )
        result[key] = loader.construct_object(value_node, deep=True)
        result.key_lines[key] = line
    return result


def _sequence(loader: _Loader, node: yaml.SequenceNode) -> Sequence:
    result = Sequence(loader.construct_object(child, deep=True) for child in node.value)
    result.line = node.start_mark.line + 1
    result.item_lines = [child.start_mark.line + 1 for child in node.value]
    return result


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping)
_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_SEQUENCE_TAG, _sequence)


def load(text: str, file: str) -> Any:
    """Parse one YAML document; syntax errors become `SourceError` at their line."""
    try:
        return yaml.load(text, Loader=_Loader)  # a SafeLoader subclass
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark or error.context_mark
        line = mark.line + 1 if mark else 1
        context = error.context
        if context and error.context_mark and error.context_mark.line + 1 != line:
            context = f"{context} started on line {error.context_mark.line + 1}"
        reason = ": ".join(part for part in (context, error.problem) if part)
        if "mapping values are not allowed" in reason or "but got '?'" in reason:
            reason += " (text holding ': ' or '?' must be quoted, e.g. title: \"Why: this?\")"
        raise SourceError(file, line, reason or "invalid YAML") from None
    except yaml.YAMLError as error:
        raise SourceError(file, 1, str(error)) from None


def load_file(path: Path) -> Any:
    return load(path.read_text(encoding="utf-8"), str(path))

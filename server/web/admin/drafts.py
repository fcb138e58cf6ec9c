"""Campaign files as the editor reads, checks and writes them. The file stays the truth: it
is read afresh for every form, checked exactly as `popin rules check` would check the
folder with the change in it, and replaced in one step, so the watcher never reads half
of it."""

from __future__ import annotations

import contextlib
import hashlib
import io
import itertools
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap
from ruamel.yaml.error import YAMLError
from ruamel.yaml.util import load_yaml_guess_indent

from ...core.rules.actions import VISUAL_ACTIONS
from ...core.rules.campaign import RULE_FILE_SUFFIXES, load_rules, rule_files
from ...core.rules.yamlsource import SourceError
from .fields import BY_NAME


def version_of(text: str) -> str:
    """What the owner opened: a second save over a file changed since is refused."""
    return hashlib.sha256(text.encode()).hexdigest()[:20]


def loader(text: str) -> YAML:
    """Round-trip YAML that writes back with the file's own indentation."""
    yaml = YAML()
    yaml.preserve_quotes = True
    yaml.width = 4096
    sequence, offset = 4, 2
    if text.strip():
        with contextlib.suppress(YAMLError):
            _document, guessed, dash = load_yaml_guess_indent(text)
            sequence, offset = guessed or sequence, dash if dash is not None else offset
    yaml.indent(mapping=_mapping_indent(text), sequence=sequence, offset=offset)
    return yaml


def _mapping_indent(text: str) -> int:
    """How far a person indents a key under a key: the most frequent step, else 2."""
    lines = [line for line in text.splitlines() if line.strip()
             and not line.lstrip().startswith("#")]
    steps: dict[int, int] = {}
    for above, below in itertools.pairwise(lines):
        key = above.lstrip(" -")
        if key.rstrip().endswith(":") and not below.lstrip().startswith("- "):
            step = (len(below) - len(below.lstrip())) - (len(above) - len(key))
            if step > 0:
                steps[step] = steps.get(step, 0) + 1
    return max(steps, key=lambda step: steps[step]) if steps else 2


def load(yaml: YAML, text: str) -> CommentedMap:
    document = yaml.load(text) if text.strip() else None
    if document is None:
        document = CommentedMap()
    if not isinstance(document, CommentedMap):
        raise ValueError("the file is not a mapping of keys to values")
    return document


def dump(yaml: YAML, document: Any) -> str:
    out = io.StringIO()
    yaml.dump(document, out)
    return out.getvalue()


def find(document: CommentedMap, rule_id: str) -> CommentedMap | None:
    rules = document.get("rules")
    for rule in rules if isinstance(rules, list) else []:
        if isinstance(rule, CommentedMap) and rule.get("id") == rule_id:
            return rule
    return None


def within(folder: Path, path: Path) -> bool:
    """A campaign file of this folder, never one reached through '..' or a link."""
    root = folder.resolve()
    target = path.resolve()
    return target.suffix in RULE_FILE_SUFFIXES and (target == root or target.is_relative_to(
        root if root.is_dir() else root.parent))


def linked(folder: Path, path: Path) -> str:
    """Why a campaign file is not written from here, or "": a save replaces the file, so
    through a link it would cut the link and leave the file it points to as it was."""
    base = folder if folder.is_dir() else folder.parent
    for part in (path, *path.parents):
        if part == base or base.is_relative_to(part):
            break
        if part.is_symlink():
            where = "outside the folder" if not within(folder, path) else "in the folder"
            return f"its file is a link {where}; edit it where it lives"
    return ""


def home_of(folder: Path, rule_id: str) -> Path:
    """Where a new campaign goes: a file of its own, or the one file the site has."""
    return folder if folder.is_file() else folder / f"{rule_id}.yaml"


@dataclass(frozen=True, slots=True)
class Checked:
    errors: list[SourceError]
    # Each rule of the checked file, by id: what the guard will know it by once loaded.
    fingerprints: dict[str, str]


def shown(folder: Path) -> str:
    """How a path in the site's campaign folder is said: from the site's own folder, as
    `popin rules check` says it there (rules/a.yaml), never from where it was checked."""
    return f"{folder.name}/" if folder.is_dir() else ""


def check(folder: Path, path: Path, text: str,
          allow_http_hosts: tuple[str, ...] = ()) -> Checked:
    """The errors `popin rules check` would report in `path` if it held `text`, with the
    folder's other files beside it (their keyword groups, their rule ids)."""
    with tempfile.TemporaryDirectory(prefix="popin-editor-") as scratch:
        copy = Path(scratch)
        base = folder if folder.is_dir() else folder.parent
        for file in rule_files(folder) if folder.exists() else []:
            if file.resolve() != path.resolve():
                (copy / file.relative_to(base)).parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(file, copy / file.relative_to(base))
        mine = copy / path.resolve().relative_to(base.resolve())
        mine.parent.mkdir(parents=True, exist_ok=True)
        mine.write_text(text, encoding="utf-8")
        loaded = load_rules(copy, allow_http_hosts)
        prefix = shown(folder)

        def said(reason: str) -> str:
            # A clash names the other rule's place, which is in the scratch copy.
            for scratch_path in {str(copy.resolve()), str(copy)}:
                reason = reason.replace(f"{scratch_path}{os.sep}", prefix)
            return reason

        # An error in another file keeps the whole folder's last good rules live: this
        # save would not go live either, so it is told as this file's.
        errors = [SourceError(str(path), error.line, said(error.reason), error.column)
                  if Path(error.file) == mine else SourceError(
                      str(path), 0, f"{prefix}{Path(error.file).relative_to(copy)}:"
                      f"{error.line}: {said(error.reason)} (another file of this site: until "
                      "it is fixed, no change to this site's campaigns goes live)")
                  for error in loaded.errors]
        return Checked(errors, {rule.id: rule.fingerprint for rule in loaded.rules
                                if Path(rule.file) == mine})


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    # A name the watcher and the loader ignore until it is complete.
    partial = path.with_name(f".{path.name}.saving")
    partial.write_text(text, encoding="utf-8")
    os.replace(partial, path)


def _places(node: Any, path: tuple[Any, ...]) -> list[tuple[int, int, tuple[Any, ...]]]:
    found: list[tuple[int, int, tuple[Any, ...]]] = []
    if isinstance(node, CommentedMap):
        for key, value in node.items():
            line, column = node.lc.key(key)
            found.append((line + 1, column + 1, (*path, key)))
            found += _places(value, (*path, key))
    elif isinstance(node, list):
        for number, value in enumerate(node):
            found += _places(value, (*path, number))
    return found


def field_of(text: str, rule_id: str, error: SourceError) -> str:
    """The form field an error in `rule_id` is about: its key on that line (the nearest
    before the column), else the last key above it; '' for the rule as a whole."""
    try:
        rule = find(load(loader(text), text), rule_id)
    except (YAMLError, ValueError):
        return ""
    if rule is None:
        return ""
    places = _places(rule, ())
    same = [place for place in places if place[0] == error.line and place[1] <= error.column]
    above = [place for place in places if place[0] < error.line]
    chosen = max(same, default=None) or (above[-1] if above else None)
    return _name(chosen[2]) if chosen else ""


def _name(path: tuple[Any, ...]) -> str:
    words = [str(part) for part in path]
    if words[0] in ("when", "variants", "tag"):
        return words[0]
    for size in range(len(words), 0, -1):
        if ".".join(words[:size]) in BY_NAME:
            return ".".join(words[:size])
    if words[0] in VISUAL_ACTIONS:
        return "show"
    return next((name for name in BY_NAME if name.startswith(words[0] + ".")), "")


def set_apart(yaml: YAML, document: CommentedMap, rule_id: str) -> str:
    """The file with `rule_id` written after a blank line, as people separate the rules
    they write by hand (ruamel keeps blank lines it read, but makes none)."""
    text = dump(yaml, document)
    rule = find(load(loader(text), text), rule_id)
    if rule is None:
        return text
    lines = text.splitlines(keepends=True)
    start = rule.lc.line
    if 0 < start < len(lines) and lines[start - 1].strip():
        lines.insert(start, "\n")
    return "".join(lines).rstrip("\n") + "\n"

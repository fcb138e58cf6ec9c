"""YAML that remembers where each value came from, so errors can say file:line:column; and
YAML's own syntax errors told in plain words, at the place a person has to fix."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml


class Mark(int):
    """A 1-based line number that also knows its 1-based column. It is an int, so the
    code that only cares about lines (and compares or prints them) needs no change;
    `Mark + n` is n lines further down, at the same column."""

    column: int

    def __new__(cls, line: int, column: int = 1) -> Mark:
        mark = super().__new__(cls, line)
        mark.column = column
        return mark

    def __add__(self, lines: int) -> Mark:
        return Mark(int(self) + lines, self.column)

    @classmethod
    def of(cls, mark: yaml.Mark) -> Mark:
        return cls(mark.line + 1, mark.column + 1)


class SourceError(Exception):
    """A problem in a rule file, located at file:line:column."""

    def __init__(self, file: str, line: int, reason: str, column: int = 0) -> None:
        self.file = file
        self.line = int(line)
        self.column = column or getattr(line, "column", 1)
        self.reason = reason
        super().__init__(f"{file}:{self.line}:{self.column}: {reason}")

    @property
    def errors(self) -> list[SourceError]:
        """Every error this one stands for (see `SourceErrors`)."""
        return [self]

    def excerpt(self, text: str) -> str:
        """The line of the error and a caret under its column, as compilers show them."""
        lines = text.splitlines()
        if not 1 <= self.line <= len(lines):
            return ""
        source = lines[self.line - 1].replace("\t", " ")
        number = str(self.line)
        column = min(self.column, len(source) + 1)
        return (f"  {number} | {source}\n"
                f"  {' ' * len(number)} | {' ' * (column - 1)}^")


class SourceErrors(SourceError):
    """Several errors of one file found in one pass; reads as the first of them."""

    def __init__(self, errors: list[SourceError]) -> None:
        ordered = sorted(errors, key=lambda error: (error.line, error.column))
        first = ordered[0]
        super().__init__(first.file, first.line, first.reason, first.column)
        self._errors = ordered

    @property
    def errors(self) -> list[SourceError]:
        return list(self._errors)


class Mapping(dict[str, Any]):
    """A YAML mapping with the place of itself and of each key."""

    line: Mark = Mark(0)
    key_lines: dict[str, Mark]

    def line_of(self, key: str) -> Mark:
        return self.key_lines.get(key, self.line)


class Sequence(list[Any]):
    line: Mark = Mark(0)
    item_lines: list[Mark]


# Far above any campaign file (10,000 rules in one file are about 200,000 values), far
# below what hurts: aliases let a few lines stand for billions of values ("billion laughs"),
# which any later walk over the document, an error message's repr among them, would expand.
MAX_VALUES = 1_000_000
MAX_DEPTH = 40


class _TooLarge(yaml.MarkedYAMLError):
    pass


class _Loader(yaml.SafeLoader):
    # Problems found while building values (a key given twice, a key that is not text):
    # each is reported and the rest of the file is still read.
    problems: list[tuple[yaml.Mark, str]]

    def compose_document(self) -> yaml.Node | None:
        document: yaml.Node | None = super().compose_document()
        if document is not None:
            _measure(document)
        return document


def _measure(root: yaml.Node) -> None:
    """Refuse a document whose values, aliases expanded, are too many or nest too deep
    (counted once per distinct node, so the count itself stays cheap)."""
    sizes: dict[int, int] = {}

    def size(node: yaml.Node, depth: int) -> int:
        if depth > MAX_DEPTH:
            raise _TooLarge(None, None, f"values nest more than {MAX_DEPTH} levels deep; "
                            "expected a flatter rule", node.start_mark)
        known = sizes.get(id(node))
        if known is not None:
            return known
        total = 1
        if isinstance(node, yaml.SequenceNode):
            total += sum(size(child, depth + 1) for child in node.value)
        elif isinstance(node, yaml.MappingNode):
            total += sum(size(key, depth + 1) + size(value, depth + 1)
                         for key, value in node.value)
        if total > MAX_VALUES:
            raise _TooLarge(None, None, f"this stands for more than {MAX_VALUES:,} values "
                            "(aliases expanded); expected a campaign file", node.start_mark)
        sizes[id(node)] = total
        return total

    size(root, 0)


def _key_problem(key: Any, mark: yaml.Mark) -> tuple[yaml.Mark, str]:
    lines = (mark.buffer or "").rstrip("\0").splitlines()
    if isinstance(key, dict | list):
        # `title: {{ name }}`: the braces make a mapping, whose first key is a mapping.
        line, column, reason = _after_value(lines, mark.line + 1, mark.column + 1)
        return _at(mark, line, column), reason
    source = lines[mark.line] if mark.line < len(lines) else ""
    match = re.match(r"[^\s:,{}\[\]]+", source[mark.column:])
    written = match[0] if match else ""
    if (key is None or isinstance(key, bool)) and written:
        return mark, (f"the key {written!r} reads as {'nothing' if key is None else 'true/false'}"
                      f" in YAML; expected a name, in quotes: \"{written}\"")
    return mark, f"the key {key!r} is not text; expected a name such as 'title'"


def _at(mark: yaml.Mark, line: int, column: int) -> yaml.Mark:
    return yaml.Mark(mark.name, 0, line - 1, column - 1, "", 0)


def _mapping(loader: _Loader, node: yaml.MappingNode) -> Mapping:
    loader.flatten_mapping(node)
    result = Mapping()
    result.line = Mark.of(node.start_mark)
    result.key_lines = {}
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        if not isinstance(key, str):
            loader.problems.append(_key_problem(key, key_node.start_mark))
            continue
        if key in result:
            loader.problems.append((key_node.start_mark, (
                f"{key!r} is given twice (first on line {result.key_lines[key]}); expected "
                "each key once in a mapping")))
            continue
        result[key] = loader.construct_object(value_node, deep=True)
        result.key_lines[key] = Mark.of(key_node.start_mark)
    return result


def _sequence(loader: _Loader, node: yaml.SequenceNode) -> Sequence:
    result = Sequence(loader.construct_object(child, deep=True) for child in node.value)
    result.line = Mark.of(node.start_mark)
    result.item_lines = [Mark.of(child.start_mark) for child in node.value]
    return result


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping)
_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_SEQUENCE_TAG, _sequence)


def read(text: str, file: str) -> tuple[Any, list[SourceError]]:
    """Parse one YAML document. A syntax error stops the reading: it is the only error
    and the document is None. Problems in the values (a key given twice, a key that is
    not text) come back with the document, all of them."""
    loader: _Loader | None = None
    try:
        loader = _Loader(text)
        loader.problems = []
        document = loader.get_single_data()
    except _TooLarge as error:
        mark = error.problem_mark
        assert mark is not None and error.problem is not None
        return None, [SourceError(file, mark.line + 1, error.problem, mark.column + 1)]
    except yaml.MarkedYAMLError as error:
        line, column, reason = plain_words(error, text)
        return None, [SourceError(file, line, reason, column)]
    except RecursionError:
        # The parser itself recurses per level, before _measure can count them.
        return None, [SourceError(file, 1, f"values nest more than {MAX_DEPTH} levels deep; "
                                  "expected a flatter rule", 1)]
    except yaml.reader.ReaderError as error:
        before = text[:error.position]
        line, column = before.count("\n") + 1, len(before) - (before.rfind("\n") + 1) + 1
        return None, [SourceError(file, line, f"a control character ({error.character!r}) "
                                  "is in the text; expected plain text", column)]
    except yaml.YAMLError as error:
        return None, [SourceError(file, 1, f"this is not YAML ({error}); expected a rule "
                                  "file", 1)]
    finally:
        if loader is not None:
            loader.dispose()
    problems = [SourceError(file, mark.line + 1, reason, mark.column + 1)
                for mark, reason in loader.problems]
    return document, problems


def load(text: str, file: str) -> Any:
    """Parse one YAML document; any problem raises `SourceError` (all of them at once)."""
    document, problems = read(text, file)
    if problems:
        raise SourceErrors(problems)
    return document


def load_file(path: Path) -> Any:
    return load(path.read_text(encoding="utf-8"), str(path))


# ---------------------------------------------------------------------------------------
# YAML's errors in plain words. The parser says what token it met ("expected <block end>,
# but found '<block mapping start>'"); a person needs to hear which line does not line up
# with which, or which text needs quotes.

_KEY = re.compile(r"(\s*(?:-\s+)*)([^\s#'\"{\[][^#]*?):(?:\s|$)")
_TOKENS = {"<block end>": "the end of the block", "<block mapping start>": "a new key",
           "<block sequence start>": "a list item", "<scalar>": "more text",
           "<stream end>": "the end of the file", "'?'": "a key", "'-'": "a list item"}


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip(" "))


def _content(lines: list[str], number: int) -> bool:
    text = lines[number - 1].strip() if 1 <= number <= len(lines) else ""
    return bool(text) and not text.startswith("#")


def _key_of(line: str) -> tuple[str, int] | None:
    """The key a line starts (after any '- '), and its 0-based column."""
    match = _KEY.match(line)
    return (match[2].strip(), len(match[1])) if match else None


def _value_of(line: str) -> tuple[str, str, int] | None:
    """(key, value, 0-based column of the value) of a `key: value` line."""
    match = _KEY.match(line)
    if not match:
        return None
    start = match.end()
    while start < len(line) and line[start] == " ":
        start += 1
    return match[2].strip(), line[start:].rstrip(), start


def _quoted(key: str, value: str) -> str:
    value = value.replace("\\", "\\\\").replace('"', '\\"')
    return f'{key}: "{value}"'


def _levels(lines: list[str], number: int) -> list[tuple[int, int, str]]:
    """The open blocks above line `number`: (column, line, what starts there), innermost
    first. A list item gives two levels: its '-' and the keys inside it."""
    found: list[tuple[int, int, str]] = []
    limit = 10_000
    for above in range(number - 1, 0, -1):
        line = lines[above - 1]
        if not _content(lines, above):
            continue
        indent = _indent(line)
        starts = []
        stripped = line[indent:]
        column = indent
        while stripped.startswith("- ") or stripped == "-":
            starts.append((column, above, "the list item"))
            step = 2 + len(stripped[2:]) - len(stripped[2:].lstrip(" "))
            column += step
            stripped = stripped[step:]
        key = _key_of(line)
        if key is not None and stripped:
            starts.append((column, above, f"{key[0]!r}"))
        for start in sorted(starts, reverse=True):
            if start[0] < limit:
                found.append(start)
                limit = start[0]
        if limit == 0:
            break
    return found


def _alignment(lines: list[str], number: int, column: int, what: str) -> str:
    levels = _levels(lines, number)
    dash = next((level for level in levels if level[0] == column and level[2] == "the list item"),
                None)
    if dash is not None and what != "this list item":
        inside = [level for level in levels if level[0] > column][-1:]
        more = f", or {inside[0][0]} spaces to put it in the item above" if inside else ""
        return (f"{what} is at the column of the '-' on line {dash[1]}; expected '- ' before "
                f"it to start a new list item{more}")
    inner = [level for level in levels if level[0] > column][-1:]
    outer = [level for level in levels if level[0] < column][:1]
    choices = [f"{col} like {name} on line {line}" for col, line, name in [*inner, *outer]]
    spaces = "space" if column == 1 else "spaces"
    if not choices:
        return f"{what} is indented {column} {spaces}; expected it to line up with the lines above"
    return (f"{what} is indented {column} {spaces}, which lines up with nothing above it; "
            f"expected {' or '.join(choices)}")


def plain_words(error: yaml.MarkedYAMLError, text: str) -> tuple[int, int, str]:
    """(line, column, reason) for a YAML error, the reason in the form
    "what is wrong; what was expected"."""
    lines = text.splitlines()
    mark = error.problem_mark or error.context_mark
    line, column = (mark.line + 1, mark.column + 1) if mark else (1, 1)
    context_at = ((error.context_mark.line + 1, error.context_mark.column + 1)
                  if error.context_mark else (line, column))
    problem, context = error.problem or "", error.context or ""
    source = lines[line - 1] if 1 <= line <= len(lines) else ""

    if "cannot start any token" in problem:
        character = problem.split("'")[1] if "'" in problem else "?"
        if character == "\\t":
            return line, column, ("a tab character; expected spaces (YAML indents with "
                                  "spaces only)")
        found = _value_of(source)
        if found and found[1][:1] in "{[":
            return _after_value(lines, line, column)
        if found and found[2] == column - 1:
            key, value, _start = found
            return line, column, (f"text cannot start with {character!r} in YAML; expected "
                                  f"it in quotes: {_quoted(key, value)}")
        return line, column, (f"text cannot start with {character!r} in YAML; expected it "
                              "in quotes")

    if problem == "mapping values are not allowed here":
        return _colon(lines, line, column)

    if "while scanning an alias" in context or "while scanning an anchor" in context:
        sign = "*" if "alias" in context else "&"
        return (*context_at, f"a lone {sign!r} starts a YAML {context.split()[-1]}; expected "
                             "the text in quotes")

    if "expected a single document" in context:
        return line, column, ("a second document starts here ('---'); expected one "
                              "campaign per file")

    if "found unexpected end of stream" in problem and "quoted scalar" in context:
        quote = lines[context_at[0] - 1][context_at[1] - 1] if _content(
            lines, context_at[0]) else '"'
        return (*context_at, f"this {quote} is never closed; expected a closing {quote} at "
                             "the end of the text")

    if "could not find expected ':'" in problem:
        cline, ccolumn = context_at
        word = lines[cline - 1].strip() if 1 <= cline <= len(lines) else ""
        return cline, ccolumn, (f"{word[:40]!r} has no ':' after it; expected "
                                "'key: value' (a name, a colon and a space, then the value)")

    if "while parsing a flow" in context:
        opener = "{" if "mapping" in context else "["
        closer = "}" if opener == "{" else "]"
        return (*context_at, f"this '{opener}' is not closed: at line {line}, column {column} "
                             f"YAML still reads inside it; expected ',' between its entries "
                             f"and a closing '{closer}'")

    if problem.startswith("expected <block end>") or "but found" in problem:
        found_token = problem.rsplit("but found ", 1)[-1]
        valued = _value_of(source)
        if found_token == "'<scalar>'" or (valued and valued[1][:1] in "{[\"'"
                                           and column - 1 > valued[2]):
            return _after_value(lines, line, column)
        if found_token in ("'}'", "']'"):
            return line, column, (f"{found_token} closes nothing; expected it removed, or "
                                  "its opening bracket earlier on the line")
        starts = _key_of(source)
        what = ("this list item" if found_token in ("'<block sequence start>'", "'-'")
                else repr(starts[0]) if starts else "this line")
        return line, column, _alignment(lines, line, column - 1, what)

    if "found unhashable key" in problem:
        return _after_value(lines, *context_at)

    if "undefined alias" in problem:
        name = problem.split("'")[1] if "'" in problem else ""
        return line, column, (f"'*{name}' refers to an anchor '&{name}' defined nowhere; "
                              "expected text starting with '*' in quotes")

    if "unknown escape character" in problem:
        return line, column, ("an unknown escape (a backslash) in double-quoted text; "
                              "expected single quotes, which keep backslashes as they are")

    if "could not determine a constructor for the tag" in problem:
        tag = problem.rsplit(" ", 1)[-1]
        return line, column, (f"the tag {tag} means nothing here; expected plain values "
                              "(rule files use no tags), or the text in quotes")

    said = ": ".join(part for part in (context, problem) if part)
    for token, words in _TOKENS.items():
        said = said.replace(token, words)
    return line, column, f"this is not valid YAML ({said}); expected a rule file"


def _colon(lines: list[str], line: int, column: int) -> tuple[int, int, str]:
    """': ' where YAML cannot take a new key: text holding ': ' without quotes, or a line
    indented under a key that already has a value."""
    source = lines[line - 1] if 1 <= line <= len(lines) else ""
    key = _key_of(source)
    if key is not None and source.index(":", key[1]) == column - 1:
        # The key starts this line: the line is read as the end of the value above it.
        above = next((number for number in range(line - 1, 0, -1) if _content(lines, number)),
                     0)
        previous = lines[above - 1] if above else ""
        previous_value = _value_of(previous)
        if previous_value and ":" in previous_value[1] and ": " not in previous_value[1]:
            word = previous_value[1]
        else:
            word = previous.strip().lstrip("- ")
        if ":" in word and ": " not in word and not word.endswith(":"):
            fixed = word.replace(":", ": ", 1)
            return above, _indent(previous) + 1 + previous.strip().find(word), (
                f"{word!r} has no space after ':', so it is text, not a key; expected "
                f"{fixed!r}")
        target = _key_of(previous)
        if target is not None:
            return line, key[1] + 1, (
                f"{key[0]!r} is indented more than {target[0]!r} on line {above}, which "
                f"already has a value; expected {key[0]!r} at the column of {target[0]!r} "
                f"({target[1] + 1}), or {target[0]!r} with nothing after its ':'")
        return line, key[1] + 1, (f"{key[0]!r} is indented under text, not under a key; "
                                  "expected it to line up with the keys above it")
    found = _value_of(source)
    if found:
        name, value, _start = found
        return line, column, (f"the value of {name!r} holds ': ', which YAML reads as a new "
                              f"key; expected the text in quotes: {_quoted(name, value)}")
    return line, column, ("text holding ': ' here reads as a new key; expected the text "
                          "in quotes")


def _after_value(lines: list[str], line: int, column: int) -> tuple[int, int, str]:
    """Text after a value YAML had already closed: `{{ x }} more` (read as a mapping) or
    `"quoted" more`."""
    source = lines[line - 1] if 1 <= line <= len(lines) else ""
    found = _value_of(source)
    if found is None:
        return line, column, ("more text after a finished value; expected one value per "
                              "key, in quotes if it holds brackets or quotes")
    key, value, start = found
    first = value[:1]
    if first in "{[":
        shape = "a mapping" if first == "{" else "a list"
        why = ", as templates need" if "{{" in value or "{%" in value else ""
        return line, start + 1, (f"the value of {key!r} starts with {first!r}, which YAML "
                                 f"reads as {shape}; expected the text in quotes{why}: "
                                 f"{_quoted(key, value)}")
    if first in "\"'":
        return line, start + 1, (f"the value of {key!r} goes on after its closing quote; "
                                 "expected the whole text inside the quotes")
    return line, column, (f"more text after the value of {key!r}; expected one value per "
                          "key")

"""The variables a pop-in template reads, down to the fields, and the cache of its cards.

Rendering a sandboxed template for every push cost about a sixth of a busy server's time
(py-spy under bench/sockets.py), and most pop-ins read one field or none: a card is
rendered once per distinct value of what it reads, then served from here.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable
from typing import Any

from jinja2 import Template, meta, nodes

# (by attribute, name): `.field` or `["field"]` / `[0]`.
Step = tuple[bool, str | int]
# A free variable and the fields read below it.
Use = tuple[str, tuple[Step, ...]]
# Cards kept per pop-in (variants and links included); the oldest go first.
MAX_CARDS = 256
# What renders differently each time with the same variables: never cached.
_CHANCE_FILTERS = frozenset({"random", "shuffle"})
_CHANCE_GLOBALS = frozenset({"lipsum"})
# Stands for a variable the context does not have (a global such as `range`).
_ABSENT = ("absent",)


class UsingTemplate(Template):
    """A template that knows what it reads; None when nobody worked it out."""

    uses: tuple[Use, ...] | None = None


def uses_of(tree: nodes.Template) -> tuple[Use, ...] | None:
    """Every free variable of the template, with the constant chain of fields read from
    it (`trigger.props.n` -> ("trigger", ((True, "props"), (True, "n")))); None when
    the template draws at random and its output must not be kept."""
    free = meta.find_undeclared_variables(tree)
    if not free.isdisjoint(_CHANCE_GLOBALS) or any(
            node.name in _CHANCE_FILTERS for node in tree.find_all(nodes.Filter)):
        return None
    found: set[Use] = set()

    def visit(node: nodes.Node) -> None:
        chain = _chain(node)
        if chain is not None:
            if chain[0] in free:
                found.add(chain)
            return
        for child in node.iter_child_nodes():
            visit(child)

    visit(tree)
    return tuple(sorted(found, key=repr))


def _chain(node: nodes.Node) -> Use | None:
    steps: list[Step] = []
    while True:
        if isinstance(node, nodes.Getattr):
            steps.append((True, node.attr))
            node = node.node
        elif (isinstance(node, nodes.Getitem) and isinstance(node.arg, nodes.Const)
              and isinstance(node.arg.value, str | int) and not isinstance(node.arg.value, bool)):
            steps.append((False, node.arg.value))
            node = node.node
        elif isinstance(node, nodes.Name) and node.ctx == "load":
            return node.name, tuple(reversed(steps))
        else:
            return None


def _read(value: Any, steps: tuple[Step, ...]) -> Any:
    """The deepest value of the chain that jinja would reach the same way: the key then
    holds everything the template can see below it. An attribute that the container has
    itself (`props.items`) is what jinja returns first, so the walk stops above it."""
    for by_attribute, name in steps:
        if not isinstance(value, dict) or name not in value or (
                by_attribute and hasattr(value, str(name))):
            break
        value = value[name]
    return value


def _frozen(value: Any) -> Hashable:
    kind = type(value)
    if kind is str or kind is int:
        return kind, value
    # repr tells apart what renders apart (1 and True and 1.0, -0.0, a list and a tuple).
    return kind, repr(value)


class Cards:
    """Rendered cards of one pop-in, by the values of what its templates read."""

    __slots__ = ("_cards", "_uses")

    def __init__(self, templates: Iterable[Template]) -> None:
        uses: set[Use] = set()
        known = True
        for template in templates:
            found = getattr(template, "uses", None)
            if found is None:
                known = False
                break
            uses.update(found)
        self._uses = tuple(sorted(uses, key=repr)) if known else None
        self._cards: dict[Hashable, str] = {}

    def key(self, context: dict[str, Any]) -> Hashable | None:
        if self._uses is None:
            return None
        return tuple(_frozen(_read(context[name], steps)) if name in context else _ABSENT
                     for name, steps in self._uses)

    def get(self, key: Hashable | None) -> str | None:
        return None if key is None else self._cards.get(key)

    def keep(self, key: Hashable | None, card: str) -> None:
        if key is None:
            return
        if len(self._cards) >= MAX_CARDS:
            del self._cards[next(iter(self._cards))]
        self._cards[key] = card

"""Pop-in cards are rendered once per distinct value of what their templates read."""

from __future__ import annotations

from typing import Any

import pytest

from popin.core.rules.schema import Reader
from popin.core.rules.templates import PopinTemplate, RenderError, compile_popin
from popin.core.rules.yamlsource import load


def popin(text: str) -> PopinTemplate:
    node = load(text, "t.yaml")
    return compile_popin(node, 1, Reader("t.yaml"))


def context(n: Any, name: str = "Ann", **props: Any) -> dict[str, Any]:
    return {"trigger": {"props": {"n": n, "other": "x", **props}},
            "visitor": {"first_name": name}}


def test_a_card_is_rendered_once_per_value_of_the_field_it_reads() -> None:
    visual = popin("title: 'Ping {{ trigger.props.n }}'\nbody: '<p>Hello</p>'\n")
    first = visual.render(context(1))
    assert "Ping 1" in first
    # Another field of the same object changed: the same card, from the cache.
    assert visual.render(context(1, other="y")) is first
    assert "Ping 2" in visual.render(context(2))
    # Values equal in Python but printed apart are kept apart.
    assert "Ping True" in visual.render(context(True))
    assert "Ping 1.0" in visual.render(context(1.0))


def test_a_whole_object_read_keys_the_card_by_all_of_it() -> None:
    visual = popin("title: t\nbody: '{% for k, v in trigger.props.items() %}{{ k }}={{ v }} "
                   "{% endfor %}'\n")
    assert "other=x" in visual.render(context(1))
    assert "other=y" in visual.render(context(1, other="y"))
    # A key named like a method of the mapping: jinja calls the method, so must the key.
    assert "items=1" in visual.render(context(1, items=1))
    assert "items=2" in visual.render(context(1, items=2))


def test_what_draws_at_random_is_rendered_every_time() -> None:
    visual = popin("title: t\nbody: '{{ [1, 2, 3, 4, 5, 6, 7, 8]|random }}'\n")
    cards = {visual.render(context(1)) for _ in range(60)}
    assert len(cards) > 1


def test_the_sandbox_still_refuses_with_the_cache() -> None:
    visual = popin("title: t\nbody: '{{ \"x\" * trigger.props.n }}'\n")
    assert visual.render(context(3)).count("xxx") == 1
    for _ in range(2):
        with pytest.raises(RenderError):
            visual.render(context(100_000))

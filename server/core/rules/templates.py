"""Pop-in templates: jinja2's sandboxed, autoescaping environment, compiled at load time."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from jinja2 import Template, TemplateSyntaxError
from jinja2.sandbox import SandboxedEnvironment
from markupsafe import Markup

from .schema import Reader
from .yamlsource import Mapping

PLACEMENTS = ("corner", "top_bar", "bottom_bar", "inline")
POPIN_KEYS = ("title", "body", "cta", "placement", "slot")
# Where a call-to-action may lead: never javascript: or data: URLs.
SAFE_URL_SCHEMES = frozenset({"", "http", "https", "mailto", "tel"})

ENVIRONMENT = SandboxedEnvironment(autoescape=True, trim_blocks=True, lstrip_blocks=True)

# The card around the owner's content; the widget styles it inside its Shadow DOM.
CARD = ENVIRONMENT.from_string(
    '<div class="card {{ placement }}" role="dialog" aria-live="polite" aria-label="{{ title }}">'
    '<button class="close" type="button" aria-label="Close" data-popin-dismiss>&times;</button>'
    '<p class="title">{{ title }}</p><div class="body">{{ body }}</div>'
    '{% for label, url in links %}<a class="cta" href="{{ url }}">{{ label }}</a> {% endfor %}'
    '{% if form %}<div class="area" data-popin-area>{{ form }}</div>{% endif %}'
    "</div>"
)


class RenderError(Exception):
    """A template failed at render time (sandbox refusal, bad URL, ...)."""


@dataclass(frozen=True, slots=True)
class PopinTemplate:
    """Anything shown on the page: a pop-in, an assistance offer, appointment slots."""

    title: Template
    body: Template
    # (label, url) templates; the first is the call to action.
    links: tuple[tuple[Template, Template], ...] = ()
    placement: str = "corner"
    # A CSS selector for placement "inline": the page's own reserved slot.
    slot: str = ""
    kind: str = "popin"
    # assist: the ways to help offered; slots: the ways to meet (empty: the calendar's).
    channels: tuple[str, ...] = ()
    calendar: str = ""
    # The card's form area, made once at load time by the action that needs one; the
    # template neither knows nor cares which form it is.
    form: str = ""

    def render(self, context: dict[str, Any]) -> str:
        try:
            links = []
            for label, url_template in self.links:
                url = url_template.render(context).strip()
                if urlsplit(url).scheme.lower() not in SAFE_URL_SCHEMES:
                    raise RenderError(f"link URL {url[:40]!r} has a forbidden scheme")
                links.append((label.render(context), url))
            return CARD.render(title=self.title.render(context),
                               body=Markup(self.body.render(context)),
                               links=links, placement=self.placement,
                               form=Markup(self.form))
        except RenderError:
            raise
        except Exception as error:
            # Owners' templates are code: whatever they raise must not reach the socket.
            raise RenderError(f"{type(error).__name__}: {error}") from error


def compile_template(node: Mapping, key: str, reader: Reader) -> Template:
    source = reader.text(node, key, max_length=5000)
    try:
        return ENVIRONMENT.from_string(source)
    except TemplateSyntaxError as error:
        # A block scalar (`body: |`) starts on the line after its key.
        offset = error.lineno if "\n" in source else 0
        reader.fail(node.line_of(key) + offset, f"template error in {key!r}: {error.message}")


def compile_popin(value: Any, line: int, reader: Reader) -> PopinTemplate:
    node = reader.mapping(value, line, "'popin'")
    reader.keys(node, "'popin'", POPIN_KEYS, required=["title", "body"])
    links: tuple[tuple[Template, Template], ...] = ()
    if "cta" in node:
        cta = reader.mapping(node["cta"], node.line_of("cta"), "'cta'")
        reader.keys(cta, "'cta'", ["label", "url"], required=["label", "url"])
        links = ((compile_template(cta, "label", reader), compile_template(cta, "url", reader)),)
    placement = node.get("placement", "corner")
    if placement not in PLACEMENTS:
        reader.fail(node.line_of("placement"),
                    f"unknown placement {placement!r}; expected one of {', '.join(PLACEMENTS)}")
    slot = ""
    if placement == "inline":
        if "slot" not in node:
            reader.fail(node.line_of("placement"), "placement 'inline' needs 'slot', the CSS "
                        "selector of the page's reserved element")
        slot = reader.text(node, "slot", max_length=120)
    elif "slot" in node:
        reader.fail(node.line_of("slot"), "'slot' only goes with placement: inline")
    return PopinTemplate(compile_template(node, "title", reader),
                         compile_template(node, "body", reader), links, placement, slot)
